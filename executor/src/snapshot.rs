//! Rootfs snapshotters for RUN: overlayfs (the upper directory is the layer directory) or a
//! copy fallback (materialize the merged layers, run, diff). Also the clean-up both share:
//! removing mount-point stubs and normalizing an overlay upper into a layer directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::beneath;
pub use crate::layer_dir::CopyBase;
use crate::layer_dir::{
    self, LayerDirError, Links, ioe, merged_children, merged_root, read_dir_sorted, same_entry,
};

/// How a RUN's rootfs is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Snapshotter {
    /// overlayfs with `userxattr`; the upper directory becomes the layer.
    Overlay,
    /// A full copy of the merged layers, diffed after the RUN.
    Copy,
}

/// A mount point the sandbox had to create in the rootfs; removed after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stub {
    /// Path relative to the rootfs, as created (symlinks already resolved).
    pub path: PathBuf,
    pub dir: bool,
    /// The parent's mtime before the stub was created (seconds, nanoseconds).
    pub parent_mtime: (i64, i64),
    pub parent_atime: (i64, i64),
}

/// Why a snapshot could not be prepared or cleaned.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Diff(#[from] LayerDirError),
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

impl Snapshotter {
    /// Parse `overlay` / `copy` (the `--snapshotter` flag; `auto` is [`Snapshotter::detect`]).
    pub fn from_name(name: &str) -> Option<Snapshotter> {
        match name {
            "overlay" | "overlayfs" => Some(Snapshotter::Overlay),
            "copy" | "native" => Some(Snapshotter::Copy),
            _ => None,
        }
    }
}

/// Copy snapshotter: write the merged view of `lowers_top_first` into the new directory
/// `root` (whiteouts and opaque directories applied; hardlinks not shared, like an overlay
/// copy-up), and record what the diff needs.
pub fn materialize(lowers_top_first: &[PathBuf], root: &Path) -> Result<CopyBase, SnapshotError> {
    fs::create_dir_all(root).map_err(|source| SnapshotError::Io {
        path: root.to_path_buf(),
        op: "mkdir",
        source,
    })?;
    let mut base = CopyBase {
        dirs: BTreeMap::new(),
        barrier: (0, 0),
        skipped: Default::default(),
    };
    let root_ino = fs::symlink_metadata(root).map(|m| m.ino()).unwrap_or(0);
    base.dirs.insert(PathBuf::new(), root_ino);
    fill(
        root,
        Path::new(""),
        &merged_root(lowers_top_first),
        &mut base,
    )
    .map_err(SnapshotError::from)?;
    // The barrier: everything materialized has ctime <= barrier; wait until the clock has
    // moved past it so any change by the RUN has a later ctime.
    let marker = root.join(".kiln-barrier");
    let touch = |p: &Path| -> Result<(i64, i64), SnapshotError> {
        fs::write(p, b"").map_err(|source| SnapshotError::Io {
            path: p.to_path_buf(),
            op: "write",
            source,
        })?;
        let m = fs::symlink_metadata(p).map_err(|source| SnapshotError::Io {
            path: p.to_path_buf(),
            op: "stat",
            source,
        })?;
        Ok((m.ctime(), m.ctime_nsec()))
    };
    let barrier = touch(&marker)?;
    while touch(&marker)? <= barrier {
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    fs::remove_file(&marker).map_err(|source| SnapshotError::Io {
        path: marker.clone(),
        op: "remove",
        source,
    })?;
    // Removing the marker changed the root's mtime: put it back.
    if let Some(top) = merged_root(lowers_top_first).first() {
        let md = fs::symlink_metadata(top).map_err(|source| SnapshotError::Io {
            path: top.clone(),
            op: "stat",
            source,
        })?;
        layer_dir::copy_metadata(top, &md, root).map_err(SnapshotError::from)?;
    }
    base.barrier = barrier;
    Ok(base)
}

/// Writes the merged children of `lower` under `root/rel`, depth first with an explicit
/// stack (a layer can nest directories deeper than recursion survives).
fn fill(
    root: &Path,
    rel: &Path,
    lower: &[PathBuf],
    base: &mut CopyBase,
) -> Result<(), LayerDirError> {
    struct Frame {
        rel: PathBuf,
        children: std::collections::btree_map::IntoIter<std::ffi::OsString, Vec<PathBuf>>,
        /// The lower directory whose metadata this one gets once filled (none for the root,
        /// which the caller handles).
        src: Option<(PathBuf, fs::Metadata)>,
    }
    // Hardlinks are not shared in the copy, like an overlay copy-up.
    let mut links = Links::default();
    let mut stack = vec![Frame {
        rel: rel.to_path_buf(),
        children: merged_children(lower)?.into_iter(),
        src: None,
    }];
    while let Some(top) = stack.last_mut() {
        let Some((name, paths)) = top.children.next() else {
            let done = stack.pop().expect("the loop holds a frame");
            if let Some((src, md)) = done.src {
                // Last: creating the children moved the directory's mtime.
                let dst = root.join(&done.rel);
                layer_dir::copy_metadata(&src, &md, &dst)?;
                let ino = fs::symlink_metadata(&dst).map_err(ioe(&dst, "stat"))?.ino();
                base.dirs.insert(done.rel, ino);
            }
            continue;
        };
        let crel = top.rel.join(&name);
        let dst = root.join(&crel);
        let src = &paths[0];
        let md = fs::symlink_metadata(src).map_err(ioe(src, "stat"))?;
        if md.is_dir() {
            fs::create_dir(&dst).map_err(ioe(&dst, "mkdir"))?;
            let children = merged_children(&paths)?.into_iter();
            stack.push(Frame {
                rel: crel,
                children,
                src: Some((src.clone(), md)),
            });
            continue;
        }
        let device = md.file_type().is_char_device() || md.file_type().is_block_device();
        match layer_dir::copy_entry(src, &md, &dst, &mut links) {
            Ok(()) => {}
            // Rootless: device nodes cannot be made; leave them out of the copy.
            Err(LayerDirError::Io {
                op: "mknod",
                source,
                ..
            }) if device && source.raw_os_error() == Some(libc::EPERM) => {
                base.skipped.insert(crel);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Remove the mount points the sandbox created (deepest first, only while still empty) and
/// give their parents back the times they had before.
///
/// The step ran between the stubs' creation and now: it may have renamed a stub's parent
/// and left a symlink to a host directory under the old name. So every stub is reached
/// fd-relative from `root` with no symlink followed ([`beneath`]); a stub that is not where
/// the sandbox put it any more is the step's business and stays.
pub(crate) fn remove_stubs(root: &Path, stubs: &[Stub]) -> Result<(), SnapshotError> {
    if stubs.is_empty() {
        return Ok(());
    }
    let root_fd = beneath::open_root(root).map_err(|source| SnapshotError::Io {
        path: root.to_path_buf(),
        op: "open",
        source,
    })?;
    for stub in stubs.iter().rev() {
        let (Some(parent), Some(name)) = (stub.path.parent(), stub.path.file_name()) else {
            continue;
        };
        let dir = match beneath::open_dir(&root_fd, parent) {
            Ok(dir) => dir,
            Err(e) if beneath::is_gone(&e) => continue,
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: root.join(parent),
                    op: "open stub's parent",
                    source,
                });
            }
        };
        let expect = if stub.dir {
            beneath::Expect::EmptyDir
        } else {
            beneath::Expect::EmptyFile
        };
        if beneath::remove_if(&dir, Path::new(name), expect) {
            beneath::set_times(&dir, stub.parent_atime, stub.parent_mtime).map_err(|source| {
                SnapshotError::Io {
                    path: root.join(parent),
                    op: "restore times",
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Turn an overlay upper directory into a clean layer directory: drop overlay-internal
/// xattrs, and remove entries that are identical to the lower layers (copy-ups that changed
/// nothing, directories copied up only for a mount point) and whiteouts of nothing.
pub(crate) fn normalize_upper(
    upper: &Path,
    lowers_top_first: &[PathBuf],
) -> Result<(), SnapshotError> {
    norm_dir(upper, &merged_root(lowers_top_first))?;
    Ok(())
}

/// One directory of the upper being normalized: the walk keeps these on an explicit stack
/// (a RUN can nest directories thousands deep; recursion would overflow the thread's stack).
struct NormFrame {
    dir: PathBuf,
    lower: Vec<PathBuf>,
    /// Removing entries below changes this directory's mtime: restored when it is done.
    before: fs::Metadata,
    names: std::vec::IntoIter<std::ffi::OsString>,
    /// Entries that stay.
    left: usize,
    removed: bool,
    /// The subdirectory being walked above this frame, with its own lower directories and
    /// whether it is opaque.
    child: Option<(PathBuf, Vec<PathBuf>, bool)>,
}

impl NormFrame {
    fn new(dir: PathBuf, lower: Vec<PathBuf>) -> Result<NormFrame, LayerDirError> {
        let before = fs::symlink_metadata(&dir).map_err(ioe(&dir, "stat"))?;
        let names = read_dir_sorted(&dir)?.into_iter();
        Ok(NormFrame {
            dir,
            lower,
            before,
            names,
            left: 0,
            removed: false,
            child: None,
        })
    }
}

/// Normalizes `dir` against the merged `lower` directories, depth first; returns whether
/// `dir` is empty afterwards.
fn norm_dir(dir: &Path, lower: &[PathBuf]) -> Result<bool, LayerDirError> {
    let mut stack = vec![NormFrame::new(dir.to_path_buf(), lower.to_vec())?];
    // The result of the frame just finished: is its directory empty now?
    let mut finished: Option<bool> = None;
    while let Some(top) = stack.last_mut() {
        if let Some(empty) = finished.take()
            && let Some((p, lower_dirs, opaque)) = top.child.take()
        {
            if subdir_unchanged(&p, &lower_dirs, opaque, empty)? {
                fs::remove_dir(&p).map_err(ioe(&p, "remove unchanged directory"))?;
                top.removed = true;
            } else {
                top.left += 1;
            }
            continue;
        }
        let Some(name) = top.names.next() else {
            let done = stack.pop().expect("the loop holds a frame");
            if done.removed {
                let atime = filetime::FileTime::from_last_access_time(&done.before);
                let mtime = filetime::FileTime::from_last_modification_time(&done.before);
                filetime::set_symlink_file_times(&done.dir, atime, mtime)
                    .map_err(ioe(&done.dir, "restore times"))?;
            }
            finished = Some(done.left == 0);
            continue;
        };
        match norm_entry(&top.dir, &top.lower, &name)? {
            Norm::Kept => top.left += 1,
            Norm::Removed => top.removed = true,
            Norm::Dir {
                path,
                lower,
                opaque,
            } => {
                top.child = Some((path.clone(), lower.clone(), opaque));
                stack.push(NormFrame::new(path, lower)?);
            }
        }
    }
    Ok(finished.unwrap_or(false))
}

/// What [`norm_entry`] did with one name.
enum Norm {
    Kept,
    Removed,
    /// A directory: walk it with these lower directories, then [`subdir_unchanged`].
    Dir {
        path: PathBuf,
        lower: Vec<PathBuf>,
        opaque: bool,
    },
}

fn norm_entry(
    dir: &Path,
    lower: &[PathBuf],
    name: &std::ffi::OsStr,
) -> Result<Norm, LayerDirError> {
    let p = dir.join(name);
    let md = fs::symlink_metadata(&p).map_err(ioe(&p, "stat"))?;
    if md.file_type().is_socket() {
        // Layers cannot carry sockets (tar has no type for them): drop them, as the copy
        // snapshotter does.
        fs::remove_file(&p).map_err(ioe(&p, "remove socket"))?;
        return Ok(Norm::Removed);
    }
    strip_overlay_xattrs(&p, &md)?;
    // Look up only the names the upper holds: a small layer over a big directory
    // (/usr/lib) costs a few stats, not a listing of the lower directory.
    let lp = layer_dir::merged_lookup(lower, name)?;
    let lp = lp.as_ref();
    if kiln_base::whiteout::is_whiteout_device(&md) {
        if lp.is_none() {
            fs::remove_file(&p).map_err(ioe(&p, "remove whiteout of nothing"))?;
            return Ok(Norm::Removed);
        }
        return Ok(Norm::Kept);
    }
    if md.is_dir() {
        let opaque = layer_dir::is_opaque(&p);
        let lower_dirs: Vec<PathBuf> = match lp {
            Some(v)
                if !opaque
                    && fs::symlink_metadata(&v[0])
                        .map(|m| m.is_dir())
                        .unwrap_or(false) =>
            {
                v.clone()
            }
            _ => Vec::new(),
        };
        return Ok(Norm::Dir {
            path: p,
            lower: lower_dirs,
            opaque,
        });
    }
    if let Some(v) = lp {
        let lmd = fs::symlink_metadata(&v[0]).map_err(ioe(&v[0], "stat"))?;
        if !lmd.is_dir() && same_entry(&p, &md, &v[0], &lmd)? {
            fs::remove_file(&p).map_err(ioe(&p, "remove unchanged copy-up"))?;
            return Ok(Norm::Removed);
        }
    }
    Ok(Norm::Kept)
}

/// After its children were normalized: is the directory `p` (now `empty` or not) only a
/// copy-up of the lower one, so that the layer need not hold it?
fn subdir_unchanged(
    p: &Path,
    lower_dirs: &[PathBuf],
    opaque: bool,
    empty: bool,
) -> Result<bool, LayerDirError> {
    let Some(first) = lower_dirs.first().filter(|_| !opaque && empty) else {
        return Ok(false);
    };
    let lmd = fs::symlink_metadata(first).map_err(ioe(first, "stat"))?;
    // Re-read: removing children may have changed nothing we compare but be safe.
    let md = fs::symlink_metadata(p).map_err(ioe(p, "stat"))?;
    same_entry(p, &md, first, &lmd)
}

fn strip_overlay_xattrs(p: &Path, md: &fs::Metadata) -> Result<(), LayerDirError> {
    if md.file_type().is_symlink() {
        return Ok(()); // user.* xattrs cannot exist on symlinks
    }
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(_) => return Ok(()),
    };
    for n in names {
        let s = n.to_string_lossy();
        if kiln_base::whiteout::is_overlay_xattr(&s) && s != kiln_base::whiteout::OPAQUE_XATTR {
            xattr::remove(p, &n).map_err(ioe(p, "remove overlay xattr"))?;
        }
    }
    Ok(())
}
