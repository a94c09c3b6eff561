//! Small filesystem helpers of the store: atomic file replacement with the store's error,
//! private directories, where ext4 places subdirectories, sizes and removal.
//!
//! The pattern everywhere is [`kiln_base::atomic`]'s: write a temp file in the same
//! directory (or the store's `tmp/`, which is on the same filesystem), fsync it, rename
//! over the final name, fsync the directory. A process killed at any instant leaves either
//! the old file or the new one under the final name, plus perhaps a stray temp file that
//! readers never look at.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

pub use kiln_base::atomic::fsync_dir;
pub(crate) use kiln_base::atomic::unique_name;

/// Asks the filesystem to place each subdirectory made in `dir` where it has room, not
/// beside `dir` (ext4's `FS_TOPDIR_FL`, as `chattr +T`); filesystems without the flag
/// ignore it. For directories whose subdirectories are made and removed all the time
/// (a process's scratch directory: a RUN's overlay dirs, staged copies).
///
/// Why: ext4 without a journal skips, one inode-table lookup each, every inode of a block
/// group freed in the last minutes when it allocates an inode there. Builds that create
/// and remove thousands of files in one group (a `--no-cache` rebuild discards each step's
/// new copy) made every later file there slower to create: runsteps spent 17% of its CPU
/// in that scan before its scratch directory spread its subdirectories, under 1% after.
pub(crate) fn spread_subdirectories(dir: &fs::File) {
    if let Ok(flags) = rustix::fs::ioctl_getflags(dir) {
        let _ = rustix::fs::ioctl_setflags(dir, flags | rustix::fs::IFlags::TOPDIR);
    }
}

/// Atomically replaces `path` with `bytes` ([`kiln_base::atomic::write`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    kiln_base::atomic::write(path, bytes).map_err(|source| StoreError::Io {
        op: "atomically write",
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of `path`, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates `dir` (and parents) if missing, and makes sure `dir` itself belongs to this
/// user and is reachable by its owner only (0700), tightening a looser mode as containerd
/// does with its root.
///
/// A store holds image files as the images have them, setuid binaries and device nodes
/// included: another local user must not be able to reach (and run) them, nor own (and
/// so change) the store.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_err("create directory", dir)(source)),
    }
    let meta = fs::metadata(dir).map_err(io_err("stat", dir))?;
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user {
        return Err(StoreError::ForeignStore {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            user,
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700))
            .map_err(io_err("restrict to its owner (chmod 0700)", dir))?;
    }
    Ok(())
}

/// Wraps an io error with the operation and path for [`StoreError::Io`].
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}

/// Total size in bytes of regular files under `path` (symlinks not followed). The
/// directories still to visit are a heap stack: a snapshot can nest deeper than recursion
/// survives. What cannot be read (a path past PATH_MAX) counts as nothing.
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Removes a file or a directory tree; a missing path is not an error. Directories a
/// build left read-only (`chmod 0555`) are made writable on the way, and the walk is
/// iterative and fd-relative ([`kiln_image::layer::remove`]), as a snapshot can nest
/// directories deeper than recursion or PATH_MAX allow.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => kiln_image::layer::remove::remove_tree(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
