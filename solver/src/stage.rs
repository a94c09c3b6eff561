//! Running one stage: its base, then its steps in order, each a cache hit or an execution.
//!
//! Steps run one after another, with one overlap: a step hands the next one its files as
//! soon as they are in the store, and its blob is compressed meanwhile. So go a COPY that
//! writes a new layer followed by a RUN (for a big context, the blob is the longest part
//! of the COPY), and a RUN that never gave a layer before (no record, no earlier build of
//! its line: a fresh store's build) followed by another layer step (see `hit_or_run` for
//! why not a RUN that did). The step is settled (blob, snapshot, cache record) before the
//! next one says DONE, so at most one step is pending, every later step runs on stored
//! layers below its parent, and every stage's result sees only stored layers.

use crate::blocking::blocking;
use crate::error::SolveError;
use crate::hit_or_run::{PendingCommit, Solved, solve_step};
use crate::image_state::ImageState;
use crate::key;
use crate::ops::{LayerOp, StepContext};
use crate::progress::{Event, Progress, started, vertex_name};
use crate::result::{StageInputs, StageResult, find_input};
use crate::session::BuildSession;
use kiln_parser::{Base, BuildGraph};
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct StageRunner {
    pub session: Arc<BuildSession>,
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
            let name = kiln_store::normalize_ref(reference).unwrap_or_else(|_| reference.clone());
            format!("FROM {name}")
        }
        _ => stage.source.clone(),
    }
}

impl StageRunner {
    /// The start of a stage whose base is an image (by reference or a held named context),
    /// or its FROM's failure, told to progress.
    fn image_base(
        &self,
        stage: &kiln_parser::Stage,
        from_id: usize,
        resolved: Result<crate::images::ResolvedImage, crate::error::StepError>,
    ) -> Result<StageResult, SolveError> {
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(cause) => {
                let e = SolveError::at(stage.span, &stage.source, cause);
                self.progress.send(Event::Failed {
                    id: from_id,
                    error: e.message.clone(),
                });
                return Err(e);
            }
        };
        let base_history = resolved.state.history.len();
        Ok(StageResult {
            key: resolved.key,
            layers: resolved.layers,
            state: ImageState::inherit(&resolved.state),
            base_history,
            keys: Vec::new(),
        })
    }

    pub async fn run(self, inputs: StageInputs) -> Result<StageResult, SolveError> {
        let stage = &self.graph.stages[self.index];
        let label = if self.graph.stages.len() == 1 && stage.name.is_none() {
            String::new()
        } else {
            stage.display_name()
        };
        let options = &self.session.options;
        let label = match options.progress_scope.show_platform {
            true if label.is_empty() => options.platform.to_string(),
            true => format!("{} {label}", options.platform),
            false => label,
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
                let base = find_input(&inputs, *i).map_err(SolveError::internal)?;
                StageResult {
                    key: base.key.clone(),
                    layers: base.layers.clone(),
                    state: ImageState::inherit(&base.state),
                    base_history: base.base_history,
                    keys: base.keys.clone(),
                }
            }
            Base::Image(reference) => {
                let (session, reference) = (self.session.clone(), reference.clone());
                let resolved = blocking(move || session.resolve_image(&reference));
                self.image_base(stage, from_id, resolved.await)?
            }
            Base::Named(name) => {
                let (session, name) = (self.session.clone(), name.clone());
                let resolved = blocking(move || session.resolve_named_image(&name));
                self.image_base(stage, from_id, resolved.await)?
            }
        };
        self.progress.send(Event::Done {
            id: from_id,
            elapsed: t0.elapsed(),
        });

        let no_cache = self.session.options.no_cache
            || stage.name.as_ref().is_some_and(|n| {
                self.session
                    .options
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            });
        // A step's layer may be compressed while the step after it runs on its files
        // (that step needs them, not the blob): solved with `defer`, it may come back with
        // its blob pending, and is settled once the next step is done (or failed). A
        // remote executor needs every lower's digest, and so does nothing else here.
        let may_defer = self.session.options.remote_executor.is_none();
        let mut pending: Option<Deferred<'_>> = None;
        // A step before this index has a RUN after it in the stage.
        let last_run = stage
            .steps
            .iter()
            .rposition(|s| matches!(s.op, kiln_parser::Op::Run(_)));
        let mut n = 1;
        for (index, step) in stage.steps.iter().enumerate() {
            let Some(op) = LayerOp::of(&step.op) else {
                current.state.apply(step);
                continue;
            };
            let id = self.ids[n];
            n += 1;
            started(
                &self.progress,
                id,
                vertex_name(&label, n, total, &step.source),
            );
            let t0 = Instant::now();
            let next = stage.steps[index + 1..]
                .iter()
                .find(|s| LayerOp::of(&s.op).is_some());
            let next_is_run = next.is_some_and(|s| matches!(s.op, kiln_parser::Op::Run(_)));
            // A RUN's blob may wait for any step after it; a COPY's, only for a RUN (the
            // copy itself is the work another COPY would compete with).
            let defer = may_defer
                && match step.op {
                    kiln_parser::Op::Run(_) => next.is_some(),
                    _ => next_is_run,
                };
            let ctx = StepContext {
                session: &self.session,
                step,
                current: &current,
                inputs: &inputs,
                id,
                progress: &self.progress,
                run_follows: last_run.is_some_and(|last| last > index),
            };
            let solved = solve_step(&ctx, op, no_cache, defer).await;
            let solved = match solved {
                Ok(v) => v,
                Err(mut e) => {
                    // The step before it (deferred) is stored all the same, and the state
                    // kept for debugging names its digests, not its stand-in (none is
                    // kept when it could not be stored).
                    let settled = match pending.take() {
                        Some(deferred) => {
                            self.settle(deferred, &mut current, &inputs).await.is_ok()
                        }
                        None => true,
                    };
                    if let kiln_parser::Op::Run(run) = &step.op
                        && settled
                    {
                        // Best effort: the build fails with its own error either way.
                        e.debug_image = crate::run::store_debug_state(&self.session, &current, run)
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
            let Solved {
                key: step_key,
                layer,
                cached,
                pending: blob,
            } = solved;
            // The step before, settled before this step says DONE, so steps are done in
            // their order. One that cannot be stored fails the build, but this step, which
            // ran on it, did finish.
            let took = t0.elapsed();
            if let Some(deferred) = pending.take()
                && let Err(e) = self.settle(deferred, &mut current, &inputs).await
            {
                self.progress.send(if cached {
                    Event::Cached { id }
                } else {
                    Event::Done { id, elapsed: took }
                });
                return Err(e);
            }
            match blob {
                Some(commit) => {
                    pending = Some(Deferred {
                        commit,
                        index: current.layers.len(),
                        step,
                        id,
                        took,
                    })
                }
                None if cached => self.progress.send(Event::Cached { id }),
                None => self.progress.send(Event::Done { id, elapsed: took }),
            }
            current.keys.push(step_key.clone());
            current.key = step_key;
            current.layers.push(layer);
            current.state.apply(step);
        }
        if let Some(deferred) = pending.take() {
            self.settle(deferred, &mut current, &inputs).await?;
        }
        Ok(current)
    }

    /// Stores a deferred step's layer and puts it in place of its stand-in.
    async fn settle(
        &self,
        deferred: Deferred<'_>,
        current: &mut StageResult,
        inputs: &StageInputs,
    ) -> Result<(), SolveError> {
        let Deferred {
            commit,
            index,
            step,
            id,
            took,
        } = deferred;
        let ctx = StepContext {
            session: &self.session,
            step,
            current,
            inputs,
            id,
            progress: &self.progress,
            run_follows: false,
        };
        let settled = commit.settle(&ctx).await;
        let layer = match settled {
            Ok(layer) => layer,
            Err(e) => {
                self.progress.send(Event::Failed {
                    id,
                    error: e.message.clone(),
                });
                return Err(e);
            }
        };
        if let Some(slot) = current.layers.get_mut(index) {
            *slot = layer;
        }
        // The step's own time: its blob was written while the next step ran.
        self.progress.send(Event::Done { id, elapsed: took });
        Ok(())
    }
}

/// A step solved with its blob pending: where its stand-in is among the stage's layers,
/// and its step, progress vertex and how long it took up to the stand-in.
struct Deferred<'s> {
    commit: PendingCommit,
    index: usize,
    step: &'s kiln_parser::Step,
    id: usize,
    took: std::time::Duration,
}
