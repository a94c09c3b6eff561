//! A step's layer into the store: [`commit_layer`] takes what the step made (a filled layer
//! directory, or a COPY/ADD to carry out) and gives the stored layer, blob and snapshot.
//! [`commit_or_defer`] stops once the layer's files are in the store (a RUN's directory as
//! it is, a COPY's new layer after the copy), so the solver can write its blob
//! ([`FilledLayer::write_blob`]) while the next step reads its files, and publish it
//! ([`FilledLayer::publish`]) after.
//!
//! The COPY staging speed-up lives here and nowhere else. kiln's layers are deterministic,
//! so a step that runs again (`--no-cache`) usually gives the layer it gave before. When
//! the step's recorded layer is still stored, a COPY is staged as a metadata tree on a
//! tmpfs (placeholders pointing at their sources' bytes, see
//! [`kiln_image::layer::external`]).
//!
//! A predicted layer (a metadata tree, or a directory in the store such as a RUN's upper)
//! whose recorded gzip blob has a chunk table is checked against that table in the pass
//! that would write its blob, which writes nothing while the stream is the stored blob
//! ([`ChunkReuse::withholding`]); one that turns out new has that pass's blob stored, then
//! a tree's snapshot materialized ([`crate::staged`]). For a recorded blob without a table
//! (one chunk, zstd), the tar is hashed first, uncompressed, and whatever is stored under
//! the same diff_id is reused; only a layer that turns out not to be stored has its blob
//! written and a tree's snapshot materialized, side by side on two threads. A tmpfs that
//! fills up is no error: the copy runs again into the store. A layer not seen before is
//! copied into the store directly (a metadata tree would only add a pass over its files),
//! and its tar is hashed and compressed in one pass.
//!
//! A gzip blob written here keeps its chunk table beside it (the store's
//! [`SideRecordKind::GzipChunks`]); the next blob of the same step (its `previous` layer,
//! whatever its key) copies the compressed chunks the two share instead of compressing
//! them again ([`kiln_image::layer::chunks`]), and a COPY links the context files that did
//! not change from the previous layer's snapshot ([`crate::copy::relink`]), so an edit
//! costs what changed.

use std::path::{Path, PathBuf};

use std::collections::HashSet;
use std::sync::Arc;

use kiln_image::{
    ChunkReuse, ChunkTable, Compression, ExternalContent, LayerDigests, LayerOptions,
    LayerWriteError,
};
use kiln_store::{BlobWriter, LayerRef, SideRecordKind, StagingDir, Store, StoreError};

use crate::copy::relink::PreviousCopy;
use crate::copy::{CopyError, CopyRequest, copy_into_layer};
use crate::staged::{MaterializeError, materialize};

/// How a build writes its layers. A record made with another format must not be reused,
/// so the solver puts it in every key.
#[derive(Debug, Clone, Copy)]
pub struct LayerFormat {
    pub compression: Compression,
    /// Clamp times to this; `None` keeps real times.
    pub source_date_epoch: Option<i64>,
}

/// What a step made, to become its layer.
pub enum LayerSource {
    /// A layer directory the step filled (RUN, WORKDIR), from [`Store::snapshot_staging`]:
    /// it becomes the snapshot itself.
    Dir(StagingDir),
    /// A COPY or ADD, carried out here (a COPY maybe as a metadata tree on a tmpfs).
    Copy(Box<CopyRequest>),
}

/// One layer to commit.
pub struct CommitRequest<'a> {
    pub store: &'a Store,
    pub format: LayerFormat,
    /// The layer the step gave last time, when its cache record says: the layer it will
    /// most likely give again.
    pub recorded: Option<&'a LayerRef>,
    /// The layer the same step gave in the previous build, whatever its key: the new
    /// blob copies the compressed chunks the two share.
    pub previous: Option<&'a LayerRef>,
    /// With `previous`, the context files (relative paths) the step reads that have not
    /// changed since: a COPY links them from the previous snapshot instead of copying.
    pub unchanged: Option<HashSet<String>>,
    pub source: LayerSource,
    /// Told (one line) when the tmpfs fills up and the copy runs again in the store.
    pub note: &'a (dyn Fn(&str) + Sync),
}

/// A committed layer.
#[derive(Debug, Clone)]
pub struct CommittedLayer {
    pub layer: LayerRef,
    /// The layer's snapshot directory in the store.
    pub snapshot: PathBuf,
    /// Whether the blob was stored already (the step gave a layer the store had).
    pub reused: bool,
}

/// Why a layer could not be made or committed. Causes read as the crates that raised
/// them say them.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    LayerWrite(#[from] LayerWriteError),
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    #[error("the layer changed while it was written ({expected}, then {actual})")]
    LayerChanged { expected: String, actual: String },
    #[error("writing the layer blob panicked")]
    BlobWriterPanicked,
    #[error("not a sha256 digest: {0}")]
    NotSha256(String),
}

/// Makes what the step made a stored layer: its blob (indexed by diff_id) and its
/// snapshot. See the module doc for when a COPY is staged on a tmpfs.
pub fn commit_layer(req: CommitRequest<'_>) -> Result<CommittedLayer, CommitError> {
    let (store, format, note) = (req.store, req.format, req.note);
    let chunks_of = req.recorded.or(req.previous);
    match commit_request(req, false)? {
        CommitOrDefer::Committed(committed) => Ok(committed),
        CommitOrDefer::Filled(filled) => {
            let blob = filled.write_blob(store, format, chunks_of, note)?;
            filled.publish(blob, store, format, note)
        }
    }
}

/// What [`commit_or_defer`] gives.
pub enum CommitOrDefer {
    /// The layer, committed as [`commit_layer`] commits it.
    Committed(CommittedLayer),
    /// The layer's directory in the store, its blob not written yet.
    Filled(FilledLayer),
}

/// [`commit_layer`], except that it stops once the layer's files are in the store: at
/// once for a step's filled directory (a RUN's; no file is touched, so the caller need not
/// leave its async thread for it), after the copy for a COPY whose layer is new and copied
/// into the store. The next step may use the directory (as a lower) while
/// [`FilledLayer::write_blob`] compresses it on another thread, and
/// [`FilledLayer::publish`] makes it the stored snapshot once nothing uses it by its
/// staging path any more. The caller asks it only for a layer it expects to be new (for
/// a filled directory, `recorded` is not looked at): a stored one is found only when the
/// blob is published, after the next step ran on the fresh copy.
pub fn commit_or_defer(req: CommitRequest<'_>) -> Result<CommitOrDefer, CommitError> {
    commit_request(req, true)
}

/// [`commit_layer`] (not `defer`) or [`commit_or_defer`].
fn commit_request(req: CommitRequest<'_>, defer: bool) -> Result<CommitOrDefer, CommitError> {
    let CommitRequest {
        store,
        format,
        recorded,
        previous,
        unchanged,
        source,
        note,
    } = req;
    let commit = Committer {
        store,
        format,
        previous: recorded.or(previous),
        note,
    };
    let (copied, predicted) = match source {
        LayerSource::Dir(dir) => {
            let copied = Copied {
                staging: dir,
                content: ExternalContent::new(),
                metadata_tree: false,
                xattr_free: None,
            };
            if defer {
                // Nothing to do before the next step: no file system call here.
                return Ok(CommitOrDefer::Filled(FilledLayer { copied }));
            }
            (copied, commit.predicts_stored_layer(recorded))
        }
        LayerSource::Copy(copy) => {
            let predicted = commit.predicts_stored_layer(recorded);
            let copied = commit.copy(*copy, predicted, unchanged)?;
            if defer && !predicted && !copied.metadata_tree {
                return Ok(CommitOrDefer::Filled(FilledLayer { copied }));
            }
            (copied, predicted)
        }
    };
    commit
        .commit(copied, predicted)
        .map(CommitOrDefer::Committed)
}

/// A layer's directory in the store, its blob not yet written ([`commit_or_defer`]).
pub struct FilledLayer {
    copied: Copied,
}

/// A layer's blob, written and not yet committed ([`FilledLayer::write_blob`]).
pub struct WrittenBlob {
    writer: BlobWriter,
    digests: LayerDigests,
}

impl FilledLayer {
    /// Where the layer's files are until [`FilledLayer::publish`] moves them.
    pub fn path(&self) -> &Path {
        self.copied.staging.path()
    }

    /// Compresses the layer into a blob, not committed yet; `previous` and `note` as in
    /// [`CommitRequest`] (the layer the step gave in its previous build, for its chunks).
    /// Borrows the directory: whatever happens here (an error, a panic), it stays until
    /// its owner is done with it, as the step after this one may be running on it.
    pub fn write_blob(
        &self,
        store: &Store,
        format: LayerFormat,
        previous: Option<&LayerRef>,
        note: &(dyn Fn(&str) + Sync),
    ) -> Result<WrittenBlob, CommitError> {
        let commit = Committer {
            store,
            format,
            previous,
            note,
        };
        let Copied {
            staging,
            content,
            xattr_free,
            ..
        } = &self.copied;
        let (writer, digests) =
            commit.write_blob_bytes(staging.path(), content, None, xattr_free.clone())?;
        Ok(WrittenBlob { writer, digests })
    }

    /// Stores `blob` (its [`FilledLayer::write_blob`]), its index entry and the directory
    /// as the layer's snapshot, as [`commit_layer`] does for a new layer. Nothing may use
    /// the staging path after.
    pub fn publish(
        self,
        blob: WrittenBlob,
        store: &Store,
        format: LayerFormat,
        note: &(dyn Fn(&str) + Sync),
    ) -> Result<CommittedLayer, CommitError> {
        let commit = Committer {
            store,
            format,
            previous: None,
            note,
        };
        let (layer, snapshot) = commit.publish(blob, self.copied.staging)?;
        Ok(CommittedLayer {
            layer,
            snapshot,
            reused: false,
        })
    }
}

/// A layer directory a step filled, to commit.
struct Copied {
    staging: StagingDir,
    /// Where its placeholders' bytes are (a metadata tree's).
    content: ExternalContent,
    metadata_tree: bool,
    /// The files a COPY linked from the previous snapshot, known to carry no xattrs.
    xattr_free: Option<Arc<HashSet<(u64, u64)>>>,
}

/// Writes layers of one [`LayerFormat`] into a store.
struct Committer<'a> {
    store: &'a Store,
    format: LayerFormat,
    /// The earlier layer whose compressed chunks a new blob may copy.
    previous: Option<&'a LayerRef>,
    note: &'a (dyn Fn(&str) + Sync),
}

impl Committer<'_> {
    /// Carries out `copy` into a fresh layer directory: a metadata tree on a tmpfs when
    /// the layer is `predicted` to be stored and a tmpfs is usable (COPY only: ADD's
    /// sources do not outlive the step), else the files themselves in the store. Returns
    /// the directory, where its placeholders' bytes are, and whether it is a metadata tree.
    fn copy(
        &self,
        mut copy: CopyRequest,
        predicted: bool,
        unchanged: Option<HashSet<String>>,
    ) -> Result<Copied, CommitError> {
        let tmpfs = if !copy.add && predicted {
            self.store.tmpfs_staging()?
        } else {
            None
        };
        if let Some(staging) = tmpfs {
            copy.stage_contents = true;
            match copy_into_layer(&copy, staging.path()) {
                Ok(report) => {
                    return Ok(Copied {
                        staging,
                        content: report.content,
                        metadata_tree: true,
                        xattr_free: None,
                    });
                }
                Err(e) if e.is_out_of_space() => {
                    (self.note)("the tmpfs staging area is full; staging in the store");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let staging = self.store.snapshot_staging()?;
        copy.stage_contents = false;
        if let Some(unchanged) = unchanged {
            copy.previous = self.previous_copy(unchanged).map(Arc::new);
        }
        let phase = kiln_base::phase::start("commit: copy into the store");
        let report = copy_into_layer(&copy, staging.path())?;
        phase.end();
        Ok(Copied {
            staging,
            content: report.content,
            metadata_tree: false,
            xattr_free: copy
                .previous
                .as_ref()
                .map(|previous| Arc::new(previous.linked_inodes())),
        })
    }

    /// Makes the layer directory `staging` a stored layer: its blob and its snapshot. When
    /// `predicted`, the layer is checked against the recorded blob's chunk table
    /// ([`Self::commit_as_recorded`]); for a recorded blob without one (a single chunk, or
    /// not gzip), the tar is hashed first (no compression) and a blob stored under the same
    /// diff_id is reused. For a metadata tree, a missing blob and snapshot are written side
    /// by side, both reading the sources.
    fn commit(&self, copied: Copied, predicted: bool) -> Result<CommittedLayer, CommitError> {
        if predicted && let Some(reuse) = self.chunk_reuse(copied.xattr_free.clone()) {
            return self.commit_as_recorded(copied, reuse);
        }
        let Copied {
            staging,
            content,
            metadata_tree,
            xattr_free,
        } = copied;
        let content = &content;
        let media_type = self.format.compression.media_type();
        let (diff_id, known) = if predicted {
            let plain = self.layer_options(Compression::None);
            let phase = kiln_base::phase::start("commit: hash the layer (diff_id only)");
            let diff_id =
                kiln_image::write_layer_with(staging.path(), std::io::sink(), &plain, content)?
                    .diff_id;
            phase.end();
            let known = self.store.find_layer_blob(&diff_id, media_type)?;
            (Some(diff_id), known)
        } else {
            (None, None)
        };
        let blob = || match &known {
            Some(layer) => Ok(layer.clone()),
            None => self.write_blob(
                staging.path(),
                content,
                diff_id.as_deref(),
                xattr_free.clone(),
            ),
        };
        let (layer, snapshot) = if metadata_tree {
            std::thread::scope(|s| -> Result<_, CommitError> {
                let blob = s.spawn(blob);
                let snapshot =
                    self.materialize_snapshot(staging.path(), content, diff_id.as_deref());
                let blob = blob
                    .join()
                    .unwrap_or(Err(CommitError::BlobWriterPanicked))?;
                let snapshot = snapshot?.commit(self.store, &blob.diff_id)?;
                Ok((blob, snapshot))
            })?
        } else {
            // The directory itself becomes the snapshot: write the blob before moving it.
            match &known {
                Some(layer) => {
                    let phase = kiln_base::phase::start("commit: the snapshot");
                    let snapshot = self
                        .store
                        .commit_snapshot(staging, hex_of(&layer.diff_id)?)?;
                    phase.end();
                    (layer.clone(), snapshot)
                }
                // A new layer: its blob, index entry and snapshot synced together.
                None => {
                    let (writer, digests) = self.write_blob_bytes(
                        staging.path(),
                        content,
                        diff_id.as_deref(),
                        xattr_free.clone(),
                    )?;
                    self.publish(WrittenBlob { writer, digests }, staging)?
                }
            }
        };
        Ok(CommittedLayer {
            layer,
            snapshot,
            reused: known.is_some(),
        })
    }

    /// Whether the layer a step gave last time (`recorded`) is still stored, blob or
    /// snapshot: the step will most likely give it again.
    fn predicts_stored_layer(&self, recorded: Option<&LayerRef>) -> bool {
        let media_type = self.format.compression.media_type();
        recorded.is_some_and(|r| {
            hex_of(&r.diff_id).is_ok_and(|id| self.store.has_snapshot(id))
                || matches!(
                    self.store.find_layer_blob(&r.diff_id, media_type),
                    Ok(Some(_))
                )
        })
    }

    /// [`Self::commit`] of a layer that likely is the one the step gave before (`previous`,
    /// the recorded one), whose gzip blob and chunk table `reuse` holds. One pass over the
    /// directory (or metadata tree) either finds it gives that blob, byte for byte, without
    /// writing any (a BLAKE3 key per chunk instead of the tar's SHA-256, which a separate
    /// diff_id pass took), or writes the new blob, as for a layer not predicted.
    fn commit_as_recorded(
        &self,
        copied: Copied,
        reuse: ChunkReuse,
    ) -> Result<CommittedLayer, CommitError> {
        let Copied {
            staging,
            content,
            metadata_tree,
            xattr_free,
        } = copied;
        let phase = kiln_base::phase::start("commit: the layer against the recorded blob");
        let checked = self.write_blob_with(
            staging.path(),
            &content,
            Some(reuse.withholding()),
            xattr_free.clone(),
        );
        phase.end();
        let written = match checked {
            Ok(written) => Some(written),
            // The old blob could not be read after all: write the new one without it.
            Err(CommitError::LayerWrite(e)) if e.is_stored_blob_unreadable() => None,
            Err(e) => return Err(e),
        };
        // A layer stored already (this one's, or one the step gave before that) is used as
        // it is; another is written, by this pass or, after it failed, without withholding.
        let media_type = self.format.compression.media_type();
        let stored = match &written {
            Some((_, digests)) => self.store.find_layer_blob(&digests.diff_id, media_type)?,
            None => None,
        };
        let blob = match (stored, written) {
            (Some(layer), first) => {
                drop(first);
                Checked::Stored(layer)
            }
            (None, Some((writer, digests))) if !digests.reused_blob => {
                Checked::Written(Box::new(WrittenBlob { writer, digests }))
            }
            // Nothing was written, and the blob went meanwhile; or the pass failed.
            (None, first) => {
                drop(first);
                let (writer, digests) =
                    self.write_blob_bytes(staging.path(), &content, None, xattr_free)?;
                Checked::Written(Box::new(WrittenBlob { writer, digests }))
            }
        };
        let diff_id = match &blob {
            Checked::Stored(layer) => layer.diff_id.clone(),
            Checked::Written(written) => written.digests.diff_id.clone(),
        };
        let phase = kiln_base::phase::start("commit: the snapshot (and a new blob)");
        let (layer, snapshot, reused) = match (blob, metadata_tree) {
            (Checked::Stored(layer), false) => {
                let snapshot = self.store.commit_snapshot(staging, hex_of(&diff_id)?)?;
                (layer, snapshot, true)
            }
            (Checked::Written(written), false) => {
                let (layer, snapshot) = self.publish(*written, staging)?;
                (layer, snapshot, false)
            }
            // A metadata tree's files are placeholders: the snapshot is the stored one, or
            // made from the tree's sources, after a new blob is stored (as a blob and
            // snapshot written side by side are). Made after the pass, not beside it: a
            // predicted COPY that gives another layer is rare.
            (blob, true) => {
                let (layer, reused) = match blob {
                    Checked::Stored(layer) => (layer, true),
                    Checked::Written(written) => (self.store_blob(*written)?, false),
                };
                let snapshot = self
                    .materialize_snapshot(staging.path(), &content, Some(&diff_id))?
                    .commit(self.store, &diff_id)?;
                // Thousands of placeholders for a big COPY: removed while the next step runs.
                staging.discard();
                (layer, snapshot, reused)
            }
        };
        phase.end();
        Ok(CommittedLayer {
            layer,
            snapshot,
            reused,
        })
    }

    /// How this build writes layers, with `compression`.
    fn layer_options(&self, compression: Compression) -> LayerOptions {
        LayerOptions {
            compression,
            source_date_epoch: self.format.source_date_epoch,
            level: None,
            reuse: None,
            xattr_free: None,
        }
    }

    /// Compresses the layer directory `dir` into a new blob and indexes it under its
    /// diff_id (which must be `expected` when given).
    fn write_blob(
        &self,
        dir: &Path,
        content: &ExternalContent,
        expected: Option<&str>,
        xattr_free: Option<Arc<HashSet<(u64, u64)>>>,
    ) -> Result<LayerRef, CommitError> {
        let (writer, digests) = self.write_blob_bytes(dir, content, expected, xattr_free)?;
        self.store_blob(WrittenBlob { writer, digests })
    }

    /// Commits a written blob and indexes it under its diff_id.
    fn store_blob(&self, blob: WrittenBlob) -> Result<LayerRef, CommitError> {
        let WrittenBlob { writer, digests } = blob;
        let blob = writer.commit_verified(&digests.digest)?;
        let layer = LayerRef {
            diff_id: digests.diff_id.clone(),
            digest: blob.digest,
            media_type: digests.media_type.clone(),
            size: blob.size,
        };
        self.store.put_layer_blob(&layer)?;
        self.blob_stored(&layer, &digests);
        Ok(layer)
    }

    /// Compresses the layer directory `dir` into a blob writer, not yet committed, and
    /// checks its diff_id is `expected` when given. `xattr_free`: files known to carry no
    /// xattrs (see [`LayerOptions::xattr_free`]).
    fn write_blob_bytes(
        &self,
        dir: &Path,
        content: &ExternalContent,
        expected: Option<&str>,
        xattr_free: Option<Arc<HashSet<(u64, u64)>>>,
    ) -> Result<(BlobWriter, LayerDigests), CommitError> {
        let reuse = self.chunk_reuse(xattr_free.clone());
        let phase = kiln_base::phase::start("commit: write the layer blob");
        let (writer, digests) = self.write_blob_with(dir, content, reuse, xattr_free)?;
        phase.end();
        if let Some(expected) = expected
            && digests.diff_id != expected
        {
            return Err(CommitError::LayerChanged {
                expected: expected.to_string(),
                actual: digests.diff_id,
            });
        }
        Ok((writer, digests))
    }

    /// Compresses the layer directory `dir` into a blob writer, not yet committed, copying
    /// the chunks `reuse` has.
    fn write_blob_with(
        &self,
        dir: &Path,
        content: &ExternalContent,
        reuse: Option<ChunkReuse>,
        xattr_free: Option<Arc<HashSet<(u64, u64)>>>,
    ) -> Result<(BlobWriter, LayerDigests), CommitError> {
        // The layer writer hashes every compressed byte for the manifest digest already.
        let writer = self.store.blob_writer_hashed_by_caller()?;
        let options = LayerOptions {
            reuse: reuse.map(Arc::new),
            xattr_free,
            ..self.layer_options(self.format.compression)
        };
        // The walk's thread is the one a big blob waits for: the file writes go behind it.
        let mut behind = kiln_base::write_behind::WriteBehind::new(writer);
        let digests = kiln_image::write_layer_with(dir, &mut behind, &options, content)?;
        let writer = behind.finish().map_err(|source| LayerWriteError::Write {
            entry: "<end of layer>".into(),
            source,
        })?;
        Ok((writer, digests))
    }

    /// Stores `blob`, its index entry and `staging` as the layer's snapshot, synced
    /// together (see [`Store::commit_new_layer`]).
    fn publish(
        &self,
        blob: WrittenBlob,
        staging: StagingDir,
    ) -> Result<(LayerRef, PathBuf), CommitError> {
        let WrittenBlob { writer, digests } = blob;
        let phase = kiln_base::phase::start("commit: blob, index and snapshot");
        let committed = self.store.commit_new_layer(
            writer,
            &digests.digest,
            &digests.diff_id,
            &digests.media_type,
            staging,
        )?;
        phase.end();
        self.blob_stored(&committed.0, &digests);
        Ok(committed)
    }

    /// After the blob of `digests` is stored as `layer`: keeps its chunk table for the next
    /// blob of this step and says how many chunks it reused.
    fn blob_stored(&self, layer: &LayerRef, digests: &LayerDigests) {
        self.keep_chunks(&layer.digest, &digests.chunks);
        if digests.reused_chunks > 0 {
            (self.note)(&format!(
                "reused {} of {} compressed chunks from the previous layer \
                 (hashes resumed after the first {}, {} of them not read)",
                digests.reused_chunks,
                digests.chunks.len(),
                digests.resumed_chunks,
                digests.skipped_chunks
            ));
        }
    }

    /// The previous layer's snapshot, for a COPY to link its `unchanged` files from.
    fn previous_copy(&self, unchanged: HashSet<String>) -> Option<PreviousCopy> {
        let id = hex_of(&self.previous?.diff_id).ok()?;
        if !self.store.has_snapshot(id) {
            return None;
        }
        PreviousCopy::open(&self.store.snapshot_path(id).ok()?, unchanged).ok()
    }

    /// The chunks of the previous layer's gzip blob, when its table and blob are stored.
    /// A missing or unreadable table only means compressing every chunk. `linked`: the
    /// files a COPY linked from the previous layer's snapshot ([`Self::previous_copy`], of
    /// the same layer as the table), whose chunks the table may vouch for unread.
    fn chunk_reuse(&self, linked: Option<Arc<HashSet<(u64, u64)>>>) -> Option<ChunkReuse> {
        if self.format.compression != Compression::Gzip {
            return None;
        }
        let previous = self.previous?;
        let hex = hex_of(&previous.digest).ok()?;
        let bytes = self
            .store
            .side_records(SideRecordKind::GzipChunks)
            .read(hex)?;
        let table = ChunkTable::from_bytes(&bytes)?;
        let blob = self.store.open_blob(&previous.digest).ok()?;
        let reuse = ChunkReuse::new(&table, blob).ok()?;
        Some(match linked {
            Some(linked) => reuse.trusting_links(linked),
            None => reuse,
        })
    }

    /// Keeps the chunk table of a new gzip blob beside it. A blob of one chunk has nothing
    /// to share (its one chunk ends the stream), so it keeps none; a table that cannot be
    /// written costs only the next edit's speed.
    fn keep_chunks(&self, digest: &str, table: &ChunkTable) {
        if table.len() < 2 {
            return;
        }
        let Ok(hex) = hex_of(digest) else { return };
        let records = self.store.side_records(SideRecordKind::GzipChunks);
        if records.read(hex).is_none() {
            let _ = records.write(hex, &table.to_bytes());
        }
    }

    /// The snapshot of the metadata tree `tree`: the stored one when its diff_id `id` is
    /// known and stored, else its files written into a staging directory to commit.
    fn materialize_snapshot(
        &self,
        tree: &Path,
        content: &ExternalContent,
        id: Option<&str>,
    ) -> Result<Materialized, CommitError> {
        if let Some(id) = id.map(hex_of).transpose()?
            && self.store.has_snapshot(id)
        {
            return Ok(Materialized::Stored(self.store.snapshot_path(id)?));
        }
        let staging = self.store.snapshot_staging()?;
        materialize(tree, content, staging.path())?;
        Ok(Materialized::Written(staging))
    }
}

/// A layer's blob after [`Committer::commit_as_recorded`]'s pass: the one stored, or a new
/// one written.
enum Checked {
    Stored(LayerRef),
    Written(Box<WrittenBlob>),
}

/// A metadata tree's snapshot: already in the store, or written and waiting for its id.
enum Materialized {
    Stored(PathBuf),
    Written(StagingDir),
}

impl Materialized {
    /// The snapshot's path in the store, a written one committed as the layer `diff_id`'s.
    fn commit(self, store: &Store, diff_id: &str) -> Result<PathBuf, CommitError> {
        match self {
            Materialized::Stored(path) => Ok(path),
            Materialized::Written(dir) => Ok(store.commit_snapshot(dir, hex_of(diff_id)?)?),
        }
    }
}

/// The hex of a `sha256:` digest (a snapshot's id).
fn hex_of(digest: &str) -> Result<&str, CommitError> {
    kiln_base::digest::digest_hex(digest).map_err(|e| CommitError::NotSha256(e.0))
}
