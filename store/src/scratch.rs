//! Per-process scratch directories under `tmp/`, and reclaiming those of dead processes.
//!
//! Every process that stages something in the store (blobs, snapshots, downloads, a RUN's
//! overlay dirs) does it in its own `tmp/proc-<pid>-<n>-<nanos>/` and holds an exclusive
//! flock on that directory for as long as it lives. The kernel drops a flock when its
//! holder dies, however it dies (Ctrl-C, SIGKILL, OOM), so a scratch directory whose lock
//! can be taken belongs to no live process: that, not its age, makes it a leftover, and
//! the next build or prune removes it at once. Entries of `tmp/` that are not scratch
//! directories (written by older versions) still go by age, since nothing says whether
//! their writer is alive.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rustix::fs::FlockOperation;

use crate::error::{Result, StoreError};
use crate::fsutil::{io_err, remove_any, spread_subdirectories, tree_size, unique_name};
use crate::store::Store;

/// Name prefix of a per-process scratch directory.
const SCRATCH_PREFIX: &str = "proc-";
/// Name prefix while a scratch directory is created and not yet locked.
const NEW_PREFIX: &str = ".new-";

/// Entries of `tmp/` without an owner lock older than this are leftovers.
pub(crate) const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// A scratch directory this process owns, with the open directory that holds its lock.
struct Owned {
    tmp: PathBuf,
    dir: PathBuf,
    _lock: File,
}

/// This process's scratch directories, one per store (`--verify-reproducible` opens
/// several stores). Global because the signal handler must find them without a `Store`.
static OWNED: Mutex<Vec<Owned>> = Mutex::new(Vec::new());

fn owned() -> MutexGuard<'static, Vec<Owned>> {
    // A panic while holding the guard leaves a consistent Vec: keep using it.
    OWNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What [`Store::reclaim_scratch`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Scratch directories (and stale temp entries) removed.
    pub entries: u64,
    pub bytes: u64,
}

/// Removes this process's scratch directories, and its staging on a tmpfs (best effort).
/// For the end of the process and for SIGINT/SIGTERM handlers, where there is nobody left
/// to report a failure to: whatever stays is reclaimed by the next build or prune once
/// this process is gone.
pub fn remove_own_scratch() {
    crate::discard::stop();
    let mut owned = owned();
    for o in owned.drain(..) {
        crate::ahead::forget(&o.dir);
        let _ = remove_any(&o.dir);
    }
    crate::snapshot::remove_own_tmpfs_staging();
}

/// Tries to take the lock of the scratch directory `dir` without waiting: `Some` when no
/// process holds it (its owner is dead), `None` when its owner lives.
fn lock_if_dead(dir: &Path) -> Option<File> {
    let f = File::open(dir).ok()?;
    loop {
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Some(f),
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

impl Store {
    /// This process's scratch directory in this store, created and locked on first use.
    /// Everything staged here is this process's until it exits; see the module docs.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let tmp = self.tmp_root();
        let mut owned = owned();
        if let Some(o) = owned.iter().find(|o| o.tmp == tmp) {
            return Ok(o.dir.clone());
        }
        let name = unique_name(SCRATCH_PREFIX.trim_end_matches('-'));
        // Created under a name reclaimers skip, locked, then renamed: a reclaimer never
        // sees the final name unlocked (the flock follows the open directory through the
        // rename).
        let new = tmp.join(format!("{NEW_PREFIX}{name}"));
        fs::create_dir(&new).map_err(io_err("create", new.clone()))?;
        let lock = File::open(&new).map_err(io_err("open", new.clone()))?;
        spread_subdirectories(&lock);
        rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            StoreError::Lock {
                path: new.clone(),
                source: e.into(),
            }
        })?;
        let dir = tmp.join(&name);
        fs::rename(&new, &dir).map_err(io_err("rename", new.clone()))?;
        owned.push(Owned {
            tmp,
            dir: dir.clone(),
            _lock: lock,
        });
        Ok(dir)
    }

    /// Removes the scratch directories of dead processes, and other `tmp/` entries older
    /// than an hour. Safe while other builds run: their scratch directories are locked.
    pub fn reclaim_scratch(&self) -> Result<Reclaimed> {
        let mut done = Reclaimed::default();
        let now = SystemTime::now();
        let tmp = self.tmp_root();
        for entry in fs::read_dir(&tmp).map_err(io_err("read directory", tmp.clone()))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            // Held while removing, so the directory is never seen as someone's.
            let _lock = if name.starts_with(SCRATCH_PREFIX) && is_dir {
                match lock_if_dead(&path) {
                    Some(l) => Some(l),
                    None => continue,
                }
            } else {
                let old = path
                    .symlink_metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|d| d >= STALE_TMP_AGE);
                if !old {
                    continue;
                }
                None
            };
            done.bytes += tree_size(&path);
            remove_any(&path).map_err(io_err("remove", path.clone()))?;
            done.entries += 1;
        }
        Ok(done)
    }
}
