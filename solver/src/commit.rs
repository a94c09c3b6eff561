//! Committing a layer directory: its blob (compressed tar, indexed by diff_id) and its
//! snapshot, written side by side on two threads for a metadata tree.

use crate::error::StepError;
use crate::images::hex_of;
use crate::result::Layer;
use kiln_image::{Compression, ExternalContent};
use kiln_store::{LayerRef, Store};
use serde::Serialize;
use std::path::PathBuf;

/// How a build writes its layers. It enters every key: a record made with another
/// compression or epoch must not be reused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerFormat {
    pub compression: Compression,
    /// Clamp times to this; `None` keeps real times.
    pub source_date_epoch: Option<i64>,
}

/// The part of a key [`LayerFormat`] makes (field names are the hashed ones).
#[derive(Serialize)]
pub(crate) struct LayerFormatKey {
    compression: &'static str,
    source_date_epoch: Option<i64>,
}

impl LayerFormat {
    pub(crate) fn key(&self) -> LayerFormatKey {
        LayerFormatKey {
            compression: self.compression.media_type(),
            source_date_epoch: self.source_date_epoch,
        }
    }
}

/// Writes layers of one [`LayerFormat`] into a store.
pub(crate) struct LayerCommit<'a> {
    pub store: &'a Store,
    pub format: LayerFormat,
}

impl LayerCommit<'_> {
    /// Makes the layer directory `staging` a stored layer: its blob and its snapshot; true
    /// when the blob was stored already.
    ///
    /// kiln's layers are deterministic, so a step that runs again (`--no-cache`) usually
    /// gives the layer it gave before. When that layer is `predicted` to be stored, the tar
    /// is hashed first (no compression) and whatever is stored under the same diff_id is
    /// reused. Otherwise the tar is hashed and compressed in one pass. For a metadata tree,
    /// a missing blob and snapshot are written side by side, both reading the sources.
    pub(crate) fn commit(
        &self,
        staging: kiln_store::StagingDir,
        content: &ExternalContent,
        metadata_tree: bool,
        predicted: bool,
    ) -> Result<(Layer, bool), StepError> {
        let media_type = self.format.compression.media_type();
        let (diff_id, known) = if predicted {
            let plain = self.layer_options(Compression::None);
            let diff_id =
                kiln_image::write_layer_with(staging.path(), std::io::sink(), &plain, content)?
                    .diff_id;
            let known = self.store.find_layer_blob(&diff_id, media_type)?;
            (Some(diff_id), known)
        } else {
            (None, None)
        };
        let blob = || match &known {
            Some(layer) => Ok(layer.clone()),
            None => self.write_blob(staging.path(), content, diff_id.as_deref()),
        };
        let (blob, snapshot) = if metadata_tree {
            std::thread::scope(|s| -> Result<_, StepError> {
                let blob = s.spawn(blob);
                let snapshot =
                    self.materialize_snapshot(staging.path(), content, diff_id.as_deref());
                let blob = blob.join().unwrap_or(Err(StepError::BlobWriterPanicked))?;
                let snapshot = match snapshot? {
                    Materialized::Written(dir) => {
                        self.store.commit_snapshot(dir, hex_of(&blob.diff_id)?)?
                    }
                    Materialized::Stored(path) => path,
                };
                Ok((blob, snapshot))
            })?
        } else {
            // The directory itself becomes the snapshot: write the blob before moving it.
            let blob = blob()?;
            let snapshot = self
                .store
                .commit_snapshot(staging, hex_of(&blob.diff_id)?)?;
            (blob, snapshot)
        };
        let layer = Layer {
            diff_id: blob.diff_id,
            digest: blob.digest,
            size: blob.size,
            media_type: blob.media_type,
            snapshot,
        };
        Ok((layer, known.is_some()))
    }

    /// Whether the layer a step gave last time (`recorded`) is still stored, blob or
    /// snapshot: the step will most likely give it again.
    pub(crate) fn predicts_stored_layer(&self, recorded: Option<&LayerRef>) -> bool {
        let media_type = self.format.compression.media_type();
        recorded.is_some_and(|r| {
            hex_of(&r.diff_id).is_ok_and(|id| self.store.has_snapshot(id))
                || matches!(
                    self.store.find_layer_blob(&r.diff_id, media_type),
                    Ok(Some(_))
                )
        })
    }

    /// How this build writes layers, with `compression`.
    fn layer_options(&self, compression: Compression) -> kiln_image::LayerOptions {
        kiln_image::LayerOptions {
            compression,
            source_date_epoch: self.format.source_date_epoch,
            level: None,
        }
    }

    /// Compresses the layer directory `dir` into a new blob and indexes it under its
    /// diff_id (which must be `expected` when given).
    fn write_blob(
        &self,
        dir: &std::path::Path,
        content: &ExternalContent,
        expected: Option<&str>,
    ) -> Result<LayerRef, StepError> {
        let mut writer = self.store.blob_writer()?;
        let digests = kiln_image::write_layer_with(
            dir,
            &mut writer,
            &self.layer_options(self.format.compression),
            content,
        )?;
        if let Some(expected) = expected
            && digests.diff_id != expected
        {
            return Err(StepError::LayerChanged {
                expected: expected.to_string(),
                actual: digests.diff_id,
            });
        }
        let blob = writer.commit_verified(&digests.digest)?;
        let layer = LayerRef {
            diff_id: digests.diff_id,
            digest: blob.digest,
            media_type: digests.media_type,
            size: blob.size,
        };
        self.store.put_layer_blob(&layer)?;
        Ok(layer)
    }

    /// The snapshot of the metadata tree `tree`: the stored one when its diff_id `id` is
    /// known and stored, else its files written into a staging directory to commit.
    fn materialize_snapshot(
        &self,
        tree: &std::path::Path,
        content: &ExternalContent,
        id: Option<&str>,
    ) -> Result<Materialized, StepError> {
        if let Some(id) = id.map(hex_of).transpose()?
            && self.store.has_snapshot(id)
        {
            return Ok(Materialized::Stored(self.store.snapshot_path(id)?));
        }
        let staging = self.store.snapshot_staging()?;
        kiln_executor::staged::materialize(tree, content, staging.path())?;
        Ok(Materialized::Written(staging))
    }
}

/// A metadata tree's snapshot: already in the store, or written and waiting for its id.
enum Materialized {
    Stored(PathBuf),
    Written(kiln_store::StagingDir),
}
