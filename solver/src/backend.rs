//! The solver's hands: keys a step, looks it up, runs it on a miss, commits its layer.
//!
//! Everything here is per step; ordering lives in [`crate::engine`] and [`crate::stage`].

use crate::config::ImageState;
use crate::entitlements::effective_network;
use crate::error::SolveError;
use crate::explain::{ExplainLog, KeyInputs, explain};
use crate::image_config;
use crate::key::vertex_key;
use crate::progress::{Event, Progress, Stream};
use crate::stage::{Layer, StageInputs, blocking};
use crate::steps;
use kiln_cache::context::{ChecksumOptions, Context};
use kiln_cache::{CacheRecord, LayerRef, Store};
use kiln_image::{Compression, ExternalContent};
use kiln_parser::{CopySource, Op, Platform, Source, Step};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Network for RUN steps that do not pick one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkDefault {
    Host,
    None,
}

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// How to build, beyond the graph.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// The Dockerfile's path (for the ignore file beside it and explanations).
    pub dockerfile: PathBuf,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub compression: Compression,
    /// Clamp times to this; `None` keeps real times (`--timestamp=keep`).
    pub source_date_epoch: Option<i64>,
    pub network: NetworkDefault,
    /// What the Dockerfile may ask for beyond the defaults (`--allow`).
    pub entitlements: crate::Entitlements,
    /// `None` picks one the first time a RUN has to execute (a fully cached build never
    /// pays for the overlay probe).
    pub snapshotter: Option<kiln_executor::snapshot::Snapshotter>,
    pub secrets: Vec<(String, SecretSource)>,
    pub explain_cache: bool,
    pub platform: Platform,
}

/// What the solver works with: the store, the context and the options.
pub struct Backend {
    pub store: Store,
    pub options: SolveOptions,
    /// This process's scratch directory in the store (see `kiln_cache::Store::scratch_dir`):
    /// staging put here is reclaimed if the build is killed.
    pub scratch: std::path::PathBuf,
    snapshotter: tokio::sync::OnceCell<kiln_executor::snapshot::Snapshotter>,
    /// Whether the build has said that RUN has no cgroup limits here.
    limits_note: std::sync::Once,
    context: Arc<Context>,
    explain: ExplainLog,
    /// Images resolved so far: a FROM, a `COPY --from` or a mount from an image reads its
    /// manifest, config and snapshots once per build, and every step sees the same image
    /// even if its tag moves meanwhile.
    images: std::sync::Mutex<std::collections::HashMap<String, ResolvedImage>>,
}

/// A base image resolved in the store.
#[derive(Clone)]
pub struct ResolvedImage {
    pub key: String,
    pub layers: Vec<Layer>,
    pub state: ImageState,
}

impl Backend {
    pub fn new(store: Store, options: SolveOptions) -> Result<Backend, SolveError> {
        let matcher = kiln_cache::ignore::load_for(&options.context_dir, &options.dockerfile)
            .map_err(|e| SolveError::internal(e.to_string()))?;
        let stat_cache = store.stat_cache_path(&options.context_dir);
        let context = Arc::new(
            Context::open(&options.context_dir, matcher, Some(stat_cache))
                .map_err(|e| SolveError::internal(e.to_string()))?,
        );
        let explain = ExplainLog::new(store.root());
        let scratch = store
            .scratch_dir()
            .map_err(|e| SolveError::internal(e.to_string()))?;
        Ok(Backend {
            store,
            scratch,
            snapshotter: tokio::sync::OnceCell::new(),
            limits_note: std::sync::Once::new(),
            options,
            context,
            explain,
            images: Default::default(),
        })
    }

    /// Finds `reference` among the store's images, with every layer unpacked.
    pub fn resolve_image(&self, reference: &str) -> Result<ResolvedImage, String> {
        let known = |images: &std::collections::HashMap<String, ResolvedImage>| {
            images.get(reference).cloned()
        };
        if let Some(image) = self.images.lock().ok().and_then(|m| known(&m)) {
            return Ok(image);
        }
        let image = self.resolve_image_uncached(reference)?;
        if let Ok(mut images) = self.images.lock() {
            images.insert(reference.to_string(), image.clone());
        }
        Ok(image)
    }

    fn resolve_image_uncached(&self, reference: &str) -> Result<ResolvedImage, String> {
        let name = kiln_cache::normalize_ref(reference).map_err(|e| e.to_string())?;
        let image = self
            .store
            .get_ref(&name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{reference}: image not found in the store (build it, or `kiln load` it first)"
                )
            })?;
        let (manifest, config) = read_image(&self.store, reference, &image)?;
        let layers = image_layers(&self.store, &manifest, &config)
            .map_err(|e| format!("{reference}: {e}"))?;
        Ok(ResolvedImage {
            key: vertex_key("image", &image.manifest, &[]),
            layers,
            state: image_config::state_from_config(&config),
        })
    }

    /// The layer of `layer`, unpacking its blob into a snapshot if that is missing.
    pub fn ensure_snapshot(&self, layer: &LayerRef) -> Result<Layer, String> {
        ensure_snapshot(&self.store, layer)
    }

    /// Keys `step`, reuses its recorded layer when allowed, otherwise runs it and records it.
    /// Returns the step's key, its layer and whether it came from the cache.
    pub async fn solve_step(
        self: Arc<Self>,
        step: &Step,
        current: &crate::stage::StageResult,
        inputs: &StageInputs,
        id: usize,
        no_cache: bool,
        progress: &Progress,
    ) -> Result<(String, Layer, bool), SolveError> {
        let at = |m: String| SolveError::at(step.span, &step.source, m);
        let key_inputs = {
            let this = self.clone();
            let step = step.clone();
            let parent = current.key.clone();
            let stage_keys: Vec<(usize, String)> =
                inputs.iter().map(|(i, r)| (*i, r.key.clone())).collect();
            blocking(move || this.key_inputs(&step, &parent, &stage_keys))
                .await
                .map_err(at)?
        };
        let key = key_inputs.key.clone();
        let place = format!(
            "{}\0{}\0{}:{}",
            self.options.context_dir.display(),
            self.options.dockerfile.display(),
            step.span.line,
            step.span.column
        );
        // Even under --no-cache the record tells what the step gave last time: the layer
        // it will most likely give again (see `commit_layer`).
        let recorded = match self.store.get_record(&key).map_err(|e| at(e.to_string()))? {
            Some(CacheRecord {
                layer: Some(layer), ..
            }) => Some(layer),
            _ => None,
        };
        if !no_cache && let Some(layer) = recorded.clone() {
            let this = self.clone();
            if let Ok(layer) = blocking(move || this.ensure_snapshot(&layer)).await {
                self.explain.save(&place, &key_inputs);
                return Ok((key, layer, true));
            }
        }
        if self.options.explain_cache {
            let reasons = if no_cache {
                vec!["--no-cache".to_string()]
            } else {
                explain(self.explain.previous(&place).as_ref(), &key_inputs)
            };
            for reason in reasons {
                progress.send(Event::Explain { id, reason });
            }
        }
        // When the record predicts a stored layer, a COPY is staged as a metadata tree on a
        // tmpfs (when one is usable): its files are written to the store only if the layer
        // turns out not to be stored. A layer not seen before is copied into the store
        // directly (a metadata tree would only add a pass over its files).
        let predicted = self.predicts_stored_layer(recorded.as_ref());
        let tmpfs = match &step.op {
            Op::Copy(copy) if !copy.add && predicted => {
                self.store.tmpfs_staging().map_err(|e| at(e.to_string()))?
            }
            _ => None,
        };
        let mut metadata_tree = tmpfs.is_some();
        let mut staging = match tmpfs {
            Some(staging) => staging,
            None => self
                .store
                .snapshot_staging()
                .map_err(|e| at(e.to_string()))?,
        };
        let content = loop {
            let run = steps::execute(
                &self,
                step,
                current,
                inputs,
                staging.path(),
                metadata_tree,
                id,
                progress,
            );
            match run.await? {
                steps::Executed::Done(content) => break content,
                steps::Executed::TmpfsFull => {
                    progress.send(Event::Log {
                        id,
                        stream: Stream::Info,
                        line: "the tmpfs staging area is full; staging in the store".to_string(),
                    });
                    staging = self
                        .store
                        .snapshot_staging()
                        .map_err(|e| at(e.to_string()))?;
                    metadata_tree = false;
                }
            }
        };
        let this = self.clone();
        let (layer, reused) =
            blocking(move || this.commit_layer(staging, &content, metadata_tree, predicted))
                .await
                .map_err(at)?;
        // Records carry the real time for prune's "oldest first"; the image never sees it.
        let record = CacheRecord {
            created: now_unix(),
            layer: Some(LayerRef {
                diff_id: layer.diff_id.clone(),
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
            }),
        };
        self.store
            .put_record(&key, &record)
            .map_err(|e| at(e.to_string()))?;
        self.explain.save(&place, &key_inputs);
        progress.send(Event::Log {
            id,
            stream: Stream::Info,
            line: if reused {
                format!("reusing stored layer {}", layer.digest)
            } else {
                format!("writing layer {}", layer.digest)
            },
        });
        Ok((key, layer, false))
    }

    /// Makes the layer directory `staging` a stored layer: its blob and its snapshot; true
    /// when the blob was stored already.
    ///
    /// kiln's layers are deterministic, so a step that runs again (`--no-cache`) usually
    /// gives the layer it gave before. When that layer is `predicted` to be stored, the tar
    /// is hashed first (no compression) and whatever is stored under the same diff_id is
    /// reused. Otherwise the tar is hashed and compressed in one pass. For a metadata tree,
    /// a missing blob and snapshot are written side by side, both reading the sources.
    fn commit_layer(
        &self,
        staging: kiln_cache::StagingDir,
        content: &ExternalContent,
        metadata_tree: bool,
        predicted: bool,
    ) -> Result<(Layer, bool), String> {
        let media_type = self.options.compression.media_type();
        let (diff_id, known) = if predicted {
            let plain = self.layer_options(Compression::None);
            let diff_id =
                kiln_image::write_layer_with(staging.path(), std::io::sink(), &plain, content)
                    .map_err(|e| e.to_string())?
                    .diff_id;
            let known = self
                .store
                .find_layer_blob(&diff_id, media_type)
                .map_err(|e| e.to_string())?;
            (Some(diff_id), known)
        } else {
            (None, None)
        };
        let blob = || match &known {
            Some(layer) => Ok(layer.clone()),
            None => self.write_blob(staging.path(), content, diff_id.as_deref()),
        };
        let (blob, snapshot) = if metadata_tree {
            std::thread::scope(|s| {
                let blob = s.spawn(blob);
                let snapshot =
                    self.materialize_snapshot(staging.path(), content, diff_id.as_deref());
                let blob = blob
                    .join()
                    .unwrap_or_else(|_| Err("writing the layer blob panicked".to_string()));
                let snapshot = match (&blob, snapshot) {
                    (Ok(blob), Ok(Materialized::Written(dir))) => {
                        hex_of(&blob.diff_id).and_then(|id| {
                            self.store
                                .commit_snapshot(dir, id)
                                .map_err(|e| e.to_string())
                        })
                    }
                    (_, Ok(Materialized::Stored(path))) => Ok(path),
                    (Err(e), _) => Err(e.clone()),
                    (_, Err(e)) => Err(e),
                };
                (blob, snapshot)
            })
        } else {
            // The directory itself becomes the snapshot: write the blob before moving it.
            let blob = blob();
            let snapshot = blob.as_ref().map_err(Clone::clone).and_then(|blob| {
                let id = hex_of(&blob.diff_id)?;
                self.store
                    .commit_snapshot(staging, id)
                    .map_err(|e| e.to_string())
            });
            (blob, snapshot)
        };
        let (blob, snapshot) = (blob?, snapshot?);
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
    fn predicts_stored_layer(&self, recorded: Option<&LayerRef>) -> bool {
        let media_type = self.options.compression.media_type();
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
            source_date_epoch: self.options.source_date_epoch,
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
    ) -> Result<LayerRef, String> {
        let mut writer = self.store.blob_writer().map_err(|e| e.to_string())?;
        let digests = kiln_image::write_layer_with(
            dir,
            &mut writer,
            &self.layer_options(self.options.compression),
            content,
        )
        .map_err(|e| e.to_string())?;
        if let Some(expected) = expected
            && digests.diff_id != expected
        {
            return Err(format!(
                "the layer changed while it was written ({expected}, then {})",
                digests.diff_id
            ));
        }
        let blob = writer
            .commit_verified(&digests.digest)
            .map_err(|e| e.to_string())?;
        let layer = LayerRef {
            diff_id: digests.diff_id,
            digest: blob.digest,
            media_type: digests.media_type,
            size: blob.size,
        };
        self.store
            .put_layer_blob(&layer)
            .map_err(|e| e.to_string())?;
        Ok(layer)
    }

    /// The snapshot of the metadata tree `tree`: the stored one when its diff_id `id` is
    /// known and stored, else its files written into a staging directory to commit.
    fn materialize_snapshot(
        &self,
        tree: &std::path::Path,
        content: &ExternalContent,
        id: Option<&str>,
    ) -> Result<Materialized, String> {
        if let Some(id) = id.map(hex_of).transpose()?
            && self.store.has_snapshot(id)
        {
            let path = self.store.snapshot_path(id).map_err(|e| e.to_string())?;
            return Ok(Materialized::Stored(path));
        }
        let staging = self.store.snapshot_staging().map_err(|e| e.to_string())?;
        kiln_executor::staged::materialize(tree, content, staging.path())
            .map_err(|e| e.to_string())?;
        Ok(Materialized::Written(staging))
    }

    /// What the key of `step` is made of: the op's canonical parameters, the keys it reads
    /// from, and for context sources the checksums of the selected files.
    pub(crate) fn key_inputs(
        &self,
        step: &Step,
        parent: &str,
        stage_keys: &[(usize, String)],
    ) -> Result<KeyInputs, String> {
        let stage_key = |i: usize| -> Result<String, String> {
            stage_keys
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, k)| k.clone())
                .ok_or_else(|| format!("stage {i} has no result"))
        };
        let mut inputs = vec![("previous step".to_string(), parent.to_string())];
        let mut files = BTreeMap::new();
        let params = match &step.op {
            Op::Run(run) => {
                let mut run = run.clone();
                run.network = effective_network(run.network, self.options.network);
                for mount in &run.mounts {
                    match &mount.from {
                        Some(Source::Stage(i)) => {
                            inputs.push((format!("stage {i}"), stage_key(*i)?));
                        }
                        None if mount.kind == kiln_parser::MountKind::Bind => {
                            let pattern = mount.source.clone().unwrap_or_else(|| ".".into());
                            let sum = self.checksum(&pattern, &[], &mut files)?;
                            inputs.push((format!("context {pattern}"), sum));
                        }
                        _ => {}
                    }
                }
                serde_json::json!({ "run": run, "platform": self.options.platform })
            }
            Op::Copy(copy) => {
                for source in &copy.sources {
                    if let CopySource::Url(url) = source {
                        // Content decides, like BuildKit: a pinned checksum, else the bytes.
                        let sum = match &copy.checksum {
                            Some(sum) => sum.clone(),
                            None => self.url_digest(url)?,
                        };
                        inputs.push((format!("url {url}"), sum));
                    }
                }
                match &copy.from {
                    Source::Context => {
                        for source in &copy.sources {
                            if let CopySource::Path(pattern) = source {
                                let sum = self.checksum(pattern, &copy.exclude, &mut files)?;
                                inputs.push((format!("context {pattern}"), sum));
                            }
                        }
                    }
                    Source::Stage(i) => inputs.push((format!("stage {i}"), stage_key(*i)?)),
                    Source::Image(reference) => {
                        let image = self.resolve_image(reference)?;
                        inputs.push((format!("image {reference}"), image.key));
                    }
                }
                serde_json::json!({ "copy": copy })
            }
            Op::Workdir(w) => serde_json::json!({ "workdir": w }),
            other => serde_json::json!({ "metadata": other }),
        };
        // The layer's bytes also depend on how it is written: a record made with another
        // compression or epoch must not be reused.
        let params = serde_json::json!({
            "op": params,
            "layer": {
                "compression": self.options.compression.media_type(),
                "source_date_epoch": self.options.source_date_epoch,
            },
        });
        let input_keys: Vec<&str> = inputs.iter().map(|(_, k)| k.as_str()).collect();
        let key = vertex_key("step", &params, &input_keys);
        Ok(KeyInputs {
            key,
            inputs,
            params,
            files,
        })
    }

    /// The digest of what `url` serves now: its content and Last-Modified time (BuildKit
    /// keys HTTP sources on both).
    fn url_digest(&self, url: &str) -> Result<String, String> {
        use sha2::Digest;
        use std::io::Read;
        let dir = tempfile::tempdir_in(&self.scratch).map_err(|e| format!("ADD {url}: {e}"))?;
        let name = kiln_executor::copy::http::download(url, None, dir.path())
            .map_err(|e| e.to_string())?;
        let path = dir.path().join(name);
        let mut file = std::fs::File::open(&path).map_err(|e| format!("ADD {url}: {e}"))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(|e| format!("ADD {url}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let mtime = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(format!("sha256:{} {mtime}", hex::encode(hasher.finalize())))
    }

    fn checksum(
        &self,
        pattern: &str,
        excludes: &[String],
        files: &mut BTreeMap<String, String>,
    ) -> Result<String, String> {
        let sum = self
            .context
            .checksum(
                pattern,
                &ChecksumOptions {
                    follow_links: true,
                    wildcard: true,
                    excludes: excludes.to_vec(),
                },
            )
            .map_err(|e| e.to_string())?;
        for entry in &sum.files {
            files.insert(entry.rel_path.clone(), entry_digest(entry));
        }
        Ok(sum.digest)
    }

    /// The snapshotter for RUN: the one asked for, else overlayfs when a probe mount works
    /// here, else the copy snapshotter (with a warning saying why).
    pub(crate) async fn snapshotter(
        &self,
        progress: &Progress,
    ) -> kiln_executor::snapshot::Snapshotter {
        // Asked before the first RUN, so the one note about resource limits comes with it.
        self.limits_note.call_once(|| {
            if let kiln_executor::cgroup::Support::Unavailable(why) =
                kiln_executor::cgroup::support()
            {
                progress.send(Event::Note {
                    message: format!("note: RUN steps run without resource limits: {why}"),
                });
            }
        });
        if let Some(chosen) = self.options.snapshotter {
            return chosen;
        }
        *self
            .snapshotter
            .get_or_init(|| async {
                let (chosen, why) =
                    kiln_executor::snapshot::Snapshotter::detect(&self.scratch).await;
                if let Some(why) = why {
                    progress.send(Event::Note {
                        message: format!(
                            "warning: overlayfs is not usable here ({why}); using the copy snapshotter"
                        ),
                    });
                }
                chosen
            })
            .await
    }

    pub(crate) fn context_dir(&self) -> &std::path::Path {
        &self.options.context_dir
    }

    /// The `.dockerignore` filter for the copier: true keeps a path. A directory under
    /// which a `!` exception may re-include something is kept so the copier descends.
    pub(crate) fn context_filter(&self) -> kiln_executor::copy::SourceFilter {
        let context = self.context.clone();
        Arc::new(move |rel: &str| {
            let m = context.matcher();
            !m.matches(rel) || m.may_reinclude_under(rel)
        })
    }

    /// Saves the context stat cache so the next build re-hashes nothing unchanged.
    pub fn save_stat_cache(&self) {
        let _ = self.context.save_stat_cache();
    }
}

/// A metadata tree's snapshot: already in the store, or written and waiting for its id.
enum Materialized {
    Stored(PathBuf),
    Written(kiln_cache::StagingDir),
}

/// The layer of `layer` in `store`, unpacking its blob into a snapshot if that is missing.
pub fn ensure_snapshot(store: &Store, layer: &LayerRef) -> Result<Layer, String> {
    let id = hex_of(&layer.diff_id)?;
    if !store.has_snapshot(id) {
        let blob = store.open_blob(&layer.digest).map_err(|e| e.to_string())?;
        let staging = store.snapshot_staging().map_err(|e| e.to_string())?;
        let info = kiln_image::unpack_layer(
            std::io::BufReader::new(blob),
            staging.path(),
            &Default::default(),
        )
        .map_err(|e| format!("unpacking layer {}: {e}", layer.digest))?;
        if info.diff_id != layer.diff_id {
            return Err(format!(
                "layer {} unpacks to {} but the image says {}",
                layer.digest, info.diff_id, layer.diff_id
            ));
        }
        store
            .commit_snapshot(staging, id)
            .map_err(|e| e.to_string())?;
        // Verified just now: a step that produces this tar can reuse the blob.
        store.put_layer_blob(layer).map_err(|e| e.to_string())?;
    }
    Ok(Layer {
        diff_id: layer.diff_id.clone(),
        digest: layer.digest.clone(),
        size: layer.size,
        media_type: layer.media_type.clone(),
        snapshot: store.snapshot_path(id).map_err(|e| e.to_string())?,
    })
}

/// The layers of a stored image, bottom first, each unpacked into its snapshot if missing.
pub fn image_layers(
    store: &Store,
    manifest: &kiln_image::Manifest,
    config: &kiln_image::ImageConfig,
) -> Result<Vec<Layer>, String> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(format!(
            "manifest lists {} layers but config {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        ));
    }
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(desc, diff_id)| {
            let layer = LayerRef {
                diff_id: diff_id.clone(),
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
            };
            ensure_snapshot(store, &layer)
        })
        .collect()
}

/// The manifest and config of a stored image (`reference` only names it in errors).
pub fn read_image(
    store: &Store,
    reference: &str,
    image: &kiln_cache::ImageRef,
) -> Result<(kiln_image::Manifest, kiln_image::ImageConfig), String> {
    let read = |digest: &str| store.read_blob(digest).map_err(|e| e.to_string());
    let manifest = kiln_image::oci::parse_manifest(&read(&image.manifest)?)
        .map_err(|e| format!("{reference}: {e}"))?;
    let config = kiln_image::oci::parse_config(&read(&image.config)?)
        .map_err(|e| format!("{reference}: {e}"))?;
    Ok((manifest, config))
}

fn entry_digest(entry: &kiln_cache::context::HashedEntry) -> String {
    format!(
        "{:?} {:o} {} {}",
        entry.kind,
        entry.mode,
        entry.link_target.clone().unwrap_or_default(),
        entry.sha256.clone().unwrap_or_default()
    )
}

fn hex_of(digest: &str) -> Result<&str, String> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64)
        .ok_or_else(|| format!("not a sha256 digest: {digest}"))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
