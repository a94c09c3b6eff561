//! Snapshots: unpacked layer directories under `snapshots/<id>/`, used as overlay lower
//! dirs.
//!
//! **Naming rule:** a snapshot's id is the hex part of the diff_id (the sha256 of the
//! uncompressed tar) of the layer it holds. Prune relies on this: a snapshot is live when
//! some live layer's diff_id hex equals its id.
//!
//! A snapshot is built in a [`StagingDir`] under `tmp/` and renamed into place by
//! [`Store::commit_snapshot`], so it appears complete or not at all.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::fsutil::{fsync_dir, io_err, remove_any, unique_name};
use crate::store::Store;

/// An empty directory under `tmp/` that becomes a snapshot on commit. Dropped without
/// commit, it is deleted.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Where to unpack the layer.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path, with the directory no longer removed on drop: the caller removes it.
    pub(crate) fn into_path_uncommitted(mut self) -> PathBuf {
        self.committed = true;
        std::mem::take(&mut self.path)
    }

    #[cfg(test)]
    pub(crate) fn for_test(path: PathBuf) -> StagingDir {
        StagingDir {
            path,
            committed: false,
        }
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_any(&self.path);
        }
    }
}

/// Validates a snapshot id: 1..=128 chars of `[a-z0-9-]`, not starting with '-'.
pub fn validate_snapshot_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidSnapshotId { id: id.to_string() })
    }
}

impl Store {
    /// Path of snapshot `id` (which may not exist). Fails on an invalid id.
    pub fn snapshot_path(&self, id: &str) -> Result<PathBuf> {
        validate_snapshot_id(id)?;
        Ok(self.snapshots_dir().join(id))
    }

    /// True if snapshot `id` has been committed.
    pub fn has_snapshot(&self, id: &str) -> bool {
        self.snapshot_path(id).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// A fresh empty staging directory under `tmp/`.
    /// Usually one made ahead (module `ahead`).
    pub fn snapshot_staging(&self) -> Result<StagingDir> {
        let scratch = self.scratch_dir()?;
        let name = unique_name("snapshot");
        let path = match crate::ahead::take(&scratch, &name) {
            Some(path) => path,
            None => {
                let path = scratch.join(name);
                fs::create_dir(&path).map_err(io_err("create", path.clone()))?;
                path
            }
        };
        Ok(StagingDir {
            path,
            committed: false,
        })
    }

    /// Moves `staging` to `snapshots/<id>` atomically and returns the final path. If
    /// another builder committed the same id first, ours is discarded and theirs returned
    /// (same id means same layer content).
    pub fn commit_snapshot(&self, staging: StagingDir, id: &str) -> Result<PathBuf> {
        let final_path = self.snapshot_path(id)?;
        if final_path.is_dir() {
            // Ours is the same layer: nobody reads it again.
            staging.discard();
            return Ok(final_path);
        }
        // The rename makes the directory visible atomically, but the file data inside must
        // reach the disk first or a power loss could leave a complete-looking snapshot
        // with empty files; syncfs flushes the whole filesystem in one call.
        sync_filesystem(&staging.path)?;
        let placed = self.place_snapshot(staging, final_path)?;
        fsync_dir(&self.snapshots_dir()).map_err(io_err("fsync", self.snapshots_dir()))?;
        Ok(placed)
    }

    /// Renames `staging`, whose files are synced already, to `final_path` (a snapshot
    /// path); the rename itself is left to be synced. Another builder's snapshot there wins.
    pub(crate) fn place_snapshot(
        &self,
        mut staging: StagingDir,
        final_path: PathBuf,
    ) -> Result<PathBuf> {
        match fs::rename(&staging.path, &final_path) {
            Ok(()) => {
                staging.committed = true;
                Ok(final_path)
            }
            // rename(2) onto a non-empty directory fails with ENOTEMPTY or EEXIST: someone
            // else won the race.
            Err(e)
                if final_path.is_dir()
                    && (e.kind() == io::ErrorKind::DirectoryNotEmpty
                        || e.kind() == io::ErrorKind::AlreadyExists
                        || e.raw_os_error() == Some(39)) =>
            {
                Ok(final_path)
            }
            Err(source) => Err(StoreError::Io {
                op: "rename snapshot into",
                path: final_path,
                source,
            }),
        }
    }

    /// Ids of all committed snapshots, sorted.
    pub fn list_snapshots(&self) -> Result<Vec<String>> {
        let dir = self.snapshots_dir();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", dir.clone()))? {
            let entry = entry.map_err(io_err("read directory", dir.clone()))?;
            if let Some(name) = entry.file_name().to_str()
                && validate_snapshot_id(name).is_ok()
            {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// Name prefix of metadata-tree staging directories on a tmpfs.
const TMPFS_STAGING_PREFIX: &str = "kiln-staging";

/// The tmpfs directory where metadata trees are staged, chosen once per process:
/// `$KILN_STAGING_TMPFS` (`off` disables), else `$XDG_RUNTIME_DIR`, else `/dev/shm`, each
/// only when it is a writable tmpfs that keeps `user.*` xattrs (the copier relies on them).
///
/// A metadata tree's files are empty placeholders, so the tmpfs holds inodes, not file
/// bytes: memory stays small however large the files are.
pub fn tmpfs_staging_base() -> Option<&'static Path> {
    TMPFS_BASE
        .get_or_init(|| {
            let candidates: Vec<PathBuf> = match std::env::var_os("KILN_STAGING_TMPFS") {
                Some(v) if v == "off" => Vec::new(),
                Some(v) => vec![PathBuf::from(v)],
                None => std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .into_iter()
                    .chain([PathBuf::from("/dev/shm")])
                    .collect(),
            };
            let base = candidates.into_iter().find(|dir| usable_tmpfs(dir))?;
            sweep_stale_staging(&base);
            Some(base)
        })
        .as_deref()
}

fn usable_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(st) = rustix::fs::statfs(dir) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != TMPFS_MAGIC {
        return false;
    }
    let probe = dir.join(unique_name(TMPFS_STAGING_PREFIX));
    if fs::create_dir(&probe).is_err() {
        return false;
    }
    let xattrs = rustix::fs::setxattr(
        &probe,
        "user.kiln.probe",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    let _ = fs::remove_dir(&probe);
    xattrs
}

/// The tmpfs staging base, chosen on first use (see [`tmpfs_staging_base`]).
static TMPFS_BASE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Removes this process's tmpfs staging directories (best effort), for an exit that runs no
/// destructors (SIGINT, SIGTERM): they hold RAM, not disk. Probes nothing when this
/// process never used the tmpfs.
pub(crate) fn remove_own_tmpfs_staging() {
    let Some(Some(base)) = TMPFS_BASE.get() else {
        return;
    };
    let own = format!("{TMPFS_STAGING_PREFIX}-{}-", std::process::id());
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&own) {
            let _ = remove_any(&entry.path());
        }
    }
}

/// Removes staging directories left by kiln processes that no longer run (killed builds).
fn sweep_stale_staging(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TMPFS_STAGING_PREFIX))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_any(&entry.path());
        }
    }
}

impl Store {
    /// A fresh staging directory on a tmpfs for a metadata tree (see
    /// [`tmpfs_staging_base`]), or `None` when no usable tmpfs exists. It cannot be
    /// committed as a snapshot (another filesystem): materialize it into
    /// [`Store::snapshot_staging`]. Dropped, it is deleted.
    pub fn tmpfs_staging(&self) -> Result<Option<StagingDir>> {
        let Some(base) = tmpfs_staging_base() else {
            return Ok(None);
        };
        let path = base.join(unique_name(TMPFS_STAGING_PREFIX));
        // The tmpfs is shared with other users: the tree's names are nobody else's business.
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .create(&path)
            .map_err(io_err("create", path.clone()))?;
        Ok(Some(StagingDir {
            path,
            committed: false,
        }))
    }
}

/// syncfs of the filesystem `path` is on: every file written to it so far reaches the disk
/// in one call, however many there are.
pub(crate) fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = fs::File::open(path).map_err(io_err("open", path.to_path_buf()))?;
    rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io {
        op: "syncfs",
        path: path.to_path_buf(),
        source: e.into(),
    })
}
