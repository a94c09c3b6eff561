//! A layer whose tar metadata (GNU long names, PAX headers) declares more than
//! `MAX_TAR_METADATA_SIZE` is refused as it streams in, before the tar crate would read
//! that much into memory: gzip turns a few MiB into gigabytes of such a header.

use std::io::Write;

use kiln_image::limits::MAX_TAR_METADATA_SIZE;
use kiln_image::{UnpackError, UnpackOptions, apply_layer, unpack_layer};

/// A gzip layer: one metadata entry of `kind` with `size` bytes of `a`, then a file.
fn layer_with_metadata(kind: u8, size: u64) -> Vec<u8> {
    let mut tar = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.set_path("././@LongLink").unwrap();
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.resize(tar.len() + size.next_multiple_of(512) as usize, b'a');
    let mut b = tar::Builder::new(tar);
    let mut f = tar::Header::new_gnu();
    f.set_size(2);
    f.set_mode(0o644);
    f.set_cksum();
    b.append_data(&mut f, "file", &b"hi"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn oversized_long_names_and_pax_headers_are_refused() {
    for kind in [b'L', b'K', b'x'] {
        let layer = layer_with_metadata(kind, 8 * MAX_TAR_METADATA_SIZE);
        let dir = tempfile::tempdir().unwrap();
        for result in [
            unpack_layer(&layer[..], &dir.path().join("l"), &UnpackOptions::default()),
            apply_layer(&layer[..], &dir.path().join("r"), &UnpackOptions::default()),
        ] {
            match result {
                Err(UnpackError::Stream(e)) => {
                    assert!(e.to_string().contains("too large"), "{e}")
                }
                other => panic!("{}: expected a refusal, got {other:?}", kind as char),
            }
        }
    }
}

#[test]
fn a_long_name_under_the_cap_still_unpacks() {
    let name = format!("{}/{}/file", "d".repeat(150), "e".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, &name, &b"hi"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&tar[..], dir.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"hi");
}
