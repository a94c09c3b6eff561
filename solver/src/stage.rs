//! Running one stage: its base, then its steps in order, each a cache hit or an execution.

use crate::Backend;
use crate::config::ImageState;
use crate::engine::{started, vertex_name};
use crate::error::SolveError;
use crate::key;
use crate::progress::{Event, Progress};
use kiln_parser::{Base, BuildGraph};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A committed layer: what the image lists and where its files sit unpacked.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub diff_id: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The layer directory (overlay lower dir) in the store.
    pub snapshot: PathBuf,
}

/// What a stage produced: the key of its last layer step, its layers and its config.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub key: String,
    pub layers: Vec<Layer>,
    pub state: ImageState,
    /// History entries that came with the base image (they keep their own times).
    pub base_history: usize,
    /// Cache keys of the layer steps that made `layers` (inherited stages' included),
    /// for exporting the cache of this result (`--cache-to ... mode=min`).
    pub keys: Vec<String>,
}

impl StageResult {
    /// Snapshot directories of the layers, bottom first, as a rootfs needs them: a layer
    /// that appears twice (two steps with the same diff) is kept only at its top-most place
    /// — every entry of the lower copy is repeated above it, so the merged view is the same,
    /// and overlayfs refuses a directory used twice.
    pub fn lowers(&self) -> Vec<PathBuf> {
        lowers_of(&self.layers)
    }
}

/// The results of the stages a stage reads from, by index into the graph's stages.
pub type StageInputs = Vec<(usize, Arc<StageResult>)>;

pub(crate) struct StageRunner {
    pub backend: Arc<Backend>,
    pub graph: Arc<BuildGraph>,
    pub index: usize,
    pub ids: Vec<usize>,
    pub progress: Progress,
}

/// The FROM line progress shows: an image base expanded and with its tag, as the store
/// names it (`FROM ${BASE}` in the Dockerfile shows as `FROM alpine:3`; BuildKit also
/// shows the expanded name), never the unexpanded source.
fn from_line(stage: &kiln_parser::Stage) -> String {
    match &stage.base {
        Base::Image(reference) => {
            let name = kiln_cache::normalize_ref(reference).unwrap_or_else(|_| reference.clone());
            format!("FROM {name}")
        }
        _ => stage.source.clone(),
    }
}

impl StageRunner {
    pub async fn run(self, inputs: StageInputs) -> Result<StageResult, SolveError> {
        let stage = &self.graph.stages[self.index];
        let label = if self.graph.stages.len() == 1 && stage.name.is_none() {
            String::new()
        } else {
            stage.display_name()
        };
        let total = self.ids.len();
        let from_id = self.ids[0];
        started(
            &self.progress,
            from_id,
            vertex_name(&label, 1, total, &from_line(stage)),
        );
        let t0 = Instant::now();
        let mut current = match &stage.base {
            Base::Scratch => StageResult {
                key: key::scratch_key(),
                layers: Vec::new(),
                state: ImageState::scratch(),
                base_history: 0,
                keys: Vec::new(),
            },
            Base::Stage(i) => {
                let base = find_input(&inputs, *i)?;
                StageResult {
                    key: base.key.clone(),
                    layers: base.layers.clone(),
                    state: ImageState::inherit(&base.state),
                    base_history: base.base_history,
                    keys: base.keys.clone(),
                }
            }
            Base::Image(reference) => {
                let backend = self.backend.clone();
                let reference = reference.clone();
                let resolved = match blocking(move || backend.resolve_image(&reference)).await {
                    Ok(resolved) => resolved,
                    Err(message) => {
                        self.progress.send(Event::Failed {
                            id: from_id,
                            error: message.clone(),
                        });
                        return Err(SolveError::at(stage.span, &stage.source, message));
                    }
                };
                let base_history = resolved.state.history.len();
                StageResult {
                    key: resolved.key,
                    layers: resolved.layers,
                    state: ImageState::inherit(&resolved.state),
                    base_history,
                    keys: Vec::new(),
                }
            }
        };
        self.progress.send(Event::Done {
            id: from_id,
            elapsed: t0.elapsed(),
        });

        let no_cache = self.backend.options.no_cache
            || stage.name.as_ref().is_some_and(|n| {
                self.backend
                    .options
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            });
        let mut n = 1;
        for step in &stage.steps {
            if step.is_metadata_only() {
                current.state.apply(step);
                continue;
            }
            let id = self.ids[n];
            n += 1;
            started(
                &self.progress,
                id,
                vertex_name(&label, n, total, &step.source),
            );
            let t0 = Instant::now();
            let outcome = self
                .backend
                .clone()
                .solve_step(step, &current, &inputs, id, no_cache, &self.progress)
                .await;
            let (step_key, layer, cached) = match outcome {
                Ok(v) => v,
                Err(mut e) => {
                    if let kiln_parser::Op::Run(run) = &step.op {
                        // Best effort: the build fails with its own error either way.
                        e.debug_image = crate::run::store_debug_state(&self.backend, &current, run)
                            .ok()
                            .map(String::into_boxed_str);
                    }
                    self.progress.send(Event::Failed {
                        id,
                        error: e.message.clone(),
                    });
                    return Err(e);
                }
            };
            if cached {
                self.progress.send(Event::Cached { id });
            } else {
                self.progress.send(Event::Done {
                    id,
                    elapsed: t0.elapsed(),
                });
            }
            current.keys.push(step_key.clone());
            current.key = step_key;
            current.layers.push(layer);
            current.state.apply(step);
        }
        Ok(current)
    }
}

/// See [`StageResult::lowers`].
pub(crate) fn lowers_of(layers: &[Layer]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut top_first: Vec<PathBuf> = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        if seen.insert(layer.diff_id.as_str()) {
            top_first.push(layer.snapshot.clone());
        }
    }
    top_first.reverse();
    top_first
}

pub(crate) fn find_input(inputs: &StageInputs, index: usize) -> Result<&StageResult, SolveError> {
    inputs
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, r)| r.as_ref())
        .ok_or_else(|| SolveError::internal(format!("stage {index} was not solved first")))
}

/// Runs blocking work (hashing, copying, tar) off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("worker failed: {e}")),
    }
}
