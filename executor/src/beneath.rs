//! Acting on a stored relative path inside a rootfs or layer directory that a build step
//! could have rearranged.
//!
//! After a RUN, kiln still holds paths it recorded before the step (the mount-point stubs
//! the sandbox created). The step may have renamed a parent and planted a symlink in its
//! place, so joining such a path onto the root and handing it to a path-based syscall can
//! land on the host. Everything here is relative to a directory fd of the root, resolves
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)` (no component may be a symlink, and
//! `..` cannot climb out) and acts on the final name with `*at` calls on the parent's fd,
//! which never follow a final symlink either.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::event::Timespec;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

/// How many times to retry `openat2` when the kernel could not rule out an escape through
/// `..` (EAGAIN under `RESOLVE_IN_ROOT` or `RESOLVE_BENEATH`): it says so when any rename,
/// or any mount or unmount anywhere on the machine (a spare sandbox being prepared, another
/// build), happened while the walk crossed a `..`. Each try is a fresh walk.
const EAGAIN_RETRIES: usize = 64;

/// `openat2(dirfd, path, flags, mode, resolve)`, tried again while the kernel answers
/// EAGAIN ([`EAGAIN_RETRIES`] times at most).
pub(crate) fn openat2(
    dirfd: impl AsFd,
    path: &Path,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dirfd.as_fd(), path, flags, mode, resolve) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens `root` itself as the anchor for the other calls (refusing a symlink there too).
pub(crate) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(root, DIR_FLAGS, Mode::empty())?)
}

/// Opens the directory `rel` below `root` without following any symlink on the way; an
/// empty `rel` is the root itself.
pub(crate) fn open_dir(root: impl AsFd, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match openat2(root.as_fd(), rel, DIR_FLAGS, Mode::empty(), resolve) {
        // Kernels before 5.6 (or a seccomp filter) lack openat2: the same walk by hand.
        Err(Errno::NOSYS) => open_dir_by_components(root, rel),
        other => Ok(other?),
    }
}

/// [`open_dir`] one `openat(O_NOFOLLOW)` per component; `..` and absolute paths are refused
/// rather than interpreted, as no stored path kiln acts on has them.
fn open_dir_by_components(root: impl AsFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = rustix::fs::openat(root.as_fd(), ".", DIR_FLAGS, Mode::empty())?;
    for comp in rel.components() {
        match comp {
            Component::CurDir => {}
            Component::Normal(name) => {
                cur = rustix::fs::openat(&cur, name, DIR_FLAGS, Mode::empty())?;
            }
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::from(Errno::XDEV));
            }
        }
    }
    Ok(cur)
}

/// Does this error mean "not there as a plain directory any more" (moved, replaced by a
/// symlink or a file, or made unreadable by the step) rather than a failure of kiln's own?
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::EACCES)
    )
}

/// What [`remove_if`] found at the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// An empty directory.
    EmptyDir,
    /// An empty regular file.
    EmptyFile,
}

/// Removes `name` in the directory `dir` if it still is what `expect` says (never through a
/// symlink: `unlinkat` does not follow the final component). Returns whether it was removed;
/// a name that is missing, of another type or not empty is left alone.
pub(crate) fn remove_if(dir: impl AsFd, name: &Path, expect: Expect) -> bool {
    let Ok(st) = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    match expect {
        // rmdir itself refuses a directory that is not empty.
        Expect::EmptyDir => {
            kind == rustix::fs::FileType::Directory
                && rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR).is_ok()
        }
        Expect::EmptyFile => {
            kind == rustix::fs::FileType::RegularFile
                && st.st_size == 0
                && rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty()).is_ok()
        }
    }
}

/// Sets the access and modification times of the directory open as `dir` (seconds,
/// nanoseconds).
pub(crate) fn set_times(dir: impl AsFd, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = |(tv_sec, tv_nsec): (i64, i64)| Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    };
    rustix::fs::futimens(
        dir,
        &Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        },
    )?;
    Ok(())
}
