//! [`BuildError`]: what stops a build, an export or a reproducibility check. Each variant
//! says what kiln was doing; the cause is kept as its source, so a caller printing the
//! chain (`{:#}` with anyhow) reads "what: cause".

use kiln_solver::SolveError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The request cannot be built as given (the context, a flag value, the Dockerfile's
    /// encoding, a platform); the message is complete.
    #[error("{0}")]
    Request(String),
    /// The Dockerfile does not parse or lower; the message quotes its line.
    #[error("{0}")]
    Dockerfile(String),
    /// The solver could not start (the context or its ignore file is unreadable).
    #[error("{0}")]
    Setup(String),
    /// A step failed: the caller renders it with the Dockerfile's lines.
    #[error("{}", .0.message)]
    Solve(Box<SolveError>),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: kiln_store::StoreError,
    },
    /// Boxed: a registry error is large and every result here carries this enum.
    #[error("{what}")]
    Registry {
        what: String,
        #[source]
        source: Box<kiln_registry::RegistryError>,
    },
    /// A REAPI cache that failed; a build goes on without it. Boxed, as `Registry`.
    #[error("{what}")]
    Remote {
        what: String,
        #[source]
        source: Box<kiln_remote::RemoteError>,
    },
    #[error("{what}")]
    Archive {
        what: String,
        #[source]
        source: kiln_image::ArchiveError,
    },
    /// `kiln import` failed; nothing is tagged.
    #[error(transparent)]
    Import(#[from] kiln_solver::import::ImportError),
    /// An image the command names is not in the store, or its ID prefix is ambiguous.
    #[error(transparent)]
    Lookup(#[from] kiln_store::LookupError),
    /// Reading two images for comparison failed; the message names the cause.
    #[error("{0}")]
    Compare(kiln_image::compare::CompareError),
}

impl BuildError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let what = what.into();
        move |source| BuildError::Io { what, source }
    }

    pub(crate) fn store(
        what: impl Into<String>,
    ) -> impl FnOnce(kiln_store::StoreError) -> BuildError {
        let what = what.into();
        move |source| BuildError::Store { what, source }
    }

    pub(crate) fn registry(
        what: impl Into<String>,
    ) -> impl FnOnce(kiln_registry::RegistryError) -> BuildError {
        let what = what.into();
        move |source| BuildError::Registry {
            what,
            source: Box::new(source),
        }
    }
}
