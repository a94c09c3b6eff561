//! Hole 5: the store holds image files as the images have them (setuid binaries, device
//! nodes), so no other local user may reach into it: its root is 0700, new or old.

use crate::support::{BUSYBOX, World, assert_ok, both, identities};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Another local user with no business in the store.
const OTHER: &str = "nobody";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// Runs `argv` as [`OTHER`]; Ok when it succeeded, else its stderr.
fn as_other(argv: &[&str]) -> Result<(), String> {
    let out = Command::new("runuser")
        .args(["-u", OTHER, "--"])
        .args(argv)
        .output()
        .expect("runuser");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every setuid regular file under `dir`.
fn setuid_files(dir: &Path) -> Vec<PathBuf> {
    crate::support::files_where(dir, |_, md| md.permissions().mode() & 0o4000 != 0)
}

#[test]
fn another_user_cannot_reach_a_setuid_file_a_build_made() {
    if !crate::support::is_root() {
        eprintln!("note: needs root to act as another user; skipped");
        return;
    }
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("{BUSYBOX}RUN cp /bin/busybox /suid && chmod 4755 /suid\n"),
        );
        let out = w.build(&ctx, &["-t", "suid:1"]);
        assert_ok(&out);
        let store = w.store();
        assert_eq!(mode(&store), 0o700, "{id:?}: the store root");
        let planted = setuid_files(&store.join("snapshots"));
        assert!(
            !planted.is_empty(),
            "{id:?}: the build left a setuid file in a snapshot (the test's premise): {}",
            both(&out)
        );
        let snapshots = store.join("snapshots");
        let err = as_other(&["stat", snapshots.to_str().expect("utf-8")])
            .expect_err("another user can stat the snapshots");
        assert!(err.contains("Permission denied"), "{id:?}: {err}");
        for file in planted {
            let file = file.to_str().expect("utf-8");
            let err =
                as_other(&[file, "true"]).expect_err("another user ran a setuid file of the store");
            assert!(err.contains("Permission denied"), "{id:?}: {err}");
        }
    }
}

#[test]
fn a_loose_store_root_is_tightened_when_opened() {
    for id in identities() {
        let w = World::new(id);
        let store = w.user_dir("store");
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_ok(&w.kiln(&["images"]));
        assert_eq!(mode(&store), 0o700, "{id:?}: an existing loose root");

        // A store that does not exist yet is private from the start.
        let w = World::new(id);
        assert_ok(&w.kiln(&["images"]));
        assert_eq!(mode(&w.store()), 0o700, "{id:?}: a new root");
    }
}

/// A store another user owns could be changed under kiln by that user (a planted snapshot,
/// a swapped blob): kiln refuses it rather than build from it, even as root.
#[test]
fn a_store_owned_by_another_user_is_refused() {
    if !crate::support::is_root() {
        eprintln!("note: needs root to make a directory another user owns; skipped");
        return;
    }
    for id in identities() {
        let w = World::new(id);
        let store = w.store();
        std::fs::create_dir(&store).expect("mkdir store");
        // Someone else's, and open to all so that only ownership is in question.
        let other = match w.uid {
            Some(_) => 0,
            None => 65534,
        };
        std::os::unix::fs::chown(&store, Some(other), Some(other)).expect("chown store");
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777))
            .expect("chmod store");
        let out = w.kiln(&["images"]);
        crate::support::assert_refused(&out);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("belongs to uid"),
            "{id:?}: {}",
            both(&out)
        );
        assert_eq!(mode(&store), 0o777, "{id:?}: left as it was");
    }
}
