//! Round trips against a real plain-HTTP `docker-registry` on 127.0.0.1: push from one
//! store, pull into a fresh one, skopeo reads what kiln pushed and kiln pulls what skopeo
//! pushed, cross-repository mounts, and the failures (unknown image, tampered blob,
//! registry down mid-push) leave nothing half-written or tagged.

mod support;

use std::sync::{Arc, Mutex};

use kiln_registry::{Progress, RegistryError, RegistryOptions, pull_into_store, push_from_store};
use support::*;

fn recording(opts: &mut RegistryOptions) -> Arc<Mutex<Vec<Progress>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    opts.progress = Some(Arc::new(move |p| l2.lock().unwrap().push(p)));
    log
}

#[test]
fn push_then_pull_into_a_fresh_store_gives_the_same_digests_and_bytes() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let (_a, src) = new_store();
    let image = make_image(&src, "app:1", 1, &[200_000, 3_000_000, 10]);
    let dest = format!("{}/team/app:1", reg.host());
    let mut opts = isolated_opts(home.path());
    // Small chunks so the 3 MB layer goes up in PATCH chunks, the rest monolithic.
    opts.monolithic_max = 1 << 20;
    opts.chunk_size = 1 << 20;
    let log = recording(&mut opts);
    let pushed = push_from_store(&src, "app:1", &dest, &opts).unwrap();
    assert_eq!(pushed.digest, image.manifest);
    assert!(reg.has_tag("team/app", "1"));
    let uploaded = log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| matches!(p, Progress::BlobDone { .. }))
        .count();
    assert_eq!(uploaded, 4, "3 layers + config uploaded");

    // A second push finds every blob there already.
    log.lock().unwrap().clear();
    push_from_store(&src, "app:1", &dest, &opts).unwrap();
    let existed = log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| matches!(p, Progress::BlobExists { .. }))
        .count();
    assert_eq!(existed, 4);

    let (_b, dst) = new_store();
    let pulled = pull_into_store(&dst, &dest, &isolated_opts(home.path())).unwrap();
    assert_eq!(pulled.image, image);
    assert_eq!(pulled.local_name, dest);
    assert_eq!(dst.get_ref(&dest).unwrap(), Some(image.clone()));
    let manifest = kiln_image::parse_manifest(&dst.read_blob(&image.manifest).unwrap()).unwrap();
    for l in &manifest.layers {
        assert_eq!(
            std::fs::read(dst.blob_path(&l.digest).unwrap()).unwrap(),
            std::fs::read(src.blob_path(&l.digest).unwrap()).unwrap()
        );
    }
    assert!(tmp_files(&dst).is_empty());

    // By digest too.
    let (_c, dst2) = new_store();
    let by_digest = format!("{}/team/app@{}", reg.host(), image.manifest);
    let pulled = pull_into_store(&dst2, &by_digest, &isolated_opts(home.path())).unwrap();
    assert_eq!(pulled.image, image);
}

#[test]
fn push_to_another_repository_mounts_blobs_instead_of_uploading() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let (_a, src) = new_store();
    make_image(&src, "app:1", 2, &[100_000, 50_000]);
    let opts = isolated_opts(home.path());
    push_from_store(&src, "app:1", &format!("{}/one/app:1", reg.host()), &opts).unwrap();
    let mut opts = isolated_opts(home.path());
    let log = recording(&mut opts);
    push_from_store(&src, "app:1", &format!("{}/two/app:1", reg.host()), &opts).unwrap();
    let log = log.lock().unwrap();
    let mounted: Vec<&Progress> = log
        .iter()
        .filter(|p| matches!(p, Progress::BlobMounted { from, .. } if from == "one/app"))
        .collect();
    assert_eq!(mounted.len(), 3, "{log:?}");
    assert!(reg.has_tag("two/app", "1"));
}

#[test]
fn skopeo_reads_what_kiln_pushed_and_kiln_pulls_what_skopeo_pushed() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let (_a, src) = new_store();
    let image = make_image(&src, "app:1", 3, &[300_000, 1000]);
    let opts = isolated_opts(home.path());
    push_from_store(&src, "app:1", &format!("{}/app:1", reg.host()), &opts).unwrap();

    // skopeo copy registry → oci dir: it verifies every digest on the way.
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("/usr/bin/skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/app:1", reg.host()))
        .arg(format!("oci:{}:app", out.path().join("layout").display()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("layout/index.json")).unwrap())
            .unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.manifest.as_str());

    // skopeo copy oci dir → registry under another name; kiln pulls it.
    let status = std::process::Command::new("/usr/bin/skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:app", out.path().join("layout").display()))
        .arg(format!("docker://{}/from-skopeo:v2", reg.host()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (_b, dst) = new_store();
    let pulled = pull_into_store(&dst, &format!("{}/from-skopeo:v2", reg.host()), &opts).unwrap();
    assert_eq!(pulled.image.config, image.config);
    let config = kiln_image::parse_config(&dst.read_blob(&pulled.image.config).unwrap()).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 2);
}

#[test]
fn pulling_an_unknown_image_is_a_clear_error_and_tags_nothing() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let (_a, dst) = new_store();
    let reference = format!("{}/nope:1", reg.host());
    let err = pull_into_store(&dst, &reference, &isolated_opts(home.path())).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "registry {}: manifest nope:1 not found (GET http://{}/v2/nope/manifests/1 returned 404:",
            reg.host(),
            reg.host()
        )),
        "{text}"
    );
    assert!(
        text.contains("MANIFEST_UNKNOWN") || text.contains("NAME_UNKNOWN"),
        "{text}"
    );
    assert!(dst.list_refs().unwrap().is_empty());
}

#[test]
fn a_tampered_blob_in_the_registry_fails_the_pull_and_stores_nothing_of_it() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let (_a, src) = new_store();
    let image = make_image(&src, "app:1", 4, &[100_000]);
    let opts = isolated_opts(home.path());
    let dest = format!("{}/app:1", reg.host());
    push_from_store(&src, "app:1", &dest, &opts).unwrap();
    let manifest = kiln_image::parse_manifest(&src.read_blob(&image.manifest).unwrap()).unwrap();
    let layer = &manifest.layers[0].digest;
    let data = reg.blob_data_path(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let (_b, dst) = new_store();
    let err = pull_into_store(&dst, &dest, &opts).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(
        text.starts_with(&format!(
            "registry {}: blob {layer} of app is corrupt: expected {layer}, content hashes to sha256:",
            reg.host()
        )),
        "{text}"
    );
    assert!(!dst.has_blob(layer));
    assert!(!dst.has_blob(&image.manifest));
    assert!(dst.list_refs().unwrap().is_empty());
    assert!(tmp_files(&dst).is_empty());
}

#[test]
fn registry_down_mid_push_fails_clearly_and_tags_nothing() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let (_a, src) = new_store();
    make_image(&src, "big:1", 5, &[4_000_000]);
    // The proxy forwards 1 MB of requests, then the "registry" is gone.
    let proxy = CuttingProxy::start(reg.port, 1 << 20);
    let dest = format!("127.0.0.1:{}/big:1", proxy.port);
    let err = push_from_store(&src, "big:1", &dest, &isolated_opts(home.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!("registry 127.0.0.1:{}: ", proxy.port))
            && text.contains("/v2/big/blobs/uploads/"),
        "{text}"
    );
    assert!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst));
    assert!(
        !reg.has_tag("big", "1"),
        "nothing tagged after a failed push"
    );
}

#[test]
fn pushing_an_image_the_store_lacks_names_it() {
    let home = tempfile::tempdir().unwrap();
    let (_a, src) = new_store();
    let err = push_from_store(
        &src,
        "ghost:1",
        "127.0.0.1:1/ghost:1",
        &isolated_opts(home.path()),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "ghost:1: no such image in the store");
}

#[test]
fn build_cache_records_round_trip_through_the_registry_into_a_fresh_store() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let opts = isolated_opts(home.path());
    let (_a, src) = new_store();
    let (layer, diff_id) = make_layer(&src, 77, 50_000);
    let with_layer = kiln_store::CacheRecord {
        created: 1,
        layer: Some(kiln_store::LayerRef {
            diff_id,
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
        }),
    };
    let metadata_only = kiln_store::CacheRecord {
        created: 2,
        layer: None,
    };
    let (k1, k2) = ("a".repeat(64), "b".repeat(64));
    let records = vec![
        (k1.clone(), with_layer.clone()),
        (k2.clone(), metadata_only.clone()),
    ];
    let dest = format!("{}/cache/app:buildcache", reg.host());
    kiln_registry::push_cache(&src, &records, &dest, &opts).unwrap();

    let (_b, dst) = new_store();
    assert_eq!(kiln_registry::pull_cache(&dst, &dest, &opts).unwrap(), 2);
    assert_eq!(dst.get_record(&k1).unwrap(), Some(with_layer));
    assert_eq!(dst.get_record(&k2).unwrap(), Some(metadata_only));
    assert!(dst.has_blob(&layer.digest));

    // An image is not a cache.
    make_image(&src, "img:1", 78, &[10]);
    let img = format!("{}/cache/img:1", reg.host());
    push_from_store(&src, "img:1", &img, &opts).unwrap();
    let err = kiln_registry::pull_cache(&dst, &img, &opts).unwrap_err();
    assert!(err.to_string().contains("not a kiln build cache"), "{err}");
}
