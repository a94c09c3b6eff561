//! A store on overlayfs (kiln as root in a container whose `/` is overlayfs): overlayfs
//! refuses the 0:0 character devices a layer directory records deletions with, so a RUN
//! that deletes a file fails there. Until the store can record deletions another way, the
//! build must say why and what to do, not just "Operation not permitted".

mod common;

use common::identity::{BUSYBOX, Identity, World, assert_refused, both, is_root};
use std::process::Command;

/// An overlayfs mount of empty directories under `dir`, unmounted when dropped.
struct Overlay(std::path::PathBuf);

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_deletion_in_a_store_on_overlayfs_says_why_it_fails() {
    if !is_root() {
        eprintln!("note: not root, so no overlayfs to put a store on");
        return;
    }
    let w = World::new(Identity::Root);
    let base = w.tmp.path().join("ovl");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| base.join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .expect("mount");
    if !mounted.success() {
        eprintln!("note: cannot mount overlayfs here; skipped");
        return;
    }
    let _overlay = Overlay(merged.clone());
    let ctx = w.context("ctx", &format!("{BUSYBOX}RUN rm /bin/ls\n"));
    let store = merged.join("store");
    let out = Command::new(common::kiln_bin())
        .arg("--root")
        .arg(&store)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .expect("running kiln");
    assert_refused(&out);
    let log = both(&out);
    assert!(
        log.contains("cannot make a whiteout (a 0:0 character device): the store is on overlayfs"),
        "{log}"
    );
}
