//! Running one stage: its base, then its steps in order, each a cache hit or an execution.

use crate::blocking::blocking;
use crate::error::SolveError;
use crate::hit_or_run::{Solved, solve_step};
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
        let mut n = 1;
        for step in &stage.steps {
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
            let ctx = StepContext {
                session: &self.session,
                step,
                current: &current,
                inputs: &inputs,
                id,
                progress: &self.progress,
            };
            let Solved {
                key: step_key,
                layer,
                cached,
            } = match solve_step(&ctx, op, no_cache).await {
                Ok(v) => v,
                Err(mut e) => {
                    if let kiln_parser::Op::Run(run) = &step.op {
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
