//! Fuzz target: arbitrary bytes as a layer blob through `unpack_layer` (into an empty
//! layer directory) and `apply_layer` (onto a rootfs the first pass left behind), with
//! the input taken as it is (plain tar, gzip or zstd by magic) or wrapped by the harness
//! in gzip or zstd, so the tar reader sees fuzzed entries behind a valid compressed
//! stream as well as the decompressors seeing fuzzed frames. Any panic, and any write
//! outside the destination, is a finding; an `Err` is fine.
#![no_main]

use std::io::Write;
use std::path::Path;

use kiln_image::{Owners, UnpackOptions, apply_layer, unpack_layer};
use libfuzzer_sys::fuzz_target;

/// The first byte picks the wrapping; the rest is the layer (or its tar stream).
fn layer_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(rest).ok()?;
            gz.finish().ok()?
        }
        _ => zstd::stream::encode_all(rest, 1).ok()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(layer) = layer_bytes(data) else {
        return;
    };
    // tmpfs when there is one: the target creates and removes a tree per run.
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    };
    let Ok(tmp) = tempfile::Builder::new()
        .prefix("kiln-fuzz-")
        .tempdir_in(base)
    else {
        return;
    };
    let dest = tmp.path().join("root");
    // Never chown to the fuzzed ids: a run as root would otherwise hand files away.
    let opts = UnpackOptions {
        owners: Owners::Ignore,
        ..UnpackOptions::default()
    };
    let _ = unpack_layer(&layer[..], &tmp.path().join("layer"), &opts);
    let _ = apply_layer(&layer[..], &dest, &opts);
    // A second application onto the populated rootfs exercises whiteouts, opaque
    // directories and replacements against existing entries.
    let _ = apply_layer(&layer[..], &dest, &opts);
    // Nothing may appear beside the destinations.
    if let Ok(entries) = std::fs::read_dir(tmp.path()) {
        for e in entries.flatten() {
            let name = e.file_name();
            assert!(
                name == "root" || name == "layer",
                "unpack wrote outside its destination: {name:?}"
            );
        }
    }
});
