//! Mount points inside the rootfs: resolving a target path with
//! `openat2(RESOLVE_IN_ROOT)` (a hostile image's symlinks cannot send a mount outside the
//! rootfs), creating what is missing — following dangling symlinks inside the rootfs, like
//! runc — and recording what was created as [`Stub`]s, removed from the layer after the run.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::protocol::Stub;
use super::step::{StepError, fail, fd_path};

/// Kind of mount point to create when missing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Dir,
    File,
}

/// The rootfs being populated: its host path, an `O_PATH` fd on it, its device.
pub(super) struct Root {
    path: PathBuf,
    fd: OwnedFd,
    dev: u64,
    pub(super) stubs: Vec<Stub>,
}

fn oflags_path() -> OFlags {
    OFlags::PATH | OFlags::CLOEXEC
}

impl Root {
    pub(super) fn open(path: &Path) -> Result<Root, StepError> {
        let fd = rustix::fs::open(path, oflags_path() | OFlags::DIRECTORY, Mode::empty())
            .map_err(fail("rootfs", format!("open {}", path.display())))?;
        let dev = rustix::fs::fstat(&fd)
            .map_err(fail("rootfs", "stat rootfs"))?
            .st_dev;
        // The kernel's name for the root (symlinks resolved), so that stub paths read back
        // through /proc/self/fd strip to paths relative to it.
        let path = rustix::fs::readlinkat(CWD, fd_path(&fd), Vec::new())
            .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
            .map_err(fail("rootfs", format!("readlink {}", path.display())))?;
        Ok(Root {
            path,
            fd,
            dev,
            stubs: Vec::new(),
        })
    }

    pub(super) fn reopen(&self, rel: &str) -> Result<OwnedFd, StepError> {
        self.resolve(rel)
            .map_err(fail("mount-point", format!("resolve {rel} in the rootfs")))
    }

    pub(super) fn resolve(&self, rel: &str) -> Result<OwnedFd, Errno> {
        let rel = rel.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        // A `..` of the image's symlinks (a relative /etc/resolv.conf) while a mount is
        // made anywhere (a spare preparing its sandbox) makes the kernel answer EAGAIN.
        crate::beneath::openat2(
            &self.fd,
            std::path::Path::new(rel),
            oflags_path(),
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Resolve `target` inside the rootfs, creating missing components (recorded as stubs
    /// when they land on the rootfs itself, not on a mount inside it).
    pub(super) fn ensure(&mut self, target: &str, want: Want) -> Result<OwnedFd, StepError> {
        self.ensure_depth(target, want, 0)
    }

    /// The parent's path relative to the root, symlinks resolved (from the fd).
    fn rel_of(&self, fd: &OwnedFd) -> Result<PathBuf, StepError> {
        const STEP: &str = "mount-point";
        let host = rustix::fs::readlinkat(CWD, fd_path(fd), Vec::new())
            .map_err(fail(STEP, "readlink parent"))?;
        let host = PathBuf::from(host.to_string_lossy().into_owned());
        match host.strip_prefix(&self.path) {
            Ok(rel) => Ok(rel.to_path_buf()),
            Err(_) => Err(StepError {
                step: STEP,
                message: format!(
                    "mount point resolved outside the rootfs ({})",
                    host.display()
                ),
            }),
        }
    }

    fn ensure_depth(&mut self, target: &str, want: Want, depth: u32) -> Result<OwnedFd, StepError> {
        const STEP: &str = "mount-point";
        if depth > 16 {
            return Err(StepError {
                step: STEP,
                message: format!("mount target {target:?}: too many levels of symbolic links"),
            });
        }
        let comps: Vec<&str> = target
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if comps.contains(&"..") {
            return Err(StepError {
                step: STEP,
                message: format!("mount target {target:?} contains \"..\""),
            });
        }
        let mut prefix = String::new();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let parent_rel = prefix.clone();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.resolve(&prefix) {
                Ok(fd) => {
                    if last {
                        return Ok(fd);
                    }
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(fail(STEP, format!("resolve {target} in the rootfs"))(e)),
            }
            let parent = self.resolve(&parent_rel).map_err(fail(
                STEP,
                format!("resolve parent of {target} in the rootfs"),
            ))?;
            let pst = rustix::fs::fstat(&parent).map_err(fail(STEP, "stat parent"))?;
            let make_dir = !last || want == Want::Dir;
            let created = if make_dir {
                rustix::fs::mkdirat(&parent, *comp, Mode::from_raw_mode(0o755))
            } else {
                rustix::fs::openat(
                    &parent,
                    *comp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            };
            match created {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    // A dangling symlink: like runc, create the mount point where it points,
                    // resolved inside the rootfs ("..", absolute links clamp at its root).
                    let link = rustix::fs::readlinkat(&parent, *comp, Vec::new()).map_err(fail(
                        STEP,
                        format!("mount target {target:?}: read symlink {prefix}"),
                    ))?;
                    let link = link.to_string_lossy().into_owned();
                    let base = if link.starts_with('/') {
                        PathBuf::new()
                    } else {
                        self.rel_of(&parent)?
                    };
                    let mut joined: Vec<String> = Vec::new();
                    let rest = comps[i + 1..].join("/");
                    let full = format!("{}/{link}/{rest}", base.display());
                    for c in full.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                joined.pop();
                            }
                            c => joined.push(c.to_string()),
                        }
                    }
                    return self.ensure_depth(&joined.join("/"), want, depth + 1);
                }
                Err(e) => {
                    return Err(fail(
                        STEP,
                        format!("create mount point {prefix} for {target}"),
                    )(e));
                }
            }
            if pst.st_dev == self.dev {
                // Where the stub really is, symlinks resolved: the parent's path under the root.
                let rel = self.rel_of(&parent)?.join(comp);
                self.stubs.push(Stub {
                    path: rel,
                    dir: make_dir,
                    parent_mtime: (pst.st_mtime, pst.st_mtime_nsec as i64),
                    parent_atime: (pst.st_atime, pst.st_atime_nsec as i64),
                });
            }
        }
        self.resolve(target)
            .map_err(fail(STEP, format!("resolve {target} after creating it")))
    }
}
