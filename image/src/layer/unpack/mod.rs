//! Unpacking a layer blob (gzip, zstd or plain tar, detected by magic) into a
//! layer directory — whiteouts become 0:0 character devices and opaque
//! markers the `user.overlay.opaque=y` xattr, i.e. an overlayfs upperdir —
//! or applying it onto a flat rootfs (whiteouts delete).
//!
//! Safety: nothing is ever written outside the destination. Names with `..`
//! are refused, absolute names are made relative, and every parent directory
//! is opened component by component with `O_NOFOLLOW` relative to the
//! destination's file descriptor, so a symlink planted by an earlier entry
//! (or already in the rootfs) can never redirect a write. Hard links must
//! point at an existing non-directory inside the destination.
//!
//! Here: the API, the stream (decompression, digests, the entry loop) and the
//! fd-relative steps under the destination (opening, clearing and removing by
//! name); `entry`: writing one entry and its metadata.

mod entry;

use super::compress::{Compression, decompressor};
use crate::digest::HashingReader;
use kiln_base::whiteout;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Whether to set owners from the tar headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owners {
    /// Set them when running as (namespace) root, else leave our own.
    #[default]
    Auto,
    /// Always set them; failing to is an error.
    Keep,
    /// Never set them.
    Ignore,
}

/// Options for [`unpack_layer`] and [`apply_layer`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Owner handling.
    pub owners: Owners,
    /// xattr set on opaque directories in a layer directory
    /// (`user.overlay.opaque` for overlayfs mounted with `userxattr`).
    pub opaque_xattr: String,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            owners: Owners::Auto,
            opaque_xattr: whiteout::OPAQUE_XATTR.into(),
        }
    }
}

/// What an unpack saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackInfo {
    /// sha256 of the uncompressed tar stream (the layer's diff_id).
    pub diff_id: String,
    /// sha256 of the input bytes as read (the blob digest).
    pub digest: String,
    /// Input size in bytes.
    pub size: u64,
    /// Compression detected from the magic bytes.
    pub compression: Compression,
    /// Number of tar entries processed.
    pub entries: u64,
    /// Device nodes of the layer that a user namespace could not create, sorted by path.
    /// The layer directory lacks them, so whoever writes it out again as a layer adds them
    /// back (`kiln import`, whose layer must not depend on who imported it).
    pub skipped_devices: Vec<DeviceNode>,
}

/// A character or block device entry of a layer, as its tar header gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// The path below the layer root, components joined by `/` (no `./`, no trailing `/`).
    pub path: Vec<u8>,
    /// Block device rather than character device.
    pub block: bool,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
}

/// Errors while unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The compressed or tar stream could not be read.
    #[error("reading the layer stream: {0}")]
    Stream(#[source] io::Error),
    /// A name would leave the destination.
    #[error("refusing tar entry {name:?}: {reason}")]
    UnsafePath {
        /// The entry name as in the tar.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A parent of the entry is a symlink (or not a directory).
    #[error("refusing tar entry {name:?}: parent {parent:?} is a symlink or not a directory")]
    BadParent {
        /// The entry name.
        name: String,
        /// The offending parent path, relative to the destination.
        parent: String,
    },
    /// A hard link points outside, at nothing, or at a directory.
    #[error("refusing hard link {name:?} -> {target:?}: {reason}")]
    BadHardlink {
        /// The entry name.
        name: String,
        /// The link target as in the tar.
        target: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An entry type we do not extract.
    #[error("tar entry {name:?} has unsupported type {kind:?}")]
    Unsupported {
        /// The entry name.
        name: String,
        /// The tar type flag.
        kind: char,
    },
    /// A filesystem call failed.
    #[error("unpacking {name:?} into {dest}: {op}: {source}")]
    Fs {
        /// The entry name.
        name: String,
        /// The destination root.
        dest: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// Unpacks a layer blob into the layer directory `dest` (created if missing).
pub fn unpack_layer(
    input: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackInfo, UnpackError> {
    run(input, dest, opts, Target::LayerDir)
}

/// Applies a layer blob onto the flat rootfs `rootfs`: whiteouts delete the
/// named entries and opaque markers empty their directory of everything not
/// added by this same layer.
pub fn apply_layer(
    input: impl Read,
    rootfs: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackInfo, UnpackError> {
    run(input, rootfs, opts, Target::Rootfs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    LayerDir,
    Rootfs,
}

fn run(
    input: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
    target: Target,
) -> Result<UnpackInfo, UnpackError> {
    let fs_err = |op, source| UnpackError::Fs {
        name: String::new(),
        dest: dest.to_path_buf(),
        op,
        source,
    };
    std::fs::create_dir_all(dest).map_err(|e| fs_err("creating the destination", e))?;
    let root: OwnedFd = File::open(dest)
        .map_err(|e| fs_err("opening the destination", e))?
        .into();
    let chown = match opts.owners {
        Owners::Auto => rustix::process::geteuid().is_root(),
        Owners::Keep => true,
        Owners::Ignore => false,
    };
    let mut raw = BufReader::with_capacity(256 * 1024, HashingReader::new(input));
    let (compression, plain) = decompressor(&mut raw).map_err(UnpackError::Stream)?;
    // The guard refuses oversized long-name/PAX headers, which the tar crate reads whole.
    let mut archive = tar::Archive::new(HashingReader::new(crate::limits::TarGuard::new(plain)));
    let mut un = Unpacker {
        root,
        dest: dest.to_path_buf(),
        opts,
        target,
        chown,
        dirs: Vec::new(),
        created: HashSet::new(),
        entries: 0,
        skipped: BTreeMap::new(),
    };
    for entry in archive.entries().map_err(UnpackError::Stream)? {
        let entry = entry.map_err(UnpackError::Stream)?;
        un.entry(entry)?;
    }
    un.finish_dirs()?;
    let entries = un.entries;
    let skipped_devices = un.skipped.into_values().collect();
    // The diff_id covers the whole uncompressed stream, including any zero
    // padding after the end-of-archive marker; the digest the whole input.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Stream)?;
    let (diff_id, _) = rest.finish();
    // `rest` owned the decompressor, which borrowed `raw`; both are gone now.
    io::copy(&mut raw, &mut io::sink()).map_err(UnpackError::Stream)?;
    let (digest, size) = raw.into_inner().finish();
    Ok(UnpackInfo {
        diff_id,
        digest,
        size,
        compression,
        entries,
        skipped_devices,
    })
}

pub(super) struct Unpacker<'o> {
    pub(super) root: OwnedFd,
    pub(super) dest: PathBuf,
    pub(super) opts: &'o UnpackOptions,
    pub(super) target: Target,
    pub(super) chown: bool,
    /// Directories whose mode and mtime are set at the end (children first),
    /// so extracting into read-only directories works and mtimes stick.
    pub(super) dirs: Vec<(Vec<Vec<u8>>, u32, i64)>,
    /// Paths created by this layer in a rootfs (an opaque marker keeps them).
    /// A layer directory starts empty, so there anything present is ours.
    pub(super) created: HashSet<Vec<Vec<u8>>>,
    pub(super) entries: u64,
    /// Device nodes not created (user namespace), by path; a later entry of the same path
    /// replaces them.
    pub(super) skipped: BTreeMap<Vec<Vec<u8>>, DeviceNode>,
}

/// Header fields, with PAX overrides applied.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: i64,
    pub(super) xattrs: BTreeMap<String, Vec<u8>>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Splits a tar name into safe components: empty and `.` parts dropped
/// (which also makes absolute names relative), `..` refused.
fn components(raw: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("name contains a `..` component"),
            p if p.contains(&0) => return Err("name contains a NUL byte"),
            p => out.push(p.to_vec()),
        }
    }
    Ok(out)
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Unpacker<'_> {
    pub(super) fn fs_err(
        &self,
        name: &[u8],
        op: &'static str,
        e: impl Into<io::Error>,
    ) -> UnpackError {
        UnpackError::Fs {
            name: lossy(name),
            dest: self.dest.clone(),
            op,
            source: e.into(),
        }
    }

    /// Opens the directory at `comps` below the root without following any
    /// symlink; missing directories are created (0755) when `create`.
    pub(super) fn open_dir(
        &self,
        name: &[u8],
        comps: &[Vec<u8>],
        create: bool,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = rustix::io::dup(&self.root).map_err(|e| self.fs_err(name, "dup", e))?;
        for (i, comp) in comps.iter().enumerate() {
            let next = match rustix::fs::openat(&cur, comp.as_slice(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    let made = match rustix::fs::mkdirat(
                        &cur,
                        comp.as_slice(),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) => true,
                        Err(Errno::EXIST) => false,
                        Err(e) => {
                            return Err(self.fs_err(name, "creating a parent directory", e));
                        }
                    };
                    let fd = rustix::fs::openat(&cur, comp.as_slice(), flags, Mode::empty())
                        .map_err(|e| self.fs_err(name, "opening a parent directory", e))?;
                    if made {
                        // mkdir applies the umask; the layer must not depend on it.
                        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                            .map_err(|e| self.fs_err(name, "setting the mode", e))?;
                    }
                    fd
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(UnpackError::BadParent {
                        name: lossy(name),
                        parent: lossy(&comps[..=i].join(&b'/')),
                    });
                }
                Err(e) => return Err(self.fs_err(name, "opening a parent directory", e)),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    pub(super) fn parent(&self, name: &[u8], comps: &[Vec<u8>]) -> Result<OwnedFd, UnpackError> {
        let fd = self.open_dir(name, &comps[..comps.len() - 1], true)?;
        fd.ok_or_else(|| self.fs_err(name, "opening a parent directory", Errno::NOENT))
    }

    /// Makes room for a new entry named `leaf`: keeps an existing directory
    /// when the new entry is a directory (returns true), else removes what is
    /// there.
    pub(super) fn clear_leaf(
        &self,
        name: &[u8],
        parent: &OwnedFd,
        leaf: &[u8],
        is_dir: bool,
    ) -> Result<bool, UnpackError> {
        let st = match rustix::fs::statat(parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.fs_err(name, "inspecting the existing entry", e)),
        };
        let existing_is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if existing_is_dir && is_dir {
            return Ok(true);
        }
        self.remove_at(name, parent, leaf, existing_is_dir)?;
        Ok(false)
    }

    pub(super) fn remove_at(
        &self,
        name: &[u8],
        parent: &OwnedFd,
        leaf: &[u8],
        is_dir: bool,
    ) -> Result<(), UnpackError> {
        if is_dir {
            // Relative to the parent's fd and never through a symlink; iterative, as an
            // image can nest directories deeper than recursion survives.
            use std::os::unix::ffi::OsStrExt;
            super::remove::remove_tree_at(parent, std::ffi::OsStr::from_bytes(leaf))
                .map_err(|e| self.fs_err(name, "removing a directory", e))
        } else {
            rustix::fs::unlinkat(parent, leaf, AtFlags::empty())
                .map_err(|e| self.fs_err(name, "removing an entry", e))
        }
    }
}
/// `/proc/self/fd/<dirfd>/<leaf>`: names `leaf` inside an open directory for
/// calls that only take paths; the magic link pins the directory itself.
pub(super) fn proc_fd_path(dir: &OwnedFd, leaf: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(std::ffi::OsStr::from_bytes(leaf));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_drop_dots_and_leading_slash_and_refuse_dotdot() {
        assert_eq!(
            components(b"/a/./b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(components(b"./").unwrap(), Vec::<Vec<u8>>::new());
        assert!(components(b"a/../../etc").is_err());
    }
}
