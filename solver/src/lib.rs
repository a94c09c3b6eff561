//! kiln's solver: walks a [`kiln_parser::BuildGraph`] and produces an image.
//!
//! Owns the order of work (each stage starts when the stages it reads from are done;
//! independent stages run in parallel on tokio), cache keys, the decision hit-or-run, the
//! image config a stage accumulates and progress events. How a sandbox is made or how
//! bytes are laid out on disk belongs to the executor, cache and image crates it calls.
//!
//! The modules, from the top down:
//! - `engine`: one task per stage, started when the stages it reads are done, each in
//!   the session of its platform ([`stage_platform`]: a `FROM --platform=` stage gets one
//!   of its own); `stage`: a stage's base, then its steps in order (metadata-only ones
//!   only change its config), a COPY's new blob written while the RUN after it runs, and
//!   a new RUN's (one that never gave a layer before) while the step after it runs.
//! - `hit_or_run`: one layer step: key, look up, execute on a miss, commit, record; the
//!   solves of one multi-platform build share their steps by key (`shared_steps`:
//!   [`SharedSteps`]). Beyond the store: [`remote_cache`] asks caches elsewhere per key
//!   ([`StepCache`]) and [`remote_step`] sends an eligible RUN to a farm ([`StepExecutor`])
//!   and runs one as a farm's worker; both check what comes back before it is used.
//! - `ops`: the layer ops, one module each (`run` with its `mounts`, `copy` for COPY and
//!   ADD with `fetch` for ADD's URLs, `workdir`), each with its cache key, built from the
//!   fields it names, and its execution into an empty layer directory.
//! - [`session`]: the build session ([`BuildSession`]): store, context, options, and what is
//!   resolved once per build (images, the snapshotter, context checksums); [`named`]: the
//!   named build contexts (`--build-context`) it reads by name, directories and held images.
//! - [`images`]: stored images and their layers' snapshots; `result`: what a stage
//!   produced. Committing a step's layer (blob, snapshot, the COPY staging on a tmpfs) is
//!   the executor's ([`kiln_executor::commit::commit_layer`]): one call from `hit_or_run`,
//!   or two for a step whose blob is written beside the next step (a RUN, or a COPY before
//!   a RUN: [`kiln_executor::commit::commit_or_defer`], then the layer published after).
//! - [`key`] (the hash), [`image_state`] (the image state a stage accumulates: runtime
//!   config and history) and [`oci_config`] (that state to and from the OCI image config
//!   and manifest), [`explain`] (`--explain-cache`), [`entitlements`]
//!   (`--allow`), [`ssh`] (`--ssh` agents forwarded to `RUN --mount=type=ssh`,
//!   and the `default` one git over ssh uses),
//!   [`progress`], [`error`]; [`run`] (`kiln run`) and [`import`]
//!   (`kiln import`) use the same pieces outside a build.

mod blocking;
mod engine;
pub mod entitlements;
pub mod error;
pub mod explain;
mod hit_or_run;
pub mod image_state;
pub mod images;
pub mod import;
pub mod key;
pub mod named;
pub mod oci_config;
mod ops;
pub mod progress;
pub mod remote_cache;
pub mod remote_step;
mod result;
pub mod run;
mod secret;
pub mod session;
mod shared_steps;
pub mod ssh;
mod stage;

#[cfg(test)]
mod pinned_keys;
#[cfg(test)]
mod test_session;

pub use engine::{stage_platform, vertex_count};
pub use entitlements::{Entitlement, Entitlements, NetworkDefault};
pub use error::{SolveError, StepError};
pub use named::NamedSource;
pub use ops::git::StoreGitCache;
pub use remote_cache::{StepCache, StepCacheError};
pub use remote_step::{Executed, RemoteStep, StepExecutor, StepExecutorError};
pub use result::{Layer, StageResult};
pub use session::{BuildSession, ProgressScope, SecretSource, SolveOptions};
pub use shared_steps::SharedSteps;
pub use ssh::SshSource;

use kiln_parser::BuildGraph;
use progress::{Event, Progress};
use std::sync::Arc;

/// A built image, stored: its manifest and config are blobs in the store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// `sha256:` of the config: the image ID.
    pub config_digest: String,
    pub layers: Vec<Layer>,
    /// Cache keys of the steps whose layers the image holds (`mode=min`).
    pub image_keys: Vec<String>,
    /// Cache keys of every layer step of every stage (`mode=max`).
    pub all_keys: Vec<String>,
    /// The OCI index of a build of several platforms, whose children include this
    /// image's manifest (this one is the build machine's platform's, else the first
    /// platform's). The solver builds one platform and leaves it `None`; kiln-build's
    /// facade makes the index.
    pub index: Option<String>,
}

impl BuiltImage {
    /// What names the result (`--iidfile`, `--progress quiet`): the image ID (the config
    /// digest) of one image, the index digest of several, as buildx does.
    pub fn id(&self) -> &str {
        self.index.as_deref().unwrap_or(&self.config_digest)
    }
}

/// Builds `graph` into the session's store. Nothing is tagged here: the caller names the
/// image only after this returned `Ok`, so a failed build never gets a tag.
pub async fn build(
    session: Arc<BuildSession>,
    graph: BuildGraph,
    labels: Vec<(String, String)>,
    progress: Progress,
) -> Result<BuiltImage, SolveError> {
    entitlements::check(&graph, &session.options.entitlements)?;
    // Under --no-cache every RUN runs: their sandbox is made ready while the steps before
    // the first (a FROM's pull, a COPY's layer) run. Otherwise the first step that misses
    // the cache with RUNs after it does the same (module `hit_or_run`).
    let runs_here = session.options.no_cache
        && graph
            .stages
            .iter()
            .flat_map(|s| &s.steps)
            .any(|step| matches!(step.op, kiln_parser::Op::Run(_)));
    if runs_here {
        session.prepare_for_runs(&progress);
    }
    session.prefetch_context(&graph);
    // The image is the target stage's: a final stage for another platform (`FROM
    // --platform=$BUILDPLATFORM`) makes an image of that platform, as in BuildKit.
    let platform = match graph.stages.get(graph.target) {
        Some(stage) => engine::stage_platform(&graph, stage),
        None => graph.platform.clone(),
    };
    let phase = kiln_base::phase::start("solve (keys, cache lookups)");
    let result = engine::solve(session.clone(), Arc::new(graph), progress.clone()).await;
    phase.end();
    // The image's config and manifest are published before the build's one sync, which
    // makes them durable with its layers; the caller names the image after it.
    let phase = kiln_base::phase::start("write config, manifest");
    let image = match result {
        Ok((result, all_keys)) => {
            write_image(&session, &result, all_keys, &platform, &labels, &progress)
        }
        Err(e) => Err(e),
    };
    phase.end();
    // The build's cache records, failed build or not, reach the disk in one call; the
    // explanations written in the background first.
    let phase = kiln_base::phase::start("sync cache records");
    session.explain.flush();
    session.store.sync_records();
    phase.end();
    let phase = kiln_base::phase::start("save stat cache");
    session.save_stat_cache();
    phase.end();
    image
}

/// Stores the config and manifest of the image `result` makes, unsynced
/// ([`kiln_store::Store::put_blob_bytes_unsynced`]: [`build`] syncs them).
fn write_image(
    session: &BuildSession,
    result: &result::StageResult,
    all_keys: Vec<String>,
    platform: &kiln_parser::Platform,
    labels: &[(String, String)],
    progress: &Progress,
) -> Result<BuiltImage, SolveError> {
    progress.send(Event::Note {
        message: "exporting to image".to_string(),
    });
    let created = kiln_image::oci::rfc3339(match session.options.source_date_epoch {
        Some(epoch) => epoch,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    });
    let config = kiln_image::oci::canonical_json(&oci_config::image_config(
        result, platform, &created, labels,
    ));
    let store = &session.store;
    let config_blob = store.put_blob_bytes_unsynced(&config).map_err(|source| {
        SolveError::internal(StepError::Export {
            what: "writing the image config",
            source,
        })
    })?;
    let manifest = kiln_image::oci::canonical_json(&oci_config::manifest(
        result,
        &config_blob.digest,
        config_blob.size,
    ));
    let manifest_blob = store.put_blob_bytes_unsynced(&manifest).map_err(|source| {
        SolveError::internal(StepError::Export {
            what: "writing the manifest",
            source,
        })
    })?;
    Ok(BuiltImage {
        manifest_digest: manifest_blob.digest,
        config_digest: config_blob.digest,
        layers: result.layers.clone(),
        image_keys: result.keys.clone(),
        all_keys,
        index: None,
    })
}
