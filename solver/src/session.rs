//! The build session: the store, the context and the options one build works with, and
//! what it resolves once per build (images, the snapshotter, the context's checksums).
//!
//! Per-step work lives in `crate::hit_or_run` and `crate::ops`; ordering in
//! `crate::engine` and `crate::stage`.

use crate::entitlements::NetworkDefault;
use crate::error::ImageError;
use crate::error::{SolveError, StepError};
use crate::explain::ExplainLog;
use crate::images::{ResolvedImage, ensure_snapshot, image_layers, read_image};
use crate::key::vertex_key;
use crate::oci_config;
use crate::progress::{Event, Progress};
use crate::result::Layer;
use kiln_context::Context;
use kiln_image::Compression;
use kiln_parser::Platform;
use kiln_store::{LayerRef, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// The secret's bytes; errors name the secret and where it was looked for, never
    /// what it holds.
    pub(crate) fn read(&self, id: &str) -> Result<Vec<u8>, StepError> {
        match self {
            SecretSource::File(path) => {
                std::fs::read(path).map_err(|source| StepError::SecretRead {
                    id: id.to_string(),
                    path: path.clone(),
                    source,
                })
            }
            SecretSource::Env(name) => {
                std::env::var(name)
                    .map(String::into_bytes)
                    .map_err(|_| StepError::SecretEnv {
                        id: id.to_string(),
                        name: name.clone(),
                    })
            }
        }
    }
}

/// The host name of `url` as Go's `URL.Hostname` gives it: no user, no port, no brackets.
fn url_hostname(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// How to build, beyond the graph.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// Keep a stat cache of the context in the store; off for a context checked out
    /// afresh for this build (a git URL), whose stat data is never seen again.
    pub context_stat_cache: bool,
    /// The Dockerfile's path (for the ignore file beside it and explanations).
    pub dockerfile: PathBuf,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub compression: Compression,
    /// Clamp times to this; `None` keeps real times (`--timestamp=keep`).
    pub source_date_epoch: Option<i64>,
    pub network: NetworkDefault,
    /// What the Dockerfile may ask for beyond the defaults (`--allow`).
    pub entitlements: crate::entitlements::Entitlements,
    /// `None` picks one the first time a RUN has to execute (a fully cached build never
    /// pays for the overlay probe).
    pub snapshotter: Option<kiln_executor::snapshot::Snapshotter>,
    pub secrets: Vec<(String, SecretSource)>,
    /// `--ssh`: agents by id, for `RUN --mount=type=ssh`.
    pub ssh: Vec<(String, crate::ssh::SshSource)>,
    pub explain_cache: bool,
    pub platform: Platform,
    /// What the command line adds to every RUN (`--add-host`, `--ulimit`,
    /// `--shm-size`); part of the RUN's key where BuildKit keys it (module `ops::run`).
    pub run_options: kiln_executor::sandbox::RunOptions,
    /// `--build-context`s lowering may have named (`Source::Named`, `Base::Named`), by name.
    pub named_contexts: Vec<(String, crate::named::NamedSource)>,
    /// How this solve's vertices are numbered and named in progress output.
    pub progress_scope: ProgressScope,
    /// Steps shared with the other solves of one build (one per platform): a step whose
    /// key another solve is making waits for it and takes its layer, so a stage every
    /// platform reads (`FROM --platform=$BUILDPLATFORM`) runs once. `None` for a build of
    /// one platform.
    pub shared_steps: Option<Arc<crate::shared_steps::SharedSteps>>,
    /// Caches asked for a step the store misses (`--cache-from type=reapi`), in order.
    pub remote_caches: Vec<Arc<dyn crate::remote_cache::StepCache>>,
    /// Where eligible RUN steps run instead of here (`--remote`).
    pub remote_executor: Option<Arc<dyn crate::remote_step::StepExecutor>>,
}

/// Where a solve's vertex numbers start and whether names show platforms: a build of
/// several platforms solves one graph per platform at once, into one progress stream, so
/// each gets its own numbers and each vertex shows the platform its stage is built for
/// (`[linux/arm64 build 2/4]`; a `$BUILDPLATFORM` stage's `[linux/amd64 tools 1/3]`), as
/// BuildKit shows them.
#[derive(Debug, Clone)]
pub struct ProgressScope {
    /// The first vertex number (`#1` for a build of one platform).
    pub first: usize,
    /// Whether vertex names start with their stage's platform.
    pub show_platform: bool,
}

impl Default for ProgressScope {
    fn default() -> ProgressScope {
        ProgressScope {
            first: 1,
            show_platform: false,
        }
    }
}

/// What the solver works with: the store, the context and the options.
pub struct BuildSession {
    pub store: Store,
    pub options: SolveOptions,
    /// This process's scratch directory in the store (see `kiln_store::Store::scratch_dir`):
    /// staging put here is reclaimed if the build is killed.
    pub scratch: std::path::PathBuf,
    snapshotter: tokio::sync::OnceCell<kiln_executor::snapshot::Snapshotter>,
    /// Whether the build has said that RUN has no cgroup limits here.
    limits_note: std::sync::Once,
    /// Whether [`BuildSession::prepare_for_runs`] was called.
    runs_prepared: std::sync::Once,
    context: Arc<Context>,
    pub(crate) named: Arc<crate::named::NamedContexts>,
    pub(crate) explain: ExplainLog,
    /// Shared with sibling sessions: a remote that failed stays off for the whole build.
    pub(crate) remote: Arc<crate::remote_cache::RemoteCaches>,
    pub(crate) remote_runner: Arc<crate::remote_step::RemoteRunner>,
    /// Images resolved so far: a FROM, a `COPY --from` or a mount from an image reads its
    /// manifest, config and snapshots once per build, and every step sees the same image
    /// even if its tag moves meanwhile.
    images: std::sync::Mutex<std::collections::HashMap<String, ResolvedImage>>,
    /// Agents started for `--ssh ID=KEYFILE`, by id: one per build, on first use.
    key_agents: std::sync::Mutex<std::collections::HashMap<String, Arc<crate::ssh::KeyAgent>>>,
    /// Git refs resolved so far, by remote and ref: every step sees the same commit even
    /// if the ref moves during the build.
    git_refs:
        std::sync::Mutex<std::collections::HashMap<(String, String), kiln_context::git::Resolved>>,
}

impl BuildSession {
    pub fn new(store: Store, options: SolveOptions) -> Result<BuildSession, SolveError> {
        let matcher = kiln_context::ignore::load_for(&options.context_dir, &options.dockerfile)
            .map_err(SolveError::internal)?;
        let stat_cache = options
            .context_stat_cache
            .then(|| store.stat_cache_path(&options.context_dir));
        let context = Arc::new(
            Context::open(&options.context_dir, matcher, stat_cache)
                .map_err(SolveError::internal)?,
        );
        let named = Arc::new(
            crate::named::NamedContexts::open(&store, &options.named_contexts)
                .map_err(SolveError::internal)?,
        );
        let explain = ExplainLog::new(&store);
        let scratch = store.scratch_dir().map_err(SolveError::internal)?;
        let remote = Arc::new(crate::remote_cache::RemoteCaches::new(
            &options.remote_caches,
        ));
        let remote_runner = Arc::new(crate::remote_step::RemoteRunner::new(
            options.remote_executor.clone(),
        ));
        Ok(BuildSession {
            remote,
            remote_runner,
            store,
            scratch,
            snapshotter: tokio::sync::OnceCell::new(),
            limits_note: std::sync::Once::new(),
            runs_prepared: std::sync::Once::new(),
            options,
            context,
            named,
            explain,
            images: Default::default(),
            key_agents: Default::default(),
            git_refs: Default::default(),
        })
    }

    /// The session a stage for `platform` runs in: this one when it is the build's, else
    /// one for that platform (a `FROM --platform=$BUILDPLATFORM` stage runs natively),
    /// sharing the context and its checksums, the named contexts and the options, so its
    /// images, RUN keys and executions are that platform's.
    pub(crate) fn for_platform(self: &Arc<Self>, platform: &Platform) -> Arc<BuildSession> {
        if *platform == self.options.platform {
            return self.clone();
        }
        self.sibling(|options| options.platform = platform.clone())
    }

    /// A session with this one's options as `change` leaves them, sharing its context
    /// (and so every checksum it made), named contexts and explain log; what it resolves
    /// (images, git refs, agents) is its own.
    pub fn sibling(self: &Arc<Self>, change: impl FnOnce(&mut SolveOptions)) -> Arc<BuildSession> {
        let mut options = self.options.clone();
        change(&mut options);
        Arc::new(BuildSession {
            store: self.store.clone(),
            options,
            scratch: self.scratch.clone(),
            snapshotter: self.snapshotter.clone(),
            limits_note: std::sync::Once::new(),
            runs_prepared: std::sync::Once::new(),
            context: self.context.clone(),
            named: self.named.clone(),
            explain: self.explain.clone(),
            remote: self.remote.clone(),
            remote_runner: self.remote_runner.clone(),
            images: Default::default(),
            key_agents: Default::default(),
            git_refs: Default::default(),
        })
    }

    /// The socket of the agent `--ssh` gave as `id`, `None` when it gave none. Keys get an
    /// agent of their own, started the first time a RUN needs it and kept for the build;
    /// the returned handle keeps it alive too.
    pub(crate) fn ssh_agent(
        &self,
        id: &str,
    ) -> Result<Option<crate::ssh::AgentSocket>, crate::ssh::SshError> {
        let Some((_, source)) = self.options.ssh.iter().find(|(i, _)| i == id) else {
            return Ok(None);
        };
        let socket = source.agent(|keys| {
            let mut agents = self
                .key_agents
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(agent) = agents.get(id) {
                return Ok(agent.clone());
            }
            let agent = Arc::new(crate::ssh::KeyAgent::start(&self.scratch, keys)?);
            agents.insert(id.to_string(), agent.clone());
            Ok(agent)
        })?;
        Ok(Some(socket))
    }

    /// The agent git over ssh authenticates with (`--ssh default`, as in BuildKit); `None`
    /// when the build was given none. A key-file agent is the one RUN mounts share.
    pub(crate) fn git_ssh_agent(
        &self,
    ) -> Result<Option<crate::ssh::GitAgent>, crate::ssh::SshError> {
        match self.ssh_agent(crate::ssh::GIT_SSH_ID)? {
            Some(socket) => crate::ssh::GitAgent::new(socket).map(Some),
            None => Ok(None),
        }
    }

    /// The `Authorization` header for downloading `url`, from BuildKit's per-host build
    /// secrets: `HTTP_AUTH_HEADER_<host>` as it is, else `HTTP_AUTH_TOKEN_<host>` as a
    /// bearer token (the token wins when both are given, as in BuildKit). Which secret is
    /// used is not part of any key; the header never shows in a message.
    pub(crate) fn http_authorization(
        &self,
        url: &str,
    ) -> Result<Option<kiln_executor::copy::http::Authorization>, StepError> {
        let host = url_hostname(url);
        if host.is_empty() {
            return Ok(None);
        }
        let secret = |prefix: &str| -> Result<Option<String>, StepError> {
            let id = format!("{prefix}{host}");
            let found = self.options.secrets.iter().find(|(sid, _)| *sid == id);
            let Some((_, source)) = found else {
                return Ok(None);
            };
            let value = source.read(&id)?;
            let value = String::from_utf8_lossy(&value)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            Ok(Some(value).filter(|v| !v.is_empty()))
        };
        let value = match (secret("HTTP_AUTH_TOKEN_")?, secret("HTTP_AUTH_HEADER_")?) {
            (Some(token), _) => format!("Bearer {token}"),
            (None, Some(header)) => header,
            (None, None) => return Ok(None),
        };
        Ok(Some(kiln_executor::copy::http::Authorization::new(value)))
    }

    /// Finds `reference` among the store's images, with every layer unpacked.
    pub fn resolve_image(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
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

    fn resolve_image_uncached(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let name = kiln_store::normalize_ref(reference)?;
        let stored = self
            .store
            .get_ref(&name)?
            .ok_or_else(|| ImageError::NotFound {
                reference: reference.to_string(),
            })?;
        // Lowering made sure the store holds the image for the build's platform; a stored
        // image of another platform with no child for it is used as it is, as before.
        let image =
            crate::images::for_platform(&self.store, reference, &stored, &self.options.platform)?
                .unwrap_or(stored);
        let (manifest, config) = read_image(&self.store, reference, &image)?;
        let layers =
            image_layers(&self.store, &manifest, &config).map_err(|e| ImageError::Layers {
                reference: reference.to_string(),
                source: Box::new(e),
            })?;
        Ok(ResolvedImage {
            key: vertex_key("image", &image.manifest, &[]),
            layers,
            state: oci_config::state_from_config(&config),
        })
    }

    /// `reference` of git `remote` as this build resolved it first (`resolve` asks the
    /// remote when this build has not yet).
    pub(crate) fn resolve_git(
        &self,
        remote: &str,
        reference: &str,
        resolve: impl FnOnce() -> Result<kiln_context::git::Resolved, StepError>,
    ) -> Result<kiln_context::git::Resolved, StepError> {
        let key = (remote.to_string(), reference.to_string());
        if let Some(known) = self.git_refs.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(known);
        }
        let resolved = resolve()?;
        if let Ok(mut refs) = self.git_refs.lock() {
            // A build that resolved it meanwhile wins: the first answer is the build's.
            return Ok(refs.entry(key).or_insert(resolved).clone());
        }
        Ok(resolved)
    }

    /// The layer of `layer`, unpacking its blob into a snapshot if that is missing.
    pub fn ensure_snapshot(&self, layer: &LayerRef) -> Result<Layer, ImageError> {
        ensure_snapshot(&self.store, layer)
    }

    /// The checksum of what `pattern` selects in the context (minus `excludes`), adding
    /// each selected file's digest to `files`.
    pub(crate) fn checksum(
        &self,
        pattern: &str,
        excludes: &[String],
        files: &mut Vec<kiln_context::HashedEntry>,
    ) -> Result<String, StepError> {
        crate::key::context_checksum(&self.context, pattern, excludes, files)
    }

    /// Starts checksumming, ahead of their steps, the build-context sources of every
    /// COPY and ADD in `graph` (see `kiln_context::Context::prefetch`): the walk of a big
    /// `COPY . /app` then runs while the steps before it are keyed.
    pub(crate) fn prefetch_context(&self, graph: &kiln_parser::BuildGraph) {
        let mut requests = Vec::new();
        for step in graph.stages.iter().flat_map(|s| &s.steps) {
            let kiln_parser::Op::Copy(copy) = &step.op else {
                continue;
            };
            if !matches!(copy.from, kiln_parser::Source::Context) {
                continue;
            }
            for source in &copy.sources {
                if let kiln_parser::CopySource::Path(pattern) = source {
                    requests.push((pattern.clone(), crate::key::copy_selection(&copy.exclude)));
                }
            }
        }
        self.context.prefetch(requests);
    }

    /// Gets the first RUN's sandbox ready before that RUN (once; nothing for RUNs run by a
    /// remote executor): the snapshotter's probe, which mounts a test overlay through a
    /// sandbox helper (and starts the helper's zygote), runs in the background, and the
    /// zygote forks a helper for the first RUN beside it (on the spare's own thread). For
    /// when RUNs will surely run: a `--no-cache` build, or a step that missed the cache
    /// with RUNs after it. In a build that may be all cached (a no-op rebuild) they would
    /// compete with the context walk for the cores, for nothing.
    pub(crate) fn prepare_for_runs(self: &Arc<Self>, progress: &Progress) {
        if self.options.remote_executor.is_some() {
            return;
        }
        self.runs_prepared.call_once(|| {
            kiln_executor::sandbox::prepare_spare(self.options.network == NetworkDefault::None);
            let (session, progress) = (self.clone(), progress.clone());
            tokio::spawn(async move {
                session.snapshotter(&progress).await;
            });
        });
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

    /// How this build writes layers.
    pub(crate) fn layer_format(&self) -> kiln_executor::commit::LayerFormat {
        kiln_executor::commit::LayerFormat {
            compression: self.options.compression,
            source_date_epoch: self.options.source_date_epoch,
        }
    }

    /// Saves the context stat cache so the next build re-hashes nothing unchanged.
    pub fn save_stat_cache(&self) {
        let _ = self.context.save_stat_cache();
        self.named.save_stat_caches();
    }

    /// The held image of named context `name`, with every layer unpacked (once per build).
    pub(crate) fn resolve_named_image(&self, name: &str) -> Result<ResolvedImage, StepError> {
        let memo = format!("\0context {name}");
        if let Some(image) = self.images.lock().ok().and_then(|m| m.get(&memo).cloned()) {
            return Ok(image);
        }
        let image = match self.named.get(name)? {
            crate::named::OpenNamed::Image(image) => {
                crate::named::resolve_image(&self.store, name, image)?
            }
            crate::named::OpenNamed::Dir(_) => {
                return Err(StepError::NamedNotImage(name.to_string()));
            }
        };
        if let Ok(mut images) = self.images.lock() {
            images.insert(memo, image.clone());
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::url_hostname;

    #[test]
    fn host_names_are_those_go_gives() {
        assert_eq!(url_hostname("https://example.com/a/b"), "example.com");
        assert_eq!(
            url_hostname("http://u:p@example.com:8080/x?y"),
            "example.com"
        );
        assert_eq!(url_hostname("http://[::1]:8080/x"), "::1");
        assert_eq!(url_hostname("https://127.0.0.1#frag"), "127.0.0.1");
    }
}
