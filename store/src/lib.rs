//! kiln-store: kiln's local store, in a layout it owns.
//!
//! [`Store`]: content-addressed blobs (sha256, verified reads), unpacked layer snapshots,
//! the cache index (cache key → [`CacheRecord`]), image refs (`name:tag` → [`ImageRef`])
//! and the one image lookup by name or ID prefix ([`Store::find_image`]), per-process
//! scratch directories (with staging directories made ahead, `ahead`, and thrown away in
//! the background, `discard`), `RUN --mount=type=cache` directories with their sharing locks
//! ([`Store::cache_mount`]), git sources' fetch cache ([`Store::git_repo`]), named side records of other crates ([`Store::side_records`]),
//! file locks for concurrent builds, and [`Store::prune`]. Every write is atomic (temp
//! file, fsync, rename, fsync dir; a new layer's blob, index entry and snapshot renamed
//! into place unsynced, [`Store::commit_new_layer`]; cache records and side records, which
//! read as a miss when lost, without fsync; a build's layers and records synced at its end
//! by [`Store::sync_records`]): a build killed at any instant leaves a store the next
//! build uses without repair, and after a power cut the next boot's first open drops what
//! the cut may have left half written (`durability`: snapshots and records published since
//! the last sync, blobs that do not match their digests).
//!
//! The store owns its layout (`layout.rs` names every directory it makes): callers never
//! build a path under the root, they ask for what they need, and prune walks only what
//! the store made.
//!
//! The crate knows nothing of Dockerfiles, build contexts or namespaces; the build
//! context's checksums are `kiln-context`'s (the store only says where a context's stat
//! cache lives, [`Store::stat_cache_path`]).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_store::Store;
//! use std::path::Path;
//!
//! let store = Store::open(Path::new("/var/lib/kiln"))?;
//! let _build = store.lock_shared()?; // prune waits until the build is done
//! // ... look up / put cache records, write blobs, commit snapshots, set refs ...
//! # Ok(())
//! # }
//! ```
//!
//! Writers (build, tag, load) hold [`Store::lock_shared`]; [`Store::prune`] takes the
//! lock exclusively and waits for them.

mod ahead;
mod blob;
mod blobindex;
mod cachemount;
mod digest;
mod discard;
mod durability;
mod error;
mod fsutil;
mod gitrepo;
mod layout;
mod lookup;
mod newlayer;
mod prune;
mod record;
mod reference;
mod refs;
mod scratch;
mod side;
mod snapshot;
mod store;

pub use blob::{BlobInfo, BlobWriter};
pub use cachemount::{CacheMount, CacheMountDir, CacheMountError, CacheSharing, NewCacheMount};
pub use digest::{canonical_json, is_sha256_hex, parse_digest, sha256_digest, sha256_hex};
pub use error::StoreError;
pub use fsutil::{atomic_write, fsync_dir};
pub use gitrepo::{GitRepo, GitRepoError};
pub use layout::SideRecordKind;
pub use lookup::{FoundImage, LookupError};
pub use prune::{PruneOptions, PruneReport};
pub use record::{CacheRecord, LayerRef};
pub use reference::{Reference, normalize_ref};
pub use refs::ImageRef;
pub use scratch::{Reclaimed, remove_own_scratch};
pub use side::SideRecords;
pub use snapshot::{StagingDir, tmpfs_staging_base, validate_snapshot_id};
pub use store::{STORE_FORMAT_VERSION, Store, StoreLock};
