//! A new layer stored whole with at most one filesystem sync instead of eight.
//!
//! A step's new layer has three parts: its blob, its blob index entry and its snapshot.
//! Stored one by one, each part costs an fsync of its data and one of its directory (the
//! snapshot a syncfs). [`Store::commit_new_layer`] writes every part under a temp name and
//! renames them into place (each appearing whole or not at all to every reader): a killed
//! process at any instant leaves no part half written under its final name.
//!
//! Against a power cut, the parts' data must reach the disk before anything relies on
//! them. In a boot whose marker is written (`durability`, the usual case) the layer is
//! published at once and the build's one syncfs at its end ([`Store::sync_records`])
//! makes it durable; a power cut before that is found at the next boot's first open,
//! which drops the snapshots published since the last sync and the blobs that do not
//! match their digests. Without a marker, one syncfs makes the parts' data durable
//! before their renames, as every layer once did.
//!
//! The renames themselves are made durable by a later syncfs: a power cut may lose them,
//! while a cache record written after them survives. Such a record names a part that is
//! not there, which its readers take as a miss: a cache hit needs the record's blob (the
//! solver's `ensure_verified`: a snapshot alone is not enough), the blob index checks the
//! blob it names, and a lost snapshot is unpacked again from the blob.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use kiln_base::atomic::AtomicFile;

use crate::blob::BlobWriter;
use crate::digest::canonical_json;
use crate::error::{Result, StoreError};
use crate::fsutil::io_err;
use crate::record::LayerRef;
use crate::snapshot::{StagingDir, sync_filesystem};
use crate::store::Store;

impl Store {
    /// Stores a new layer: the blob `writer` wrote (which must hash to `digest`), indexed as
    /// holding `diff_id` in `media_type`, and `staging` as its snapshot (named by the
    /// diff_id). Returns the layer and its snapshot path; another builder's snapshot of the
    /// same layer wins.
    pub fn commit_new_layer(
        &self,
        mut writer: BlobWriter,
        digest: &str,
        diff_id: &str,
        media_type: &str,
        staging: StagingDir,
    ) -> Result<(LayerRef, PathBuf)> {
        let info = writer.verify(digest)?;
        let layer = LayerRef {
            diff_id: diff_id.to_string(),
            digest: info.digest.clone(),
            media_type: media_type.to_string(),
            size: info.size,
        };
        let index_path = self.blob_index_path(diff_id, media_type)?;
        let bytes = canonical_json(&layer).map_err(|source| StoreError::Encode {
            what: "blob index entry",
            source,
        })?;
        let mut index = AtomicFile::create(&index_path, 0o666)
            .map_err(io_err("create blob index entry", &index_path))?;
        std::io::Write::write_all(index.file(), &bytes)
            .map_err(io_err("write blob index entry", &index_path))?;
        let snapshot = self.snapshot_path(crate::digest::parse_digest(diff_id)?)?;
        if self.defer_sync() {
            // Synced by the build's sync at its end; a power cut before it is found by
            // the next boot's first open (see `durability`).
            self.unsynced.store(true, Ordering::SeqCst);
        } else {
            sync_filesystem(staging.path())?;
        }
        writer.place_synced(&info)?;
        index
            .commit_unsynced()
            .map_err(io_err("rename blob index entry", &index_path))?;
        let snapshot = if snapshot.is_dir() {
            snapshot // staging dropped -> removed
        } else {
            self.place_snapshot(staging, snapshot)?
        };
        Ok((layer, snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_new_layer_is_stored_whole_and_a_wrong_digest_stores_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let bytes = b"layer bytes";
        let digest = crate::digest::sha256_digest(bytes);
        let diff_id = crate::digest::sha256_digest(b"tar");
        let media = "application/vnd.oci.image.layer.v1.tar+gzip";

        let mut wrong = store.blob_writer().unwrap();
        wrong.write_all(b"other bytes").unwrap();
        let staging = store.snapshot_staging().unwrap();
        assert!(matches!(
            store.commit_new_layer(wrong, &digest, &diff_id, media, staging),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&digest));
        assert_eq!(store.find_layer_blob(&diff_id, media).unwrap(), None);

        let mut writer = store.blob_writer().unwrap();
        writer.write_all(bytes).unwrap();
        let staging = store.snapshot_staging().unwrap();
        std::fs::write(staging.path().join("f"), b"x").unwrap();
        let (layer, snapshot) = store
            .commit_new_layer(writer, &digest, &diff_id, media, staging)
            .unwrap();
        assert_eq!(layer.digest, digest);
        assert_eq!(layer.size, bytes.len() as u64);
        assert_eq!(store.read_blob(&digest).unwrap(), bytes);
        assert_eq!(store.find_layer_blob(&diff_id, media).unwrap(), Some(layer));
        assert_eq!(std::fs::read(snapshot.join("f")).unwrap(), b"x");
        assert_eq!(
            snapshot,
            store
                .snapshot_path(crate::digest::parse_digest(&diff_id).unwrap())
                .unwrap()
        );
    }
}
