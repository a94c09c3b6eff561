//! The blob index (diff_id + media type → stored blob) and the tmpfs staging area.

use kiln_store::{LayerRef, PruneOptions, Store, sha256_digest};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn indexed(s: &Store, seed: &str, media_type: &str) -> LayerRef {
    let blob = s.put_blob_bytes(format!("blob-{seed}").as_bytes()).unwrap();
    let layer = LayerRef {
        diff_id: sha256_digest(format!("tar-{seed}").as_bytes()),
        digest: blob.digest,
        media_type: media_type.to_string(),
        size: blob.size,
    };
    s.put_layer_blob(&layer).unwrap();
    layer
}

#[test]
fn finds_a_blob_by_diff_id_and_media_type_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let layer = indexed(&s, "a", GZIP);
    assert_eq!(
        s.find_layer_blob(&layer.diff_id, GZIP).unwrap(),
        Some(layer.clone())
    );
    assert_eq!(s.find_layer_blob(&layer.diff_id, ZSTD).unwrap(), None);
    let other = sha256_digest(b"another tar");
    assert_eq!(s.find_layer_blob(&other, GZIP).unwrap(), None);
    assert!(s.find_layer_blob("sha256:../../etc", GZIP).is_err());
    // Reopening the store keeps the index.
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.find_layer_blob(&layer.diff_id, GZIP).unwrap(),
        Some(layer)
    );
}

#[test]
fn an_entry_whose_blob_is_gone_is_a_miss_and_prune_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let layer = indexed(&s, "b", GZIP);
    // Nothing refers to the blob: prune removes it, and with it the index entry.
    s.prune(PruneOptions::default()).unwrap();
    assert!(!s.has_blob(&layer.digest));
    assert_eq!(s.find_layer_blob(&layer.diff_id, GZIP).unwrap(), None);
    let left = std::fs::read_dir(dir.path().join("layers"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[test]
fn a_corrupt_entry_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let layer = indexed(&s, "c", GZIP);
    for entry in std::fs::read_dir(dir.path().join("layers")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"{not json").unwrap();
    }
    assert_eq!(s.find_layer_blob(&layer.diff_id, GZIP).unwrap(), None);
}

#[test]
fn tmpfs_staging_is_on_a_tmpfs_and_removed_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let Some(staging) = s.tmpfs_staging().unwrap() else {
        // No usable tmpfs here: the solver falls back to the store's own staging.
        assert!(kiln_store::tmpfs_staging_base().is_none());
        return;
    };
    let path = staging.path().to_path_buf();
    let st = rustix::fs::statfs(&path).unwrap();
    #[allow(clippy::unnecessary_cast)]
    let f_type = st.f_type as i64;
    assert_eq!(f_type, 0x0102_1994);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "private on a shared tmpfs");
    std::fs::write(path.join("f"), b"x").unwrap();
    drop(staging);
    assert!(!path.exists());
}
