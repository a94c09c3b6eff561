//! Fuzz target: arbitrary bytes as the archive `kiln load` reads (a docker-archive or OCI
//! archive tar, gzip or zstd by magic), through `read_archive` into a sink that checks
//! digests and keeps nothing. Any panic is a finding; an `Err` is fine.
#![no_main]

use std::io::{self, Read, Write};

use kiln_image::{BlobSink, read_archive, sha256_digest};
use libfuzzer_sys::fuzz_target;

/// Verifies each blob as the store would, then drops it.
struct Discard;

impl BlobSink for Discard {
    fn put_blob(&self, reader: &mut dyn Read, expected_digest: &str) -> io::Result<()> {
        let mut bytes = Vec::new();
        // Inputs are at most a few KiB; the cap only keeps a bug from eating memory.
        reader.take(64 << 20).read_to_end(&mut bytes)?;
        if sha256_digest(&bytes) != expected_digest {
            return Err(io::Error::other("digest mismatch"));
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) =
        tempfile::NamedTempFile::new_in("/dev/shm").or_else(|_| tempfile::NamedTempFile::new())
    else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let _ = read_archive(file.path(), &Discard);
});
