//! Content-addressed blobs: `blobs/sha256/<hex>`, written through [`BlobWriter`].
//!
//! A blob is hashed while it streams into a temp file under `tmp/`; on commit the file is
//! fsynced and renamed under its digest ([`kiln_base::atomic::persist`]). A writer dropped without commit deletes its temp
//! file, and a killed process leaves at most a temp file that prune removes later: a file
//! under `blobs/` is always complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use kiln_image::limits::{self, CappedReadError, MAX_JSON_SIZE};
use sha2::{Digest as _, Sha256};

use crate::digest::parse_digest;
use crate::error::{Result, StoreError};
use crate::fsutil::{io_err, unique_name};
use crate::store::Store;
use kiln_base::digest::Digest;

/// What a committed blob is: its digest (`sha256:<hex>`) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
}

/// Streams bytes into the store, hashing as it goes. Commit with [`BlobWriter::commit`] or
/// [`BlobWriter::commit_verified`]; dropping it discards the bytes.
#[derive(Debug)]
pub struct BlobWriter {
    store: Store,
    file: Option<File>,
    tmp_path: PathBuf,
    /// `None` when the caller hashes every byte on its way in ([`Store::blob_writer_hashed_by_caller`]).
    hasher: Option<Sha256>,
    size: u64,
    /// The blob's pages start for the disk as they are written, not all at the sync.
    writeback: kiln_base::writeback::Stream,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = file.write(buf)?;
        self.writeback.wrote(file, n as u64);
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// fsyncs and moves the blob under its digest. If the store already has that blob the
    /// temp file is dropped instead (content addressing makes them identical).
    pub fn commit(self) -> Result<BlobInfo> {
        self.finish(None)
    }

    /// Like [`BlobWriter::commit`], but fails with [`StoreError::DigestMismatch`] and
    /// stores nothing if the content does not hash to `expected_digest`.
    pub fn commit_verified(self, expected_digest: &str) -> Result<BlobInfo> {
        parse_digest(expected_digest)?;
        let expected = expected_digest.to_string();
        self.finish(Some(expected))
    }

    /// Checks that the bytes hash to `expected_digest` and leaves them in the temp file,
    /// not yet synced: [`Store::commit_new_layer`] syncs them with the layer's other parts
    /// and then calls [`BlobWriter::place_synced`]. Call once.
    pub(crate) fn verify(&mut self, expected_digest: &str) -> Result<BlobInfo> {
        parse_digest(expected_digest)?;
        let digest = self.digest(Some(expected_digest))?;
        if expected_digest != digest.as_str() {
            return Err(StoreError::DigestMismatch {
                expected: expected_digest.to_string(),
                actual: digest.into_string(),
            });
        }
        Ok(BlobInfo {
            digest: digest.into_string(),
            size: self.size,
        })
    }

    /// After [`BlobWriter::verify`] and a sync of the filesystem: renames the temp file under
    /// `info`'s digest (unless the store has that blob), leaving the rename to be synced.
    pub(crate) fn place_synced(mut self, info: &BlobInfo) -> Result<()> {
        let hex = parse_digest(&info.digest)?;
        let final_path = self.store.blobs_dir().join(hex);
        self.file.take();
        if final_path.exists() {
            return Ok(()); // Drop removes the temp file.
        }
        fs::rename(&self.tmp_path, &final_path).map_err(io_err("commit blob as", final_path))
    }

    /// The digest of what was written: hashed here, or (for a writer the caller hashes)
    /// the caller's `expected`.
    fn digest(&mut self, expected: Option<&str>) -> Result<Digest> {
        match (self.hasher.take(), expected) {
            (Some(hasher), _) => Ok(Digest::from_hasher(hasher)),
            (None, Some(expected)) => {
                Digest::parse(expected).map_err(|e| StoreError::InvalidDigest { digest: e.0 })
            }
            (None, None) => Err(StoreError::Io {
                op: "commit blob",
                path: self.tmp_path.clone(),
                source: io::Error::other("a writer hashed by its caller needs the digest"),
            }),
        }
    }

    fn finish(mut self, expected: Option<String>) -> Result<BlobInfo> {
        let digest = self.digest(expected.as_deref())?;
        let info = BlobInfo {
            digest: digest.to_string(),
            size: self.size,
        };
        if let Some(expected) = expected
            && expected != digest.as_str()
        {
            // Drop (below) removes the temp file.
            return Err(StoreError::DigestMismatch {
                expected,
                actual: digest.into_string(),
            });
        }
        let Some(file) = self.file.take() else {
            return Err(StoreError::Io {
                op: "commit blob",
                path: self.tmp_path.clone(),
                source: io::Error::other("blob writer already finished"),
            });
        };
        let final_path = self.store.blobs_dir().join(digest.hex());
        if final_path.exists() {
            drop(file);
            let _ = fs::remove_file(&self.tmp_path);
            return Ok(info);
        }
        kiln_base::atomic::persist(file, &self.tmp_path, &final_path)
            .map_err(io_err("commit blob as", final_path.clone()))?;
        Ok(info)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Uncommitted (or failed) writers clean up; after a successful rename the temp
        // path no longer exists and this is a no-op.
        self.file.take();
        let _ = fs::remove_file(&self.tmp_path);
    }
}

impl Store {
    /// A new writer whose bytes become a blob on commit.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp_path = self.scratch_dir()?.join(unique_name("blob"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(io_err("create", tmp_path.clone()))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            tmp_path,
            hasher: Some(Sha256::new()),
            size: 0,
            writeback: Default::default(),
        })
    }

    /// A writer for bytes the caller hashes on their way in (the layer writer hashes its
    /// output for the manifest): committed with the caller's digest
    /// ([`BlobWriter::commit_verified`]) instead of hashing every byte a second time.
    pub fn blob_writer_hashed_by_caller(&self) -> Result<BlobWriter> {
        let mut writer = self.blob_writer()?;
        writer.hasher = None;
        Ok(writer)
    }

    /// Stores `bytes` as a blob.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<BlobInfo> {
        self.put_bytes(bytes, true)
    }

    /// Stores `bytes` as a blob as [`Store::put_blob_bytes`] does, but in a boot whose
    /// layers are published unsynced (`durability`) without its own fsyncs: the caller's
    /// [`Store::sync_records`] makes it durable with the build's layers before anything
    /// durable (an image name) refers to it, and a power cut before that is found at the
    /// next boot's first open, as for a layer blob. A build's image config and manifest
    /// spent four fsyncs here (about 10 ms on a disk where each is 2-3 ms).
    pub fn put_blob_bytes_unsynced(&self, bytes: &[u8]) -> Result<BlobInfo> {
        self.put_bytes(bytes, !self.defer_sync())
    }

    /// [`Store::put_blob_bytes`], fsynced when `sync`, else renamed into place and left to
    /// [`Store::sync_records`].
    fn put_bytes(&self, bytes: &[u8], sync: bool) -> Result<BlobInfo> {
        let info = BlobInfo {
            digest: Digest::of(bytes).into_string(),
            size: bytes.len() as u64,
        };
        // A blob already stored (a rebuild's config and manifest) needs no temp file.
        if self.has_blob(&info.digest) {
            return Ok(info);
        }
        // Hashed just above: the writer need not hash the bytes a second time.
        let mut w = self.blob_writer_hashed_by_caller()?;
        w.write_all(bytes)
            .map_err(io_err("write", w.tmp_path.clone()))?;
        if sync {
            return w.commit_verified(&info.digest);
        }
        self.unsynced
            .store(true, std::sync::atomic::Ordering::SeqCst);
        w.place_synced(&info)?;
        Ok(info)
    }

    /// Path of the blob named `digest` (which may not exist). Fails on a malformed digest.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(parse_digest(digest)?))
    }

    /// True if the blob is present. A malformed digest is never present.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Size in bytes of a stored blob.
    pub fn blob_size(&self, digest: &str) -> Result<u64> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.to_string(),
            }),
            Err(source) => Err(StoreError::Io {
                op: "stat",
                path,
                source,
            }),
        }
    }

    /// Opens a blob for streaming (not verified; large layers are verified where they are
    /// consumed, e.g. by hashing while unpacking).
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound {
                    digest: digest.to_string(),
                }
            } else {
                StoreError::Io {
                    op: "open",
                    path,
                    source,
                }
            }
        })
    }

    /// Reads a whole blob and verifies its sha256 (meant for small JSON blobs: manifests,
    /// configs, indexes). A tampered or truncated blob is [`StoreError::CorruptBlob`]; one
    /// over [`MAX_JSON_SIZE`] is [`StoreError::TooLarge`] and is not read.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let f = self.open_blob(digest)?;
        let too_large = |cause| StoreError::TooLarge {
            digest: digest.to_string(),
            cause,
        };
        let len = f.metadata().map_err(io_err("stat", path.clone()))?.len();
        limits::check_size("as a manifest, index or config it", len, MAX_JSON_SIZE)
            .map_err(too_large)?;
        let buf = match limits::read_capped(f, MAX_JSON_SIZE, "as a manifest, index or config it") {
            Ok(buf) => buf,
            Err(CappedReadError::TooLarge(e)) => return Err(too_large(e)),
            Err(CappedReadError::Io { source, .. }) => return Err(io_err("read", path)(source)),
        };
        let actual = crate::digest::sha256_digest(&buf);
        if actual != digest {
            return Err(StoreError::CorruptBlob {
                digest: digest.to_string(),
                actual,
                path,
            });
        }
        Ok(buf)
    }
}
