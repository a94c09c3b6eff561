//! [`LowerError`]: why a Dockerfile could not be lowered, with the span of the
//! instruction; and the bounds on the environment a stage builds up, which a hostile
//! Dockerfile meets as errors of this kind.

use crate::error::{ParseError, render_at};
use crate::graph::Span;
use thiserror::Error;

/// Why a Dockerfile could not be lowered.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LowerError {
    /// An instruction could not be lowered (bad expansion, bad reference, bad value).
    #[error("line {}: {message}", span.line)]
    Instruction { span: Span, message: String },
    /// The file has no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `--target` names no stage.
    #[error("{message}")]
    UnknownTarget { target: String, message: String },
    /// The resolver could not describe a base image.
    #[error("line {}: failed to resolve base image {reference}: {message}", span.line)]
    Resolve {
        span: Span,
        reference: String,
        message: String,
    },
    /// An ONBUILD trigger of a base did not parse.
    #[error("line {}: invalid ONBUILD trigger: {source}", span.line)]
    Trigger { span: Span, source: ParseError },
}

impl LowerError {
    /// Where in the Dockerfile, when the error has a place.
    pub fn span(&self) -> Option<Span> {
        match self {
            LowerError::Instruction { span, .. }
            | LowerError::Resolve { span, .. }
            | LowerError::Trigger { span, .. } => Some(*span),
            _ => None,
        }
    }

    /// `Dockerfile:LINE:COL: message` plus the line and a caret, like [`ParseError::render`].
    pub fn render(&self, file_name: &str, source: &str) -> String {
        match self.span() {
            Some(span) => {
                let msg = self.to_string();
                let msg = msg
                    .strip_prefix(&format!("line {}: ", span.line))
                    .unwrap_or(&msg)
                    .to_string();
                render_at(file_name, source, span.line, span.column, &msg, None)
            }
            None => format!("{file_name}: {self}\n"),
        }
    }
}

pub(super) fn at(span: Span, message: impl Into<String>) -> LowerError {
    LowerError::Instruction {
        span,
        message: message.into(),
    }
}

/// Largest environment (ENV and ARG keys and values, in bytes) a stage may build up. Every
/// RUN gets it as its process environment, which Linux caps at ~2 MiB with the arguments
/// (ARG_MAX); 4 MiB refuses nothing a RUN could use, and stops `ARG B1=$BIG ...` lines
/// from turning a few bytes of Dockerfile into megabytes each.
pub(super) const MAX_STAGE_ENV_BYTES: usize = 4 << 20;

/// Each step keeps a copy of its stage's environment: the sum over every step of the
/// Dockerfile is bounded too, or a large environment times thousands of `RUN true` lines
/// still takes gigabytes. Real Dockerfiles carry a few KiB per step.
pub(super) const MAX_CARRIED_ENV_BYTES: usize = 256 << 20;

/// The error for an environment over [`MAX_STAGE_ENV_BYTES`].
pub(super) fn env_too_large(span: Span) -> LowerError {
    at(
        span,
        format!("the environment (ENV and ARG values) exceeds {MAX_STAGE_ENV_BYTES} bytes"),
    )
}
