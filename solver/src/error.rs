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
    /// A failed RUN: the image ID of the state before it (config blob in the store; its
    /// layers are snapshots), for `kiln run` to open a shell in. Boxed: the error is
    /// returned by value everywhere, so it stays small.
    pub debug_image: Option<Box<str>>,
}

impl SolveError {
    /// An error not tied to a Dockerfile line (store, I/O of the builder itself).
    pub fn internal(message: String) -> SolveError {
        SolveError {
            message,
            span: None,
            instruction: None,
            output_tail: Vec::new(),
            debug_image: None,
        }
    }

    /// An error of the instruction at `span`.
    pub fn at(span: kiln_parser::Span, instruction: &str, message: String) -> SolveError {
        SolveError {
            message,
            span: Some(span),
            instruction: Some(instruction.to_string()),
            output_tail: Vec::new(),
            debug_image: None,
        }
    }

    pub(crate) fn clone_of(shared: &std::sync::Arc<SolveError>) -> SolveError {
        SolveError::clone(shared)
    }
}
