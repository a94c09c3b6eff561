//! What kiln prints is what a user needs to read: labelled digests, where outputs went,
//! errors that name the cause, `<none>` images, labelled columns, "identical", expanded
//! FROM names, step headers before their lines under a real pty, one cache-miss reason per
//! change; and files it writes get the user's umask, not 0600.

mod common;

use common::{Kiln, stderr, stdout};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn write(dir: &Path, rel: &str, content: &str) {
    fs::write(dir.join(rel), content).unwrap();
}

/// A context with one file and `dockerfile` as its Dockerfile.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "a\n");
    write(dir.path(), "Dockerfile", dockerfile);
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn verify_reproducible_labels_the_manifest_and_the_config_digest() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    let out = kiln.build_ok(&["--verify-reproducible", "-t", "r:1", path(ctx.path())]);
    let err = stderr(&out);
    assert!(
        err.contains("both builds gave the same manifest digest sha256:"),
        "{err}"
    );
    assert!(err.contains("(image ID: its config digest)"), "{err}");
}

#[test]
fn oci_outputs_say_what_they_wrote_where_tar_unless_tar_false() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    let out_dir = tempfile::tempdir().unwrap();
    let tar = out_dir.path().join("new");
    let layout = out_dir.path().join("layout");
    let out = kiln.build_ok(&[
        "-o",
        &format!("type=oci,dest={}", tar.display()),
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        path(ctx.path()),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "exported an OCI archive (tar) to {}; add tar=false for an OCI layout directory",
            tar.display()
        )),
        "{err}"
    );
    assert!(tar.is_file());
    assert!(
        err.contains(&format!(
            "exported an OCI layout directory to {}",
            layout.display()
        )),
        "{err}"
    );
    assert!(layout.join("index.json").is_file());
}

#[test]
fn save_and_outputs_write_files_with_the_umask_not_0600() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    let out_dir = tempfile::tempdir().unwrap();
    let saved = out_dir.path().join("saved.tar");
    let output = out_dir.path().join("out.tar");
    let kiln_under_umask = |args: String| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 022 && exec {} --root {} {args}",
                common::kiln_bin().display(),
                kiln.root.path().display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    kiln_under_umask(format!(
        "build --progress plain -t m:1 -o type=docker,dest={} {}",
        output.display(),
        ctx.path().display()
    ));
    kiln_under_umask(format!("save -o {} m:1", saved.display()));
    for f in [&saved, &output] {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", f.display());
    }
}

#[test]
fn a_missing_context_says_the_path_does_not_exist() {
    let kiln = Kiln::new();
    let out = kiln.run(&["build", "/nonexistent/kiln-context"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("build context /nonexistent/kiln-context: the path does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_lowercase_dockerfile_is_used_when_there_is_no_dockerfile() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "a.txt", "a\n");
    write(
        ctx.path(),
        "dockerfile",
        "FROM scratch\nCOPY a.txt /lower\n",
    );
    kiln.build_ok(&["-t", "low:1", path(ctx.path())]);
    assert_eq!(kiln.image("low:1").text("lower"), "a\n");
}

#[test]
fn a_name_without_its_only_tag_gets_a_hint() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    kiln.build_ok(&["-t", "bb:1", path(ctx.path())]);
    let out = kiln.run(&["history", "bb"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("No such image: bb:latest (did you mean bb:1?)"),
        "{}",
        stderr(&out)
    );
    kiln.run(&["tag", "bb:1", "bb:2"]);
    let out = kiln.run(&["history", "bb"]);
    assert!(stderr(&out).contains("No such image: bb:latest"));
    assert!(!stderr(&out).contains("did you mean"), "two tags: no guess");
}

/// One image ID, two images: the same files stored gzip and zstd have one config (the
/// image ID) and two manifests. An ID prefix then names no image in particular, and every
/// command says so instead of taking the first (as docker refuses "multiple IDs found").
#[test]
fn an_id_prefix_of_two_images_is_an_error_everywhere() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    let iid = ctx.path().join("iid");
    kiln.build_ok(&[
        "--compression",
        "gzip",
        "-t",
        "gz:1",
        "--iidfile",
        path(&iid),
        path(ctx.path()),
    ]);
    kiln.build_ok(&["--compression", "zstd", "-t", "zst:1", path(ctx.path())]);
    let id = fs::read_to_string(&iid).unwrap();
    let prefix = &id["sha256:".len().."sha256:".len() + 12];
    let wanted = format!("{prefix}: 2 images have IDs starting with {prefix}");
    for args in [
        vec!["inspect", prefix],
        vec!["tag", prefix, "other:1"],
        vec!["run", prefix, "true"],
        vec!["diff", prefix, "gz:1"],
    ] {
        let out = kiln.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(&wanted), "{args:?}: {}", stderr(&out));
    }
    // Names still find each one.
    let out = kiln.run(&["inspect", "zst:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn images_shows_untagged_builds_labels_size_and_explains_1970() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    kiln.build_ok(&["-t", "named:1", path(ctx.path())]);
    write(ctx.path(), "a.txt", "changed\n");
    let iid_file = ctx.path().join("iid");
    kiln.build_ok(&["--iidfile", path(&iid_file), path(ctx.path())]);
    let iid = fs::read_to_string(&iid_file).unwrap();
    let out = kiln.run(&["images"]);
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    assert!(header.contains("SIZE (compressed)"), "{text}");
    let none = text
        .lines()
        .find(|l| l.starts_with("<none>"))
        .unwrap_or_else(|| panic!("no <none> row:\n{text}"));
    assert!(
        none.contains(&iid.trim_start_matches("sha256:")[..12]),
        "{text}"
    );
    assert!(none.contains("1970-01-01 (SOURCE_DATE_EPOCH=0)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("named:1")), "{text}");
    // prune keeps the untagged image; prune --all forgets it, as docker image prune -a.
    kiln.run(&["prune"]);
    assert!(stdout(&kiln.run(&["images"])).contains("<none>"));
    kiln.run(&["prune", "--all"]);
    assert!(!stdout(&kiln.run(&["images"])).contains("<none>"));
    let history = stdout(&kiln.run(&["history", "named:1"]));
    assert!(history.contains("SIZE (compressed)"), "{history}");
}

#[test]
fn diff_of_an_image_with_itself_says_identical() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    kiln.build_ok(&["-t", "d:1", path(ctx.path())]);
    let out = kiln.run(&["diff", "d:1", "d:1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "identical: d:1 and d:1\n");
    let json = kiln.run(&["diff", "--format", "json", "d:1", "d:1"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["identical"], true);
}

#[test]
fn progress_shows_from_with_the_base_name_expanded() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    kiln.build_ok(&["-t", "base:1", path(ctx.path())]);
    write(
        ctx.path(),
        "Dockerfile",
        "ARG BASE=base:1\nFROM ${BASE}\nCOPY a.txt /b\n",
    );
    let err = stderr(&kiln.build_ok(&[path(ctx.path())]));
    assert!(err.contains("] FROM base:1\n"), "{err}");
    assert!(!err.contains("${BASE}"), "{err}");
}

#[test]
fn explain_cache_gives_one_reason_for_one_changed_file() {
    let kiln = Kiln::new();
    let ctx = context("FROM scratch\nCOPY a.txt /a\n");
    kiln.build_ok(&[path(ctx.path())]);
    write(ctx.path(), "a.txt", "b\n");
    let err = stderr(&kiln.build_ok(&["--explain-cache", path(ctx.path())]));
    let misses: Vec<&str> = err.lines().filter(|l| l.contains("cache miss")).collect();
    assert_eq!(misses.len(), 1, "{err}");
    assert!(
        misses[0].ends_with("cache miss: file changed: a.txt"),
        "{err}"
    );
}

/// Runs `kiln build --progress tty` under a pty (`script` from util-linux), after `setup`
/// (shell commands run on the pty first); returns what the pty showed.
fn build_under_pty(kiln: &Kiln, ctx: &Path, setup: &str) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP: script (util-linux) is not installed");
        return None;
    }
    let out = Command::new("script")
        .arg("-qec")
        .arg(format!(
            "{setup} {} --root {} build --progress tty {}",
            common::kiln_bin().display(),
            kiln.root.path().display(),
            ctx.display()
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    Some(stdout(&out))
}

/// The text a terminal shows, roughly: escape sequences dropped, `\r` as a line break.
fn screen_lines(raw: &str) -> Vec<String> {
    strip_escapes(raw)
        .split(['\r', '\n'])
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn strip_escapes(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn tty_mode_prints_a_step_header_before_its_lines_and_plain_lines_on_a_sizeless_pty() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo line-one; echo line-two\"]\n",
    );
    let Some(sized) = build_under_pty(&kiln, ctx.path(), "stty cols 120 rows 40;") else {
        return;
    };
    let lines = screen_lines(&sized);
    let header = lines
        .iter()
        .position(|l| l.starts_with("#3 [3/3] RUN") && !l.contains("DONE"))
        .unwrap_or_else(|| panic!("no header:\n{lines:#?}"));
    let first = lines
        .iter()
        .position(|l| l.starts_with("#3 line-one"))
        .unwrap_or_else(|| panic!("no output line:\n{lines:#?}"));
    assert!(header < first, "{lines:#?}");

    // A pty nobody sized (0x0): plain lines, each ending in a newline.
    let kiln = Kiln::new();
    let Some(sizeless) = build_under_pty(&kiln, ctx.path(), "stty cols 0 rows 0;") else {
        return;
    };
    assert!(sizeless.contains("line-one\r\n"), "{sizeless:?}");
    assert!(sizeless.contains("#3 [3/3] RUN"), "{sizeless:?}");
    assert!(sizeless.contains("#3 DONE"), "{sizeless:?}");
}
