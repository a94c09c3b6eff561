//! Garbage collection keeps what refs and cache records use and drops the rest.

use kiln_store::{CacheRecord, ImageRef, LayerRef, PruneOptions, Store, sha256_digest};

struct Image {
    manifest: String,
    config: String,
    layer: String,
    diff_hex: String,
}

/// Stores a one-layer image (layer blob, config with diff_ids, manifest) and its snapshot.
fn put_image(s: &Store, tag: &str, seed: &str) -> Image {
    let layer = s
        .put_blob_bytes(format!("layer-{seed}").as_bytes())
        .unwrap();
    let diff_id = sha256_digest(format!("diff-{seed}").as_bytes());
    let config = s
        .put_blob_bytes(
            format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#).as_bytes(),
        )
        .unwrap();
    let manifest = s
        .put_blob_bytes(
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":{}}},"layers":[{{"digest":"{}","size":{}}}]}}"#,
                config.digest, config.size, layer.digest, layer.size
            )
            .as_bytes(),
        )
        .unwrap();
    let diff_hex = diff_id.strip_prefix("sha256:").unwrap().to_string();
    let st = s.snapshot_staging().unwrap();
    std::fs::write(st.path().join("f"), seed).unwrap();
    s.commit_snapshot(st, &diff_hex).unwrap();
    if !tag.is_empty() {
        s.set_ref(
            tag,
            ImageRef {
                index: None,
                manifest: manifest.digest.clone(),
                config: config.digest.clone(),
            },
        )
        .unwrap();
    }
    Image {
        manifest: manifest.digest,
        config: config.digest,
        layer: layer.digest,
        diff_hex,
    }
}

fn record(s: &Store, key_seed: u8, content: &[u8], created: i64) -> (String, LayerRef) {
    let info = s.put_blob_bytes(content).unwrap();
    let diff_id = sha256_digest(&[content, b"-diff"].concat());
    let diff_hex = diff_id.strip_prefix("sha256:").unwrap().to_string();
    let st = s.snapshot_staging().unwrap();
    std::fs::write(st.path().join("f"), content).unwrap();
    s.commit_snapshot(st, &diff_hex).unwrap();
    let layer = LayerRef {
        diff_id,
        digest: info.digest,
        size: info.size,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    };
    let key = format!("{key_seed:02x}").repeat(32);
    s.put_record(
        &key,
        &CacheRecord {
            layer: Some(layer.clone()),
            created,
        },
    )
    .unwrap();
    (key, layer)
}

#[test]
fn prune_keeps_referenced_and_drops_unreferenced() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let kept = put_image(&s, "app:1", "kept");
    let gone = put_image(&s, "", "gone");
    let (key, cached) = record(&s, 1, b"cached layer", 10);
    let stray = s.put_blob_bytes(b"stray").unwrap();

    let report = s.prune(PruneOptions::default()).unwrap();
    for d in [&kept.manifest, &kept.config, &kept.layer, &cached.digest] {
        assert!(s.has_blob(d), "kept {d}");
    }
    for d in [&gone.manifest, &gone.config, &gone.layer, &stray.digest] {
        assert!(!s.has_blob(d), "dropped {d}");
    }
    assert!(s.has_snapshot(&kept.diff_hex));
    assert!(s.has_snapshot(cached.diff_id.strip_prefix("sha256:").unwrap()));
    assert!(!s.has_snapshot(&gone.diff_hex));
    assert_eq!(report.blobs_removed, 4);
    assert_eq!(report.snapshots_removed, 1);
    assert_eq!(report.records_removed, 0);
    assert!(report.bytes_freed > 0);
    assert!(s.get_record(&key).unwrap().is_some());

    // A second prune has nothing to do.
    let again = s.prune(PruneOptions::default()).unwrap();
    assert_eq!(again, Default::default());
}

#[test]
fn prune_all_drops_cache_records_but_keeps_tagged_images() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let kept = put_image(&s, "app", "kept");
    let (key, cached) = record(&s, 2, b"cached", 10);
    let report = s
        .prune(PruneOptions {
            all: true,
            keep_storage: None,
        })
        .unwrap();
    assert_eq!(report.records_removed, 1);
    assert!(s.get_record(&key).unwrap().is_none());
    assert!(!s.has_blob(&cached.digest));
    assert!(s.has_blob(&kept.layer));
    assert!(s.has_snapshot(&kept.diff_hex));
}

#[test]
fn prune_keep_storage_drops_oldest_records_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let big = vec![b'x'; 10_000];
    let (old_key, old) = record(&s, 3, &[&big[..], b"old"].concat(), 100);
    let (new_key, new) = record(&s, 4, &[&big[..], b"new"].concat(), 200);
    // Each record costs ~20 KB (blob + snapshot file); allow room for one.
    let report = s
        .prune(PruneOptions {
            all: false,
            keep_storage: Some(25_000),
        })
        .unwrap();
    assert_eq!(report.records_removed, 1);
    assert!(s.get_record(&old_key).unwrap().is_none());
    assert!(!s.has_blob(&old.digest));
    assert!(s.get_record(&new_key).unwrap().is_some());
    assert!(s.has_blob(&new.digest));
}

#[test]
fn prune_follows_an_index_to_its_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let inner = put_image(&s, "", "inner");
    let index = s
        .put_blob_bytes(
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":1}}]}}"#,
                inner.manifest
            )
            .as_bytes(),
        )
        .unwrap();
    s.set_ref(
        "multi:1",
        ImageRef {
            index: None,
            manifest: index.digest.clone(),
            config: inner.config.clone(),
        },
    )
    .unwrap();
    s.prune(PruneOptions::default()).unwrap();
    for d in [&index.digest, &inner.manifest, &inner.config, &inner.layer] {
        assert!(s.has_blob(d), "{d}");
    }
    assert!(s.has_snapshot(&inner.diff_hex));
}

#[test]
fn prune_removes_stale_temp_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let old = dir.path().join("tmp/blob-old");
    let fresh = dir.path().join("tmp/blob-fresh");
    let stray_refs = dir.path().join(".refs-1-2-3.tmp");
    std::fs::write(&old, b"x").unwrap();
    std::fs::write(&fresh, b"y").unwrap();
    std::fs::write(&stray_refs, b"{half").unwrap();
    let two_hours_ago = filetime::FileTime::from_unix_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 7200,
        0,
    );
    filetime::set_file_mtime(&old, two_hours_ago).unwrap();
    filetime::set_file_mtime(&stray_refs, two_hours_ago).unwrap();
    s.prune(PruneOptions::default()).unwrap();
    assert!(!old.exists());
    assert!(!stray_refs.exists());
    assert!(dir.path().join("VERSION").exists());
    assert!(fresh.exists());
}

#[test]
fn prune_removes_the_scratch_of_dead_processes_at_once_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    // A process killed mid-RUN: its scratch directory, with nobody holding its lock.
    let dead = dir.path().join("tmp/proc-999999-0-0");
    std::fs::create_dir_all(dead.join("snapshot-1/usr")).unwrap();
    std::fs::write(dead.join("snapshot-1/usr/big"), vec![0u8; 4096]).unwrap();
    // A live one (this process's), with something staged in it.
    let own = s.scratch_dir().unwrap();
    std::fs::write(own.join("blob-staged"), b"in progress").unwrap();
    let report = s.prune(PruneOptions::default()).unwrap();
    assert_eq!(report.scratch_removed, 1);
    assert!(report.bytes_freed >= 4096);
    assert!(!dead.exists());
    assert!(own.join("blob-staged").exists(), "a live scratch is kept");
    // The next build's reclaim finds nothing more.
    assert_eq!(s.reclaim_scratch().unwrap().entries, 0);
}

#[test]
fn prune_waits_for_builds_holding_the_shared_lock() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let stray = s.put_blob_bytes(b"in use by a running build").unwrap();
    let build = s.lock_shared().unwrap();
    let s2 = s.clone();
    let pruner = std::thread::spawn(move || s2.prune(PruneOptions::default()).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!pruner.is_finished(), "prune must wait for the build");
    assert!(s.has_blob(&stray.digest));
    drop(build);
    let report = pruner.join().unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert!(!s.has_blob(&stray.digest));
}

#[test]
fn prune_cleans_side_directories_with_what_they_describe() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = Store::open(root).unwrap();
    let kept = put_image(&s, "app:1", "kept");
    let gone = s.put_blob_bytes(b"unreferenced").unwrap();
    let (live_key, _) = record(&s, 3, b"recorded", 10);

    let sources = root.join("registry/sources");
    std::fs::create_dir_all(&sources).unwrap();
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    std::fs::write(sources.join(hex(&kept.layer)), "example.com/app\n").unwrap();
    std::fs::write(sources.join(hex(&gone.digest)), "example.com/app\n").unwrap();

    let explain = root.join("explain");
    std::fs::create_dir_all(&explain).unwrap();
    std::fs::write(explain.join("aa"), "{}").unwrap();
    std::fs::write(explain.join("aa.key"), &live_key).unwrap();
    std::fs::write(explain.join("bb"), "{}").unwrap();
    std::fs::write(explain.join("bb.key"), "cd".repeat(32)).unwrap();

    let mounts = root.join("cachemounts");
    std::fs::create_dir_all(mounts.join("m1/deep")).unwrap();
    std::fs::write(mounts.join("m1/deep/file"), vec![7u8; 4096]).unwrap();
    std::fs::write(mounts.join("m1.lock"), "").unwrap();

    let report = s.prune(PruneOptions::default()).unwrap();
    assert!(sources.join(hex(&kept.layer)).exists());
    assert!(!sources.join(hex(&gone.digest)).exists());
    assert!(explain.join("aa").exists() && explain.join("aa.key").exists());
    assert!(!explain.join("bb").exists() && !explain.join("bb.key").exists());
    assert!(
        mounts.join("m1/deep/file").exists(),
        "cache mounts stay without --all"
    );
    assert_eq!(report.cache_mounts_removed, 0);

    let report = s
        .prune(PruneOptions {
            all: true,
            keep_storage: None,
        })
        .unwrap();
    assert_eq!(report.cache_mounts_removed, 1);
    assert!(report.bytes_freed >= 4096);
    assert_eq!(std::fs::read_dir(&mounts).unwrap().count(), 0);
    assert!(!explain.join("aa").exists(), "its record went with --all");
}
