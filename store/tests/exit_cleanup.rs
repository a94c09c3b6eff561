//! What `remove_own_scratch` (kiln's SIGINT/SIGTERM path, which runs no destructors)
//! leaves: nothing of this process's, in the store's scratch or on the staging tmpfs. In a
//! test binary of its own, since it removes every scratch directory of the process.

use kiln_store::{Store, remove_own_scratch};

#[test]
fn remove_own_scratch_removes_store_scratch_and_tmpfs_staging() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let staging = s.snapshot_staging().unwrap();
    std::fs::write(staging.path().join("f"), b"half a layer").unwrap();
    let scratch = s.scratch_dir().unwrap();
    // As at an exit that runs no destructors.
    std::mem::forget(staging);
    let tmpfs = s.tmpfs_staging().unwrap().map(|t| {
        let path = t.path().to_path_buf();
        std::mem::forget(t);
        path
    });
    remove_own_scratch();
    assert!(!scratch.exists(), "{}", scratch.display());
    if let Some(path) = tmpfs {
        assert!(!path.exists(), "{}", path.display());
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
