//! A layer written against a stored blob it withholds from (`ChunkReuse::withholding`): a
//! stored blob that cannot be read once its start is needed fails the write with an error
//! the caller recognizes (`LayerWriteError::is_stored_blob_unreadable`), so it can write
//! the layer again without it; any other failure is not taken for one.

use kiln_image::layer::{ChunkReuse, Compression, LayerOptions, write_layer};
use std::fs;
use std::sync::Arc;

fn opts(reuse: Option<Arc<ChunkReuse>>) -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        source_date_epoch: Some(1_000_000_000),
        level: None,
        reuse,
        xattr_free: None,
    }
}

/// Moderately compressible bytes, different for each `seed`.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdef"[(x % 16) as usize]
        })
        .collect()
}

#[test]
fn a_stored_blob_that_cannot_be_read_when_needed_is_an_error_the_caller_recognizes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layer");
    fs::create_dir(&dir).unwrap();
    for i in 0..4 {
        fs::write(dir.join(format!("f{i}")), bytes(i, 1_500_000)).unwrap();
    }
    let mut blob = Vec::new();
    let first = write_layer(&dir, &mut blob, &opts(None)).unwrap();
    assert!(first.chunks.len() >= 4, "{} chunks", first.chunks.len());
    let path = t.path().join("blob");
    fs::write(&path, &blob).unwrap();

    // Read whole, the same files are the stored blob: nothing written.
    let reuse = ChunkReuse::new(&first.chunks, fs::File::open(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    let same = write_layer(&dir, &mut out, &opts(Some(Arc::new(reuse.withholding())))).unwrap();
    assert!(same.reused_blob && out.is_empty());
    assert_eq!((same.diff_id, same.digest), (first.diff_id, first.digest));

    // The last file edited: the stream needs the blob's start, which is gone by then.
    fs::write(dir.join("f3"), bytes(99, 1_500_000)).unwrap();
    let reuse = ChunkReuse::new(&first.chunks, fs::File::open(&path).unwrap()).unwrap();
    let reuse = Arc::new(reuse.withholding());
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(64)
        .unwrap();
    let err = write_layer(&dir, Vec::new(), &opts(Some(reuse))).unwrap_err();
    assert!(err.is_stored_blob_unreadable(), "{err}");

    // A layer file that cannot be read is another failure.
    let gone = t.path().join("gone");
    let err = write_layer(&gone, Vec::new(), &opts(None)).unwrap_err();
    assert!(!err.is_stored_blob_unreadable(), "{err}");
}
