//! Small metadata helpers shared by the copier, the archive extractor and
//! [`LayeredFs::materialize`](crate::layered::LayeredFs::materialize): owners, modes,
//! times, xattrs and device nodes, always on the path itself (symlinks are never followed).

use std::ffi::{CString, OsStr};
use std::fs::{self, Metadata, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use filetime::FileTime;

pub use kiln_base::whiteout::is_overlay_xattr;

/// `lchown`.
pub fn set_owner(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    // Rootless without a subordinate range, EINVAL alone would not say which ID or why.
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| crate::userns::explain_chown_error(uid, gid, e))
}

/// `chmod` of a non-symlink (symlink modes do not exist on Linux).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode & 0o7777))
}

/// Owner then mode (chown clears setuid bits, so the mode goes second).
pub fn apply_owner_mode(path: &Path, m: &Metadata) -> io::Result<()> {
    set_owner(path, m.uid(), m.gid())?;
    if !m.file_type().is_symlink() {
        set_mode(path, m.mode())?;
    }
    Ok(())
}

/// Sets atime and mtime from `m` without following a final symlink.
pub fn set_times(path: &Path, m: &Metadata) -> io::Result<()> {
    let atime = FileTime::from_last_access_time(m);
    let mtime = FileTime::from_last_modification_time(m);
    filetime::set_symlink_file_times(path, atime, mtime)
}

/// Sets atime and mtime to `t` without following a final symlink.
pub fn set_mtime(path: &Path, t: FileTime) -> io::Result<()> {
    filetime::set_symlink_file_times(path, t, t)
}

/// Copies xattrs (overlay markers excluded). Reading errors count; a value the target
/// filesystem refuses (e.g. `security.*` without privilege) is skipped, as BuildKit does.
pub fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let names = match xattr::list(src) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(n) = name.to_str() else { continue };
        if is_overlay_xattr(n) {
            continue;
        }
        if let Some(v) = xattr::get(src, &name)? {
            let _ = xattr::set(dst, &name, &v);
        }
    }
    Ok(())
}

/// `listxattrat(2)` (Linux 6.13): the same number on every architecture, as it came after
/// the syscall tables were unified; the libc crate does not name it for most targets yet.
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Set once `listxattrat` answered ENOSYS: later calls go straight to the path form.
static NO_LISTXATTRAT: AtomicBool = AtomicBool::new(false);

/// Whether the entry `name` of the directory `dir` carries any xattr (a final symlink is
/// not followed). One `listxattrat` on the directory's fd, which walks no path; before
/// Linux 6.13, `llistxattr` of `name` through `/proc/self/fd`.
#[allow(unsafe_code)]
pub fn has_xattrs_at(dir: impl AsFd, name: &OsStr) -> io::Result<bool> {
    let fd = dir.as_fd().as_raw_fd();
    if !NO_LISTXATTRAT.load(Ordering::Relaxed) {
        let c_name = CString::new(name.as_bytes())?;
        // SAFETY: a valid fd and NUL-terminated name; a null buffer of size 0 only asks
        // for the size of the list.
        let n = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                fd,
                c_name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                std::ptr::null_mut::<libc::c_char>(),
                0usize,
            )
        };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        NO_LISTXATTRAT.store(true, Ordering::Relaxed);
    }
    has_xattrs_by_path(fd, name)
}

/// [`has_xattrs_at`] without `listxattrat`: `llistxattr` through `/proc/self/fd`.
fn has_xattrs_by_path(fd: std::os::fd::RawFd, name: &OsStr) -> io::Result<bool> {
    let path = PathBuf::from(format!("/proc/self/fd/{fd}")).join(name);
    Ok(xattr::list(path)?.next().is_some())
}

/// Creates a device node, fifo or socket placeholder like the one `m` describes.
pub fn mknod_like(path: &Path, m: &Metadata) -> io::Result<()> {
    use rustix::fs::{FileType, Mode};
    let ft = FileType::from_raw_mode(m.mode());
    let mode = Mode::from_raw_mode(m.mode() & 0o7777);
    rustix::fs::mknodat(rustix::fs::CWD, path, ft, mode, m.rdev()).map_err(io::Error::from)
}

/// Creates a device or fifo from raw parts (tar entries).
pub fn mknod_raw(path: &Path, kind: libc::mode_t, mode: u32, rdev: u64) -> io::Result<()> {
    use rustix::fs::{FileType, Mode};
    let ft = FileType::from_raw_mode(kind);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        Mode::from_raw_mode(mode & 0o7777),
        rdev,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_are_seen_on_the_entry_itself_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("plain"), b"x").unwrap();
        fs::write(dir.join("marked"), b"x").unwrap();
        xattr::set(dir.join("marked"), "user.kiln.test", b"1").unwrap();
        std::os::unix::fs::symlink("marked", dir.join("link")).unwrap();
        let fd = crate::beneath::open_root(dir).unwrap();
        let raw = fd.as_raw_fd();
        for (name, has) in [("plain", false), ("marked", true), ("link", false)] {
            let name = OsStr::new(name);
            assert_eq!(has_xattrs_at(&fd, name).unwrap(), has, "{name:?}");
            assert_eq!(has_xattrs_by_path(raw, name).unwrap(), has, "{name:?}");
        }
        assert!(has_xattrs_at(&fd, OsStr::new("missing")).is_err());
    }
}
