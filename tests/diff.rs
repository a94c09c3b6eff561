//! `kiln diff A B`: compares final filesystems (whiteouts applied), config and history of
//! images in the store, OCI layouts and archives; exit 0 identical, 1 different, 2 error.

mod common;

use common::{Kiln, stderr, stdout};
use std::fs;
use std::path::Path;
use std::process::Output;

/// A build context with `Dockerfile` and the given files.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        let p = dir.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

fn p(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// Builds `dockerfile` with `files` as `tag` (extra build flags first).
fn build(kiln: &Kiln, tag: &str, dockerfile: &str, files: &[(&str, &str)], flags: &[&str]) {
    let ctx = context(dockerfile, files);
    let mut args = vec!["-t", tag];
    args.extend_from_slice(flags);
    args.push(p(ctx.path()));
    kiln.build_ok(&args);
}

fn diff(kiln: &Kiln, a: &str, b: &str) -> Output {
    kiln.run(&["diff", a, b])
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

const TWO_FILES: &str = "FROM scratch\nCOPY a b /app/\nENV MODE=prod\n";

fn base(kiln: &Kiln) {
    build(
        kiln,
        "one:1",
        TWO_FILES,
        &[("a", "alpha\n"), ("b", "beta\n")],
        &[],
    );
}

#[test]
fn identical_images_exit_zero_and_say_identical() {
    let kiln = Kiln::new();
    base(&kiln);
    build(
        &kiln,
        "two:1",
        TWO_FILES,
        &[("a", "alpha\n"), ("b", "beta\n")],
        &[],
    );
    let out = diff(&kiln, "one:1", "two:1");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // One line, so silence is never mistaken for "still running" or "nothing compared".
    assert_eq!(stdout(&out), "identical: one:1 and two:1\n");
}

#[test]
fn one_changed_file_content_is_the_only_line() {
    let kiln = Kiln::new();
    base(&kiln);
    build(
        &kiln,
        "two:1",
        TWO_FILES,
        &[("a", "ALPHA\n"), ("b", "beta\n")],
        &[],
    );
    let out = diff(&kiln, "one:1", "two:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "~ /app/a (content)\n");
}

#[test]
fn mode_and_owner_changes_are_named() {
    let kiln = Kiln::new();
    base(&kiln);
    let df =
        "FROM scratch\nCOPY --chmod=755 a /app/\nCOPY --chown=1000:1000 b /app/\nENV MODE=prod\n";
    // The same files in two COPY steps: the history differs too, but it comes last.
    build(
        &kiln,
        "two:1",
        df,
        &[("a", "alpha\n"), ("b", "beta\n")],
        &[],
    );
    let out = diff(&kiln, "one:1", "two:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "~ /app/a (mode)", "{text}");
    assert_eq!(lines[1], "~ /app/b (owner)", "{text}");
    assert!(
        lines[2..].iter().all(|l| l.starts_with("history ")),
        "only history lines follow: {text}"
    );
}

#[test]
fn removed_and_added_files_are_minus_and_plus() {
    let kiln = Kiln::new();
    base(&kiln);
    let df = "FROM scratch\nCOPY a c /app/\nENV MODE=prod\n";
    build(
        &kiln,
        "two:1",
        df,
        &[("a", "alpha\n"), ("c", "gamma\n")],
        &[],
    );
    let out = diff(&kiln, "one:1", "two:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["- /app/b", "+ /app/c"], "{text}");
    assert!(
        lines[2..]
            .iter()
            .all(|l| l.starts_with("history 0: created_by: ")),
        "{text}"
    );
}

#[test]
fn a_file_only_in_a_is_a_minus_line() {
    let kiln = Kiln::new();
    build(
        &kiln,
        "full:1",
        "FROM scratch\nCOPY a b /\n",
        &[("a", "1"), ("b", "2")],
        &[],
    );
    build(
        &kiln,
        "less:1",
        "FROM scratch\nCOPY a /\n",
        &[("a", "1")],
        &[],
    );
    let out = diff(&kiln, "full:1", "less:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().next(), Some("- /b"), "{text}");
    assert!(
        text.lines().skip(1).all(|l| l.starts_with("history ")),
        "{text}"
    );
}

#[test]
fn config_changes_are_config_lines() {
    let kiln = Kiln::new();
    base(&kiln);
    let df = "FROM scratch\nCOPY a b /app/\nENV MODE=dev\n";
    build(
        &kiln,
        "two:1",
        df,
        &[("a", "alpha\n"), ("b", "beta\n")],
        &[],
    );
    let out = diff(&kiln, "one:1", "two:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("config Env: [")
            && lines[0].contains("\"MODE=prod\"] -> [")
            && lines[0].ends_with("\"MODE=dev\"]"),
        "{text}"
    );
    assert_eq!(
        lines[1..],
        ["history 1: created_by: \"ENV MODE=prod\" -> \"ENV MODE=dev\""],
        "{text}"
    );
}

#[test]
fn same_files_in_other_layers_say_so() {
    let kiln = Kiln::new();
    base(&kiln);
    // Same tar content, other compression: other layer digests, same files and config.
    build(
        &kiln,
        "two:1",
        TWO_FILES,
        &[("a", "alpha\n"), ("b", "beta\n")],
        &["--compression", "zstd", "--no-cache"],
    );
    let out = diff(&kiln, "one:1", "two:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "same files, different layering\n");

    // Same files in two COPY steps instead of one: history lines, then the same verdict.
    let df = "FROM scratch\nCOPY a /app/\nCOPY b /app/\nENV MODE=prod\n";
    build(
        &kiln,
        "three:1",
        df,
        &[("a", "alpha\n"), ("b", "beta\n")],
        &[],
    );
    let out = diff(&kiln, "one:1", "three:1");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().last(),
        Some("same files, different layering"),
        "{text}"
    );
    assert!(
        text.lines()
            .rev()
            .skip(1)
            .all(|l| l.starts_with("history ")),
        "{text}"
    );
}

#[test]
fn archives_and_layouts_compare_like_store_images() {
    let kiln = Kiln::new();
    base(&kiln);
    build(
        &kiln,
        "two:1",
        TWO_FILES,
        &[("a", "ALPHA\n"), ("b", "beta\n")],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("one.tar");
    let oci = dir.path().join("two.tar");
    let layout = dir.path().join("layout");
    assert!(
        kiln.run(&["save", "-o", p(&docker), "one:1"])
            .status
            .success()
    );
    assert!(
        kiln.run(&["save", "--format", "oci", "-o", p(&oci), "two:1"])
            .status
            .success()
    );
    fs::create_dir(&layout).unwrap();
    let untar = std::process::Command::new("tar")
        .args(["xf", p(&oci), "-C", p(&layout)])
        .status()
        .unwrap();
    assert!(untar.success());
    let docker_ref = format!("docker-archive:{}", docker.display());
    let oci_ref = format!("oci-archive:{}", oci.display());
    let layout_ref = format!("oci:{}", layout.display());

    let out = diff(&kiln, &docker_ref, &oci_ref);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "~ /app/a (content)\n");
    let out = diff(&kiln, &layout_ref, "two:1");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = diff(&kiln, "one:1", &docker_ref);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Archives need no store: a fresh empty root still works.
    let other = Kiln::new();
    let out = diff(&other, &oci_ref, &layout_ref);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn json_format_is_one_parseable_document() {
    let kiln = Kiln::new();
    base(&kiln);
    let df = "FROM scratch\nCOPY a b /app/\nENV MODE=dev\n";
    build(
        &kiln,
        "two:1",
        df,
        &[("a", "ALPHA\n"), ("b", "beta\n")],
        &[],
    );
    let out = kiln.run(&["diff", "--format", "json", "one:1", "two:1"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(doc["identical"], false);
    assert_eq!(doc["a"]["name"], "one:1");
    assert!(
        doc["a"]["manifest_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "/app/a");
    assert_eq!(files[0]["change"], "modified");
    assert_eq!(files[0]["kinds"], serde_json::json!(["content"]));
    assert_eq!(files[0]["a"]["size"], 6);
    assert_eq!(files[0]["a"]["type"], "file");
    assert_eq!(doc["config"][0]["field"], "Env");
    assert_eq!(doc["history"][0]["field"], "created_by");
    assert_eq!(doc["same_files_different_layering"], false);

    let same = kiln.run(&["diff", "--format", "json", "one:1", "one:1"]);
    assert_eq!(code(&same), 0);
    let doc: serde_json::Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(doc["identical"], true);
    assert_eq!(doc["files"], serde_json::json!([]));
}

#[test]
fn bad_inputs_exit_two_with_a_clear_message() {
    let kiln = Kiln::new();
    base(&kiln);
    let out = diff(&kiln, "one:1", "nosuch:1");
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out).trim(),
        "error: nosuch:1: no such image in the store (other sources: oci:DIR, \
         oci-archive:FILE, docker-archive:FILE)"
    );

    let out = diff(&kiln, "oci:/nonexistent/layout", "one:1");
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out).trim(),
        "error: /nonexistent/layout: No such file or directory (os error 2)"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar");
    fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let out = diff(
        &kiln,
        &format!("docker-archive:{}", junk.display()),
        "one:1",
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).starts_with(&format!("error: docker-archive:{}: ", junk.display())),
        "{}",
        stderr(&out)
    );

    let out = diff(&kiln, &format!("oci:{}", junk.display()), "one:1");
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: oci:{}: not a directory (oci: wants an OCI layout directory)",
            junk.display()
        )
    );
}
