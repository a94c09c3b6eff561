//! `RUN --mount=type=cache` directories: `cachemounts/<sha256 of id>/`, shared between
//! builds, each with a lock file beside it (`<hex>.lock`).
//!
//! Every user holds the lock file: shared for [`CacheSharing::Shared`], exclusive for
//! [`CacheSharing::Locked`] (waiting its turn). [`CacheSharing::Private`] takes the
//! exclusive lock without waiting and, when another build holds the cache, gets a fresh
//! throwaway directory in this process's scratch instead, as BuildKit gives a private
//! cache to a second writer.
//!
//! A directory that does not exist yet is made in a staging directory beside it (the
//! caller may fill it from a seed first), given its mode and owner, and published by a
//! rename: a build killed half way leaves no half-made cache. When two builds publish
//! the same cache at once, the first one's wins.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::store::Store;

/// How builds share one cache mount (BuildKit's `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// Why a cache mount could not be had. The texts name the mount by its id.
#[derive(Debug, thiserror::Error)]
pub enum CacheMountError {
    #[error("cache mount {id}: {what}: {source}")]
    Io {
        id: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cache mount {id}: locking: {source}")]
    Lock {
        id: String,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("cache mount {id}: publishing: rename failed")]
    Publish { id: String },
}

/// What keeps a cache mount this build's: the held lock, or the private throwaway copy.
#[derive(Debug)]
enum Hold {
    Lock(#[allow(dead_code)] File),
    Private(#[allow(dead_code)] tempfile::TempDir),
}

/// A cache mount's directory, this build's (under its lock) for as long as this lives.
#[derive(Debug)]
pub struct CacheMount {
    dir: PathBuf,
    _hold: Hold,
}

impl CacheMount {
    /// The directory to mount.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// What [`Store::cache_mount`] gives.
#[derive(Debug)]
pub enum CacheMountDir {
    /// The directory exists (an earlier build made it).
    Ready(CacheMount),
    /// The directory is new: fill [`NewCacheMount::path`] if it has a seed, then
    /// [`NewCacheMount::publish`] it.
    New(NewCacheMount),
}

/// A cache mount made for the first time, not yet published.
#[derive(Debug)]
pub struct NewCacheMount {
    id: String,
    mount: CacheMount,
    /// Beside the cache directories (same filesystem: the publishing rename is atomic);
    /// removed with whatever is left in it when this is dropped.
    staging: tempfile::TempDir,
}

impl NewCacheMount {
    /// Where the new directory is made: copy a seed to this path, or leave it absent
    /// for an empty directory.
    pub fn path(&self) -> PathBuf {
        self.staging.path().join("cache")
    }

    /// Makes the directory (empty unless a seed was copied to [`NewCacheMount::path`]),
    /// gives it `mode` and the owner `uid:gid`, and publishes it. If another build
    /// published the same cache meanwhile, theirs wins and ours goes with the staging.
    pub fn publish(self, mode: u32, uid: u32, gid: u32) -> Result<CacheMount, CacheMountError> {
        let fresh = self.path();
        let err = |what: &'static str| {
            let id = self.id.clone();
            move |source| CacheMountError::Io { id, what, source }
        };
        if fs::symlink_metadata(&fresh).is_err() {
            fs::create_dir(&fresh).map_err(err("creating"))?;
        }
        fs::set_permissions(&fresh, fs::Permissions::from_mode(mode)).map_err(err("chmod"))?;
        std::os::unix::fs::chown(&fresh, Some(uid), Some(gid)).map_err(err("chown"))?;
        let dir = &self.mount.dir;
        if fs::rename(&fresh, dir).is_err() && !dir.exists() {
            return Err(CacheMountError::Publish { id: self.id });
        }
        Ok(self.mount)
    }
}

impl Store {
    /// The cache mount `id`, held with `sharing` (see the module docs); the lock waits
    /// for other builds only with [`CacheSharing::Locked`].
    pub fn cache_mount(
        &self,
        id: &str,
        sharing: CacheSharing,
    ) -> Result<CacheMountDir, CacheMountError> {
        let err = |what: &'static str| {
            move |source| CacheMountError::Io {
                id: id.to_string(),
                what,
                source,
            }
        };
        let base = self.cache_mounts_dir();
        fs::create_dir_all(&base).map_err(err("creating"))?;
        let name = kiln_base::digest::sha256_hex(id.as_bytes());
        let lock = File::create(base.join(format!("{name}.lock"))).map_err(err("lock file"))?;
        let op = match sharing {
            CacheSharing::Shared => FlockOperation::LockShared,
            CacheSharing::Locked => FlockOperation::LockExclusive,
            CacheSharing::Private => FlockOperation::NonBlockingLockExclusive,
        };
        let mount = match rustix::fs::flock(&lock, op) {
            Ok(()) => CacheMount {
                dir: base.join(&name),
                _hold: Hold::Lock(lock),
            },
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let scratch = self.scratch_dir().map_err(|e| CacheMountError::Io {
                    id: id.to_string(),
                    what: "private copy",
                    source: std::io::Error::other(e),
                })?;
                let private = tempfile::tempdir_in(scratch).map_err(err("private copy"))?;
                CacheMount {
                    dir: private.path().join("cache"),
                    _hold: Hold::Private(private),
                }
            }
            Err(source) => {
                return Err(CacheMountError::Lock {
                    id: id.to_string(),
                    source,
                });
            }
        };
        if mount.dir.exists() {
            return Ok(CacheMountDir::Ready(mount));
        }
        let staging = tempfile::tempdir_in(&base).map_err(err("creating"))?;
        Ok(CacheMountDir::New(NewCacheMount {
            id: id.to_string(),
            mount,
            staging,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> (u32, u32) {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    }

    fn publish(store: &Store, id: &str, sharing: CacheSharing) -> CacheMount {
        let (uid, gid) = owner();
        match store.cache_mount(id, sharing).unwrap() {
            CacheMountDir::New(new) => new.publish(0o755, uid, gid).unwrap(),
            CacheMountDir::Ready(m) => m,
        }
    }

    #[test]
    fn a_cache_mount_is_made_once_and_found_again() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let first = publish(&store, "go", CacheSharing::Shared);
        std::fs::write(first.path().join("f"), b"x").unwrap();
        assert!(first.path().starts_with(store.cache_mounts_dir()));
        let again = store.cache_mount("go", CacheSharing::Shared).unwrap();
        let CacheMountDir::Ready(again) = again else {
            panic!("the published cache is found again")
        };
        assert_eq!(again.path(), first.path());
        assert_eq!(std::fs::read(again.path().join("f")).unwrap(), b"x");
    }

    #[test]
    fn a_seed_copied_to_the_new_path_is_published() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let CacheMountDir::New(new) = store.cache_mount("seeded", CacheSharing::Locked).unwrap()
        else {
            panic!("a new cache")
        };
        std::fs::create_dir(new.path()).unwrap();
        std::fs::write(new.path().join("seed"), b"s").unwrap();
        let (uid, gid) = owner();
        let m = new.publish(0o700, uid, gid).unwrap();
        assert_eq!(std::fs::read(m.path().join("seed")).unwrap(), b"s");
        let mode = std::fs::metadata(m.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_private_cache_held_by_another_build_is_a_throwaway_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let held = publish(&store, "p", CacheSharing::Private);
        let second = publish(&store, "p", CacheSharing::Private);
        assert_ne!(second.path(), held.path());
        assert!(second.path().starts_with(store.scratch_dir().unwrap()));
        let path = second.path().to_path_buf();
        drop(second);
        assert!(!path.exists(), "the throwaway copy goes when dropped");
        // Shared users do not wait for each other.
        let a = publish(&store, "s", CacheSharing::Shared);
        let b = publish(&store, "s", CacheSharing::Shared);
        assert_eq!(a.path(), b.path());
    }
}
