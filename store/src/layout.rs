//! The store's layout: every file and directory kiln keeps under `--root`, named once.
//!
//! All under one root, one filesystem, so `rename` is atomic:
//!
//! ```text
//! VERSION                 format version ("1\n"); the root itself is 0700
//! lock                    builds hold it shared, prune holds it exclusive
//! refs                    image refs (JSON), rewritten under refs.lock
//! refs.lock               short exclusive lock for refs updates
//! blobs/sha256/<hex>      content-addressed blobs (layers, configs, manifests)
//! snapshots/<id>/         unpacked layers; <id> is the hex of the layer's diff_id
//! cache/<key>.json        cache index: one record per cache key
//! layers/<hex>.<k>.json   blob index: the blob holding a layer in a compression
//! statcache/<hex>         context stat caches (see [`Store::stat_cache_path`])
//! tmp/proc-*/             per-process scratch (see [`crate::scratch`]); a dead one is reclaimed
//! cachemounts/<hex>/      RUN --mount=type=cache directories, <hex>.lock beside each
//!                         (see [`Store::cache_mount`])
//! git/<hex>/              git sources' fetch cache: a bare repository per remote,
//!                         <hex>.lock beside each (see [`Store::git_repo`])
//! explain/<hex>[.key]     side records: --explain-cache inputs of a step
//! registry/sources/<hex>  side records: the repositories a blob was pulled from or pushed to
//! chunks/<hex>            side records: the compressed chunks of a gzip blob kiln wrote
//! ```
//!
//! Nobody outside the crate joins a path to the store's root: callers ask for a blob, a
//! snapshot, a scratch directory, a cache mount or a named side record
//! ([`Store::side_records`]), and prune walks only the directories listed here.

use std::path::{Path, PathBuf};

use crate::store::Store;

/// The format version file.
const VERSION: &str = "VERSION";
/// The store lock (shared by builds, exclusive for prune).
const LOCK: &str = "lock";
/// Image refs, and the lock held while rewriting them.
const REFS: &str = "refs";
const REFS_LOCK: &str = "refs.lock";
/// The boot during which layers may have been published unsynced, its lock, and up to
/// when a sync covered them (see `durability`).
const UNSYNCED: &str = "unsynced";
const UNSYNCED_LOCK: &str = "unsynced.lock";
const SYNCED: &str = "synced";
const BLOBS: &str = "blobs";
const BLOBS_ALGORITHM: &str = "sha256";
const SNAPSHOTS: &str = "snapshots";
const CACHE: &str = "cache";
const LAYERS: &str = "layers";
const STATCACHE: &str = "statcache";
const TMP: &str = "tmp";
const CACHEMOUNTS: &str = "cachemounts";
const GIT: &str = "git";
const EXPLAIN: &str = "explain";
const REGISTRY: &str = "registry";
const REGISTRY_SOURCES: &str = "sources";
const CHUNKS: &str = "chunks";

/// Every name the store makes at its top level; anything else under the root is not
/// kiln's, and prune leaves it alone.
#[cfg(test)]
pub(crate) const TOP_LEVEL: &[&str] = &[
    VERSION,
    LOCK,
    REFS,
    REFS_LOCK,
    UNSYNCED,
    UNSYNCED_LOCK,
    SYNCED,
    BLOBS,
    SNAPSHOTS,
    CACHE,
    LAYERS,
    STATCACHE,
    TMP,
    CACHEMOUNTS,
    GIT,
    EXPLAIN,
    CHUNKS,
    REGISTRY,
];

/// A kind of side record: small files that other crates keep in the store by name,
/// each kind in a directory of its own, with the lifetime prune gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideRecordKind {
    /// `explain/`: the inputs of a step's key for `--explain-cache`, `<name>` beside
    /// `<name>.key` (the key they were computed for); dropped when no cache record has
    /// that key.
    Explain,
    /// `registry/sources/`: the repositories a blob came from, named by the blob's hex
    /// digest; dropped with the blob.
    RegistrySources,
    /// `chunks/`: the chunk table of a gzip blob kiln compressed (`kiln_image::ChunkTable`),
    /// named by the blob's hex digest, so the next layer of the same step copies the
    /// chunks it shares; dropped with the blob.
    GzipChunks,
}

impl SideRecordKind {
    /// Every kind: what must hold for all of them (power-cut recovery) goes through this.
    pub const ALL: [SideRecordKind; 3] = [
        SideRecordKind::Explain,
        SideRecordKind::RegistrySources,
        SideRecordKind::GzipChunks,
    ];
}

impl Store {
    /// The format version file.
    pub(crate) fn version_file(&self) -> PathBuf {
        self.root().join(VERSION)
    }

    /// The store lock.
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root().join(LOCK)
    }

    /// The image refs file.
    pub(crate) fn refs_file(&self) -> PathBuf {
        self.root().join(REFS)
    }

    /// The lock held while the refs file is rewritten.
    pub(crate) fn refs_lock_file(&self) -> PathBuf {
        self.root().join(REFS_LOCK)
    }

    /// The marker of unsynced layers (see `durability`), its lock, and the note of the
    /// last sync.
    pub(crate) fn unsynced_file(&self) -> PathBuf {
        self.root().join(UNSYNCED)
    }

    pub(crate) fn unsynced_lock_file(&self) -> PathBuf {
        self.root().join(UNSYNCED_LOCK)
    }

    pub(crate) fn synced_file(&self) -> PathBuf {
        self.root().join(SYNCED)
    }

    /// The directories [`Store::open`] makes; the rest are made on first use.
    pub(crate) fn made_at_open(&self) -> [PathBuf; 6] {
        [
            self.blobs_dir(),
            self.snapshots_dir(),
            self.cache_dir(),
            self.stat_cache_dir(),
            self.layers_dir(),
            self.tmp_root(),
        ]
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root().join(BLOBS).join(BLOBS_ALGORITHM)
    }

    pub(crate) fn tmp_root(&self) -> PathBuf {
        self.root().join(TMP)
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root().join(SNAPSHOTS)
    }

    /// The cache index.
    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root().join(CACHE)
    }

    /// The blob index (prune drops entries whose blob is gone).
    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root().join(LAYERS)
    }

    /// The stat caches of build contexts.
    pub(crate) fn stat_cache_dir(&self) -> PathBuf {
        self.root().join(STATCACHE)
    }

    /// `RUN --mount=type=cache` directories and their lock files.
    pub(crate) fn cache_mounts_dir(&self) -> PathBuf {
        self.root().join(CACHEMOUNTS)
    }

    /// Git sources' cache repositories and their lock files.
    pub(crate) fn git_repos_dir(&self) -> PathBuf {
        self.root().join(GIT)
    }

    /// The directory of one kind of side record.
    pub(crate) fn side_records_dir(&self, kind: SideRecordKind) -> PathBuf {
        match kind {
            SideRecordKind::Explain => self.root().join(EXPLAIN),
            SideRecordKind::RegistrySources => self.root().join(REGISTRY).join(REGISTRY_SOURCES),
            SideRecordKind::GzipChunks => self.root().join(CHUNKS),
        }
    }

    /// Where the stat cache of the build context at `context_dir` lives: one file per
    /// context directory (named by the sha256 of its absolute path), so two projects
    /// never share entries. Pass it to `kiln_context::Context::open`.
    pub fn stat_cache_path(&self, context_dir: &Path) -> PathBuf {
        let abs = std::fs::canonicalize(context_dir).unwrap_or_else(|_| context_dir.to_path_buf());
        let key = crate::digest::sha256_hex(abs.as_os_str().as_encoded_bytes());
        self.stat_cache_dir().join(key)
    }
}
