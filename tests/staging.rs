//! Layers reused by content, and COPY staged as a metadata tree on a tmpfs when its record
//! predicts a stored layer: a `--no-cache` rebuild reuses the stored blobs and snapshots
//! instead of writing them again; snapshots written from a metadata tree give the image
//! an ordinary copy gives (RUN sees the copied bytes); nothing is left on the tmpfs.

mod common;

use common::{Kiln, stdout};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::copy("/bin/busybox", p.join("busybox"))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    fs::create_dir_all(p.join("app/sub")).unwrap();
    fs::write(p.join("app/a"), "alpha\n").unwrap();
    fs::write(p.join("app/sub/b"), "beta\n".repeat(10_000)).unwrap();
    fs::hard_link(p.join("app/a"), p.join("app/a-link")).unwrap();
    std::os::unix::fs::symlink("sub/b", p.join("app/l")).unwrap();
    fs::write(
        p.join("Dockerfile"),
        format!(
            "{BASE}COPY app /app\nCOPY <<EOF /app/inline\nfrom a heredoc\nEOF\nRUN cat /app/a /app/l /app/inline | sha256sum > /sum && stat -c %h /app/a-link > /links && stat -c %a / > /rootmode\n"
        ),
    )
    .unwrap();
    dir
}

/// Builds `ctx` as `staged:1`; returns the image ID and the plain progress output.
fn build_log(kiln: &Kiln, tmpfs: &str, ctx: &Path, no_cache: bool) -> (String, String) {
    let iid = kiln.root.path().join("iid");
    let mut cmd = kiln.cmd();
    cmd.env("KILN_STAGING_TMPFS", tmpfs)
        .args(["build", "--progress", "plain", "--iidfile"])
        .arg(&iid)
        .args(["-t", "staged:1"]);
    if no_cache {
        cmd.arg("--no-cache");
    }
    let out = cmd.arg(ctx).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        fs::read_to_string(iid).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build(kiln: &Kiln, tmpfs: &str, ctx: &Path, no_cache: bool) -> String {
    build_log(kiln, tmpfs, ctx, no_cache).0
}

/// A private directory on /dev/shm (a tmpfs on every machine this project runs on).
fn shm_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").expect("/dev/shm must be a writable tmpfs")
}

/// Removes every snapshot of the store (blobs, records and the blob index stay): the
/// next `--no-cache` build predicts its layers from the records, stages its COPYs as
/// metadata trees and has to write their snapshots from them.
fn drop_snapshots(kiln: &Kiln) {
    let dir = kiln.root.path().join("snapshots");
    fs::remove_dir_all(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
}

#[test]
fn a_staged_copy_gives_the_image_an_ordinary_copy_gives() {
    let ctx = context();
    let shm = shm_dir();
    let tmpfs = shm.path().to_str().unwrap();
    let staged = Kiln::new();
    let id = build(&staged, tmpfs, ctx.path(), false);
    drop_snapshots(&staged);
    let (again, log) = build_log(&staged, tmpfs, ctx.path(), true);
    assert_eq!(again, id);
    assert_eq!(log.matches("reusing stored layer").count(), 5, "{log}");
    assert_eq!(
        fs::read_dir(shm.path()).unwrap().count(),
        0,
        "staging left behind on the tmpfs"
    );
    let plain = Kiln::new();
    assert_eq!(build(&plain, "off", ctx.path(), false), id);

    let image = staged.image("staged:1");
    assert_eq!(image.text("app/sub/b"), "beta\n".repeat(10_000));
    assert_eq!(image.text("app/inline"), "from a heredoc\n");
    // RUN read the copied bytes from the snapshot written out of the metadata tree.
    let mut joined = b"alpha\n".to_vec();
    joined.extend("beta\n".repeat(10_000).as_bytes());
    joined.extend(b"from a heredoc\n");
    let want = format!("{}  -\n", kiln_store::sha256_hex(&joined));
    assert_eq!(image.text("sum"), want);
    assert_eq!(image.text("links"), "2\n");
    assert_eq!(
        image.text("rootmode"),
        "755\n",
        "the staging dir's 0700 stays off /"
    );
}

/// The inode of every layer blob and snapshot of `tag`.
fn layer_inodes(kiln: &Kiln, tag: &str) -> Vec<(String, u64)> {
    let out = kiln.run(&["inspect", tag]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("inspect: {}", stdout(&out));
    });
    let root = kiln.root.path();
    let mut inodes = Vec::new();
    for layer in v["Manifest"]["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let p = root.join("blobs/sha256").join(hex);
        inodes.push((p.display().to_string(), fs::metadata(&p).unwrap().ino()));
    }
    for diff in v["Config"]["rootfs"]["diff_ids"].as_array().unwrap() {
        let hex = diff.as_str().unwrap().trim_start_matches("sha256:");
        let p = root.join("snapshots").join(hex);
        inodes.push((p.display().to_string(), fs::metadata(&p).unwrap().ino()));
    }
    inodes
}

#[test]
fn a_no_cache_rebuild_reuses_stored_blobs_and_snapshots() {
    let ctx = context();
    let shm = shm_dir();
    let kiln = Kiln::new();
    let tmpfs = shm.path().to_str().unwrap();
    let (id, log) = build_log(&kiln, tmpfs, ctx.path(), true);
    assert_eq!(log.matches("writing layer sha256:").count(), 5, "{log}");
    let before = layer_inodes(&kiln, "staged:1");
    assert_eq!(before.len(), 10, "5 layers: blobs and snapshots");

    let (again, log) = build_log(&kiln, tmpfs, ctx.path(), true);
    assert_eq!(again, id);
    assert_eq!(
        log.matches("reusing stored layer sha256:").count(),
        5,
        "{log}"
    );
    assert!(!log.contains("writing layer"), "{log}");
    assert_eq!(layer_inodes(&kiln, "staged:1"), before);
    // Without the tmpfs (COPY staged in the store) the blobs are still reused.
    let (again, log) = build_log(&kiln, "off", ctx.path(), true);
    assert_eq!(again, id);
    assert_eq!(
        log.matches("reusing stored layer sha256:").count(),
        5,
        "{log}"
    );

    // One changed byte gives a new COPY layer, written in full. The steps below it have
    // new keys and no record to predict from, so they are written in one pass too (the
    // heredoc layer's bytes come out the same and land on the stored blob).
    fs::write(ctx.path().join("app/a"), "alphA\n").unwrap();
    let (changed, log) = build_log(&kiln, tmpfs, ctx.path(), true);
    assert_ne!(changed, id);
    assert_eq!(
        log.matches("reusing stored layer sha256:").count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches("writing layer sha256:").count(), 3, "{log}");
    let after = layer_inodes(&kiln, "staged:1");
    assert_eq!(after[..2], before[..2], "the base layers are reused");
    assert_ne!(after[2], before[2]);
}

/// A tmpfs of its own with room for `inodes` inodes (needs root, as the e2e tests have);
/// unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(inodes: u32) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("size=4m,nr_inodes={inodes},mode=1777");
        rustix::mount::mount(
            "kiln-test",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(std::ffi::CString::new(data).unwrap().as_c_str()),
        )
        .expect("mounting a tmpfs (the e2e tests run as root)");
        SmallTmpfs { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn a_full_tmpfs_falls_back_to_staging_in_the_store() {
    let ctx = context();
    for i in 0..200 {
        fs::write(ctx.path().join(format!("app/sub/f{i}")), format!("{i}\n")).unwrap();
    }
    let small = SmallTmpfs::mount(64);
    let kiln = Kiln::new();
    let id = build(&kiln, "off", ctx.path(), false);
    drop_snapshots(&kiln);
    let (again, log) = build_log(&kiln, small.dir.path().to_str().unwrap(), ctx.path(), true);
    assert!(
        log.contains("the tmpfs staging area is full; staging in the store"),
        "{log}"
    );
    assert_eq!(fs::read_dir(small.dir.path()).unwrap().count(), 0);
    assert_eq!(again, id);
}
