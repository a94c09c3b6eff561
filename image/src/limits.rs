//! How much of a document kiln will hold in memory when the bytes come from somewhere
//! it does not control: a registry, an archive given to `kiln load`, a base image in
//! the store. Layers stream and are never held whole; the JSON documents around them
//! (manifests, indexes, configs, token responses) are parsed from memory, so each is
//! capped here, and every reader of such a document goes through [`read_capped`] (or
//! checks a declared size with [`check_size`] before reading at all).
//!
//! The caps are generous: real manifests are a few KiB and real configs rarely pass a
//! few hundred KiB. They exist so that a hostile source gets a clear error naming what
//! was too big instead of taking the machine's memory.

use std::io::{self, Read};
use std::time::Duration;

/// How long kiln waits for the next bytes from a server it does not control (a
/// registry, an `ADD <url>`) before it gives up the transfer: `KILN_STALL_TIMEOUT`
/// seconds, else two minutes. Sizes are capped elsewhere; this bounds how long a server
/// that accepts and then stops sending can hold a build. It bounds silence, not the whole
/// transfer: a big layer over a slow link is never cut short while bytes still arrive.
pub fn stall_timeout() -> Duration {
    stall_timeout_from(std::env::var("KILN_STALL_TIMEOUT").ok().as_deref())
}

/// What to say when [`stall_timeout`] ran out.
pub fn stall_message() -> String {
    format!(
        "the server sent nothing for {} s (KILN_STALL_TIMEOUT)",
        stall_timeout().as_secs()
    )
}

/// [`stall_timeout`] for a value of `KILN_STALL_TIMEOUT`: whole seconds, at least one;
/// anything else gives the default.
fn stall_timeout_from(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(120), Duration::from_secs)
}

/// Largest manifest or index accepted: containerd's `MaxManifestSize`
/// (`core/remotes/docker/resolver.go`, `4 * 1048 * 1048`, about 4.2 MB), so kiln
/// refuses no image that containerd or BuildKit would pull. containerd's note there:
/// a 128-layer manifest is about 32 KiB, and large metadata belongs in sub-objects.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1048 * 1048;

/// Largest image config (or remote-cache config) accepted. containerd sets no cap of
/// its own for configs; 16 MiB is far above any real one (a config with a thousand
/// history entries is about 300 KiB) and equal to the cap on any JSON document below.
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// Largest JSON document of any kind kiln reads whole: the store's verified blob
/// reads and an archive's small entries are held to this.
pub const MAX_JSON_SIZE: u64 = 16 << 20;

/// Largest file kiln reads whole out of an image's filesystem: its `/etc/passwd` and
/// `/etc/group`, to resolve `USER` and `--chown` names. BuildKit scans them line by line;
/// 16 MiB is some 200,000 users, and a RUN can make either file any size at all.
pub const MAX_IMAGE_FILE_SIZE: u64 = 16 << 20;

/// How many paths `kiln diff` holds for one image's filesystem (while a layer is read:
/// the lower layers' paths plus that layer's own). Each costs some 300 bytes beyond its
/// strings, and a gzip of a million empty tar entries is a few MB; the largest real
/// images (CUDA, TeX Live, conda stacks) hold a few hundred thousand files.
pub const MAX_IMAGE_FILES: usize = 1 << 20;

/// How many bytes of paths, link targets, content digests and xattrs `kiln diff` holds
/// for one image's filesystem. Each path and link is at most [`MAX_ARCHIVE_NAME`]; a
/// real file costs ~150 bytes here (a path and a 71-byte digest), so 256 MiB fits the
/// largest real images while a layer of long PAX names is refused before it takes GBs.
pub const MAX_IMAGE_TREE_BYTES: u64 = 256 << 20;

/// How many JSON-looking entries `kiln load` keeps in memory from one archive. A
/// `docker save` of an image has two per layer at most (legacy `<id>/json` and
/// `blobs/sha256/...`) plus a handful; 65,536 fits hundreds of large images.
pub const MAX_ARCHIVE_JSON_ENTRIES: usize = 1 << 16;

/// How many bytes of JSON-looking entries `kiln load` keeps in memory in total.
pub const MAX_ARCHIVE_JSON_TOTAL: u64 = 128 << 20;

/// Largest tar metadata entry (GNU long name `L` or long link `K`, PAX header `x` or
/// `g`): Go's `archive/tar` refuses these over `maxSpecialFileSize` (`1 << 20`, read by
/// `readSpecialFile`), so neither docker, containerd nor BuildKit accepts one bigger.
/// The tar crate reads them whole with no cap of its own; see [`TarGuard`].
pub const MAX_TAR_METADATA_SIZE: u64 = 1 << 20;

/// How many files and links `kiln load` keeps track of in one archive (a name, size,
/// digest and the first bytes of each, some 200 bytes): a gzip of millions of empty
/// entries is a few MB. A `docker save` of a large image has a few hundred entries.
pub const MAX_ARCHIVE_ENTRIES: usize = 1 << 18;

/// Longest archive entry name `kiln load` records (PATH_MAX); a longer one cannot be a
/// name a manifest refers to, and is passed over.
pub const MAX_ARCHIVE_NAME: usize = 4096;

/// How many bytes of entry names and symlink targets `kiln load` keeps in total for one
/// archive. Each is at most [`MAX_ARCHIVE_NAME`], but a gzip of a quarter million entries
/// with 4 KiB names and 4 KiB link targets (a few MB on disk) would otherwise be held as
/// 2 GiB. A `docker save` of a large image keeps a few hundred names of ~100 bytes.
pub const MAX_ARCHIVE_NAMES_TOTAL: u64 = 64 << 20;

/// How many manifest and index descriptors `kiln load` walks in one archive, repeats
/// included: `index.json`'s entries plus every nested index's. Each distinct document is
/// parsed once whatever the count, so this bounds the walk itself (and the images an
/// archive can name): 65,536 is hundreds of multi-platform images.
pub const MAX_ARCHIVE_DESCRIPTORS: usize = 1 << 16;

/// A document (or a set of them) larger than kiln accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is too large: {} (kiln's limit is {limit} bytes)", describe(*.size, *.limit))]
pub struct TooLarge {
    /// What was refused, for the message (`manifest busybox:latest`, `config sha256:...`).
    pub what: String,
    /// Its size, when known (declared, or found on disk); `None` when reading stopped at
    /// the limit.
    pub size: Option<u64>,
    /// The limit it broke.
    pub limit: u64,
}

fn describe(size: Option<u64>, limit: u64) -> String {
    match size {
        Some(n) => format!("{n} bytes"),
        None => format!("more than {limit} bytes"),
    }
}

/// Why [`read_capped`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    /// The input went on past the limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// Reading failed.
    #[error("reading {what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Refuses a declared size (a descriptor's, a `Content-Length`, a file's length, a tar
/// header's) over `limit` before anything is read.
pub fn check_size(what: impl Into<String>, size: u64, limit: u64) -> Result<(), TooLarge> {
    if size > limit {
        return Err(TooLarge {
            what: what.into(),
            size: Some(size),
            limit,
        });
    }
    Ok(())
}

/// Reads all of `reader` into memory, at most `limit` bytes: one byte more and it stops
/// with [`TooLarge`] (the declared size of a stream can lie, so the read itself is
/// bounded whatever was checked before).
pub fn read_capped(
    reader: impl Read,
    limit: u64,
    what: impl Into<String>,
) -> Result<Vec<u8>, CappedReadError> {
    let what = what.into();
    let mut buf = Vec::new();
    if let Err(source) = reader.take(limit.saturating_add(1)).read_to_end(&mut buf) {
        return Err(CappedReadError::Io { what, source });
    }
    if buf.len() as u64 > limit {
        return Err(TooLarge {
            what,
            size: None,
            limit,
        }
        .into());
    }
    Ok(buf)
}

/// A tar block.
const BLOCK: usize = 512;

/// Passes a tar stream through unchanged, but fails the read that completes a metadata
/// header (see [`MAX_TAR_METADATA_SIZE`]) declaring more than the cap, before the tar
/// crate allocates and fills a buffer of that size: a few MiB of gzip or zstd would
/// otherwise inflate into gigabytes held in memory.
///
/// Every 512-byte block at a multiple of 512 is looked at (headers always sit there), and
/// only a block with a valid header checksum and a metadata type counts, so file data that
/// happens to be aligned is never mistaken for a header unless it is one (a tar stored
/// whole inside the layer, whose own metadata entry is over the cap, would be refused
/// like the outer one).
#[derive(Debug)]
pub struct TarGuard<R> {
    inner: R,
    /// The bytes of the current block seen so far (`stream position % 512` of them).
    partial: Vec<u8>,
    /// Extension blocks seen so far of the GNU sparse map being read, if one is.
    sparse_chain: Option<u64>,
}

impl<R> TarGuard<R> {
    /// Guards `inner`, which must be at the start of the tar stream.
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            partial: Vec::with_capacity(BLOCK),
            sparse_chain: None,
        }
    }

    /// The guarded reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut data = &buf[..n];
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == BLOCK {
                check_block(&self.partial, &mut self.sparse_chain)?;
                self.partial.clear();
            }
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            check_block(block, &mut self.sparse_chain)?;
        }
        self.partial.extend_from_slice(blocks.remainder());
        Ok(n)
    }
}

/// How many extension blocks a GNU sparse map may have: the map is metadata too (the tar
/// crate keeps 21 entries per block in memory for the file), so it gets the same 1 MiB.
const MAX_SPARSE_EXTENSIONS: u64 = MAX_TAR_METADATA_SIZE / BLOCK as u64;

/// Fails on a valid tar header of a metadata type whose size is over the cap, and on a
/// GNU sparse map with more extension blocks than [`MAX_SPARSE_EXTENSIONS`].
fn check_block(block: &[u8], sparse_chain: &mut Option<u64>) -> io::Result<()> {
    if let Some(seen) = sparse_chain {
        // An extension block of an old GNU sparse map: 21 entries, then the flag saying
        // whether another block follows.
        *seen += 1;
        if *seen > MAX_SPARSE_EXTENSIONS {
            return Err(io::Error::other(TooLarge {
                what: "a tar GNU sparse map".into(),
                size: None,
                limit: MAX_TAR_METADATA_SIZE,
            }));
        }
        if block[504] == 0 {
            *sparse_chain = None;
        }
        return Ok(());
    }
    let kind = match block[156] {
        b'L' => "GNU long name",
        b'K' => "GNU long link name",
        b'x' => "PAX header",
        b'g' => "PAX global header",
        b'S' => "GNU sparse file",
        _ => return Ok(()),
    };
    let Some(stored) = octal(&block[148..156]) else {
        return Ok(());
    };
    // The checksum is the byte sum with its own field counted as spaces.
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored {
        return Ok(());
    }
    if block[156] == b'S' {
        // The header's `isextended` flag: extension blocks follow it.
        if block[482] != 0 {
            *sparse_chain = Some(0);
        }
        return Ok(());
    }
    let Some(size) = tar_size(&block[124..136]) else {
        return Ok(());
    };
    check_size(format!("a tar {kind} entry"), size, MAX_TAR_METADATA_SIZE).map_err(io::Error::other)
}

/// An octal tar number field (spaces and NULs around it allowed).
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// A size field: octal, or base-256 (high bit of the first byte set) as GNU writes
/// sizes over 8 GiB; anything past 64 bits counts as the largest size.
fn tar_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 == 0 {
        return octal(field);
    }
    let mut n: u64 = u64::from(field[0] & 0x7f);
    for &b in &field[1..] {
        n = match n.checked_mul(256) {
            Some(v) => v | u64::from(b),
            None => return Some(u64::MAX),
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_timeout_is_whole_seconds_or_two_minutes() {
        assert_eq!(stall_timeout_from(Some("5")), Duration::from_secs(5));
        assert_eq!(stall_timeout_from(None), Duration::from_secs(120));
        assert_eq!(stall_timeout_from(Some("0")), Duration::from_secs(120));
        assert_eq!(stall_timeout_from(Some("soon")), Duration::from_secs(120));
    }

    #[test]
    fn a_read_stops_one_byte_past_the_limit() {
        let ok = read_capped(&[7u8; 10][..], 10, "ten bytes").unwrap();
        assert_eq!(ok.len(), 10);
        let endless = io::repeat(b'{');
        match read_capped(endless, 10, "manifest x") {
            Err(CappedReadError::TooLarge(e)) => {
                assert_eq!(e.size, None);
                assert_eq!(e.limit, 10);
                assert_eq!(
                    e.to_string(),
                    "manifest x is too large: more than 10 bytes (kiln's limit is 10 bytes)"
                );
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    /// A tar of one metadata header of `kind` declaring `size`, followed by `body`.
    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").unwrap();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn read_all_through_guard(bytes: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        // A reader handing out `chunk` bytes at a time, so blocks straddle reads.
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        TarGuard::new(Chunked(bytes, chunk)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn oversized_tar_metadata_headers_are_refused_wherever_reads_split() {
        for kind in [b'L', b'K', b'x', b'g'] {
            let big = header(kind, MAX_TAR_METADATA_SIZE + 1);
            for chunk in [1, 100, 512, 4096] {
                let err = read_all_through_guard(&big, chunk).unwrap_err();
                assert!(err.to_string().contains("too large"), "{err}");
            }
            let ok = header(kind, MAX_TAR_METADATA_SIZE);
            assert_eq!(read_all_through_guard(&ok, 7).unwrap(), ok);
        }
        // A big regular file passes, and so does a block that only looks like a header.
        let file = header(b'0', 1 << 40);
        assert!(read_all_through_guard(&file, 512).is_ok());
        let mut forged = header(b'x', 1 << 40);
        forged[0] ^= 1;
        assert!(read_all_through_guard(&forged, 512).is_ok());
        // Not at a block boundary: not a header.
        let mut shifted = vec![0u8; 3];
        shifted.extend_from_slice(&header(b'x', 1 << 40));
        assert!(read_all_through_guard(&shifted, 64).is_ok());
    }

    #[test]
    fn a_gnu_sparse_map_is_held_to_the_metadata_cap() {
        let mut h = tar::Header::new_gnu();
        h.set_path("sparse").unwrap();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.as_gnu_mut().unwrap().isextended[0] = 1;
        h.set_cksum();
        let chain = |blocks: u64, last_ends: bool| {
            let mut t = h.as_bytes().to_vec();
            for i in 0..blocks {
                let mut ext = [0u8; 512];
                ext[504] = u8::from(!(last_ends && i + 1 == blocks));
                t.extend_from_slice(&ext);
            }
            t
        };
        let long = chain(MAX_SPARSE_EXTENSIONS + 1, false);
        let err = read_all_through_guard(&long, 4096).unwrap_err();
        assert!(err.to_string().contains("sparse map"), "{err}");
        // A map that ends in time passes, and blocks after it are headers again.
        let mut ok = chain(MAX_SPARSE_EXTENSIONS, true);
        ok.extend_from_slice(&header(b'L', 10));
        assert!(read_all_through_guard(&ok, 4096).is_ok());
        ok.extend_from_slice(&header(b'L', MAX_TAR_METADATA_SIZE + 1));
        assert!(read_all_through_guard(&ok, 4096).is_err());
    }

    #[test]
    fn base_256_sizes_are_read() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 5;
        assert_eq!(tar_size(&field), Some(5));
        field[1] = 0xff;
        assert_eq!(tar_size(&field), Some(u64::MAX));
        assert_eq!(tar_size(b"00000000017\0"), Some(15));
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_by_name() {
        assert!(check_size("config", 16, 16).is_ok());
        let e = check_size("config sha256:ab", 17, 16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config sha256:ab is too large: 17 bytes (kiln's limit is 16 bytes)"
        );
    }
}
