//! Rootless without a subordinate ID range: kiln runs as `nobody` (an account every system
//! has, with no line in /etc/subuid or /etc/subgid, so no test account is created). Commands
//! that need no other IDs say nothing about it; a step that does fails naming the unmapped
//! ID, the cause and the fix.

mod common;

use common::{kiln_bin, stderr};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

/// Runs `kiln --root STORE ARGS` as `nobody`, with `dir` (everyone can enter it) as HOME.
fn kiln_as_nobody(dir: &Path, args: &[&str]) -> Output {
    let store = dir.join("store");
    Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("HOME={}", dir.display()))
        .arg(kiln_bin())
        .arg("--root")
        .arg(&store)
        .args(args)
        .output()
        .expect("runuser")
}

/// A temp dir `nobody` owns, or `None` when the test cannot switch users.
fn nobody_dir() -> Option<tempfile::TempDir> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: running kiln as nobody needs root (CI runs as root)");
        return None;
    }
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    assert!(
        !subuid.lines().any(|l| l.starts_with("nobody:")),
        "the test needs nobody without a subordinate range"
    );
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(tmp.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    Some(tmp)
}

#[test]
fn without_a_subordinate_range_commands_that_need_none_say_nothing() {
    let Some(dir) = nobody_dir() else { return };
    let out = kiln_as_nobody(dir.path(), &["images"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no warning for `kiln images`");
}

#[test]
fn a_chown_to_an_unmapped_id_names_the_id_the_cause_and_the_fix() {
    let Some(dir) = nobody_dir() else { return };
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("hello"), "hi\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY --chown=1000 hello /hello\n",
    )
    .unwrap();
    common::open_up(&ctx);
    let out = kiln_as_nobody(
        dir.path(),
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("uid 1000 is not mapped"), "{err}");
    assert!(err.contains("no subordinate ID range"), "{err}");
    assert!(
        err.contains("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER"),
        "{err}"
    );
    assert!(!err.contains("warning:"), "{err}");
}
