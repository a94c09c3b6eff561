//! Builds as an unprivileged user with a subordinate ID range: the whole of kiln runs in a
//! user namespace, and the image must be the one root builds, owners included.
//!
//! These tests create a user (`kilnrootless`) with `/etc/subuid` and `/etc/subgid` ranges,
//! so they need root; CI runs as root.

mod common;

use common::{Kiln, copy_dir, testdata};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const USER: &str = "kilnrootless";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Creates the test user and its subordinate ranges once; returns its uid.
fn ensure_user() -> u32 {
    common::ensure_test_user(USER, 300000).expect("test user exists")
}

/// Start of the test user's first subordinate range (useradd may have made one itself).
fn sub_start(file: &str) -> u32 {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(USER)).then(|| f.next().and_then(|s| s.parse().ok()))?
        })
        .expect("subordinate range for the test user")
}

/// A directory the test user can write, under a root-owned temp dir everyone can enter.
fn user_dir(parent: &Path, name: &str, uid: u32) -> std::path::PathBuf {
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.join(name);
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    dir
}

fn context(tmp: &Path) -> std::path::PathBuf {
    let ctx = tmp.join("ctx");
    copy_dir(&testdata("hello"), &ctx);
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY --chown=1000:1001 site/ /srv/\nCOPY --chown=0:0 bin/ /bin/\nUSER 1000\n",
    )
    .unwrap();
    fs::set_permissions(&ctx, fs::Permissions::from_mode(0o755)).unwrap();
    common::open_up(&ctx);
    ctx
}

#[test]
fn unprivileged_user_with_subuid_range_builds_the_same_image_as_root() {
    if !is_root() {
        eprintln!("SKIP: creating the test user needs root (CI runs as root)");
        return;
    }
    let uid = ensure_user();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());

    let root_kiln = Kiln::new();
    let root_iid = tmp.path().join("root.iid");
    root_kiln.build_ok(&[
        "--iidfile",
        root_iid.to_str().unwrap(),
        "-t",
        "rl:1",
        ctx.to_str().unwrap(),
    ]);

    let home = user_dir(tmp.path(), "home", uid);
    let store = home.join("store");
    let iid = home.join("user.iid");
    // A different umask for the user's run: the image must not depend on it.
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c"])
        .arg(format!(
            "umask 077 && cd {home} && HOME={home} {kiln} --root {store} build --progress plain --iidfile {iid} -t rl:1 {ctx}",
            home = home.display(),
            kiln = common::kiln_bin().display(),
            store = store.display(),
            iid = iid.display(),
            ctx = ctx.display(),
        ))
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "rootless build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(&root_iid).unwrap(),
        fs::read_to_string(&iid).unwrap(),
        "root and rootless builds differ"
    );

    // Inside the store, the chowned file belongs to a subordinate ID seen from outside.
    let snapshots = store.join("snapshots");
    let mut owners = Vec::new();
    for snap in fs::read_dir(&snapshots).unwrap() {
        let p = snap.unwrap().path().join("srv/index.html");
        if let Ok(m) = fs::symlink_metadata(&p) {
            use std::os::unix::fs::MetadataExt;
            owners.push((m.uid(), m.gid()));
        }
    }
    let (uid_base, gid_base) = (sub_start("/etc/subuid"), sub_start("/etc/subgid"));
    // Container ID n >= 1 sits at base + n - 1 (ID 0 is the user itself).
    assert_eq!(owners, vec![(uid_base + 999, gid_base + 1000)]);
}
