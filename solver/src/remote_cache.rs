//! Step caches beyond the store (`--cache-from type=reapi,...`): asked for a step's key
//! when the store misses it, one lookup per step, as BuildKit's remote cache importers
//! are asked per key rather than copied in whole.
//!
//! A remote is never trusted and never needed. What it answers is checked before any
//! record is written: the layer blob against its digest (by the remote's client, before
//! the store keeps it), its media type against the build's compression, and what the blob
//! unpacks to against the diff_id the image will name ([`crate::images::ensure_verified`]).
//! Any failure (down, slow, garbage, a layer that does not hold its diff_id) turns that
//! remote off for the rest of the build with one warning, and the step runs locally.

use crate::images::ensure_verified;
use crate::progress::{Event, Progress, Stream};
use crate::result::Layer;
use crate::session::BuildSession;
use kiln_store::{LayerRef, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a lookup may fail with: the remote's own error, shown in the warning.
pub type StepCacheError = Box<dyn std::error::Error + Send + Sync>;

/// A cache of step results somewhere else (a REAPI Action Cache).
pub trait StepCache: Send + Sync + std::fmt::Debug {
    /// How messages name it (its endpoint).
    fn name(&self) -> &str;

    /// The layer recorded for `key`, if any, with its blob already in `store` (checked
    /// against its digest).
    fn fetch<'a>(
        &'a self,
        key: &'a str,
        store: &'a Store,
    ) -> Pin<Box<dyn Future<Output = Result<Option<LayerRef>, StepCacheError>> + Send + 'a>>;
}

/// The build's remotes, each with whether it has failed yet.
#[derive(Debug, Default)]
pub(crate) struct RemoteCaches {
    caches: Vec<(Arc<dyn StepCache>, AtomicBool)>,
}

impl RemoteCaches {
    pub fn new(caches: &[Arc<dyn StepCache>]) -> RemoteCaches {
        RemoteCaches {
            caches: caches
                .iter()
                .map(|c| (c.clone(), AtomicBool::new(false)))
                .collect(),
        }
    }

    /// Looks `key` up in each remote still on, in order; on a checked hit the record is
    /// written to the store (so the next build finds it locally) and the layer returned.
    pub async fn fetch(
        &self,
        session: &Arc<BuildSession>,
        key: &str,
        progress: &Progress,
        id: usize,
    ) -> Option<Layer> {
        for (cache, failed) in &self.caches {
            if failed.load(Ordering::Relaxed) {
                continue;
            }
            let phase = kiln_base::phase::start("step: remote cache lookup");
            let fetched = fetch_checked(session, cache.as_ref(), key).await;
            phase.end();
            match fetched {
                Ok(None) => {}
                Ok(Some(layer)) => {
                    progress.send(Event::Log {
                        id,
                        stream: Stream::Info,
                        line: format!(
                            "layer {} from the remote cache {}",
                            layer.digest,
                            cache.name()
                        ),
                    });
                    return Some(layer);
                }
                Err(e) => {
                    // Once: the first failure turns the remote off for this build.
                    if !failed.swap(true, Ordering::Relaxed) {
                        progress.send(Event::Note {
                            message: format!(
                                "warning: remote cache {}: {e}; building without it",
                                cache.name()
                            ),
                        });
                    }
                }
            }
        }
        None
    }
}

async fn fetch_checked(
    session: &Arc<BuildSession>,
    cache: &dyn StepCache,
    key: &str,
) -> Result<Option<Layer>, StepCacheError> {
    let Some(layer) = cache.fetch(key, &session.store).await? else {
        return Ok(None);
    };
    let expected = session.options.compression.media_type();
    if layer.media_type != expected {
        return Err(format!(
            "it answered a {} layer for a {expected} build",
            layer.media_type
        )
        .into());
    }
    let _phase = kiln_base::phase::start("remote: check layer, unpack, record");
    let s = session.clone();
    let checked = layer.clone();
    let ready = crate::blocking::blocking(move || ensure_verified(&s.store, &checked))
        .await
        .map_err(|e| format!("layer {}: {e}", layer.digest))?;
    crate::hit_or_run::record(session, key, layer)?;
    Ok(Some(ready))
}
