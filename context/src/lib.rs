//! kiln-context: the build context as the solver sees it, for cache keys.
//!
//! - `.dockerignore` matching with moby's semantics ([`IgnoreMatcher`], [`load_for`]; a
//!   named context's own [`load_own`]);
//! - path resolution clamped to the context root ([`resolve_in_root`]), BuildKit's rules;
//! - content checksums of COPY/ADD sources ([`Context::checksum`]) that ignore
//!   mtime/atime/inode/owner and use a persisted stat cache, so a no-op rebuild re-hashes
//!   nothing; [`diff_entries`] says which file changed, for `--explain-cache`;
//! - [`git`]: a remote git repository at one commit as a directory tree (ADD's git
//!   sources, a git URL as the build context), through the `git` CLI; over ssh with the
//!   agent socket the caller gives (the build's `--ssh default`).
//!
//! The crate knows nothing of Dockerfile syntax, namespaces or the store (a git source's
//! cache repository is a directory the caller gets from the store): the solver
//! decides which patterns to checksum and how to combine digests into cache keys, and
//! the store says where a context's stat cache lives (`kiln_store::Store::stat_cache_path`).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_context::{ChecksumOptions, Context, load_for};
//! use std::path::Path;
//!
//! let ctx_dir = Path::new(".");
//! let ignore = load_for(ctx_dir, &ctx_dir.join("Dockerfile"))?;
//! let ctx = Context::open(ctx_dir, ignore, Some("/var/lib/kiln/statcache/x".into()))?;
//! let opts = ChecksumOptions { follow_links: true, wildcard: true, excludes: vec![] };
//! let sum = ctx.checksum("src/", &opts)?; // sum.digest goes into the COPY step's key
//! ctx.save_stat_cache()?;
//! # let _ = sum;
//! # Ok(())
//! # }
//! ```

pub mod checksum;
pub mod git;
pub mod ignore;
pub mod resolve;
mod statcache;

pub use checksum::{
    Checksum, ChecksumOptions, ChecksumStats, Context, ContextError, ContextFileType, HashedEntry,
    diff_entries,
};
pub use ignore::{IgnoreError, IgnoreMatcher, load_for, load_own};
pub use resolve::{ResolveError, resolve_in_root};
