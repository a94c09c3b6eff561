//! Writing one tar entry under the destination: its kind (directory, file, symlink, hard
//! link, device, whiteout or opaque marker), its header values with PAX overrides, then its
//! owner, mode, xattrs and time; directories' modes and times are set last
//! ([`Unpacker::finish_dirs`]).
//!
//! Every write goes through the parent's fd opened by the parent module (never a path the kernel
//! resolves through a symlink).

use kiln_base::whiteout::{self, Marker};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use super::{
    DeviceNode, Meta, Target, UnpackError, Unpacker, components, lossy, proc_fd_path, timestamps,
};

impl Unpacker<'_> {
    pub(super) fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        self.entries += 1;
        let name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let comps = components(&name).map_err(|reason| UnpackError::UnsafePath {
            name: lossy(&name),
            reason,
        })?;
        let meta = self.meta(&mut entry)?;
        self.skipped.remove(&comps);
        let Some(last) = comps.last().cloned() else {
            // The root itself ("./"): its metadata belongs to the lower layers.
            return Ok(());
        };
        // Whiteouts.
        match whiteout::classify(&last) {
            None => {}
            Some(Marker::Opaque) => {
                let dir = comps[..comps.len() - 1].to_vec();
                return self.opaque(&name, &dir);
            }
            // `.wh.` alone or other aufs metadata (`.wh..wh.plnk`).
            Some(Marker::Ignored) => return Ok(()),
            // `.wh..` and `.wh...` would name the directory itself or its parent: on a
            // rootfs, deleting "whatever `..` is" removes what lies outside the target.
            Some(Marker::Whiteout(hidden)) if hidden == b"." || hidden == b".." => {
                return Err(UnpackError::UnsafePath {
                    name: lossy(&name),
                    reason: "whiteout of `.` or `..`",
                });
            }
            Some(Marker::Whiteout(hidden)) => {
                let mut target = comps.clone();
                if let Some(l) = target.last_mut() {
                    *l = hidden.to_vec();
                }
                return self.whiteout(&name, &target, &meta);
            }
        }
        let parent = self.parent(&name, &comps)?;
        let leaf = last.as_slice();
        let is_dir = kind == tar::EntryType::Directory;
        let existing_dir = self.clear_leaf(&name, &parent, leaf, is_dir)?;
        if self.target == Target::Rootfs {
            self.created.insert(comps.clone());
        }
        match kind {
            tar::EntryType::Directory => {
                if !existing_dir {
                    rustix::fs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.fs_err(&name, "creating a directory", e))?;
                }
                let fd = rustix::fs::openat(
                    &parent,
                    leaf,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.fs_err(&name, "opening a directory", e))?;
                self.own_fd(&name, &fd, &meta)?;
                self.xattrs_fd(&name, &fd, &meta)?;
                self.dirs.push((comps, meta.mode, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = rustix::fs::openat(
                    &parent,
                    leaf,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.fs_err(&name, "creating a file", e))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(UnpackError::Stream)?;
                self.own_fd(&name, &file, &meta)?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode & 0o7777))
                    .map_err(|e| self.fs_err(&name, "setting the mode", e))?;
                self.xattrs_fd(&name, &file, &meta)?;
                rustix::fs::futimens(&file, &timestamps(meta.mtime))
                    .map_err(|e| self.fs_err(&name, "setting the mtime", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                rustix::fs::symlinkat(target.as_slice(), &parent, leaf)
                    .map_err(|e| self.fs_err(&name, "creating a symlink", e))?;
                self.finish_at(&name, &parent, leaf, &meta, false)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                self.hardlink(&name, &target, &parent, leaf)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ft, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                match rustix::fs::mknodat(
                    &parent,
                    leaf,
                    ft,
                    Mode::from_raw_mode(meta.mode & 0o777),
                    dev,
                ) {
                    Ok(()) => self.finish_at(&name, &parent, leaf, &meta, true)?,
                    // A user namespace cannot make device nodes: the snapshot goes without
                    // (a RUN gets its own /dev), the layer blob keeps them. moby and
                    // containers/storage skip them the same way.
                    Err(Errno::PERM)
                        if ft != FileType::Fifo && !crate::host::in_initial_user_namespace() =>
                    {
                        self.skipped.insert(
                            comps.clone(),
                            DeviceNode {
                                path: comps.join(&b'/'),
                                block: ft == FileType::BlockDevice,
                                major: rustix::fs::major(dev),
                                minor: rustix::fs::minor(dev),
                                mode: meta.mode & 0o7777,
                                uid: meta.uid,
                                gid: meta.gid,
                                mtime: meta.mtime,
                            },
                        );
                    }
                    Err(e) => return Err(self.fs_err(&name, "creating a device or fifo", e)),
                }
            }
            other => {
                return Err(UnpackError::Unsupported {
                    name: lossy(&name),
                    kind: other.as_byte() as char,
                });
            }
        }
        Ok(())
    }

    /// Header values, with PAX `uid`/`gid`/`mtime` and `SCHILY.xattr.*`.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
        let h = entry.header();
        // Empty numeric fields (some writers leave them NUL) read as 0, as in Go.
        let mut meta = Meta {
            mode: h.mode().unwrap_or(0o644),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0) as i64,
            xattrs: BTreeMap::new(),
        };
        if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Stream)? {
            for ext in exts {
                let ext = ext.map_err(UnpackError::Stream)?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let num = || std::str::from_utf8(value).ok();
                match key {
                    "uid" => meta.uid = num().and_then(|v| v.parse().ok()).unwrap_or(meta.uid),
                    "gid" => meta.gid = num().and_then(|v| v.parse().ok()).unwrap_or(meta.gid),
                    "mtime" => {
                        meta.mtime = num()
                            .and_then(|v| v.split('.').next())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(meta.mtime)
                    }
                    k => {
                        if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                            meta.xattrs.insert(x.to_string(), value.to_vec());
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn hardlink(
        &self,
        name: &[u8],
        target: &[u8],
        parent: &OwnedFd,
        leaf: &[u8],
    ) -> Result<(), UnpackError> {
        let bad = |reason| UnpackError::BadHardlink {
            name: lossy(name),
            target: lossy(target),
            reason,
        };
        let tcomps = components(target).map_err(|_| bad("target leaves the layer"))?;
        let Some(tleaf) = tcomps.last() else {
            return Err(bad("target is the layer root"));
        };
        let tparent = match self.open_dir(name, &tcomps[..tcomps.len() - 1], false) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Err(bad("target does not exist")),
            Err(UnpackError::BadParent { .. }) => return Err(bad("target's parent is a symlink")),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&tparent, tleaf.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(bad("target is a directory"));
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(bad("target does not exist")),
            Err(e) => return Err(self.fs_err(name, "inspecting a hard link target", e)),
        }
        rustix::fs::linkat(&tparent, tleaf.as_slice(), parent, leaf, AtFlags::empty())
            .map_err(|e| self.fs_err(name, "creating a hard link", e))
    }

    fn own_fd(&self, name: &[u8], fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        if !self.chown {
            return Ok(());
        }
        let (uid, gid) = ids(meta);
        rustix::fs::fchown(fd, Some(uid), Some(gid))
            .map_err(|e| self.fs_err(name, "setting the owner", e))
    }

    fn xattrs_fd(&self, name: &[u8], fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        for (k, v) in &meta.xattrs {
            rustix::fs::fsetxattr(fd.as_fd(), k.as_str(), v, XattrFlags::empty())
                .map_err(|e| self.fs_err(name, "setting an xattr", e))?;
        }
        Ok(())
    }

    /// Owner, mode (unless a symlink), xattrs and mtime of an entry that has
    /// no open fd (symlinks, devices, whiteouts), by name under `parent`.
    pub(in crate::layer) fn finish_at(
        &self,
        name: &[u8],
        parent: &OwnedFd,
        leaf: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if self.chown {
            let (uid, gid) = ids(meta);
            rustix::fs::chownat(
                parent,
                leaf,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fs_err(name, "setting the owner", e))?;
        }
        if chmod {
            rustix::fs::chmodat(
                parent,
                leaf,
                Mode::from_raw_mode(meta.mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| self.fs_err(name, "setting the mode", e))?;
        }
        for (k, v) in &meta.xattrs {
            rustix::fs::lsetxattr(
                proc_fd_path(parent, leaf),
                k.as_str(),
                v,
                XattrFlags::empty(),
            )
            .map_err(|e| self.fs_err(name, "setting an xattr", e))?;
        }
        rustix::fs::utimensat(
            parent,
            leaf,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fs_err(name, "setting the mtime", e))
    }

    /// Sets directory modes and mtimes, deepest last-seen first.
    pub(super) fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mode, mtime) in dirs.iter().rev() {
            let name = comps.join(&b'/');
            let Some(fd) = self.open_dir(&name, comps, false)? else {
                continue;
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
                .map_err(|e| self.fs_err(&name, "setting the mode", e))?;
            rustix::fs::futimens(&fd, &timestamps(*mtime))
                .map_err(|e| self.fs_err(&name, "setting the mtime", e))?;
        }
        Ok(())
    }
}

fn ids(meta: &Meta) -> (rustix::fs::Uid, rustix::fs::Gid) {
    // Ids beyond u32 cannot exist on Linux; map them to the overflow id.
    let uid = u32::try_from(meta.uid).unwrap_or(65534);
    let gid = u32::try_from(meta.gid).unwrap_or(65534);
    (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    )
}
