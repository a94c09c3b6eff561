//! The layer steps, one module per op, each with its two halves as BuildKit's ops have
//! `CacheMap` and `Exec`: its cache key (the fields it names, explicitly, plus the keys
//! and checksums it reads) and its execution into an empty layer directory (for COPY and
//! ADD, the copy request the executor carries out as it commits the layer).
//!
//! [`LayerOp`] is the one place that tells op kinds apart; [`crate::hit_or_run`] drives an
//! op through key, lookup, execution and commit without knowing which it is.
//!
//! Metadata-only instructions (ENV, LABEL, USER, CMD, ...) are not ops here: they have no
//! layer and no key of their own; the stage applies them to its config
//! ([`crate::image_state::ImageState::apply`]), and they reach the keys of later RUNs through
//! the RUN's expanded environment, user and directory.
//!
//! A key's parameters are serialized from the key structs of each op module, never from
//! the parser's types: a field added to `kiln_parser`'s ops fails to compile here (every
//! op is destructured whole) instead of silently changing every key. The bytes are pinned
//! by `crate::pinned_keys`.

pub(crate) mod copy;
pub(crate) mod fetch;
pub mod git;
pub(crate) mod mounts;
pub(crate) mod run;
pub(crate) mod workdir;

use crate::error::{SolveError, StepError};
use crate::explain::KeyInputs;
use crate::key::vertex_key;
use crate::progress::Progress;
use crate::result::{StageInputs, StageResult};
use crate::session::BuildSession;
use kiln_executor::commit::{LayerFormat, LayerSource};
use kiln_parser::{CopyOp, Op, RunOp, Source, Step, WorkdirOp};
use serde::Serialize;
use std::sync::Arc;

/// A step that makes a layer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LayerOp<'a> {
    Run(&'a RunOp),
    /// COPY and ADD.
    Copy(&'a CopyOp),
    Workdir(&'a WorkdirOp),
}

/// What keying reads besides the op: the build session and the keys below the step.
pub(crate) struct KeyContext<'a> {
    pub session: &'a BuildSession,
    /// The key of the step below (or of the stage's base).
    pub parent: &'a str,
    /// The keys of the stages this stage reads from, by index.
    pub stage_keys: &'a [(usize, String)],
}

/// What an op adds to its key besides its parameters: labelled input keys, and the
/// context files it selected (for `--explain-cache`).
#[derive(Default)]
pub(crate) struct KeyParts {
    pub inputs: Vec<(String, String)>,
    /// Every entry the key's context checksums covered, in their order.
    pub files: Vec<kiln_context::HashedEntry>,
}

/// A keyed step: what its key was made of, and what keying fetched that execution must
/// use as it is (ADD's downloads, so the layer holds the bytes that were keyed).
pub(crate) struct Keyed {
    /// Its `files` left empty: [`Keyed::full_inputs`] fills them when they are needed.
    pub inputs: KeyInputs,
    files: Vec<kiln_context::HashedEntry>,
    pub fetched: fetch::Fetched,
}

impl Keyed {
    /// The context entries this key covered (see `ExplainLog::unchanged_files`).
    pub(crate) fn files(&self) -> &[kiln_context::HashedEntry] {
        &self.files
    }

    /// The inputs with the files the key covered, for the explain log.
    pub(crate) fn full_inputs(&self) -> KeyInputs {
        KeyInputs {
            files: crate::explain::file_digests(&self.files),
            ..self.inputs.clone()
        }
    }

    /// [`Keyed::full_inputs`], made when called: the explain log's writer makes them off
    /// the step's path (for a COPY of 20,000 files, the map of their digests and its JSON
    /// took 20-30 ms). Takes the files: the step's save is the last thing that reads them.
    pub(crate) fn take_full_inputs(&mut self) -> impl FnOnce() -> KeyInputs + Send + 'static {
        let files = std::mem::take(&mut self.files);
        let inputs = self.inputs.clone();
        move || KeyInputs {
            files: crate::explain::file_digests(&files),
            ..inputs
        }
    }
}

/// What an execution reads: the session, the step and the state it runs on.
pub(crate) struct StepContext<'a> {
    pub session: &'a Arc<BuildSession>,
    pub step: &'a Step,
    pub current: &'a StageResult,
    pub inputs: &'a StageInputs,
    /// The step's progress vertex.
    pub id: usize,
    pub progress: &'a Progress,
    /// Whether a RUN comes after this step in its stage: one that runs if this step does.
    pub run_follows: bool,
}

impl StepContext<'_> {
    /// An error of this step, at its Dockerfile line.
    pub fn at(&self, cause: impl Into<StepError>) -> SolveError {
        SolveError::at(self.step.span, &self.step.source, cause)
    }
}

/// The hashed document of a step: the op's key and the layer format.
#[derive(Serialize)]
struct StepKey {
    op: serde_json::Value,
    layer: LayerFormatKey,
}

/// The part of a key the layer format makes (field names are the hashed ones): a record
/// made with another compression, epoch or version of the chunking rules must not be
/// reused, or a cached step would give other bytes than a build from scratch.
#[derive(Serialize)]
struct LayerFormatKey {
    compression: &'static str,
    source_date_epoch: Option<i64>,
    chunking: u32,
}

impl LayerFormatKey {
    fn of(format: &LayerFormat) -> LayerFormatKey {
        LayerFormatKey {
            compression: format.compression.media_type(),
            source_date_epoch: format.source_date_epoch,
            chunking: kiln_image::CHUNK_FORMAT,
        }
    }
}

/// `from=` / `--from`, as keys name it.
#[derive(Serialize)]
pub(crate) enum SourceKey<'a> {
    Context,
    Stage(usize),
    Image(&'a str),
    /// A named build context, by name (its content goes in as an input key).
    Named(&'a str),
}

impl<'a> SourceKey<'a> {
    pub(crate) fn of(source: &'a Source) -> SourceKey<'a> {
        match source {
            Source::Context => SourceKey::Context,
            Source::Stage(i) => SourceKey::Stage(*i),
            Source::Image(reference) => SourceKey::Image(reference),
            Source::Named(name) => SourceKey::Named(name),
        }
    }
}

impl<'a> LayerOp<'a> {
    /// The op of `op`, `None` for a metadata-only instruction.
    pub(crate) fn of(op: &'a Op) -> Option<LayerOp<'a>> {
        match op {
            Op::Run(run) => Some(LayerOp::Run(run)),
            Op::Copy(copy) => Some(LayerOp::Copy(copy)),
            Op::Workdir(w) => Some(LayerOp::Workdir(w)),
            _ => None,
        }
    }

    /// Whether [`LayerOp::key`] reads nothing (no context, no image, no file): a RUN
    /// without mounts, whose key hashes only its own fields and its parent's key.
    pub(crate) fn keyed_without_io(&self) -> bool {
        matches!(self, LayerOp::Run(run) if run.mounts.is_empty())
    }

    /// Keys the op: `sha256` over its parameters (each op's key struct), the layer format
    /// and its input keys.
    pub(crate) fn key(self, kc: &KeyContext) -> Result<Keyed, StepError> {
        let mut parts = KeyParts {
            inputs: vec![("previous step".to_string(), kc.parent.to_string())],
            files: Vec::new(),
        };
        let mut fetched = fetch::Fetched::default();
        let op = match self {
            LayerOp::Run(run) => run::key(run, kc, &mut parts)?,
            LayerOp::Copy(copy) => copy::key(copy, kc, &mut parts, &mut fetched)?,
            LayerOp::Workdir(w) => workdir::key(w)?,
        };
        let params = serde_json::to_value(StepKey {
            op,
            layer: LayerFormatKey::of(&kc.session.layer_format()),
        })
        .map_err(StepError::KeySerialize)?;
        let input_keys: Vec<&str> = parts.inputs.iter().map(|(_, k)| k.as_str()).collect();
        let key = vertex_key("step", &params, &input_keys);
        Ok(Keyed {
            inputs: KeyInputs {
                key,
                inputs: parts.inputs,
                params,
                files: Default::default(),
            },
            files: parts.files,
            fetched,
        })
    }

    /// Executes the op: RUN and WORKDIR fill a fresh layer directory; COPY and ADD give
    /// the copy the executor carries out as it commits the layer
    /// ([`kiln_executor::commit::commit_layer`]).
    pub(crate) async fn exec(
        self,
        ctx: &StepContext<'_>,
        keyed: &Keyed,
    ) -> Result<LayerSource, SolveError> {
        match self {
            LayerOp::Run(run) => {
                let out = ctx
                    .session
                    .store
                    .snapshot_staging()
                    .map_err(|e| ctx.at(e))?;
                run::exec(run, ctx, out.path()).await?;
                Ok(LayerSource::Dir(out))
            }
            LayerOp::Copy(copy) => copy::exec(copy, ctx, &keyed.fetched).await,
            LayerOp::Workdir(w) => {
                let out = ctx
                    .session
                    .store
                    .snapshot_staging()
                    .map_err(|e| ctx.at(e))?;
                workdir::exec(w, ctx, out.path()).await?;
                Ok(LayerSource::Dir(out))
            }
        }
    }
}

/// The key of stage `i` among the stages read.
pub(crate) fn stage_key(kc: &KeyContext, i: usize) -> Result<String, StepError> {
    kc.stage_keys
        .iter()
        .find(|(j, _)| *j == i)
        .map(|(_, k)| k.clone())
        .ok_or(StepError::NoStageResult(i))
}
