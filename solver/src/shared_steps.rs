//! The steps of one build's solves by key, each made once: a build for several platforms
//! solves one graph per platform at once, and a step whose key another solve is making
//! waits for it and takes its layer (see [`crate::SolveOptions::shared_steps`]), so a
//! stage every platform reads with the same inputs (`FROM --platform=$BUILDPLATFORM`)
//! runs once. `hit_or_run` uses it.

use crate::result::Layer;
use std::collections::HashMap;
use std::sync::Arc;

/// The layers of the steps made (or being made) in this build, by key.
#[derive(Debug, Default)]
pub struct SharedSteps {
    steps: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Layer>>>>,
}

impl SharedSteps {
    /// The cell the layer of the step `key` is made in, once.
    pub(crate) fn cell(&self, key: &str) -> Arc<tokio::sync::OnceCell<Layer>> {
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.entry(key.to_string()).or_default().clone()
    }
}
