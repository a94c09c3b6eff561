//! Whiteouts and opaque directories while unpacking: in a layer directory
//! they become overlayfs markers (a 0:0 character device, the opaque xattr);
//! on a flat rootfs they delete what the lower layers had.

use super::unpack::{Meta, Target, UnpackError, Unpacker, proc_fd_path};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;

impl Unpacker<'_> {
    pub(super) fn whiteout(
        &mut self,
        name: &[u8],
        target: &[Vec<u8>],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let Some(leaf) = target.last() else {
            return Ok(());
        };
        match self.target {
            Target::LayerDir => {
                let parent = self.parent(name, target)?;
                match rustix::fs::statat(&parent, leaf.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    // The same layer added the entry (a layer directory starts
                    // empty): a whiteout only hides lower layers, so it stays.
                    Ok(_) => return Ok(()),
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(self.fs_err(name, "inspecting a whited-out entry", e)),
                }
                rustix::fs::mknodat(
                    &parent,
                    leaf.as_slice(),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| self.fs_err(name, "creating a whiteout device", e))?;
                let m = Meta {
                    xattrs: BTreeMap::new(),
                    mode: 0,
                    ..*meta
                };
                self.finish_at(name, &parent, leaf, &m, false)
            }
            Target::Rootfs => {
                if self.created.contains(target) {
                    return Ok(());
                }
                let Some(parent) = self.open_dir(name, &target[..target.len() - 1], false)? else {
                    return Ok(());
                };
                match rustix::fs::statat(&parent, leaf.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                        self.remove_at(name, &parent, leaf, is_dir)
                    }
                    Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(self.fs_err(name, "inspecting a whited-out entry", e)),
                }
            }
        }
    }

    pub(super) fn opaque(&mut self, name: &[u8], dir: &[Vec<u8>]) -> Result<(), UnpackError> {
        let fd = self
            .open_dir(name, dir, true)?
            .ok_or_else(|| self.fs_err(name, "opening an opaque directory", Errno::NOENT))?;
        match self.target {
            Target::LayerDir => rustix::fs::fsetxattr(
                &fd,
                self.opts.opaque_xattr.as_str(),
                kiln_base::whiteout::OPAQUE_VALUE,
                XattrFlags::empty(),
            )
            .map_err(|e| self.fs_err(name, "setting the opaque xattr", e)),
            Target::Rootfs => self.remove_lower(name, &fd, dir),
        }
    }

    /// Removes everything below `dir` (open as `fd`) that this layer did not
    /// create, descending into directories it did create: the opaque marker
    /// may come before or after the layer's own entries. Depth first in name
    /// order with an explicit stack (a layer's own paths can nest deeper than
    /// recursion survives); a pending directory holds its parent's fd, so the
    /// fds open at once are about the depth, as with recursion.
    fn remove_lower(&self, name: &[u8], fd: &OwnedFd, dir: &[Vec<u8>]) -> Result<(), UnpackError> {
        type Pending = (Rc<OwnedFd>, Vec<u8>, Vec<Vec<u8>>);
        let root = Rc::new(
            fd.try_clone()
                .map_err(|e| self.fs_err(name, "opening a directory", e))?,
        );
        let mut todo: Vec<Pending> = Vec::new();
        let push = |todo: &mut Vec<Pending>, parent: &Rc<OwnedFd>, subs: Vec<_>| {
            for (child, path) in subs.into_iter().rev() {
                todo.push((Rc::clone(parent), child, path));
            }
        };
        let subs = self.remove_lower_here(name, &root, dir)?;
        push(&mut todo, &root, subs);
        while let Some((parent, child, path)) = todo.pop() {
            let sub = rustix::fs::openat(
                &*parent,
                child.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.fs_err(name, "opening a directory", e))?;
            drop(parent);
            let sub = Rc::new(sub);
            let subs = self.remove_lower_here(name, &sub, &path)?;
            push(&mut todo, &sub, subs);
        }
        Ok(())
    }

    /// One directory of [`Self::remove_lower`]: removes what this layer did not create
    /// and returns the directories it did create (name, path), in name order.
    #[allow(clippy::type_complexity)]
    fn remove_lower_here(
        &self,
        name: &[u8],
        fd: &OwnedFd,
        dir: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Vec<Vec<u8>>)>, UnpackError> {
        use std::os::unix::ffi::OsStrExt;
        let list_err = |e| self.fs_err(name, "listing an opaque directory", e);
        let mut children = Vec::new();
        for child in std::fs::read_dir(proc_fd_path(fd, b".")).map_err(list_err)? {
            let child = child.map_err(list_err)?;
            let is_dir = child.file_type().map(|t| t.is_dir()).unwrap_or(false);
            children.push((child.file_name().as_bytes().to_vec(), is_dir));
        }
        children.sort();
        let mut subs = Vec::new();
        for (child, is_dir) in children {
            let mut path = dir.to_vec();
            path.push(child.clone());
            if !self.created.contains(&path) {
                self.remove_at(name, fd, &child, is_dir)?;
            } else if is_dir {
                subs.push((child, path));
            }
        }
        Ok(subs)
    }
}
