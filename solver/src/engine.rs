//! The scheduler: runs stages as soon as the stages they read from are done.
//!
//! Each stage is one tokio task; it awaits the shared results of its dependencies, then runs
//! its steps in order (a Dockerfile stage is a chain). Independent stages therefore run in
//! parallel, and a stage several others read from runs once.

use crate::error::{SolveError, StepError};
use crate::progress::Progress;
use crate::result::StageResult;
use crate::session::BuildSession;
use crate::stage::StageRunner;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use kiln_parser::BuildGraph;
use std::sync::Arc;

type StageFuture = Shared<BoxFuture<'static, Result<Arc<StageResult>, Arc<SolveError>>>>;

/// Progress numbers for every vertex, assigned up front so they are stable: per stage, the
/// FROM vertex then one per layer step.
pub(crate) fn vertex_ids(graph: &BuildGraph, first: usize) -> Vec<Vec<usize>> {
    let mut next = first;
    graph
        .stages
        .iter()
        .map(|stage| {
            let count = 1 + stage.steps.iter().filter(|s| !s.is_metadata_only()).count();
            (0..count)
                .map(|_| {
                    next += 1;
                    next - 1
                })
                .collect()
        })
        .collect()
}

/// The platform a stage is built for: its `FROM --platform=` when that names one (as
/// containerd normalizes it), else the build's. kiln-build refuses a stage platform that
/// does not parse before anything runs.
pub fn stage_platform(graph: &BuildGraph, stage: &kiln_parser::Stage) -> kiln_parser::Platform {
    stage
        .platform
        .as_deref()
        .and_then(|p| kiln_parser::Platform::parse_normalized(p).ok())
        .unwrap_or_else(|| graph.platform.clone())
}

/// How many progress vertices solving `graph` shows (see [`crate::session::ProgressScope`]).
pub fn vertex_count(graph: &BuildGraph) -> usize {
    vertex_ids(graph, 0).iter().map(Vec::len).sum()
}

/// Solves every stage of `graph`; returns the target stage's result and the cache keys of
/// every layer step of every stage (for `--cache-to ... mode=max`).
pub async fn solve(
    session: Arc<BuildSession>,
    graph: Arc<BuildGraph>,
    progress: Progress,
) -> Result<(Arc<StageResult>, Vec<String>), SolveError> {
    let ids = vertex_ids(&graph, session.options.progress_scope.first);
    let mut stages: Vec<StageFuture> = Vec::with_capacity(graph.stages.len());
    for (index, ids) in ids.into_iter().enumerate() {
        let deps: Vec<(usize, StageFuture)> = graph.stages[index]
            .dependencies()
            .into_iter()
            .filter_map(|d| stages.get(d).map(|f| (d, f.clone())))
            .collect();
        let runner = StageRunner {
            session: session.for_platform(&stage_platform(&graph, &graph.stages[index])),
            graph: graph.clone(),
            index,
            ids,
            progress: progress.clone(),
        };
        let fut = async move {
            let mut inputs = Vec::with_capacity(deps.len());
            for (d, f) in deps {
                inputs.push((d, f.await?));
            }
            match tokio::spawn(runner.run(inputs)).await {
                Ok(result) => result.map(Arc::new).map_err(Arc::new),
                Err(join) => Err(Arc::new(SolveError::internal(StepError::StageTask(join)))),
            }
        }
        .boxed()
        .shared();
        stages.push(fut);
    }
    // Poll every stage together so independent ones overlap; the target is last to matter.
    let results = futures_util::future::join_all(stages).await;
    let mut first_error = None;
    for r in &results {
        if let Err(e) = r {
            first_error.get_or_insert_with(|| e.clone());
        }
    }
    let mut all_keys: Vec<String> = results
        .iter()
        .flatten()
        .flat_map(|r| r.keys.iter().cloned())
        .collect();
    all_keys.sort();
    all_keys.dedup();
    match results.into_iter().nth(graph.target) {
        Some(Ok(result)) => Ok((result, all_keys)),
        Some(Err(e)) => Err(SolveError::clone_of(&e)),
        None => Err(first_error
            .map(|e| SolveError::clone_of(&e))
            .unwrap_or_else(|| SolveError::internal(StepError::NoTarget))),
    }
}
