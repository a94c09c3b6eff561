//! The store reads manifests, indexes and configs whole; a hostile image or archive can
//! point such a digest at a layer-sized blob. `read_blob` refuses one over
//! `kiln_image::limits::MAX_JSON_SIZE` by its size on disk, before reading it.

use std::io::Write;

use kiln_image::limits::MAX_JSON_SIZE;
use kiln_store::{Store, StoreError};

#[test]
fn a_blob_over_the_json_cap_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut w = store.blob_writer().unwrap();
    let chunk = vec![b'{'; 1 << 20];
    let mut left = MAX_JSON_SIZE + 1;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let big = w.commit().unwrap();
    match store.read_blob(&big.digest) {
        Err(StoreError::TooLarge { digest, cause }) => {
            assert_eq!(digest, big.digest);
            assert_eq!(cause.size, Some(MAX_JSON_SIZE + 1));
            assert_eq!(cause.limit, MAX_JSON_SIZE);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let err = store.read_blob(&big.digest).unwrap_err().to_string();
    assert!(
        err.contains(&big.digest) && err.contains("too large"),
        "{err}"
    );

    // At the cap it is still read.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"{}").unwrap();
    let small = w.commit().unwrap();
    assert_eq!(store.read_blob(&small.digest).unwrap(), b"{}");
}
