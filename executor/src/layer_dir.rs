//! Layer directories: reading a stack of them as one merged tree, comparing entries, and
//! writing the difference between a rootfs and its lower layers as a new layer directory.
//!
//! Layer directory format (shared with the overlay snapshotter and the layer writer): the
//! entries one layer adds or changes; a deletion is a 0:0 character device (overlay
//! whiteout); a directory that hides everything below has `user.overlay.opaque=y`.
//! Overlay-internal xattrs (`user.overlay.*` other than `opaque`) are never part of it.
//!
//! It runs to about 600 lines because the format is read and written here, once: a
//! reader and a writer in two files would each need the whiteout and opaque rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_base::whiteout::{self, OPAQUE_VALUE, OPAQUE_XATTR, is_whiteout_device};

/// Why a layer directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LayerDirError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: cannot represent file type in a layer (sockets are skipped, this is {kind})")]
    Unsupported { path: PathBuf, kind: String },
    /// overlayfs refuses to make a 0:0 character device (it would read as its own
    /// whiteout), so a store on overlayfs cannot hold a deletion in this format.
    #[error(
        "{path}: cannot make a whiteout (a 0:0 character device): the store is on overlayfs, \
         which refuses them (kiln in a container whose / is overlayfs); keep --root on a \
         volume with ext4, xfs, btrfs or tmpfs"
    )]
    OverlayfsStore { path: PathBuf },
}

pub(crate) fn ioe(
    path: &Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> LayerDirError + use<> {
    let path = path.to_path_buf();
    move |source| LayerDirError::Io { path, op, source }
}

/// Does this directory hide the layers below it?
pub fn is_opaque(path: &Path) -> bool {
    whiteout::OPAQUE_XATTRS
        .iter()
        .any(|name| matches!(xattr::get(path, name), Ok(Some(v)) if v == OPAQUE_VALUE))
}

/// Sorted names in a directory.
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<OsString>, LayerDirError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(ioe(dir, "read directory"))? {
        names.push(e.map_err(ioe(dir, "read directory"))?.file_name());
    }
    names.sort();
    Ok(names)
}

/// The children of one directory of a merged layer stack.
///
/// `dirs` are the directories that make up this merged directory, top-most first (already
/// cut after an opaque one). For each visible name, returns the paths that make it up:
/// one path for a non-directory, the contributing directories (top first) for a directory.
pub(crate) fn merged_children(
    dirs: &[PathBuf],
) -> Result<BTreeMap<OsString, Vec<PathBuf>>, LayerDirError> {
    struct Slot {
        paths: Vec<PathBuf>,
        closed: bool,
    }
    let mut slots: BTreeMap<OsString, Slot> = BTreeMap::new();
    for d in dirs {
        for name in read_dir_sorted(d)? {
            let p = d.join(&name);
            let slot = slots.entry(name).or_insert(Slot {
                paths: Vec::new(),
                closed: false,
            });
            if slot.closed {
                continue;
            }
            let md = fs::symlink_metadata(&p).map_err(ioe(&p, "stat"))?;
            if is_whiteout_device(&md) {
                slot.closed = true;
            } else if md.is_dir() {
                let opaque = is_opaque(&p);
                slot.paths.push(p);
                slot.closed = opaque;
            } else {
                // A non-directory hides everything below; below a directory it is hidden.
                if slot.paths.is_empty() {
                    slot.paths.push(p);
                }
                slot.closed = true;
            }
        }
    }
    Ok(slots
        .into_iter()
        .filter(|(_, s)| !s.paths.is_empty())
        .map(|(n, s)| (n, s.paths))
        .collect())
}

/// One name in a merged directory: what [`merged_children`] would give for `name`.
pub(crate) fn merged_lookup(
    dirs: &[PathBuf],
    name: &OsStr,
) -> Result<Option<Vec<PathBuf>>, LayerDirError> {
    let mut paths = Vec::new();
    for d in dirs {
        let p = d.join(name);
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ioe(&p, "stat")(e)),
        };
        if is_whiteout_device(&md) {
            break;
        }
        if md.is_dir() {
            let opaque = is_opaque(&p);
            paths.push(p);
            if opaque {
                break;
            }
        } else {
            if paths.is_empty() {
                paths.push(p);
            }
            break;
        }
    }
    Ok((!paths.is_empty()).then_some(paths))
}

/// The root directories of a layer stack (top-most first), cut after an opaque root.
pub(crate) fn merged_root(lowers_top_first: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for l in lowers_top_first {
        out.push(l.clone());
        if is_opaque(l) {
            break;
        }
    }
    out
}

/// The directories that make up the directory `rel` of the layer stack `lowers_bottom_first`,
/// bottom first; empty when `rel` is no directory there. `rel` must already be free of
/// symlinks in the merged view (resolve it first): each component is looked up with
/// `lstat` in each layer, cut at opaque directories and whiteouts as overlayfs would, so a
/// symlink a build step left in some layer (`/x -> /` on the host) is never followed.
pub fn merged_dirs(
    lowers_bottom_first: &[PathBuf],
    rel: &str,
) -> Result<Vec<PathBuf>, LayerDirError> {
    let top_first: Vec<PathBuf> = lowers_bottom_first.iter().rev().cloned().collect();
    let mut dirs = merged_root(&top_first);
    for comp in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Ok(Vec::new());
        }
        match merged_lookup(&dirs, OsStr::new(comp))? {
            Some(paths)
                if fs::symlink_metadata(&paths[0])
                    .map(|m| m.is_dir())
                    .unwrap_or(false) =>
            {
                dirs = paths;
            }
            _ => return Ok(Vec::new()),
        }
    }
    dirs.reverse();
    Ok(dirs)
}

/// xattrs that belong to the content (everything but overlay's own bookkeeping).
pub(crate) fn content_xattrs(path: &Path) -> Result<BTreeMap<OsString, Vec<u8>>, LayerDirError> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(ioe(path, "list xattrs")(e)),
    };
    for name in names {
        if whiteout::is_overlay_xattr(&name.to_string_lossy()) {
            continue;
        }
        if let Some(v) = xattr::get(path, &name).map_err(ioe(path, "read xattr"))? {
            out.insert(name, v);
        }
    }
    Ok(out)
}

/// Do `a` and `b` describe the same entry: type, mode, owner, size, mtime, device, link
/// target, xattrs, and (for regular files equal in all that) content? Directories compare
/// metadata only.
pub(crate) fn same_entry(
    a: &Path,
    am: &Metadata,
    b: &Path,
    bm: &Metadata,
) -> Result<bool, LayerDirError> {
    if am.mode() != bm.mode() || am.uid() != bm.uid() || am.gid() != bm.gid() {
        return Ok(false);
    }
    if am.mtime() != bm.mtime() || am.mtime_nsec() != bm.mtime_nsec() {
        return Ok(false);
    }
    let ft = am.file_type();
    if !ft.is_dir() && am.size() != bm.size() {
        return Ok(false);
    }
    if (ft.is_char_device() || ft.is_block_device()) && am.rdev() != bm.rdev() {
        return Ok(false);
    }
    if ft.is_symlink()
        && fs::read_link(a).map_err(ioe(a, "readlink"))?
            != fs::read_link(b).map_err(ioe(b, "readlink"))?
    {
        return Ok(false);
    }
    if content_xattrs(a)? != content_xattrs(b)? {
        return Ok(false);
    }
    if ft.is_file() {
        return same_content(a, b);
    }
    Ok(true)
}

fn same_content(a: &Path, b: &Path) -> Result<bool, LayerDirError> {
    let mut fa = fs::File::open(a).map_err(ioe(a, "open"))?;
    let mut fb = fs::File::open(b).map_err(ioe(b, "open"))?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(ioe(a, "read"))?;
        let nb = read_full(&mut fb, &mut bb).map_err(ioe(b, "read"))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copy owner, permissions, content xattrs and times of `src` onto `dst` (not following
/// symlinks). Call after a directory's children are in place, or its mtime changes again.
pub(crate) fn copy_metadata(src: &Path, sm: &Metadata, dst: &Path) -> Result<(), LayerDirError> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(sm.uid())),
        Some(rustix::fs::Gid::from_raw(sm.gid())),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| ioe(dst, "chown")(e.into()))?;
    if !sm.file_type().is_symlink() {
        // After chown: chown clears setuid/setgid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(sm.mode() & 0o7777))
            .map_err(ioe(dst, "chmod"))?;
        for (k, v) in content_xattrs(src)? {
            xattr::set(dst, &k, &v).map_err(ioe(dst, "set xattr"))?;
        }
    }
    let atime = filetime::FileTime::from_last_access_time(sm);
    let mtime = filetime::FileTime::from_last_modification_time(sm);
    filetime::set_symlink_file_times(dst, atime, mtime).map_err(ioe(dst, "set times"))
}

/// Hardlink bookkeeping while copying: source inode → first destination path.
#[derive(Default)]
pub(crate) struct Links {
    seen: HashMap<(u64, u64), PathBuf>,
    pub enabled: bool,
}

/// Copy one entry (a whole subtree for a directory) from `src` to `dst` with metadata.
///
/// The walk keeps its directories on an explicit stack: a RUN can nest directories
/// thousands deep, more than recursion on a thread's stack survives.
pub(crate) fn copy_tree(src: &Path, dst: &Path, links: &mut Links) -> Result<(), LayerDirError> {
    struct Frame {
        src: PathBuf,
        dst: PathBuf,
        md: Metadata,
        names: std::vec::IntoIter<OsString>,
    }
    let md = fs::symlink_metadata(src).map_err(ioe(src, "stat"))?;
    if !md.is_dir() {
        return copy_entry(src, &md, dst, links);
    }
    fs::create_dir(dst).map_err(ioe(dst, "mkdir"))?;
    let mut stack = vec![Frame {
        names: read_dir_sorted(src)?.into_iter(),
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        md,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            // Last: creating the children moved the directory's mtime.
            let done = stack.pop().expect("the loop holds a frame");
            copy_metadata(&done.src, &done.md, &done.dst)?;
            continue;
        };
        let (s, d) = (top.src.join(&name), top.dst.join(&name));
        let md = fs::symlink_metadata(&s).map_err(ioe(&s, "stat"))?;
        if md.is_dir() {
            fs::create_dir(&d).map_err(ioe(&d, "mkdir"))?;
            stack.push(Frame {
                names: read_dir_sorted(&s)?.into_iter(),
                src: s,
                dst: d,
                md,
            });
        } else {
            copy_entry(&s, &md, &d, links)?;
        }
    }
    Ok(())
}

/// Create `dst` as a copy of the entry `src`, which is not a directory (directories are
/// created, filled and given their metadata by the walks that own them).
pub(crate) fn copy_entry(
    src: &Path,
    md: &Metadata,
    dst: &Path,
    links: &mut Links,
) -> Result<(), LayerDirError> {
    let ft = md.file_type();
    if links.enabled && !ft.is_dir() && md.nlink() > 1 {
        if let Some(first) = links.seen.get(&(md.dev(), md.ino())) {
            return fs::hard_link(first, dst).map_err(ioe(dst, "hard link"));
        }
        links.seen.insert((md.dev(), md.ino()), dst.to_path_buf());
    }
    if ft.is_file() {
        fs::copy(src, dst).map_err(ioe(src, "copy"))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(ioe(src, "readlink"))?;
        std::os::unix::fs::symlink(&target, dst).map_err(ioe(dst, "symlink"))?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else {
            rustix::fs::FileType::Fifo
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dst,
            kind,
            rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
            md.rdev(),
        )
        .map_err(|e| ioe(dst, "mknod")(e.into()))?;
    } else if ft.is_socket() {
        // Layers cannot carry sockets (tar has no type for them); like BuildKit, skip them.
        return Ok(());
    } else {
        return Err(LayerDirError::Unsupported {
            path: src.to_path_buf(),
            kind: if ft.is_dir() {
                "a directory".into()
            } else {
                "an unknown type".into()
            },
        });
    }
    copy_metadata(src, md, dst)
}

/// Write a 0:0 character device (a deletion) at `dst`.
pub(crate) fn write_whiteout(dst: &Path) -> Result<(), LayerDirError> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dst,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .map_err(|e| {
        let on_overlayfs = || {
            let parent = dst.parent().unwrap_or(Path::new("."));
            rustix::fs::statfs(parent).is_ok_and(|s| s.f_type == libc::OVERLAYFS_SUPER_MAGIC)
        };
        match e {
            rustix::io::Errno::PERM if on_overlayfs() => LayerDirError::OverlayfsStore {
                path: dst.to_path_buf(),
            },
            e => ioe(dst, "mknod whiteout")(e.into()),
        }
    })
}

/// What the copy snapshotter recorded when it materialized a rootfs.
#[derive(Debug, Clone)]
pub struct CopyBase {
    /// Every materialized directory (relative path) and its inode: a directory at the same
    /// path with another inode was removed and recreated (so it becomes opaque).
    pub dirs: BTreeMap<PathBuf, u64>,
    /// Change times at or before this (seconds, nanoseconds) predate the RUN.
    pub barrier: (i64, i64),
    /// Device nodes of the lower layers that could not be recreated (mknod is refused in a
    /// user namespace): their absence from the rootfs is not a deletion.
    pub skipped: BTreeSet<PathBuf>,
}

/// Compare `rootfs` (a materialized copy of `lowers_top_first`, after a RUN) with the
/// layers and write the changes into the empty layer directory `out`.
pub fn write_layer(
    rootfs: &Path,
    lowers_top_first: &[PathBuf],
    out: &Path,
    base: &CopyBase,
) -> Result<(), LayerDirError> {
    let mut d = Differ {
        rootfs,
        out,
        base,
        links: Links {
            enabled: true,
            ..Links::default()
        },
    };
    d.dir(Path::new(""), &merged_root(lowers_top_first))?;
    Ok(())
}

struct Differ<'a> {
    rootfs: &'a Path,
    out: &'a Path,
    base: &'a CopyBase,
    links: Links,
}

impl Differ<'_> {
    /// Is this the directory materialized before the RUN (not one removed and recreated)?
    /// Inode numbers get reused at once on ext4, so the birth time decides where known.
    fn is_original_dir(&self, rel: &Path, md: &Metadata) -> bool {
        if self.base.dirs.get(rel) != Some(&md.ino()) {
            return false;
        }
        match md.created() {
            Ok(t) => match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64) <= self.base.barrier,
                Err(_) => true,
            },
            Err(_) => true,
        }
    }

    fn changed_since_copy(&self, md: &Metadata) -> bool {
        (md.ctime(), md.ctime_nsec()) > self.base.barrier
    }

    /// Make sure `out/rel` exists (metadata applied later by the caller).
    fn ensure_out(&self, rel: &Path) -> Result<(), LayerDirError> {
        let p = self.out.join(rel);
        if !p.exists() {
            fs::create_dir_all(&p).map_err(ioe(&p, "mkdir"))?;
        }
        Ok(())
    }

    /// Diff directory `rel` against the merged lower directories `lower`; true if anything
    /// under it was written to the layer. Depth first with an explicit stack (a RUN can nest
    /// directories deeper than recursion survives).
    fn dir(&mut self, rel: &Path, lower: &[PathBuf]) -> Result<bool, LayerDirError> {
        let mut stack = vec![self.frame(rel.to_path_buf(), lower.to_vec())?];
        // Whether the frame just finished wrote anything.
        let mut finished: Option<bool> = None;
        while let Some(top) = stack.last_mut() {
            if let Some(inner) = finished.take()
                && let Some(p) = top.pending.take()
            {
                // The directory's own metadata goes last: its children's writes moved it.
                let meta_changed =
                    self.changed_since_copy(&p.md) && !same_entry(&p.src, &p.md, &p.lower, &p.lmd)?;
                if inner || meta_changed {
                    self.ensure_out(&p.rel)?;
                    copy_metadata(&p.src, &p.md, &self.out.join(&p.rel))?;
                    top.emitted = true;
                }
                continue;
            }
            let Some(name) = top.names.next() else {
                let done = stack.pop().expect("the loop holds a frame");
                finished = Some(done.emitted);
                continue;
            };
            let rel = top.rel.clone();
            let crel = rel.join(&name);
            let src = self.rootfs.join(&crel);
            let dst = self.out.join(&crel);
            let theirs = top.theirs.get(&name).cloned();
            match (top.ours.contains(&name), theirs.as_ref()) {
                (false, None) => {}
                (false, Some(_)) if self.base.skipped.contains(&crel) => {}
                (false, Some(_)) => {
                    self.ensure_out(&rel)?;
                    write_whiteout(&dst)?;
                    top.emitted = true;
                }
                (true, None) => {
                    self.ensure_out(&rel)?;
                    copy_tree(&src, &dst, &mut self.links)?;
                    top.emitted = true;
                }
                (true, Some(lp)) => {
                    let md = fs::symlink_metadata(&src).map_err(ioe(&src, "stat"))?;
                    let lmd = fs::symlink_metadata(&lp[0]).map_err(ioe(&lp[0], "stat"))?;
                    if md.is_dir() && lmd.is_dir() && self.is_original_dir(&crel, &md) {
                        let lp = lp.clone();
                        top.pending = Some(Pending {
                            rel: crel.clone(),
                            src,
                            md,
                            lower: lp[0].clone(),
                            lmd,
                        });
                        let frame = self.frame(crel, lp)?;
                        stack.push(frame);
                    } else if md.is_dir() {
                        // A directory that replaced whatever was there: opaque, all new.
                        self.ensure_out(&rel)?;
                        copy_tree(&src, &dst, &mut self.links)?;
                        xattr::set(&dst, OPAQUE_XATTR, OPAQUE_VALUE)
                            .map_err(ioe(&dst, "set opaque xattr"))?;
                        top.emitted = true;
                    } else if lmd.is_dir()
                        || (self.changed_since_copy(&md) && !same_entry(&src, &md, &lp[0], &lmd)?)
                    {
                        self.ensure_out(&rel)?;
                        copy_tree(&src, &dst, &mut self.links)?;
                        top.emitted = true;
                    }
                }
            }
        }
        Ok(finished.unwrap_or(false))
    }

    /// A directory about to be diffed: both sides' children, in name order.
    fn frame(&self, rel: PathBuf, lower: Vec<PathBuf>) -> Result<DiffFrame, LayerDirError> {
        let ours: BTreeSet<OsString> = read_dir_sorted(&self.rootfs.join(&rel))?
            .into_iter()
            .collect();
        let theirs = merged_children(&lower)?;
        let names: BTreeSet<OsString> = ours.iter().chain(theirs.keys()).cloned().collect();
        Ok(DiffFrame {
            rel,
            ours,
            theirs,
            names: names.into_iter(),
            emitted: false,
            pending: None,
        })
    }
}

/// One directory of [`Differ::dir`]'s walk.
struct DiffFrame {
    rel: PathBuf,
    ours: BTreeSet<OsString>,
    theirs: BTreeMap<OsString, Vec<PathBuf>>,
    names: std::collections::btree_set::IntoIter<OsString>,
    /// Anything under this directory written to the layer.
    emitted: bool,
    /// The original subdirectory being walked above this frame.
    pending: Option<Pending>,
}

/// A subdirectory whose metadata is compared once its children are diffed.
struct Pending {
    rel: PathBuf,
    src: PathBuf,
    md: Metadata,
    /// The top-most lower directory it is compared with.
    lower: PathBuf,
    lmd: Metadata,
}
