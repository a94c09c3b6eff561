//! Holes in what kiln does to a snapshot after a RUN: cleaning mount-point stubs through
//! paths a step rearranged (host files deleted or retimed), and walks that recursed once per
//! directory level (a deep tree aborted kiln with a stack overflow).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common;
use crate::support::{BUSYBOX, Identity, World, assert_ok, assert_refused, both, identities};

/// An old, distinctive mtime for the victim directories: kiln restoring a stub parent's
/// times onto a host directory would change it.
const VICTIM_MTIME: i64 = 1_000_000_000;

/// A host directory holding what kiln's stub clean-up would remove if it followed the
/// step's symlink: an empty directory `x` (a mount target), empty `hosts` and `resolv.conf`
/// (the files the sandbox mounts over in `/etc`). Writable by the identity, so only kiln's
/// care (not permissions) keeps them.
fn victim(world: &World, name: &str) -> PathBuf {
    let dir = world.tmp.path().join(name);
    std::fs::create_dir(&dir).expect("mkdir victim");
    std::fs::create_dir(dir.join("x")).expect("mkdir victim/x");
    std::fs::write(dir.join("hosts"), b"").expect("write victim/hosts");
    std::fs::write(dir.join("resolv.conf"), b"").expect("write victim/resolv.conf");
    if let Some(uid) = world.uid {
        for p in [
            dir.clone(),
            dir.join("x"),
            dir.join("hosts"),
            dir.join("resolv.conf"),
        ] {
            std::os::unix::fs::chown(&p, Some(uid), Some(uid)).expect("chown victim");
        }
    }
    let t = filetime::FileTime::from_unix_time(VICTIM_MTIME, 0);
    filetime::set_file_times(&dir, t, t).expect("set victim times");
    dir
}

fn assert_victim_intact(dir: &Path, out: &std::process::Output) {
    for name in ["x", "hosts", "resolv.conf"] {
        assert!(
            dir.join(name).symlink_metadata().is_ok(),
            "kiln removed the host file {}: {}",
            dir.join(name).display(),
            both(out)
        );
    }
    let mtime = std::fs::metadata(dir).expect("stat victim").mtime();
    assert_eq!(
        mtime,
        VICTIM_MTIME,
        "kiln changed the times of the host directory {}: {}",
        dir.display(),
        both(out)
    );
}

/// The snapshotters a RUN can use: each cleans stubs in its own directory (the overlay
/// upper or the copied rootfs). Rootless without overlay support falls back to copy anyway.
const SNAPSHOTTERS: [&str; 2] = ["overlay", "copy"];

#[test]
fn run_that_swaps_a_stub_parent_for_a_symlink_removes_no_host_file() {
    for id in identities() {
        for snapshotter in SNAPSHOTTERS {
            let world = World::new(id);
            // `/a/b` and `/etc` do not exist before: the sandbox creates them as stubs in
            // this step's layer, where the step may rename them (overlayfs refuses to rename
            // a directory of a lower layer).
            let mount_victim = victim(&world, "victim-mount");
            let etc_victim = victim(&world, "victim-etc");
            let mut dockerfile = format!(
                "{BUSYBOX}RUN --mount=type=tmpfs,target=/a/b/x true && mv /a/b /a/b2 && ln -s {m} /a/b\n",
                m = mount_victim.display(),
            );
            // overlayfs refuses to rename /etc while files are bind-mounted in it; the copy
            // snapshotter's plain directory allows it.
            if snapshotter == "copy" {
                dockerfile.push_str(&format!(
                    "RUN mv /etc /etc2 && ln -s {e} /etc\n",
                    e = etc_victim.display()
                ));
            }
            let ctx = world.context("ctx", &dockerfile);
            let out = world.build(&ctx, &["--snapshotter", snapshotter]);
            if snapshotter == "overlay" && !out.status.success() && id == Identity::Rootless {
                // A kernel without unprivileged overlayfs: the copy round covers rootless.
                eprintln!("note: overlay unavailable rootless: {}", both(&out));
                continue;
            }
            assert_ok(&out);
            assert_victim_intact(&mount_victim, &out);
            assert_victim_intact(&etc_victim, &out);
        }
    }
}

/// `d/d/d/...` nested `depth` deep.
fn deep_path(depth: usize) -> String {
    vec!["d"; depth].join("/")
}

#[test]
fn run_that_nests_thousands_of_directories_builds_an_image_holding_them() {
    // The old recursive walks died near 200 levels (a debug build); 600 is three times
    // that, fits PATH_MAX below the store, and keeps the quadratic costs of path lookups
    // in deep trees (each one walks every level) to seconds.
    const DEPTH: usize = 600;
    for id in identities() {
        for snapshotter in SNAPSHOTTERS {
            let world = World::new(id);
            // A loop of `mkdir d && cd d` needs no argument longer than a name, unlike
            // `mkdir -p` with the whole path; a later RUN reads the tree through the layers.
            let dockerfile = format!(
                "{BUSYBOX}RUN i=0; while [ $i -lt {DEPTH} ]; do mkdir d && cd d; i=$((i+1)); done; \
                 echo deep > leaf\n\
                 RUN cd /{path} && test \"$(cat leaf)\" = deep\n",
                path = deep_path(DEPTH),
            );
            let ctx = world.context("ctx", &dockerfile);
            let out = world.build(&ctx, &["--snapshotter", snapshotter, "-t", "deep"]);
            if snapshotter == "overlay" && !out.status.success() && id == Identity::Rootless {
                eprintln!("note: overlay unavailable rootless: {}", both(&out));
                continue;
            }
            assert_ok(&out);
            let dir = world.user_dir("out");
            let archive = dir.join("deep.tar");
            let saved = world.kiln(&["save", "-o", archive.to_str().expect("utf-8"), "deep"]);
            assert_ok(&saved);
            let image = common::Image::from_docker_archive(&archive);
            let leaf = format!("{}/leaf", deep_path(DEPTH));
            assert_eq!(image.text(&leaf), "deep\n", "the deep file in the image");
        }
    }
}

/// Deeper than PATH_MAX allows below the store: kiln may refuse (paths it cannot name),
/// but with an error, never a crash.
#[test]
fn run_deeper_than_path_max_fails_cleanly_or_succeeds() {
    const DEPTH: usize = 2500;
    for id in identities() {
        let world = World::new(id);
        let dockerfile = format!(
            "{BUSYBOX}RUN i=0; while [ $i -lt {DEPTH} ]; do mkdir d && cd d; i=$((i+1)); done\n"
        );
        let ctx = world.context("ctx", &dockerfile);
        let out = world.build(&ctx, &[]);
        if !out.status.success() {
            assert_refused(&out);
        }
    }
}

/// Reads `tag` back from the store and checks `path` holds `text`.
fn assert_image_file(world: &World, tag: &str, path: &str, text: &str) {
    let dir = world.user_dir("out");
    let archive = dir.join(format!("{tag}.tar"));
    let saved = world.kiln(&["save", "-o", archive.to_str().expect("utf-8"), tag]);
    assert_ok(&saved);
    let image = common::Image::from_docker_archive(&archive);
    assert_eq!(image.text(path), text, "{path} in the image");
}

/// `levels` nested directories `d` below `root`, with `leaf` holding `deep` at the bottom.
fn deep_dir(root: &Path, levels: usize) {
    let mut p = root.to_path_buf();
    for _ in 0..levels {
        p.push("d");
    }
    std::fs::create_dir_all(&p).expect("mkdir deep");
    std::fs::write(p.join("leaf"), "deep\n").expect("write leaf");
}

#[test]
fn copy_of_a_deep_context_and_a_deep_stage_builds() {
    // Beyond the depth that overflowed the old recursive context walk and copier (between
    // 100 and 200 levels in a debug build); deeper only costs time, as every lookup in a
    // layer stack walks each level by path.
    const DEPTH: usize = 300;
    for id in identities() {
        let world = World::new(id);
        let dockerfile = format!(
            "{BUSYBOX}COPY d /ctx/d\n\
             FROM scratch\n\
             COPY --from=0 /ctx /ctx\n"
        );
        let ctx = world.context("ctx", &dockerfile);
        // The context is walked (checksums, .dockerignore), copied into a layer, and that
        // layer copied again from the stage.
        deep_dir(&ctx, DEPTH);
        common::open_up(&ctx);
        let out = world.build(&ctx, &["-t", "deepcopy"]);
        assert_ok(&out);
        let leaf = format!("ctx/{}/leaf", deep_path(DEPTH));
        assert_image_file(&world, "deepcopy", &leaf, "deep\n");
    }
}

#[test]
fn prune_removes_a_deep_snapshot() {
    // Deeper than PATH_MAX below the store and than recursion (std's remove_dir_all
    // recurses) survives: removal must be iterative and fd-relative.
    const DEPTH: usize = 3000;
    for id in identities() {
        let world = World::new(id);
        let dockerfile = format!(
            "{BUSYBOX}RUN i=0; while [ $i -lt {DEPTH} ]; do mkdir d && cd d; i=$((i+1)); done; \
             chmod 0555 /d\n"
        );
        let ctx = world.context("ctx", &dockerfile);
        let out = world.build(&ctx, &["-t", "deep"]);
        if !out.status.success() {
            // Too deep for this store's path to build: refused cleanly is the other outcome.
            assert_refused(&out);
            continue;
        }
        assert_ok(&world.kiln(&["rmi", "deep"]));
        let pruned = world.kiln(&["prune", "--all"]);
        assert_ok(&pruned);
        let snapshots = world.store().join("snapshots");
        let left: Vec<_> = std::fs::read_dir(&snapshots)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            left.iter().all(|p| !p.join("d").exists()),
            "the deep snapshot survived prune: {left:?}"
        );
    }
}

/// A bind mount from a stage names a path inside that stage's layers, which earlier steps
/// wrote: neither a symlink they planted nor `..` may turn it into a host directory.
#[test]
fn bind_mount_from_a_stage_never_reaches_the_host() {
    const SECRET: &str = "KILN-BIND-SECRET-51c2";
    for id in identities() {
        let world = World::new(id);
        let host = world.tmp.path().join("host-dir");
        std::fs::create_dir(&host).expect("mkdir");
        std::fs::write(host.join("secret"), SECRET).expect("write");
        common::open_up(&host);
        let base = BUSYBOX.replacen("FROM scratch", "FROM scratch AS base", 1);
        let climb = format!("/{}{}", "../".repeat(40), host.display());
        for (name, source) in [("symlink", "/x".to_string()), ("dotdot", climb)] {
            let dockerfile = format!(
                "{base}RUN ln -s {h} /x\n\
                 FROM base\n\
                 RUN --mount=type=bind,from=base,source={source},target=/mnt \
                 cat /mnt/secret || true\n\
                 RUN --mount=type=cache,id={name},from=base,source={source},target=/c \
                 cat /c/secret || true\n",
                h = host.display(),
            );
            let ctx = world.context(&format!("ctx-{name}"), &dockerfile);
            let out = world.build(&ctx, &[]);
            assert!(
                !both(&out).contains(SECRET),
                "a {name} bind source reached the host: {}",
                both(&out)
            );
            if !out.status.success() {
                assert_refused(&out);
            }
        }
    }
}
