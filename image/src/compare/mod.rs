//! Comparing two images by what a container would see: each image's layers
//! are streamed with whiteouts applied into a final filesystem model
//! ([`FileTree`]: path → type, mode, owner, size, content sha256, link,
//! mtime, xattrs), then the trees, the config fields a Dockerfile sets, and
//! the history are compared ([`compare`] → [`Comparison`]). This is the engine
//! behind `kiln diff` and `kiln build --verify-reproducible`.
//!
//! Images are opened from any [`BlobSource`](crate::BlobSource) plus a
//! manifest digest ([`OpenImage::from_blobs`], which is how the CLI opens
//! store refs without this crate knowing the store), or from `oci:DIR`,
//! `oci-archive:FILE` and `docker-archive:FILE` ([`open_location`]).

mod changes;
mod fstree;
mod source;

pub use changes::{
    Change, Comparison, FieldChange, FileChange, HistoryChange, ImageIds, compare, compare_config,
    compare_history, compare_trees,
};
pub use fstree::{FileMeta, FileTree, FileType, TreeError, normalize_path};
pub use source::{
    DirBlobs, ImageLocation, OpenImage, open_archive, open_location, open_oci_layout,
};

use crate::archive::ArchiveError;
use crate::oci::OciError;
use std::io;
use std::path::PathBuf;

/// Why an image could not be opened or read for comparison.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A blob could not be opened or read.
    #[error("reading blob {digest}: {source}")]
    Blob {
        /// The blob.
        digest: String,
        /// The cause.
        source: io::Error,
    },
    /// A blob's content does not match its digest.
    #[error("blob {expected} has digest {actual}: content does not match")]
    DigestMismatch {
        /// The digest it was addressed by.
        expected: String,
        /// What its content hashes to.
        actual: String,
    },
    /// A manifest, index or config does not parse.
    #[error("{what} {digest}: {source}")]
    Oci {
        /// Which document.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The cause.
        source: OciError,
    },
    /// A layer is not a readable (compressed) tar, or its filesystem is
    /// over one of kiln's caps.
    #[error("{name}: layer {digest}: {source}")]
    Layer {
        /// The image.
        name: String,
        /// The layer blob.
        digest: String,
        /// The cause.
        source: TreeError,
    },
    /// A blob's length is not the size its descriptor gives.
    #[error("blob {digest} {}, but its descriptor says {declared} bytes", found_size(*.found, *.declared))]
    BlobSize {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        declared: u64,
        /// Bytes found; `None` when there were more than `declared` (reading
        /// stops one byte past it).
        found: Option<u64>,
    },
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The archive could not be read.
    #[error("{name}: {source}")]
    Archive {
        /// The image as named by the user.
        name: String,
        /// The cause.
        source: ArchiveError,
    },
    /// The input is not one image we can compare.
    #[error("{name}: {reason}")]
    Invalid {
        /// The image as named by the user.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest, index or config over kiln's cap.
    #[error(transparent)]
    TooLarge(#[from] crate::limits::TooLarge),
}

fn found_size(found: Option<u64>, declared: u64) -> String {
    match found {
        Some(n) => format!("has {n} bytes"),
        None => format!("has more than {declared} bytes"),
    }
}
