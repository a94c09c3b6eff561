//! Errors of the registry client. Every variant that comes from talking to a registry
//! names the registry, the request (method and URL) and, where there is one, the status.

use std::path::PathBuf;

/// Everything that can go wrong while pulling, pushing or logging in.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("registry {registry}: {request} failed: {reason}")]
    Transport {
        registry: String,
        request: String,
        reason: String,
    },

    #[error("registry {registry}: {request} returned {status}: {message}")]
    Status {
        registry: String,
        request: String,
        status: u16,
        message: String,
    },

    #[error("registry {registry}: {request} returned 401 Unauthorized: {message}")]
    Unauthorized {
        registry: String,
        request: String,
        message: String,
    },

    #[error("registry {registry}: {what} not found ({request} returned 404: {message})")]
    NotFound {
        registry: String,
        what: String,
        request: String,
        message: String,
    },

    #[error(
        "registry {registry}: {what} is corrupt: expected {expected}, content hashes to {actual}"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },

    #[error("registry {registry}: {what} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        registry: String,
        what: String,
        expected: u64,
        actual: u64,
    },

    /// A manifest, config or token response over kiln's cap (`kiln_image::limits`).
    #[error("registry {registry}: {cause}")]
    TooLarge {
        registry: String,
        // A field, not `#[source]`: the message already holds it, and a chain printer
        // would repeat it.
        cause: kiln_image::limits::TooLarge,
    },

    #[error("registry {registry}: {what}: {reason}")]
    Protocol {
        registry: String,
        what: String,
        reason: String,
    },

    #[error("{reference}: no image for platform {platform} in the index (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    #[error("{reference}: no such image in the store")]
    NotInStore { reference: String },

    #[error("{reference}: {reason}")]
    Unsupported { reference: String, reason: String },

    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform(String),

    #[error("store: {what}: {source}")]
    Store {
        what: String,
        #[source]
        source: kiln_store::StoreError,
    },

    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error("credential helper docker-credential-{helper} {action} for {registry}: {reason}")]
    CredentialHelper {
        helper: String,
        action: &'static str,
        registry: String,
        reason: String,
    },

    #[error("TLS file {}: {reason}", path.display())]
    TlsFile { path: PathBuf, reason: String },

    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(kiln_store::StoreError) -> Self {
        let what = what.into();
        move |source| RegistryError::Store { what, source }
    }
}

/// Short alias used across the crate.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
