//! [`build`]: one build into one store, from lowering to the stored image. A build for
//! several platforms lowers the Dockerfile once per platform (every check before anything
//! runs), solves the graphs at once into the same store and cache, each with its own
//! progress numbers and its platform in its vertex names, and ties the images together in
//! an OCI index ([`crate::index`]).

use crate::bases::StoreResolver;
use crate::cache_io;
use crate::checks::{CheckReport, DockerIgnore};
use crate::contexts::{self, Prepared};
use crate::{BuildError, BuildRequest, BuiltImage, Notice};
use kiln_parser::BuildGraph;
use kiln_parser::lint::dispatch::IgnoreCheck;
use kiln_solver::progress::Progress;
use kiln_solver::{BuildSession, ProgressScope, SolveOptions};
use kiln_store::{ImageRef, Store};
use std::sync::Arc;

/// Builds `request` into `store`, which the caller holds locked (shared). Nothing is
/// named: [`crate::export`] does that once this returned `Ok`, so a failed build never
/// gets a name.
pub async fn build(
    store: &Store,
    request: &BuildRequest,
    progress: Progress,
    notify: &(dyn Fn(Notice) + Sync),
) -> Result<BuiltImage, BuildError> {
    kiln_executor::cgroup::configure(request.limits, request.cgroup_parent.as_deref());
    // Leftovers of killed builds (their scratch lock died with them) go before this one
    // adds its own.
    let phase = kiln_base::phase::start("reclaim scratch");
    let reclaimed = store.reclaim_scratch();
    phase.end();
    match reclaimed {
        Ok(r) if r.entries > 0 => notify(Notice::Reclaimed(r)),
        Ok(_) => {}
        Err(e) => notify(Notice::ReclaimFailed(e)),
    }
    let platforms = request.target_platforms()?;
    let phase = kiln_base::phase::start("lower Dockerfile, resolve bases");
    let lowered = lower_all(store, request, &platforms, notify)?;
    phase.end();
    let registry = request.registry_options(None);
    let mut remotes = Vec::new();
    for spec in &request.cache_from {
        if spec.optional() {
            match cache_io::connect_remote(spec, &registry).await {
                Ok(remote) => remotes.extend(remote),
                Err(e) => notify(Notice::CacheImportFailed(e)),
            }
            continue;
        }
        match cache_io::import(store, spec, &registry) {
            Ok(records) => notify(Notice::CacheImported {
                spec: spec.clone(),
                records,
            }),
            Err(e) => notify(Notice::CacheImportFailed(e)),
        }
    }
    let executor = match &request.remote {
        Some(endpoint) => match crate::farm::connect_executor(endpoint, &registry).await {
            Ok(executor) => Some(executor),
            Err(e) => {
                notify(Notice::RemoteDown(e));
                None
            }
        },
        None => None,
    };
    let remotes = Remotes {
        caches: remotes,
        executor,
    };
    solve_all(store, request, platforms, &lowered, &remotes, progress).await
}

/// What a build reaches beyond its store: REAPI caches, and a farm to run steps on.
#[derive(Default)]
pub(crate) struct Remotes {
    pub caches: Vec<Arc<dyn kiln_solver::StepCache>>,
    pub executor: Option<Arc<dyn kiln_solver::StepExecutor>>,
}

/// Lowers `request` once for each of `platforms`, in their order (all before anything
/// runs), with its named contexts made ready once for all of them (a git or URL context
/// is fetched once). Shared by a build and `--verify-reproducible`.
pub(crate) fn lower_all(
    store: &Store,
    request: &BuildRequest,
    platforms: &[kiln_parser::Platform],
    notify: &(dyn Fn(Notice) + Sync),
) -> Result<Vec<Lowered>, BuildError> {
    let contexts = contexts::prepare(store, &request.named_contexts, &request.ssh)?;
    let mut lowered = Vec::with_capacity(platforms.len());
    for (n, platform) in platforms.iter().enumerate() {
        let registry = request.registry_options(Some(platform));
        // The warnings and build checks of the first lowering stand for every platform's.
        let notify: &(dyn Fn(Notice) + Sync) = if n == 0 { notify } else { &|_| {} };
        lowered.push(lower(
            store, request, &registry, platform, &contexts, notify,
        )?);
    }
    Ok(lowered)
}

/// Solves `lowered` (one graph per platform of `platforms`, in their order) into `store`:
/// one platform's image as it is, several at once and tied in an index. Shared by a
/// build and both builds of `--verify-reproducible`.
pub(crate) async fn solve_all(
    store: &Store,
    request: &BuildRequest,
    platforms: Vec<kiln_parser::Platform>,
    lowered: &[Lowered],
    remotes: &Remotes,
    progress: Progress,
) -> Result<BuiltImage, BuildError> {
    if let [one] = lowered {
        return solve(store, request, one, remotes, progress).await;
    }
    let images = solve_platforms(store, request, lowered, remotes, progress).await?;
    let built: Vec<_> = platforms.into_iter().zip(images).collect();
    crate::index::store_index(store, built)
}

/// A lowered request: the graph, and what else the solver and `--verify-reproducible` need.
pub(crate) struct Lowered {
    pub graph: BuildGraph,
    /// The base images used, by normalized name.
    pub bases: Vec<(String, ImageRef)>,
    /// The named contexts, made ready.
    pub contexts: Prepared,
}

/// Lowers the request's Dockerfile for `platform` with its named `contexts` and its bases
/// looked up in `store` (pulled into it when missing), its warnings and build checks told
/// to `notify`.
fn lower(
    store: &Store,
    request: &BuildRequest,
    registry: &kiln_registry::RegistryOptions,
    platform: &kiln_parser::Platform,
    contexts: &Prepared,
    notify: &(dyn Fn(Notice) + Sync),
) -> Result<Lowered, BuildError> {
    let resolver = StoreResolver::new(store, request.pull, registry, platform);
    let ignore = DockerIgnore::load(&request.context, &request.dockerfile.path);
    let graph = request.dockerfile.lower(
        kiln_parser::LowerOptions {
            build_args: request.build_args.clone(),
            target: request.target.clone(),
            platform: Some(platform.clone()),
            named_contexts: contexts.lower.clone(),
        },
        &resolver,
        ignore.as_ref().map(|i| i as &dyn IgnoreCheck),
        notify,
    )?;
    // Both before anything runs, for a build and for --verify-reproducible alike.
    request.check_stage_platforms(&graph)?;
    request.check_execution(&graph)?;
    Ok(Lowered {
        graph,
        bases: resolver.used(),
        contexts: contexts.clone(),
    })
}

/// `kiln build --check`: the build checks of the request's Dockerfile over every stage,
/// with the base images `store` holds (nothing is pulled; a missing one counts as an
/// empty image, so variables it would define look undefined). Also the error that
/// stopped the lowering, if one did; the syntax warning goes to `notify`.
pub fn check(
    store: &Store,
    request: &BuildRequest,
    notify: &(dyn Fn(Notice) + Sync),
) -> Result<(CheckReport, Option<BuildError>), BuildError> {
    let platform = request.target_platform("--check")?;
    let registry = request.registry_options(Some(&platform));
    let resolver = StoreResolver::offline(store, &registry, &platform);
    let ignore = DockerIgnore::load(&request.context, &request.dockerfile.path);
    request.dockerfile.check(
        request.build_args.clone(),
        request.target.clone(),
        Some(platform.clone()),
        &resolver,
        ignore.as_ref().map(|i| i as &dyn IgnoreCheck),
        notify,
    )
}

/// Solves a lowered graph into `store`.
pub(crate) async fn solve(
    store: &Store,
    request: &BuildRequest,
    lowered: &Lowered,
    remotes: &Remotes,
    progress: Progress,
) -> Result<BuiltImage, BuildError> {
    let phase = kiln_base::phase::start("session (open context)");
    let session = session(store, request, lowered, remotes, None)?;
    phase.end();
    solve_in(session, request, lowered, progress).await
}

/// Solves every platform's lowered graph at once: one session per platform, sharing the
/// context (so a file is hashed once for all), the named contexts and the steps by key,
/// each numbering and naming its own progress vertices. The results in `lowered`'s order.
async fn solve_platforms(
    store: &Store,
    request: &BuildRequest,
    lowered: &[Lowered],
    remotes: &Remotes,
    progress: Progress,
) -> Result<Vec<BuiltImage>, BuildError> {
    let Some(first) = lowered.first() else {
        return Ok(Vec::new());
    };
    let shared = Arc::new(kiln_solver::SharedSteps::default());
    let base = session(store, request, first, remotes, Some(shared))?;
    let mut next = 1;
    let solves = lowered.iter().map(|l| {
        let scope = ProgressScope {
            first: next,
            show_platform: true,
        };
        next += kiln_solver::vertex_count(&l.graph);
        let session = base.sibling(|options| {
            options.platform = l.graph.platform.clone();
            options.progress_scope = scope;
        });
        solve_in(session, request, l, progress.clone())
    });
    // Every platform runs to its end, so a failed one never leaves another's RUN cut off
    // mid-step; the first failure (in the order given) is the build's.
    futures_util::future::join_all(solves)
        .await
        .into_iter()
        .collect()
}

/// The build session of `lowered` in `store`; `shared_steps` for one of several
/// platforms' solves.
fn session(
    store: &Store,
    request: &BuildRequest,
    lowered: &Lowered,
    remotes: &Remotes,
    shared_steps: Option<Arc<kiln_solver::SharedSteps>>,
) -> Result<Arc<BuildSession>, BuildError> {
    let graph = &lowered.graph;
    let options = SolveOptions {
        context_dir: request.context.clone(),
        context_stat_cache: request.git_context.is_none(),
        dockerfile: request.dockerfile.path.clone(),
        no_cache: request.no_cache,
        no_cache_filter: request.no_cache_filter.clone(),
        compression: request.compression,
        source_date_epoch: request.source_date_epoch,
        network: request.network,
        entitlements: request.entitlements,
        snapshotter: request.snapshotter,
        secrets: request.secrets.clone(),
        ssh: request.ssh.clone(),
        explain_cache: request.explain_cache,
        platform: graph.platform.clone(),
        run_options: request.run_options.clone(),
        named_contexts: lowered.contexts.solve.clone(),
        progress_scope: ProgressScope::default(),
        shared_steps,
        remote_caches: remotes.caches.clone(),
        remote_executor: remotes.executor.clone(),
    };
    let session =
        BuildSession::new(store.clone(), options).map_err(|e| BuildError::Setup(e.message))?;
    Ok(Arc::new(session))
}

/// Solves `lowered` in `session`.
async fn solve_in(
    session: Arc<BuildSession>,
    request: &BuildRequest,
    lowered: &Lowered,
    progress: Progress,
) -> Result<BuiltImage, BuildError> {
    kiln_solver::build(
        session,
        lowered.graph.clone(),
        request.labels.clone(),
        progress,
    )
    .await
    .map_err(|e| BuildError::Solve(Box::new(e)))
}
