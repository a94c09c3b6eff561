//! Build checks end to end: the warnings a build prints, `kiln build --check` (findings
//! only, exit 1 on findings, nothing built), the `# check=` directive's skips and
//! `error=true`, which fails the build after the warnings with nothing tagged.

mod common;

use common::{Kiln, stderr, stdout};
use std::fs;
use std::path::Path;

/// A context with a file `f` and `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "hi\n").unwrap();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn path(ctx: &tempfile::TempDir) -> &str {
    ctx.path().to_str().unwrap()
}

const TWO_FINDINGS: &str = "FROM scratch as base\nCOPY f /f\nCMD echo $NOPE\n";

#[test]
fn a_build_prints_each_finding_with_file_line_and_rule() {
    let kiln = Kiln::new();
    let ctx = context(TWO_FINDINGS);
    let out = kiln.build_ok(&["-t", "c:1", path(&ctx)]);
    let err = stderr(&out);
    assert!(
        err.contains(
            "warning: Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match\n"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: Dockerfile:3: JSONArgsRecommended: JSON arguments recommended for CMD to \
             prevent unintended behavior related to OS signals\n"
        ),
        "{err}"
    );
    // CMD is not expanded by the builder: $NOPE is the shell's business.
    assert!(!err.contains("UndefinedVar"), "{err}");
    assert!(kiln.run(&["inspect", "c:1"]).status.success());
}

#[test]
fn check_prints_findings_builds_nothing_and_fails_on_findings() {
    let kiln = Kiln::new();
    let ctx = context(TWO_FINDINGS);
    let out = kiln.run(&["build", "--check", "-t", "c:1", path(&ctx)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "warning: Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match\n\
         warning: Dockerfile:3: JSONArgsRecommended: JSON arguments recommended for CMD to \
         prevent unintended behavior related to OS signals\n\
         check complete, 2 warnings have been found\n"
    );
    assert!(
        !kiln.run(&["inspect", "c:1"]).status.success(),
        "nothing tagged"
    );
    assert_eq!(stdout(&kiln.run(&["images", "-q"])).trim(), "");

    // JSON: one warning event per finding, as data.
    let out = kiln.run(&["build", "--check", "--progress", "json", path(&ctx)]);
    assert_eq!(out.status.code(), Some(1));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"], "warning");
    assert_eq!(events[0]["rule"], "FromAsCasing");
    assert_eq!(events[0]["line"], 1);
    assert_eq!(events[1]["rule"], "JSONArgsRecommended");

    // A clean file passes.
    let clean = context("FROM scratch AS base\nCOPY f /f\nCMD [\"/f\"]\n");
    let out = kiln.run(&["build", "--check", path(&clean)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "check complete, no warnings found\n");
}

#[test]
fn check_looks_at_every_stage() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch AS unused\nWORKDIR app\nFROM scratch\nCOPY f /f\n");
    let out = kiln.build_ok(&["-t", "c:2", path(&ctx)]);
    assert!(
        !stderr(&out).contains("WorkdirRelativePath"),
        "{}",
        stderr(&out)
    );
    let out = kiln.run(&["build", "--check", path(&ctx)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Dockerfile:2: WorkdirRelativePath"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_check_directive_skips_rules() {
    let kiln = Kiln::new();
    let ctx = context(&format!(
        "# check=skip=FromAsCasing, JSONArgsRecommended\n{TWO_FINDINGS}"
    ));
    let out = kiln.run(&["build", "--check", path(&ctx)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ctx = context(&format!("# check=skip=FromAsCasing\n{TWO_FINDINGS}"));
    let out = kiln.run(&["build", "--check", path(&ctx)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("FromAsCasing"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("JSONArgsRecommended"),
        "{}",
        stderr(&out)
    );
    let ctx = context(&format!("# check=skip=all\n{TWO_FINDINGS}"));
    let out = kiln.build_ok(&["-t", "c:3", path(&ctx)]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // The build arg replaces the directive.
    let out = kiln.run(&[
        "build",
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended",
        path(&ctx),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("FromAsCasing"), "{}", stderr(&out));
    // A bad option is an error naming the line, as BuildKit's.
    let ctx = context(&format!("# check=skip\n{TWO_FINDINGS}"));
    let out = kiln.run(&["build", "-t", "c:4", path(&ctx)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Dockerfile:1: invalid check option \"skip\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn error_true_fails_the_build_after_the_warnings_with_nothing_tagged() {
    let kiln = Kiln::new();
    let ctx = context(&format!("# check=error=true\n{TWO_FINDINGS}"));
    let out = kiln.run(&["build", "--progress", "plain", "-t", "e:1", path(&ctx)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("warning: Dockerfile:2: FromAsCasing"), "{err}");
    assert!(
        err.contains(
            "Dockerfile: lint violation found for rules: FromAsCasing, JSONArgsRecommended"
        ),
        "{err}"
    );
    assert!(
        !kiln.run(&["inspect", "e:1"]).status.success(),
        "nothing tagged"
    );
    // Without findings, error=true builds.
    let clean = context("# check=error=true\nFROM scratch\nCOPY f /f\n");
    kiln.build_ok(&["-t", "e:2", path(&clean)]);
    assert!(Path::new(&kiln.root.path()).exists());
}

#[test]
fn copy_of_an_ignored_file_is_named() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY f /f\nCOPY secret* /s/\n");
    fs::write(ctx.path().join(".dockerignore"), "f\n").unwrap();
    let out = kiln.run(&["build", "--check", path(&ctx)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "warning: Dockerfile:2: CopyIgnoredFile: Attempting to Copy file \"f\" that is \
             excluded by .dockerignore\n"
        ),
        "{}",
        stderr(&out)
    );
}
