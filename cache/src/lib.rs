//! kiln-cache: the local store and build-context checksums.
//!
//! Two halves:
//!
//! - **The store** ([`Store`]): content-addressed blobs (sha256, verified reads), unpacked
//!   layer snapshots, the cache index (cache key → [`CacheRecord`]), image refs
//!   (`name:tag` → [`ImageRef`]), file locks for concurrent builds, and [`Store::prune`].
//!   Every write is atomic (temp file, fsync, rename, fsync dir): a build killed at any
//!   instant leaves a store the next build uses without repair.
//! - **The build context**: `.dockerignore` matching with moby's semantics
//!   ([`IgnoreMatcher`]), path resolution clamped to the context root
//!   ([`resolve_in_root`]), and content checksums of COPY/ADD sources
//!   ([`Context::checksum`]) that ignore mtime/atime/inode/owner and use a persisted stat
//!   cache so a no-op rebuild re-hashes nothing.
//!
//! The crate knows nothing of Dockerfile syntax or namespaces: the solver decides which
//! patterns to checksum and how to combine digests into cache keys.

mod blob;
pub mod context;
mod digest;
mod error;
mod fsutil;
pub mod glob;
pub mod ignore;
mod prune;
mod record;
mod reference;
mod refs;
pub mod resolve;
mod snapshot;
mod statcache;
mod store;

pub use blob::{BlobInfo, BlobWriter};
pub use context::{
    Checksum, ChecksumOptions, Context, ContextError, EntryKind, HashedEntry, diff_entries,
};
pub use digest::{canonical_json, is_sha256_hex, parse_digest, sha256_digest, sha256_hex};
pub use error::StoreError;
pub use fsutil::{atomic_write, fsync_dir};
pub use ignore::{IgnoreError, IgnoreMatcher, load_for};
pub use prune::{PruneOptions, PruneReport};
pub use record::{CacheRecord, LayerRef};
pub use reference::{Reference, normalize_ref};
pub use refs::ImageRef;
pub use resolve::{ResolveError, resolve_in_root};
pub use snapshot::{StagingDir, validate_snapshot_id};
pub use store::{STORE_FORMAT_VERSION, Store, StoreLock};
