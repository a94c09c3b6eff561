//! What a stage produces and the steps after it read: its layers, config and keys.

use crate::error::StepError;
use crate::image_state::ImageState;
use std::path::PathBuf;
use std::sync::Arc;

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

impl Layer {
    /// The layer as a cache record or the blob index names it (without its snapshot).
    pub fn layer_ref(&self) -> kiln_store::LayerRef {
        kiln_store::LayerRef {
            diff_id: self.diff_id.clone(),
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            size: self.size,
        }
    }
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

/// The result of stage `index` among `inputs`.
pub(crate) fn find_input(inputs: &StageInputs, index: usize) -> Result<&StageResult, StepError> {
    inputs
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, r)| r.as_ref())
        .ok_or(StepError::StageNotSolved(index))
}
