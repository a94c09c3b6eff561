//! Why a build failed: [`StepError`], the typed cause (with [`ImageError`] for stored
//! images), and [`SolveError`], that cause with the Dockerfile position of the step that
//! failed.

use kiln_parser::Span;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a step, or the build around it, failed. Causes from the crates the solver calls
/// read as those crates say them; the solver's own say what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Ignore(#[from] kiln_context::IgnoreError),
    #[error(transparent)]
    Context(#[from] kiln_context::ContextError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Named(#[from] NamedError),
    #[error(transparent)]
    Copy(#[from] kiln_executor::CopyError),
    #[error(transparent)]
    Download(#[from] kiln_executor::copy::http::HttpError),
    #[error(transparent)]
    Sandbox(#[from] kiln_executor::sandbox::SandboxError),
    #[error(transparent)]
    Workdir(#[from] kiln_executor::workdir::WorkdirError),
    #[error(transparent)]
    LayerWrite(#[from] kiln_image::LayerWriteError),
    #[error(transparent)]
    Commit(#[from] kiln_executor::commit::CommitError),

    #[error("{what}: {source}")]
    Export {
        what: &'static str,
        source: kiln_store::StoreError,
    },
    #[error("stage task failed: {0}")]
    StageTask(#[source] tokio::task::JoinError),
    #[error("worker failed: {0}")]
    Worker(#[source] tokio::task::JoinError),
    #[error("the graph has no target stage")]
    NoTarget,
    #[error("stage {0} was not solved first")]
    StageNotSolved(usize),
    #[error("stage {0} has no result")]
    NoStageResult(usize),
    /// Lowering named a build context the solver was not given.
    #[error("no build context named {0} was given")]
    NoNamedContext(String),
    /// A stage was to start from a named context that is a directory (lowering refuses it).
    #[error("the build context {0} is a directory, not an image")]
    NamedNotImage(String),
    #[error("a metadata-only step has no layer")]
    NotALayerStep,
    #[error("the step's layer directory was still in use after its blob was written")]
    LayerStillInUse,
    #[error("serializing the key: {0}")]
    KeySerialize(#[source] serde_json::Error),
    #[error(
        "{0} is not allowed (the Dockerfile asks for it; allow it with `kiln build --allow {0}`)"
    )]
    NotEntitled(&'static str),

    #[error("ADD {url}: {source}")]
    Fetch { url: String, source: std::io::Error },
    #[error(transparent)]
    Git(#[from] kiln_context::git::GitError),
    #[error("git checkout: scratch directory: {0}")]
    GitScratch(#[source] std::io::Error),

    #[error("process \"{command}\" did not complete successfully: exit code: {exit_code}")]
    ProcessFailed { command: String, exit_code: i32 },
    #[error("finishing the RUN layer: {0}")]
    FinishRun(#[source] std::io::Error),
    #[error(transparent)]
    BindResolve(#[from] kiln_context::ResolveError),
    #[error("bind {path}: {source}")]
    BindCopy {
        path: String,
        source: std::io::Error,
    },
    #[error("bind source {path}: {source}")]
    BindSource {
        path: String,
        source: kiln_executor::layered::LayeredError,
    },
    #[error("bind source {path}: {source}")]
    BindSourceLayers {
        path: String,
        source: kiln_executor::layer_dir::LayerDirError,
    },
    /// The store's part of a cache mount: its directory, lock and publishing.
    #[error(transparent)]
    CacheMount(#[from] kiln_store::CacheMountError),
    #[error("cache mount {id}: seeding: {source}")]
    CacheSeed { id: String, source: Box<StepError> },
    #[error("cache mount {id}: seeding: {source}")]
    CacheSeedCopy {
        id: String,
        source: kiln_executor::layered::LayeredError,
    },
    #[error("secret {id}: reading {}: {source}", path.display())]
    SecretRead {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret {id}: environment variable {name} is not set")]
    SecretEnv { id: String, name: String },
    #[error("secret {id}: not provided (--secret id={id},src=FILE)")]
    SecretMissing { id: String },
    #[error("secret {id}: {source}")]
    SecretFile {
        id: String,
        source: crate::secret::SecretError,
    },
    #[error(
        "ssh {id}: no agent given (--ssh {id}=SOCKET|KEYFILE, or --ssh default for $SSH_AUTH_SOCK)"
    )]
    SshMissing { id: String },
    #[error("ssh {id}: {source}")]
    Ssh {
        id: String,
        source: crate::ssh::SshError,
    },
}

/// Why a stored image or one of its layers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error("{reference}: image not found in the store (build it, or `kiln load` it first)")]
    NotFound { reference: String },
    #[error("{reference}: {source}")]
    Parse {
        reference: String,
        source: kiln_image::oci::OciError,
    },
    /// A layer of `reference` could not be made a snapshot.
    #[error("{reference}: {source}")]
    Layers {
        reference: String,
        source: Box<ImageError>,
    },
    #[error("manifest lists {manifest} layers but config {config} diff_ids")]
    LayerCount { manifest: usize, config: usize },
    /// A config read without its manifest (the state before a failed RUN).
    #[error(transparent)]
    Config(kiln_image::oci::OciError),
    #[error("not a sha256 digest: {0}")]
    NotSha256(String),
    #[error("not a sha256 diff_id: {0}")]
    NotSha256DiffId(String),
    /// A layer of a config read without its manifest has no snapshot any more.
    #[error("layer {0} is no longer in the store (pruned?); build again")]
    Pruned(String),
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        digest: String,
        source: kiln_image::UnpackError,
    },
    #[error("layer {digest} unpacks to {actual} but the image says {expected}")]
    DiffIdMismatch {
        digest: String,
        actual: String,
        expected: String,
    },
}

/// A build failure. `span` points at the instruction when one is to blame; the CLI renders
/// it as `Dockerfile:LINE` with the line shown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SolveError {
    /// What `cause` says, as the CLI prints it.
    pub message: String,
    /// The typed cause. A field, not `#[source]`: `message` already holds it, and a chain
    /// printer would repeat it.
    pub cause: Option<Arc<StepError>>,
    pub span: Option<Span>,
    /// The instruction as written, when a step failed.
    pub instruction: Option<Box<str>>,
    /// Last lines of output of a failed RUN.
    pub output_tail: Vec<String>,
    /// A failed RUN: the image ID of the state before it (config blob in the store; its
    /// layers are snapshots), for `kiln run` to open a shell in. Boxed: the error is
    /// returned by value everywhere, so it stays small.
    pub debug_image: Option<Box<str>>,
}

impl SolveError {
    /// An error not tied to a Dockerfile line (store, I/O of the builder itself).
    pub fn internal(cause: impl Into<StepError>) -> SolveError {
        let cause = cause.into();
        SolveError {
            message: cause.to_string(),
            cause: Some(Arc::new(cause)),
            span: None,
            instruction: None,
            output_tail: Vec::new(),
            debug_image: None,
        }
    }

    /// An error of the instruction at `span`.
    pub fn at(span: Span, instruction: &str, cause: impl Into<StepError>) -> SolveError {
        SolveError {
            span: Some(span),
            instruction: Some(instruction.into()),
            ..SolveError::internal(cause)
        }
    }

    pub(crate) fn clone_of(shared: &Arc<SolveError>) -> SolveError {
        SolveError::clone(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_cli_has_always_printed_them() {
        let cases = [
            (
                StepError::NotEntitled("network.host"),
                "network.host is not allowed (the Dockerfile asks for it; allow it with `kiln build --allow network.host`)",
            ),
            (
                StepError::ProcessFailed {
                    command: "/bin/sh -c false".into(),
                    exit_code: 1,
                },
                "process \"/bin/sh -c false\" did not complete successfully: exit code: 1",
            ),
            (
                StepError::SecretMissing { id: "tok".into() },
                "secret tok: not provided (--secret id=tok,src=FILE)",
            ),
            (
                StepError::Image(ImageError::NotFound {
                    reference: "app:1".into(),
                }),
                "app:1: image not found in the store (build it, or `kiln load` it first)",
            ),
        ];
        for (cause, text) in cases {
            let e = SolveError::at(Span::default(), "RUN x", cause);
            assert_eq!(e.message, text);
            assert_eq!(e.cause.map(|c| c.to_string()).as_deref(), Some(text));
            assert_eq!(e.instruction.as_deref(), Some("RUN x"));
        }
    }
}

/// Why a named context could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum NamedError {
    #[error("build context {name}: {source}")]
    Ignore {
        name: String,
        source: Box<kiln_context::IgnoreError>,
    },
    #[error("build context {name} ({}): {source}", dir.display())]
    Open {
        name: String,
        dir: PathBuf,
        source: Box<kiln_context::ContextError>,
    },
}
