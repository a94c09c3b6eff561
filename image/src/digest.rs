//! Readers and writers that hash the bytes flowing through them (so a layer or blob is
//! hashed while it streams, never after being buffered). Formatting and validating digest
//! strings is [`kiln_base::digest`]'s, re-exported here for the crate's users.

use kiln_base::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

pub use kiln_base::digest::{InvalidDigest, digest_hex, sha256_digest};

/// A writer that hashes and counts every byte before passing it on.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    /// None: count only (the caller knows the digest already).
    hasher: Option<Sha256>,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// Wraps `inner`, counting bytes without hashing them: [`HashingWriter::finish`] then
    /// gives an empty digest.
    pub(crate) fn counting(inner: W) -> Self {
        Self {
            inner,
            hasher: None,
            count: 0,
        }
    }

    /// [`HashingWriter::new`] when `hash`, else [`HashingWriter::counting`].
    pub(crate) fn hashing_if(inner: W, hash: bool) -> Self {
        match hash {
            true => Self::new(inner),
            false => Self::counting(inner),
        }
    }

    /// The inner writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the `sha256:` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = self
            .hasher
            .map(|h| Digest::from_hasher(h).into_string())
            .unwrap_or_default();
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts every byte it hands out.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `sha256:` digest of everything read so far, and the byte count.
    pub fn finish(self) -> (String, u64) {
        (Digest::from_hasher(self.hasher).into_string(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads `reader` to its end and returns its digest and size.
pub fn digest_reader(reader: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_sha256() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_and_reader_agree_with_one_shot_digest() {
        let data = vec![7u8; 100_000];
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, data);
        assert_eq!(n, 100_000);
        assert_eq!(d, sha256_digest(&data));
        assert_eq!(digest_reader(&data[..]).unwrap(), (d, 100_000));
    }
}
