//! A process killed (SIGKILL) at any instant leaves a store the next run uses as is: no
//! partial blob under its final name, a refs file that always parses.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_store::{ImageRef, Store, sha256_digest};

/// Child half: loops writing blobs and refs until killed. Does nothing unless started by
/// a test below (KILN_CACHE_KILL_ROOT set).
#[test]
fn child_store_writer_until_killed() {
    let Some(root) = std::env::var_os("KILN_CACHE_KILL_ROOT") else {
        return;
    };
    let s = Store::open(std::path::Path::new(&root)).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for i in 0u64.. {
        let mut w = s.blob_writer().unwrap();
        for _ in 0..16 {
            w.write_all(&chunk).unwrap();
        }
        w.write_all(&i.to_le_bytes()).unwrap();
        w.commit().unwrap();
        s.set_ref(
            &format!("app:{}", i % 50),
            ImageRef {
                index: None,
                manifest: sha256_digest(&i.to_le_bytes()),
                config: sha256_digest(b"config"),
            },
        )
        .unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_broken_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_store_writer_until_killed",
                "--test-threads=1",
            ])
            .env("KILN_CACHE_KILL_ROOT", &root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + round * 37));
        child.kill().unwrap();
        child.wait().unwrap();

        let s = Store::open(&root).unwrap();
        // Every blob under its final name is complete: its content hashes to its name.
        for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            let bytes = s.read_blob(&digest).expect("blob is complete");
            assert_eq!(bytes.len(), 16 * 64 * 1024 + 8);
        }
        // The refs file always parses.
        let refs = s.list_refs().unwrap();
        assert!(refs.len() <= 50);
        // The store keeps working.
        let info = s
            .put_blob_bytes(format!("after round {round}").as_bytes())
            .unwrap();
        assert!(s.has_blob(&info.digest));
        std::fs::remove_file(s.blob_path(&info.digest).unwrap()).unwrap();
    }
    // The children did get work done before being killed (the test is not vacuous).
    let s = Store::open(&root).unwrap();
    assert!(!s.list_refs().unwrap().is_empty());
    assert!(
        std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .count()
            > 0
    );
}
