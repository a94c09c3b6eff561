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

/// How many JSON-looking entries `kiln load` keeps in memory from one archive. A
/// `docker save` of an image has two per layer at most (legacy `<id>/json` and
/// `blobs/sha256/...`) plus a handful; 65,536 fits hundreds of large images.
pub const MAX_ARCHIVE_JSON_ENTRIES: usize = 1 << 16;

/// How many bytes of JSON-looking entries `kiln load` keeps in memory in total.
pub const MAX_ARCHIVE_JSON_TOTAL: u64 = 128 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;

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
