//! OCI image layouts, OCI archives and docker-archives, written from and read
//! into a blob store through two small traits ([`BlobSource`], [`BlobSink`])
//! so this crate does not depend on the store.

mod read;
mod write;

pub use read::{LoadedImage, read_archive};
pub use write::{ExportImage, write_docker_archive, write_oci_archive, write_oci_layout};

use crate::oci::OciError;
use std::io::{self, Read};
use std::path::PathBuf;

/// Where exported blobs come from (the store).
pub trait BlobSource {
    /// Opens the blob with this `sha256:` digest.
    fn open_blob(&self, digest: &str) -> io::Result<Box<dyn Read + '_>>;
    /// Size of the blob in bytes.
    fn blob_size(&self, digest: &str) -> io::Result<u64>;
}

/// Where loaded blobs go (the store).
pub trait BlobSink {
    /// Stores the blob read from `reader`; must verify that it hashes to
    /// `expected_digest` and refuse it otherwise.
    fn put_blob(&self, reader: &mut dyn Read, expected_digest: &str) -> io::Result<()>;
}

/// Errors while writing or reading layouts and archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The blob source failed.
    #[error("reading blob {digest} from the store: {source}")]
    Source {
        /// The blob.
        digest: String,
        /// The cause.
        source: io::Error,
    },
    /// The blob sink refused or failed to store a blob.
    #[error("storing blob {digest}: {source}")]
    Sink {
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
    /// Something the archive needs is not in it.
    #[error("{archive}: {what} is missing")]
    Missing {
        /// The archive path.
        archive: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// The archive is not a layout or archive we can read.
    #[error("{archive}: {reason}")]
    Invalid {
        /// The archive path.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest or config could not be parsed.
    #[error("{what}: {source}")]
    Oci {
        /// Which document.
        what: String,
        /// The cause.
        source: OciError,
    },
    /// A document (or the archive's set of them) is over kiln's in-memory cap.
    #[error(transparent)]
    TooLarge(#[from] crate::limits::TooLarge),
    /// An archive holds more JSON documents than `kiln load` keeps in memory.
    #[error(
        "refusing the archive: more than {limit} JSON documents (kiln keeps at most that many in memory)"
    )]
    TooManyDocuments {
        /// The cap ([`crate::limits::MAX_ARCHIVE_JSON_ENTRIES`]).
        limit: usize,
    },
    /// An archive holds more files than `kiln load` keeps track of.
    #[error(
        "refusing the archive: more than {limit} entries (kiln keeps track of at most that many)"
    )]
    TooManyEntries {
        /// The cap ([`crate::limits::MAX_ARCHIVE_ENTRIES`]).
        limit: usize,
    },
    /// An archive's indexes list more manifests and indexes than `kiln load` walks.
    #[error(
        "refusing the archive: its indexes list more than {limit} manifests and indexes \
         (repeats included; kiln walks at most that many)"
    )]
    TooManyDescriptors {
        /// The cap ([`crate::limits::MAX_ARCHIVE_DESCRIPTORS`]).
        limit: usize,
    },
    /// An export request cannot be written in this format.
    #[error("{0}")]
    Unsupported(String),
}
