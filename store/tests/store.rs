//! Store behaviour: layout, atomic blobs, verified reads, snapshots, cache records, refs.

use std::io::Write;
use std::sync::Arc;

use kiln_store::{CacheRecord, ImageRef, LayerRef, Store, StoreError, sha256_digest};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("root")).unwrap();
    (dir, store)
}

/// What `tmp/` holds, looking inside this process's own scratch directory (`proc-*`,
/// which lives as long as the process).
fn tmp_entries(store: &Store) -> Vec<String> {
    let own = store.scratch_dir().unwrap();
    let list = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut v: Vec<String> = list(&store.root().join("tmp"))
        .into_iter()
        .filter(|n| own.file_name().is_none_or(|o| o.to_string_lossy() != *n))
        .chain(list(&own))
        // Empty directories made ahead for the next staging (the store's `ahead`).
        .filter(|n| !n.starts_with(".ahead-"))
        .collect();
    v.sort();
    v
}

#[test]
fn open_creates_layout_and_version_file() {
    let (_d, s) = store();
    for p in ["blobs/sha256", "snapshots", "cache", "tmp"] {
        assert!(s.root().join(p).is_dir(), "{p}");
    }
    assert_eq!(
        std::fs::read_to_string(s.root().join("VERSION")).unwrap(),
        "1\n"
    );
    // Reopening is fine.
    Store::open(s.root()).unwrap();
}

#[test]
fn open_refuses_another_format_version() {
    let (_d, s) = store();
    std::fs::write(s.root().join("VERSION"), "7\n").unwrap();
    let err = Store::open(s.root()).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedVersion { .. }));
    assert!(
        err.to_string()
            .contains("has format version \"7\", this kiln understands version 1")
    );
}

#[test]
fn blob_writer_hashes_and_commits_under_digest() {
    let (_d, s) = store();
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    let info = w.commit().unwrap();
    assert_eq!(info.digest, sha256_digest(b"hello world"));
    assert_eq!(info.size, 11);
    assert!(s.has_blob(&info.digest));
    assert_eq!(s.read_blob(&info.digest).unwrap(), b"hello world");
    assert_eq!(s.blob_size(&info.digest).unwrap(), 11);
    let hex = info.digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        s.blob_path(&info.digest).unwrap(),
        s.root().join("blobs/sha256").join(hex)
    );
    assert!(tmp_entries(&s).is_empty(), "no temp file left behind");
}

#[test]
fn dropped_blob_writer_leaves_nothing() {
    let (_d, s) = store();
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"partial layer").unwrap();
    assert_eq!(tmp_entries(&s).len(), 1);
    drop(w);
    assert!(tmp_entries(&s).is_empty());
    assert!(!s.has_blob(&sha256_digest(b"partial layer")));
    assert_eq!(
        std::fs::read_dir(s.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn commit_verified_rejects_mismatch_and_stores_nothing() {
    let (_d, s) = store();
    let expected = sha256_digest(b"expected");
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"something else").unwrap();
    let err = w.commit_verified(&expected).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "digest mismatch: expected {expected}, got {}",
            sha256_digest(b"something else")
        )
    );
    assert!(!s.has_blob(&sha256_digest(b"something else")));
    assert!(tmp_entries(&s).is_empty());
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"expected").unwrap();
    assert_eq!(w.commit_verified(&expected).unwrap().digest, expected);
}

#[test]
fn a_writer_hashed_by_its_caller_is_named_by_the_callers_digest_and_needs_one() {
    let (_d, s) = store();
    let digest = sha256_digest(b"layer bytes");
    let mut w = s.blob_writer_hashed_by_caller().unwrap();
    w.write_all(b"layer bytes").unwrap();
    let info = w.commit_verified(&digest).unwrap();
    assert_eq!(info.digest, digest);
    assert_eq!(s.read_blob(&digest).unwrap(), b"layer bytes");
    let mut w = s.blob_writer_hashed_by_caller().unwrap();
    w.write_all(b"more").unwrap();
    assert!(w.commit().is_err());
    let mut w = s.blob_writer_hashed_by_caller().unwrap();
    w.write_all(b"more").unwrap();
    assert!(w.commit_verified("sha256:../../etc").is_err());
    assert!(!s.has_blob(&sha256_digest(b"more")));
    assert!(tmp_entries(&s).is_empty());
}

#[test]
fn read_blob_detects_tampering() {
    let (_d, s) = store();
    let info = s.put_blob_bytes(br#"{"schemaVersion":2}"#).unwrap();
    std::fs::write(
        s.blob_path(&info.digest).unwrap(),
        br#"{"schemaVersion":3}"#,
    )
    .unwrap();
    let err = s.read_blob(&info.digest).unwrap_err();
    assert!(matches!(err, StoreError::CorruptBlob { .. }));
    assert!(err.to_string().starts_with(&format!(
        "blob {} is corrupt: its content hashes to sha256:",
        info.digest
    )));
}

#[test]
fn malformed_digests_never_become_paths() {
    let (_d, s) = store();
    for bad in ["sha256:../../etc/passwd", "../x", "sha256:", "md5:abc"] {
        assert!(
            matches!(s.blob_path(bad), Err(StoreError::InvalidDigest { .. })),
            "{bad}"
        );
        assert!(!s.has_blob(bad));
        assert!(s.read_blob(bad).is_err());
    }
    let err = s.read_blob("sha256:zz").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid digest \"sha256:zz\": expected \"sha256:\" followed by 64 lowercase hex characters"
    );
    let missing = sha256_digest(b"nope");
    assert_eq!(
        s.read_blob(&missing).unwrap_err().to_string(),
        format!("blob {missing} not found in the store")
    );
}

#[test]
fn concurrent_writers_of_the_same_blob_all_succeed() {
    let (_d, s) = store();
    let data: Arc<Vec<u8>> = Arc::new((0..200_000u32).flat_map(|i| i.to_le_bytes()).collect());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let mut w = s.blob_writer().unwrap();
                for chunk in data.chunks(4096) {
                    w.write_all(chunk).unwrap();
                }
                w.commit().unwrap()
            })
        })
        .collect();
    let infos: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(infos.iter().all(|i| i == &infos[0]));
    assert_eq!(s.read_blob(&infos[0].digest).unwrap(), *data);
    assert!(tmp_entries(&s).is_empty());
}

#[test]
fn snapshot_commit_is_atomic_and_first_writer_wins() {
    let (_d, s) = store();
    let id = "a".repeat(64);
    let st = s.snapshot_staging().unwrap();
    std::fs::write(st.path().join("file"), b"one").unwrap();
    assert!(!s.has_snapshot(&id), "staging is not visible");
    let p = s.commit_snapshot(st, &id).unwrap();
    assert_eq!(std::fs::read(p.join("file")).unwrap(), b"one");
    // A second builder with the same id: ours is discarded.
    let st2 = s.snapshot_staging().unwrap();
    std::fs::write(st2.path().join("file"), b"two").unwrap();
    let p2 = s.commit_snapshot(st2, &id).unwrap();
    assert_eq!(p, p2);
    assert_eq!(std::fs::read(p.join("file")).unwrap(), b"one");
    // Ours is removed in the background (the store's `discard`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tmp_entries(&s).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            tmp_entries(&s)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Dropped staging dirs vanish.
    let st3 = s.snapshot_staging().unwrap();
    std::fs::create_dir(st3.path().join("sub")).unwrap();
    drop(st3);
    assert!(tmp_entries(&s).is_empty());
    assert_eq!(s.list_snapshots().unwrap(), vec![id]);
}

#[test]
fn snapshot_ids_are_validated() {
    let (_d, s) = store();
    for bad in ["", "../x", "A", "a/b", "-x", "a.b"] {
        assert!(
            matches!(
                s.snapshot_path(bad),
                Err(StoreError::InvalidSnapshotId { .. })
            ),
            "{bad:?}"
        );
        assert!(!s.has_snapshot(bad));
    }
    assert!(s.snapshot_path("layer-1").is_ok());
}

fn layer(s: &Store, content: &[u8]) -> LayerRef {
    let info = s.put_blob_bytes(content).unwrap();
    LayerRef {
        diff_id: sha256_digest(&[content, b"-diff"].concat()),
        digest: info.digest,
        size: info.size,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

#[test]
fn cache_records_round_trip_and_missing_blob_is_a_miss() {
    let (_d, s) = store();
    let key = "1".repeat(64);
    assert_eq!(s.get_record(&key).unwrap(), None);
    let rec = CacheRecord {
        layer: Some(layer(&s, b"layer")),
        created: 1234,
    };
    s.put_record(&key, &rec).unwrap();
    assert_eq!(s.get_record(&key).unwrap(), Some(rec.clone()));
    // Canonical JSON on disk: sorted keys, no whitespace.
    let text = std::fs::read_to_string(s.root().join("cache").join(format!("{key}.json"))).unwrap();
    assert!(
        text.starts_with(r#"{"created":1234,"layer":{"diff_id":"#),
        "{text}"
    );
    std::fs::remove_file(s.blob_path(&rec.layer.as_ref().unwrap().digest).unwrap()).unwrap();
    assert_eq!(s.get_record(&key).unwrap(), None);
    // Records without a layer are fine.
    let empty = CacheRecord {
        layer: None,
        created: 1,
    };
    s.put_record(&key, &empty).unwrap();
    assert_eq!(s.get_record(&key).unwrap(), Some(empty));
    assert!(matches!(
        s.get_record("nothex"),
        Err(StoreError::InvalidCacheKey { .. })
    ));
    assert!(s.put_record("../../x", &rec).is_err());
}

#[test]
fn naming_the_same_image_again_leaves_the_refs_file_and_a_stored_blob_alone() {
    use std::os::unix::fs::MetadataExt;
    let (_d, s) = store();
    let img = |n: u8| ImageRef {
        index: None,
        manifest: sha256_digest(&[n]),
        config: sha256_digest(&[n, n]),
    };
    let refs = s.root().join("refs");
    s.set_ref("app", img(1)).unwrap();
    let first = std::fs::metadata(&refs).unwrap().ino();
    // The same name and image: a no-op rebuild's tag. An atomic rewrite would give a new inode.
    s.set_ref("app", img(1)).unwrap();
    assert_eq!(std::fs::metadata(&refs).unwrap().ino(), first);
    // Another image under the name is written.
    s.set_ref("app", img(2)).unwrap();
    assert_ne!(std::fs::metadata(&refs).unwrap().ino(), first);
    assert_eq!(s.get_ref("app").unwrap(), Some(img(2)));

    let info = s.put_blob_bytes(b"config").unwrap();
    let path = s.blob_path(&info.digest).unwrap();
    let stored = std::fs::metadata(&path).unwrap().ino();
    let again = s.put_blob_bytes(b"config").unwrap();
    assert_eq!(again, info);
    assert_eq!(info.size, 6);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), stored);
    assert!(tmp_entries(&s).is_empty(), "{:?}", tmp_entries(&s));
}

#[test]
fn refs_set_get_list_remove_with_normalization() {
    let (_d, s) = store();
    let img = |n: u8| ImageRef {
        index: None,
        manifest: sha256_digest(&[n]),
        config: sha256_digest(&[n, n]),
    };
    s.set_ref("app", img(1)).unwrap();
    s.set_ref("reg.local:5000/team/tool:v2", img(2)).unwrap();
    assert_eq!(s.get_ref("app:latest").unwrap(), Some(img(1)));
    assert_eq!(s.get_ref("app").unwrap(), Some(img(1)));
    assert_eq!(s.get_ref("other").unwrap(), None);
    assert_eq!(
        s.list_refs().unwrap(),
        vec![
            ("app:latest".to_string(), img(1)),
            ("reg.local:5000/team/tool:v2".to_string(), img(2))
        ]
    );
    assert!(s.remove_ref("app").unwrap());
    assert!(!s.remove_ref("app").unwrap());
    assert_eq!(s.list_refs().unwrap().len(), 1);
    let err = s.set_ref("Bad", img(3)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid reference format \"Bad\": repository name must be lowercase"
    );
    let bad_digest = ImageRef {
        index: None,
        manifest: "sha256:nope".into(),
        config: sha256_digest(b"c"),
    };
    assert!(matches!(
        s.set_ref("x", bad_digest),
        Err(StoreError::InvalidDigest { .. })
    ));
}

#[test]
fn concurrent_ref_updates_from_threads_all_survive() {
    let (_d, s) = store();
    let handles: Vec<_> = (0..16u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                for j in 0..5u8 {
                    s.set_ref(
                        &format!("app{i}:v{j}"),
                        ImageRef {
                            index: None,
                            manifest: sha256_digest(&[i, j]),
                            config: sha256_digest(&[j, i]),
                        },
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let refs = s.list_refs().unwrap();
    assert_eq!(refs.len(), 80);
    assert_eq!(
        s.get_ref("app7:v3").unwrap().unwrap().manifest,
        sha256_digest(&[7, 3])
    );
}

#[test]
fn leftover_temp_files_from_a_killed_process_are_ignored() {
    let (_d, s) = store();
    // What a process killed mid-write leaves: a temp blob and a half-unpacked snapshot.
    std::fs::write(s.root().join("tmp/blob-999-0-0"), b"half a layer").unwrap();
    std::fs::create_dir_all(s.root().join("tmp/snapshot-999-1-0/usr")).unwrap();
    std::fs::write(s.root().join(".refs.tmp-stray"), b"{garbage").unwrap();
    let s = Store::open(s.root()).unwrap();
    assert!(!s.has_blob(&sha256_digest(b"half a layer")));
    assert!(s.list_snapshots().unwrap().is_empty());
    assert!(s.list_refs().unwrap().is_empty());
    let info = s.put_blob_bytes(b"half a layer").unwrap();
    assert_eq!(s.read_blob(&info.digest).unwrap(), b"half a layer");
}

#[test]
fn shared_locks_coexist_and_exclusive_waits() {
    let (_d, s) = store();
    let a = s.lock_shared().unwrap();
    let b = s.lock_shared().unwrap();
    assert!(s.try_lock_exclusive().unwrap().is_none());
    drop(a);
    assert!(s.try_lock_exclusive().unwrap().is_none());
    drop(b);
    let x = s.try_lock_exclusive().unwrap();
    assert!(x.is_some());
}

/// Child half of `ref_updates_from_separate_processes_all_survive`: does nothing unless
/// started by it (with KILN_CACHE_CHILD_ROOT set).
#[test]
fn child_process_ref_writer() {
    let (Some(root), Some(prefix)) = (
        std::env::var_os("KILN_CACHE_CHILD_ROOT"),
        std::env::var("KILN_CACHE_CHILD_PREFIX").ok(),
    ) else {
        return;
    };
    let s = Store::open(std::path::Path::new(&root)).unwrap();
    let _shared = s.lock_shared().unwrap();
    for j in 0..25u8 {
        s.set_ref(
            &format!("{prefix}:v{j}"),
            ImageRef {
                index: None,
                manifest: sha256_digest(&[j]),
                config: sha256_digest(prefix.as_bytes()),
            },
        )
        .unwrap();
    }
}

#[test]
fn ref_updates_from_separate_processes_all_survive() {
    let (_d, s) = store();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|prefix| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_ref_writer", "--test-threads=1"])
                .env("KILN_CACHE_CHILD_ROOT", s.root())
                .env("KILN_CACHE_CHILD_PREFIX", prefix)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let refs = s.list_refs().unwrap();
    assert_eq!(refs.len(), 75, "{refs:?}");
    assert!(refs.iter().any(|(n, _)| n == "three:v24"));
}

/// On ext4 a process's scratch directory asks for its subdirectories (a RUN's overlay
/// dirs, staged copies) to be spread over block groups: `fsutil::spread_subdirectories`.
#[test]
fn a_scratch_directory_spreads_its_subdirectories_on_ext4() {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    let (_d, s) = store();
    let scratch = s.scratch_dir().unwrap();
    let fs_type = rustix::fs::statfs(&scratch).unwrap().f_type as i64;
    if fs_type != EXT4_SUPER_MAGIC {
        eprintln!("skipped: the temporary directory is not on ext4 ({fs_type:#x})");
        return;
    }
    let dir = std::fs::File::open(&scratch).unwrap();
    let flags = rustix::fs::ioctl_getflags(&dir).unwrap();
    assert!(flags.contains(rustix::fs::IFlags::TOPDIR), "{flags:?}");
}
