//! Git sources' fetch cache: `git/<sha256 of the remote URL>/`, one bare repository per
//! remote, with a lock file beside it (`<hex>.lock`).
//!
//! The git CLI (driven by `kiln_context::git`) fetches into these repositories only the
//! commits a build missed, and checks a commit out from them; the store only says where
//! they live and serialises their users: [`Store::git_repo`] holds the lock exclusively
//! until the [`GitRepo`] is dropped, so two builds never run git on one repository at
//! once. Prune drops them with `--all`, as it drops cache mounts (nothing refers to them:
//! they only save network round trips).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::store::Store;

/// Why a git repository directory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum GitRepoError {
    #[error("git cache for {remote}: {what}: {source}")]
    Io {
        remote: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("git cache for {remote}: locking: {source}")]
    Lock {
        remote: String,
        #[source]
        source: rustix::io::Errno,
    },
}

/// One remote's cache repository, this process's (under its lock) while this lives.
#[derive(Debug)]
pub struct GitRepo {
    dir: PathBuf,
    _lock: File,
}

impl GitRepo {
    /// The repository's directory (absent until the first fetch makes it).
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Store {
    /// The cache repository of `remote` (the URL as git is given it), locked for this
    /// caller; waits while another build uses it.
    pub fn git_repo(&self, remote: &str) -> Result<GitRepo, GitRepoError> {
        let err = |what: &'static str| {
            move |source| GitRepoError::Io {
                remote: remote.to_string(),
                what,
                source,
            }
        };
        let base = self.git_repos_dir();
        fs::create_dir_all(&base).map_err(err("creating"))?;
        let name = kiln_base::digest::sha256_hex(remote.as_bytes());
        let lock = File::create(base.join(format!("{name}.lock"))).map_err(err("lock file"))?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive).map_err(|source| {
            GitRepoError::Lock {
                remote: remote.to_string(),
                source,
            }
        })?;
        Ok(GitRepo {
            dir: base.join(name),
            _lock: lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_per_remote_under_the_store() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let a = store
            .git_repo("https://h/a.git")
            .unwrap()
            .path()
            .to_path_buf();
        let b = store
            .git_repo("https://h/b.git")
            .unwrap()
            .path()
            .to_path_buf();
        assert_ne!(a, b);
        assert!(a.starts_with(store.git_repos_dir()));
        assert_eq!(store.git_repo("https://h/a.git").unwrap().path(), a);
    }
}
