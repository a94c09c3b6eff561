//! A RUN step that can run on another machine (`kiln build --remote`, `kiln worker`): the
//! step as a self-contained spec ([`RemoteStep`]: the process, its environment, the options
//! of the build that shape it, the layer format, and the parent's layers), the trait the
//! solver sends eligible steps through ([`StepExecutor`]), and what a worker does with a
//! spec ([`execute`]): the same sandbox, commit and layer writer as a local RUN, so the
//! layer it makes is byte for byte the local one.
//!
//! Eligible: a RUN with no mounts (cache, secret, ssh and bind mounts are the client's
//! machine's) and no `--security=insecure`. Everything else runs locally.

use crate::entitlements::effective_network;
use crate::result::Layer;
use crate::session::BuildSession;
use kiln_executor::commit::{CommitRequest, LayerFormat, LayerSource, commit_layer};
use kiln_executor::sandbox::{self, RunOptions, RunSpec};
use kiln_image::Compression;
use kiln_parser::{NetworkMode, Platform, RunOp, SecurityMode};
use kiln_store::{LayerRef, Store};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// Bumped when the spec's meaning changes: a worker refuses another version.
pub const SPEC_VERSION: u32 = 1;

/// What a farm's worker needs to make a RUN's layer. Canonical JSON on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteStep {
    pub argv: Vec<String>,
    /// The layer format: `gzip`, `zstd` or `none`.
    pub compression: String,
    pub env: Vec<(String, String)>,
    /// Inline files (heredocs): path, content, mode.
    pub files: Vec<(String, String, u32)>,
    /// The parent's layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Whether the RUN shares the host's network (else it gets only `lo`).
    pub network_host: bool,
    /// `os/arch[/variant]`.
    pub platform: String,
    pub run_options: RunOptions,
    pub source_date_epoch: Option<i64>,
    pub user: String,
    pub version: u32,
    pub workdir: String,
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

impl RemoteStep {
    /// The spec of `run` on `layers` in `session`, or `None` when it must run locally.
    pub(crate) fn of(run: &RunOp, session: &BuildSession, layers: &[Layer]) -> Option<RemoteStep> {
        if !run.mounts.is_empty() || run.security != SecurityMode::Sandbox {
            return None;
        }
        let options = &session.options;
        Some(RemoteStep {
            argv: run.argv.clone(),
            compression: compression_name(options.compression).to_string(),
            env: run.env.clone(),
            files: run
                .files
                .iter()
                .map(|f| (f.path.clone(), f.content.clone(), f.mode))
                .collect(),
            layers: layers.iter().map(Layer::layer_ref).collect(),
            network_host: effective_network(run.network, options.network) != NetworkMode::None,
            platform: options.platform.to_string(),
            run_options: options.run_options.clone(),
            source_date_epoch: options.source_date_epoch,
            user: run.user.clone(),
            version: SPEC_VERSION,
            workdir: run.workdir.clone(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Only strings, numbers and lists: canonical JSON cannot fail on it.
        kiln_store::canonical_json(self).unwrap_or_default()
    }

    /// Reads a spec a client sent (bounded by the caller), of this version.
    pub fn parse(bytes: &[u8]) -> Result<RemoteStep, String> {
        let step: RemoteStep =
            serde_json::from_slice(bytes).map_err(|e| format!("not a kiln step spec: {e}"))?;
        if step.version != SPEC_VERSION {
            return Err(format!(
                "a step spec of version {}, this worker reads {SPEC_VERSION}",
                step.version
            ));
        }
        Ok(step)
    }
}

/// What an executor may fail with: shown in the warning, then the step runs locally.
pub type StepExecutorError = Box<dyn std::error::Error + Send + Sync>;

/// Runs steps somewhere else (a REAPI farm's kiln workers).
pub trait StepExecutor: Send + Sync + std::fmt::Debug {
    /// How messages name it (its endpoint).
    fn name(&self) -> &str;

    /// Runs `step` (its spec's bytes) on `layers` (blobs of `store`); `no_cache` says the
    /// farm must run it even if its own action cache has the result (`--no-cache`). `Err`
    /// when the farm could not run it (it is then not asked again in this build).
    fn execute<'a>(
        &'a self,
        step: Vec<u8>,
        layers: &'a [LayerRef],
        store: &'a Store,
        no_cache: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Executed, StepExecutorError>> + Send + 'a>>;
}

/// What the farm did with a step.
#[derive(Debug, Clone)]
pub enum Executed {
    /// The layer is in the store (its blob, checked against its digest); `worker` ran it.
    Done { layer: LayerRef, worker: String },
    /// The process failed there, with these words: the step runs locally, where it fails
    /// the way a local build shows.
    Failed(String),
}

/// The build's executor, with whether it has failed yet (shared by sibling sessions).
#[derive(Debug, Default)]
pub(crate) struct RemoteRunner {
    executor: Option<std::sync::Arc<dyn StepExecutor>>,
    failed: std::sync::atomic::AtomicBool,
}

impl RemoteRunner {
    pub fn new(executor: Option<std::sync::Arc<dyn StepExecutor>>) -> RemoteRunner {
        RemoteRunner {
            executor,
            failed: Default::default(),
        }
    }

    /// Runs `run` on the farm when there is one and the step may go there; `None` means
    /// run it here.
    pub async fn run(
        &self,
        session: &std::sync::Arc<BuildSession>,
        run: &RunOp,
        layers: &[Layer],
        no_cache: bool,
        progress: &crate::progress::Progress,
        id: usize,
    ) -> Option<Layer> {
        use crate::progress::{Event, Stream};
        use std::sync::atomic::Ordering;
        let executor = self.executor.as_ref()?;
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        let step = RemoteStep::of(run, session, layers)?;
        let log = |line: String| {
            progress.send(Event::Log {
                id,
                stream: Stream::Info,
                line,
            })
        };
        let _phase = kiln_base::phase::start("step: remote execution");
        let outcome = executor
            .execute(step.to_bytes(), &step.layers, &session.store, no_cache)
            .await;
        let warn = |why: String| {
            if !self.failed.swap(true, Ordering::Relaxed) {
                progress.send(Event::Note {
                    message: format!(
                        "warning: remote execution on {}: {why}; running steps here",
                        executor.name()
                    ),
                });
            }
        };
        match outcome {
            Ok(Executed::Done { layer, worker }) => {
                let s = session.clone();
                let checked = layer.clone();
                let ready = crate::blocking::blocking(move || {
                    crate::images::ensure_verified(&s.store, &checked)
                })
                .await;
                match ready {
                    Ok(ready) => {
                        log(format!(
                            "ran on the farm {} (worker {worker})",
                            executor.name()
                        ));
                        Some(ready)
                    }
                    Err(e) => {
                        warn(format!("layer {}: {e}", layer.digest));
                        None
                    }
                }
            }
            Ok(Executed::Failed(said)) => {
                log(format!("failed on the farm ({said}); running it here"));
                None
            }
            Err(e) => {
                warn(e.to_string());
                None
            }
        }
    }
}

/// Runs `step` in `store` as a worker: unpacks its layers (blobs already stored, each
/// checked against its diff_id), runs the process in the sandbox over them, and commits
/// the layer. Errors are the words the client shows.
pub async fn execute(store: &Store, step: &RemoteStep) -> Result<LayerRef, String> {
    let compression = Compression::from_name(&step.compression)
        .ok_or_else(|| format!("unknown compression {:?}", step.compression))?;
    Platform::parse(&step.platform).map_err(|e| format!("platform {:?}: {e}", step.platform))?;
    let mut layers = Vec::new();
    for layer in &step.layers {
        let s = store.clone();
        let l = layer.clone();
        let ready = tokio::task::spawn_blocking(move || crate::images::ensure_verified(&s, &l))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("layer {}: {e}", layer.digest))?;
        layers.push(ready);
    }
    let lowers = crate::result::lowers_of(&layers);
    let out = store.snapshot_staging().map_err(|e| e.to_string())?;
    let work = store.snapshot_staging().map_err(|e| e.to_string())?;
    let scratch = store.scratch_dir().map_err(|e| e.to_string())?;
    let (snapshotter, _) = kiln_executor::snapshot::Snapshotter::detect(&scratch).await;
    let spec = RunSpec {
        argv: step.argv.clone(),
        env: step.env.clone(),
        cwd: step.workdir.clone(),
        user: step.user.clone(),
        hostname: "buildkitsandbox".to_string(),
        network: if step.network_host {
            sandbox::Network::Host
        } else {
            sandbox::Network::None
        },
        lowers: lowers.clone(),
        upper: out.path().to_path_buf(),
        work: work.path().to_path_buf(),
        mounts: Vec::new(),
        files: step
            .files
            .iter()
            .map(|(path, content, mode)| (path.clone(), content.clone().into_bytes(), *mode))
            .collect(),
        snapshotter,
        insecure: false,
        options: step.run_options.clone(),
    };
    let mut tail = crate::progress::OutputTail::default();
    let outcome = sandbox::run(spec, |line: sandbox::OutputLine| {
        tail.push(&String::from_utf8_lossy(&line.line));
    })
    .await
    .map_err(|e| e.to_string())?;
    if !outcome.success() {
        let mut said = format!("{} exited with {}", step.argv.join(" "), outcome.exit_code);
        for line in tail.into_lines() {
            said.push('\n');
            said.push_str(&line);
        }
        return Err(said);
    }
    kiln_executor::runc_compat::add_runc_mount_dirs(&lowers, out.path())
        .map_err(|e| e.to_string())?;
    let s = store.clone();
    let format = LayerFormat {
        compression,
        source_date_epoch: step.source_date_epoch,
    };
    let committed = tokio::task::spawn_blocking(move || {
        commit_layer(CommitRequest {
            store: &s,
            format,
            recorded: None,
            previous: None,
            unchanged: None,
            source: LayerSource::Dir(out),
            note: &|_| {},
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    Ok(committed.layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> RemoteStep {
        RemoteStep {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi > /x".into()],
            compression: "gzip".into(),
            env: vec![("PATH".into(), "/bin".into())],
            files: Vec::new(),
            layers: vec![LayerRef {
                diff_id: format!("sha256:{}", "1".repeat(64)),
                digest: format!("sha256:{}", "2".repeat(64)),
                media_type: Compression::Gzip.media_type().into(),
                size: 3,
            }],
            network_host: false,
            platform: "linux/amd64".into(),
            run_options: RunOptions::default(),
            source_date_epoch: Some(0),
            user: String::new(),
            version: SPEC_VERSION,
            workdir: "/".into(),
        }
    }

    #[test]
    fn specs_round_trip_and_another_version_is_refused() {
        let bytes = step().to_bytes();
        assert_eq!(RemoteStep::parse(&bytes).unwrap(), step());
        let mut other = step();
        other.version = SPEC_VERSION + 1;
        let err = RemoteStep::parse(&other.to_bytes()).unwrap_err();
        assert!(err.contains("version"), "{err}");
        assert!(RemoteStep::parse(b"{\"argv\":[]}").is_err());
        let unknown = String::from_utf8(bytes)
            .unwrap()
            .replacen('{', "{\"extra\":1,", 1);
        assert!(RemoteStep::parse(unknown.as_bytes()).is_err());
    }
}
