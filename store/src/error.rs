//! Errors of the store (blobs, snapshots, cache index, refs, locks, prune).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in [`crate::Store`]. Each variant names the path or
/// value involved so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the store {} belongs to uid {owner}, not to uid {user} running kiln: its owner could \
         change what kiln builds and runs; use a store of your own (--root)",
        path.display()
    )]
    ForeignStore {
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    #[error(
        "invalid digest {digest:?}: expected \"sha256:\" followed by 64 lowercase hex characters"
    )]
    InvalidDigest { digest: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} not found in the store")]
    BlobNotFound { digest: String },
    #[error("blob {digest} is corrupt: its content hashes to {actual} (file {})", path.display())]
    CorruptBlob {
        digest: String,
        actual: String,
        path: PathBuf,
    },
    /// A blob read whole (a manifest, index or config) is over kiln's cap: a hostile
    /// image or archive can point a config or manifest digest at a layer-sized blob.
    #[error("blob {digest}: {cause}")]
    TooLarge {
        digest: String,
        // A field, not `#[source]`: the message already holds it, and a chain printer
        // would repeat it.
        cause: kiln_image::limits::TooLarge,
    },
    #[error("invalid snapshot id {id:?}: expected lowercase letters, digits and '-'")]
    InvalidSnapshotId { id: String },
    #[error("invalid side record name {name:?}: expected one file name not starting with '.'")]
    InvalidRecordName { name: String },
    #[error("invalid cache key {key:?}: expected 64 lowercase hex characters")]
    InvalidCacheKey { key: String },
    #[error("invalid reference format {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("cannot parse {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "store at {} has format version {found:?}, this kiln understands version {expected}",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Short alias used across the store modules.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
