//! kiln-cache: the local store and build-context checksums.
//!
//! Two halves:
//!
//! - **The store** ([`Store`]): content-addressed blobs (sha256, verified reads), unpacked
//!   layer snapshots, the cache index (cache key → [`CacheRecord`]), image refs
//!   (`name:tag` → [`ImageRef`]) and the one image lookup by name or ID prefix
//!   ([`Store::find_image`]), file locks for concurrent builds, and [`Store::prune`].
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
//!
//! A build, in short:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_cache::{ChecksumOptions, Context, Store, load_for};
//! use std::path::Path;
//!
//! let store = Store::open(Path::new("/var/lib/kiln"))?;
//! let _build = store.lock_shared()?; // prune waits until the build is done
//! let ctx_dir = Path::new(".");
//! let ignore = load_for(ctx_dir, &ctx_dir.join("Dockerfile"))?;
//! let ctx = Context::open(ctx_dir, ignore, Some(store.stat_cache_path(ctx_dir)))?;
//! let opts = ChecksumOptions { follow_links: true, wildcard: true, excludes: vec![] };
//! let sum = ctx.checksum("src/", &opts)?; // sum.digest goes into the COPY step's key
//! // ... look up / put cache records, write blobs, commit snapshots, set refs ...
//! ctx.save_stat_cache()?;
//! # let _ = sum;
//! # Ok(())
//! # }
//! ```
//!
//! Writers (build, tag, load) hold [`Store::lock_shared`]; [`Store::prune`] takes the
//! lock exclusively and waits for them.

mod blob;
mod blobindex;
pub mod context;
mod digest;
mod error;
mod fsutil;
pub mod ignore;
mod lookup;
mod prune;
mod record;
mod reference;
mod refs;
pub mod resolve;
mod scratch;
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
pub use lookup::{FoundImage, LookupError};
pub use prune::{PruneOptions, PruneReport};
pub use record::{CacheRecord, LayerRef};
pub use reference::{Reference, normalize_ref};
pub use refs::ImageRef;
pub use resolve::{ResolveError, resolve_in_root};
pub use scratch::{Reclaimed, remove_own_scratch};
pub use snapshot::{StagingDir, tmpfs_staging_base, validate_snapshot_id};
pub use store::{STORE_FORMAT_VERSION, Store, StoreLock};
