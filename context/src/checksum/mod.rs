//! Content checksums of build-context sources for COPY/ADD cache keys (DESIGN "Cache
//! rules"): relative path, type, permission bits (`mode & 0o7777`), symlink target,
//! content sha256 and xattrs (BuildKit's selection, module `xattrs`) of every selected
//! entry, and which of its files are hard links to one selected before. Never mtime,
//! atime, inode or owner.
//!
//! [`Context::checksum`] resolves a source pattern inside the context (clamped to the
//! root, symlinks resolved with the context as `/`), drops what `.dockerignore` excludes,
//! walks directories in sorted order, hashes file contents in parallel (rayon) and folds
//! the results in walk order. Only the selected paths are stat'ed and read.
//!
//! A stat cache (see `statcache`) maps unchanged files to their previous sha256, so a
//! no-op rebuild reads no file contents; call [`Context::save_stat_cache`] at the end of
//! a build to persist it.
//!
//! Submodules by step: `select` (which sources a pattern names), `walk` (their entries,
//! in order, each directory read through its fd by `listing`), `hash` (content digests,
//! with the stat cache; `xattrs` for the attributes that count), `changes` (how two entry
//! lists differ, for `--explain-cache`);
//! `prefetch` works out the checksums the solver will ask for ahead of its steps.

mod changes;
mod hash;
mod listing;
mod prefetch;
mod select;
mod walk;
mod xattrs;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ignore::{IgnoreError, IgnoreMatcher};
use crate::resolve::ResolveError;
use crate::statcache::StatCacheCell;
use kiln_base::gopath::BadPattern;

pub use changes::diff_entries;

/// Errors from opening a context or computing a checksum.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// The text is BuildKit's/docker's; callers prefix the instruction ("COPY failed: ").
    #[error(
        "file not found in build context or excluded by .dockerignore: stat {pattern}: file does not exist"
    )]
    NotFound { pattern: String },
    #[error("invalid source pattern {pattern:?}: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: BadPattern,
    },
    #[error("invalid --exclude pattern: {0}")]
    Exclude(#[source] IgnoreError),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The text keeps the form it had when the store wrote the file.
    #[error("cannot save the context stat cache: cannot atomically write {}: {source}", path.display())]
    SaveStatCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to select sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ChecksumOptions {
    /// Follow a symlink named by the pattern (or matched by a wildcard) to its target
    /// (COPY/ADD do). Symlinks inside directories are never followed.
    pub follow_links: bool,
    /// Treat `*`, `?`, `[...]` in the pattern as wildcards (per path component, Go
    /// `filepath.Match`). A wildcard matching nothing selects nothing (not an error).
    pub wildcard: bool,
    /// `--exclude` patterns (`.dockerignore` syntax), matched against paths relative to
    /// each selected source (a file source by its name).
    pub excludes: Vec<String>,
}

/// The file type of a checksummed context entry (what `lstat` says it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextFileType {
    File,
    Dir,
    Symlink,
    /// fifo, socket or device: type and mode count, there is no content.
    Other,
}

impl ContextFileType {
    fn tag(self) -> u8 {
        match self {
            ContextFileType::File => b'f',
            ContextFileType::Dir => b'd',
            ContextFileType::Symlink => b'l',
            ContextFileType::Other => b'o',
        }
    }
}

/// One entry that went into a checksum (kept so `--explain-cache` can say which file
/// changed; see [`diff_entries`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedEntry {
    /// Path relative to the context root, `/`-separated; `.` for the root itself.
    pub rel_path: String,
    pub kind: ContextFileType,
    /// Permission bits (`mode & 0o7777`); 0o777 for symlinks.
    pub mode: u32,
    /// Content size for files, 0 otherwise.
    pub size: u64,
    pub link_target: Option<String>,
    /// Lowercase hex sha256 of the content, for files; with the entry's xattrs folded
    /// in when it has any (then also for a directory, symlink or device).
    pub sha256: Option<String>,
}

/// Work done by one checksum call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChecksumStats {
    /// Files whose contents were read.
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// Files whose digest came from the stat cache.
    pub cache_hits: u64,
}

/// The result of [`Context::checksum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `sha256:<hex>` over the sources and entries (canonical, order-stable).
    pub digest: String,
    /// Every entry hashed, in walk order (sources in match order, then pre-order with
    /// children sorted by name).
    pub files: Vec<HashedEntry>,
    /// Each selected source as a resolved context-relative path (`.` for the root).
    pub sources: Vec<String>,
    pub stats: ChecksumStats,
}

/// An opened build context.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    /// `root`, open: the walk reads every directory relative to it.
    root_fd: std::os::fd::OwnedFd,
    matcher: IgnoreMatcher,
    stat_cache_path: Option<PathBuf>,
    cache: StatCacheCell,
    prefetch: prefetch::Prefetch,
}

impl Context {
    /// Opens the context at `dir` with the `.dockerignore` rules `matcher` (see
    /// [`crate::load_for`]). With `stat_cache_path`, a previous stat cache is loaded from
    /// there (a missing or corrupt file means an empty cache).
    pub fn open(
        dir: &Path,
        matcher: IgnoreMatcher,
        stat_cache_path: Option<PathBuf>,
    ) -> Result<Context, ContextError> {
        let root = std::fs::canonicalize(dir).map_err(|source| ContextError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let root_fd = listing::open_root(&root).map_err(|source| ContextError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let cache = StatCacheCell::load(stat_cache_path.clone());
        Ok(Context {
            root,
            root_fd,
            matcher,
            stat_cache_path,
            cache,
            prefetch: Default::default(),
        })
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `.dockerignore` rules in force.
    pub fn matcher(&self) -> &IgnoreMatcher {
        &self.matcher
    }

    /// Number of entries in the in-memory stat cache.
    pub fn stat_cache_len(&self) -> usize {
        self.cache.lock().len()
    }

    /// Writes the stat cache atomically if it changed. Returns whether it wrote.
    pub fn save_stat_cache(&self) -> Result<bool, ContextError> {
        let Some(path) = &self.stat_cache_path else {
            return Ok(false);
        };
        let mut cache = self.cache.lock();
        if !cache.is_dirty() {
            return Ok(false);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ContextError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        kiln_base::atomic::write(path, &cache.encode()).map_err(|source| {
            ContextError::SaveStatCache {
                path: path.clone(),
                source,
            }
        })?;
        cache.mark_clean();
        Ok(true)
    }

    /// Starts checksumming `requests` (source patterns and how they select), in order, on
    /// up to three threads of this context's own: a later [`Context::checksum`] of one of
    /// them takes the result rather than walking the sources again.
    pub fn prefetch(self: &std::sync::Arc<Self>, requests: Vec<(String, ChecksumOptions)>) {
        prefetch::Prefetch::start(self, requests);
    }

    /// Checksums the sources `pattern` selects. See the module docs for what counts.
    pub fn checksum(
        &self,
        pattern: &str,
        opts: &ChecksumOptions,
    ) -> Result<Checksum, ContextError> {
        match self.prefetch.claim(pattern, opts) {
            prefetch::Claim::Ready(sum) => Ok(sum),
            prefetch::Claim::Compute => self.compute_checksum(pattern, opts),
        }
    }

    fn compute_checksum(
        &self,
        pattern: &str,
        opts: &ChecksumOptions,
    ) -> Result<Checksum, ContextError> {
        let excludes = if opts.excludes.is_empty() {
            None
        } else {
            Some(IgnoreMatcher::from_patterns(&opts.excludes).map_err(ContextError::Exclude)?)
        };
        let phase = kiln_base::phase::start("context walk");
        let sources = self.select(pattern, opts)?;
        let mut items = Vec::new();
        for src in &sources {
            self.collect_source(pattern, src, excludes.as_ref(), &mut items)?;
        }
        phase.end();
        let phase = kiln_base::phase::start("context hash (stat cache)");
        let stats = self.hash_items(&mut items)?;
        phase.end();
        let phase = kiln_base::phase::start("context digest");

        let mut h = Sha256::new();
        h.update(b"kiln-context-checksum-v1\0");
        for src in &sources {
            h.update(b"S");
            field(&mut h, src.requested.as_bytes());
            field(&mut h, src.resolved.as_bytes());
        }
        // The first name of each multiply-linked inode, in walk order: a later name is a
        // hard link to it (as in BuildKit's key, where its header names the first), so
        // files made one inode, or two again, change the key as they change the layer.
        // Inodes by number alone (a link is never across filesystems; the device would
        // grow every walked entry, which the no-op rebuild pays for): only files with
        // other names on two filesystems mounted into one context, with one inode number,
        // could get a mark for a link that is not there.
        let mut first_names: HashMap<u64, &[u8]> = HashMap::new();
        for it in &items {
            h.update(b"E");
            field(&mut h, it.raw_path());
            h.update([it.entry.kind.tag()]);
            h.update(it.entry.mode.to_le_bytes());
            h.update(it.entry.size.to_le_bytes());
            field(&mut h, it.raw_target.as_deref().unwrap_or(b""));
            h.update(it.sha.unwrap_or([0; 32]));
            if let (true, Some(key)) = (it.linked, it.stat) {
                match first_names.entry(key.ino) {
                    Entry::Occupied(first) => {
                        h.update(b"H");
                        field(&mut h, first.get());
                    }
                    Entry::Vacant(v) => {
                        v.insert(it.raw_path());
                    }
                }
            }
        }
        let digest = kiln_base::digest::Digest::from_hasher(h).into_string();
        phase.end();
        Ok(Checksum {
            digest,
            sources: sources
                .iter()
                .map(|s| {
                    if s.resolved.is_empty() {
                        ".".to_string()
                    } else {
                        s.resolved.clone()
                    }
                })
                .collect(),
            files: items.into_iter().map(|i| i.entry).collect(),
            stats,
        })
    }
}

/// Length-prefixed field, so no two different entry lists serialize alike.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}
