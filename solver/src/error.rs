//! Why a build failed, with the Dockerfile position of the step that failed.

use kiln_parser::Span;

/// A build failure. `span` points at the instruction when one is to blame; the CLI renders
/// it as `Dockerfile:LINE` with the line shown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SolveError {
    pub message: String,
    pub span: Option<Span>,
    /// The instruction as written, when a step failed.
    pub instruction: Option<String>,
    /// Last lines of output of a failed RUN.
    pub output_tail: Vec<String>,
}

impl SolveError {
    /// An error not tied to a Dockerfile line (store, I/O of the builder itself).
    pub fn internal(message: String) -> SolveError {
        SolveError {
            message,
            span: None,
            instruction: None,
            output_tail: Vec::new(),
        }
    }

    /// An error of the instruction at `span`.
    pub fn at(span: kiln_parser::Span, instruction: &str, message: String) -> SolveError {
        SolveError {
            message,
            span: Some(span),
            instruction: Some(instruction.to_string()),
            output_tail: Vec::new(),
        }
    }

    pub(crate) fn clone_of(shared: &std::sync::Arc<SolveError>) -> SolveError {
        SolveError::clone(shared)
    }
}
