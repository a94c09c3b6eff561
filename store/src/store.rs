//! [`Store`]: a handle on the store under `--root`, its format version and its locks.
//! What lives where is [`crate::layout`]'s.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rustix::fs::FlockOperation;

use crate::error::{Result, StoreError};
use crate::fsutil::{atomic_write, ensure_dir, ensure_private_dir};

/// The store format this code reads and writes.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// A handle on a store directory. Cheap to clone; all methods take `&self` and are safe to
/// call from several threads and processes at once.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Whether this handle (or a clone) wrote a record that is not yet durable: see
    /// [`Store::sync_records`].
    pub(crate) unsynced: Arc<AtomicBool>,
    /// Whether new layers may be published before a sync (see `durability`).
    pub(crate) durability: Arc<crate::durability::Durability>,
}

impl Store {
    /// Opens the store at `root`, creating the layout if missing and keeping the root
    /// 0700 (see [`ensure_private_dir`]). Fails if the root holds a store of another
    /// format version.
    pub fn open(root: &Path) -> Result<Store> {
        ensure_private_dir(root)?;
        let store = Store {
            root: root.to_path_buf(),
            unsynced: Arc::default(),
            durability: Arc::default(),
        };
        for dir in store.made_at_open() {
            ensure_dir(&dir)?;
        }
        let version_path = store.version_file();
        match std::fs::read_to_string(&version_path) {
            Ok(found) => {
                if found.trim() != STORE_FORMAT_VERSION.to_string() {
                    return Err(StoreError::UnsupportedVersion {
                        path: root.to_path_buf(),
                        found: found.trim().to_string(),
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                atomic_write(
                    &version_path,
                    format!("{STORE_FORMAT_VERSION}\n").as_bytes(),
                )?;
            }
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: version_path,
                    source,
                });
            }
        }
        store.recover_unsynced()?;
        Ok(store)
    }

    /// The store's root directory, to name the store in messages. What lives under it is
    /// the store's: ask for a blob, a scratch directory, a cache mount or a side record
    /// instead of joining paths to it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store lock shared (blocking). Builds hold it for their whole run so that
    /// prune never deletes what they are about to use.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.lock_file(), FlockOperation::LockShared)
    }

    /// Takes the store lock exclusive (blocking). Held by prune.
    ///
    /// flock locks belong to the open file, so a process that holds a shared guard and
    /// asks for an exclusive one waits for itself: drop the shared guard first.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.lock_file(), FlockOperation::LockExclusive)
    }

    /// Like [`Store::lock_exclusive`] but returns `None` at once if someone holds the lock.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>> {
        match StoreLock::acquire(&self.lock_file(), FlockOperation::NonBlockingLockExclusive) {
            Ok(l) => Ok(Some(l)),
            Err(StoreError::Lock { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn lock_refs(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.refs_lock_file(), FlockOperation::LockExclusive)
    }
}

/// A held flock on a lock file; released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn acquire(path: &Path, op: FlockOperation) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StoreError::Lock {
                path: path.to_path_buf(),
                source,
            })?;
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(StoreError::Lock {
                        path: path.to_path_buf(),
                        source: e.into(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_store_root_is_private_and_a_loose_one_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b/store");
        Store::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let loose = tmp.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).unwrap();
        Store::open(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
    }
}
