//! The blob index: which stored blob holds a given layer (by diff_id) in a given
//! compression.
//!
//! kiln's layers are deterministic, so a step that runs again (`--no-cache`, a second
//! Dockerfile with the same step, a rebuilt base) usually produces a tar it has produced
//! before. The solver hashes the tar first and looks here; a hit skips compression, which is
//! most of the cost of committing a large layer. BuildKit keeps the same mapping
//! (`cache/blobs.go`: compression variants per layer).
//!
//! One canonical-JSON [`LayerRef`] per entry, `layers/<diff_id hex>.<media type hash>.json`,
//! written atomically after the blob is committed. An entry whose blob is gone (pruned) is
//! a miss; prune removes such entries.

use std::path::PathBuf;

use crate::digest::{canonical_json, parse_digest, sha256_hex};
use crate::error::{Result, StoreError};
use crate::fsutil::{atomic_write, read_if_exists};
use crate::record::LayerRef;
use crate::store::Store;

impl Store {
    pub(crate) fn blob_index_path(&self, diff_id: &str, media_type: &str) -> Result<PathBuf> {
        let hex = parse_digest(diff_id)?;
        // The media type is hashed so any string names a safe file.
        let kind = &sha256_hex(media_type.as_bytes())[..16];
        Ok(self.layers_dir().join(format!("{hex}.{kind}.json")))
    }

    /// The stored blob holding the layer `diff_id` as `media_type`, if there is one.
    pub fn find_layer_blob(&self, diff_id: &str, media_type: &str) -> Result<Option<LayerRef>> {
        let path = self.blob_index_path(diff_id, media_type)?;
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        // An unreadable entry or one naming another layer is a miss: it only costs a
        // compression.
        let Ok(layer) = serde_json::from_slice::<LayerRef>(&bytes) else {
            return Ok(None);
        };
        if layer.diff_id != diff_id
            || layer.media_type != media_type
            || !self.has_blob(&layer.digest)
        {
            return Ok(None);
        }
        Ok(Some(layer))
    }

    /// Records that `layer.digest` (already committed) holds `layer.diff_id`.
    pub fn put_layer_blob(&self, layer: &LayerRef) -> Result<()> {
        let path = self.blob_index_path(&layer.diff_id, &layer.media_type)?;
        let bytes = canonical_json(layer).map_err(|source| StoreError::Encode {
            what: "blob index entry",
            source,
        })?;
        atomic_write(&path, &bytes)
    }
}
