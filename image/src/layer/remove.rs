//! Removing a directory tree without recursion and without path names.
//!
//! Trees kiln deletes (snapshots, layer directories, unpack targets) were written by
//! builds and images it does not trust: they can nest directories tens of thousands deep,
//! deeper than a recursive walk survives on a thread's stack (std's `remove_dir_all`
//! recurses once per level) and far past PATH_MAX. So the walk keeps its pending work on
//! the heap, holds one directory fd at a time (climbing back with `..`), acts only with
//! `*at` calls relative to it, and never follows a symlink.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// How a directory below a layer's root is opened: never through a symlink.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Removes `path`, a directory tree (the directory itself, not a symlink to one), with
/// everything below it. Directories a build left without owner access (`chmod 0555`) are
/// made accessible first.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no directory name"))?;
    let parent = rustix::fs::open(parent, DIR_FLAGS, Mode::empty())?;
    remove_tree_at(&parent, name)
}

/// [`remove_tree`] for the directory `name` inside the directory open as `parent`.
pub fn remove_tree_at(parent: impl AsFd, name: &OsStr) -> io::Result<()> {
    let parent = parent.as_fd();
    make_accessible(parent, name);
    let mut cur = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    // Each level: the directory's name in its parent, and its subdirectories still to go.
    let mut stack: Vec<(OsString, Vec<OsString>)> = vec![(name.to_os_string(), clear_files(&cur)?)];
    while let Some((_, subdirs)) = stack.last_mut() {
        if let Some(sub) = subdirs.pop() {
            make_accessible(&cur, &sub);
            let child = rustix::fs::openat(&cur, sub.as_os_str(), DIR_FLAGS, Mode::empty())?;
            let below = clear_files(&child)?;
            cur = child;
            stack.push((sub, below));
            continue;
        }
        let Some((done, _)) = stack.pop() else { break };
        if stack.is_empty() {
            drop(cur);
            rustix::fs::unlinkat(parent, done.as_os_str(), AtFlags::REMOVEDIR)?;
            return Ok(());
        }
        let up = rustix::fs::openat(&cur, "..", DIR_FLAGS, Mode::empty())?;
        rustix::fs::unlinkat(&up, done.as_os_str(), AtFlags::REMOVEDIR)?;
        cur = up;
    }
    Ok(())
}

/// Unlinks every non-directory in `dir`; returns the names of its subdirectories.
fn clear_files(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => {
                let st = rustix::fs::statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode)
            }
            kind => kind,
        };
        names.push((OsStr::from_bytes(name).to_os_string(), kind));
    }
    // Unlinked after the listing: entries removed while a directory stream is read may
    // or may not show up again.
    let mut subdirs = Vec::new();
    for (name, kind) in names {
        if kind == FileType::Directory {
            subdirs.push(name);
        } else {
            rustix::fs::unlinkat(dir, name.as_os_str(), AtFlags::empty())?;
        }
    }
    Ok(subdirs)
}

/// Gives the owner full access to the directory `name` in `dir` if a build took it away,
/// so it can be listed and emptied. Failures are left for the open or unlink to report.
fn make_accessible(dir: impl AsFd, name: &OsStr) {
    let Ok(st) = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) else {
        return;
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return;
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o700 != 0o700 {
        // `name` was just seen to be a directory, not a symlink, and nothing else writes
        // to these trees while kiln removes them.
        let _ = rustix::fs::chmodat(
            dir.as_fd(),
            name,
            Mode::from_raw_mode(mode | 0o700),
            AtFlags::empty(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `levels` nested directories `d` under `root`, made relative to each other (the
    /// deepest is far past PATH_MAX), with a file and a symlink at each level.
    fn deep_tree(root: &Path, levels: usize) {
        let mut cur = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..levels {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            let f = rustix::fs::openat(
                &cur,
                "f",
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            drop(f);
            rustix::fs::symlinkat("/", &cur, "l").unwrap();
            cur = rustix::fs::openat(&cur, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
    }

    #[test]
    fn removes_a_tree_deeper_than_the_stack_and_path_max() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir(&root).unwrap();
        deep_tree(&root, 3_000);
        // A small stack: one frame per level would not fit.
        let r = root.clone();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || remove_tree(&r))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn removes_unwritable_directories_and_never_follows_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        std::fs::set_permissions(root.join("a"), std::fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn a_symlink_given_as_the_tree_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep"), b"x").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(remove_tree(&link).is_err());
        assert!(dir.join("keep").exists());
    }
}
