//! Rootfs snapshotters for RUN: overlayfs (the upper directory is the layer directory) or a
//! copy fallback (materialize the merged layers, run, diff). Also the clean-up both share:
//! removing mount-point stubs and normalizing an overlay upper into a layer directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::diff::CopyBase;
use crate::diff::{
    self, DiffError, Links, ioe, merged_children, merged_root, read_dir_sorted, same_entry,
};
use crate::sandbox::{SandboxError, probe_overlay};

/// How a RUN's rootfs is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Snapshotter {
    /// overlayfs with `userxattr`; the upper directory becomes the layer.
    Overlay,
    /// A full copy of the merged layers, diffed after the RUN.
    Copy,
}

/// Why a snapshot could not be prepared or cleaned.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

impl Snapshotter {
    /// Pick overlay when a test mount (in a throwaway mount namespace, through the sandbox
    /// helper) works with `userxattr`; otherwise Copy, with the reason. `scratch` is a
    /// directory this may create files under (on the filesystem layers will live on).
    pub async fn detect(scratch: &Path) -> (Snapshotter, Option<String>) {
        let dir = scratch.join(format!("overlay-probe-{}", std::process::id()));
        let result = match fs::create_dir_all(&dir) {
            Ok(()) => match probe_overlay(&dir).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("{}: {e}", dir.display())),
        };
        let _ = fs::remove_dir_all(&dir);
        match result {
            Ok(()) => (Snapshotter::Overlay, None),
            Err(why) => (Snapshotter::Copy, Some(why)),
        }
    }

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
pub fn materialize(lowers_top_first: &[PathBuf], root: &Path) -> Result<CopyBase, SandboxError> {
    fs::create_dir_all(root).map_err(|source| SandboxError::Io {
        path: root.to_path_buf(),
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
    let touch = |p: &Path| -> Result<(i64, i64), SandboxError> {
        fs::write(p, b"").map_err(|source| SandboxError::Io {
            path: p.to_path_buf(),
            source,
        })?;
        let m = fs::symlink_metadata(p).map_err(|source| SandboxError::Io {
            path: p.to_path_buf(),
            source,
        })?;
        Ok((m.ctime(), m.ctime_nsec()))
    };
    let barrier = touch(&marker)?;
    while touch(&marker)? <= barrier {
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    fs::remove_file(&marker).map_err(|source| SandboxError::Io {
        path: marker.clone(),
        source,
    })?;
    // Removing the marker changed the root's mtime: put it back.
    if let Some(top) = merged_root(lowers_top_first).first() {
        let md = fs::symlink_metadata(top).map_err(|source| SandboxError::Io {
            path: top.clone(),
            source,
        })?;
        diff::copy_metadata(top, &md, root).map_err(SnapshotError::from)?;
    }
    base.barrier = barrier;
    Ok(base)
}

fn fill(root: &Path, rel: &Path, lower: &[PathBuf], base: &mut CopyBase) -> Result<(), DiffError> {
    let mut links = Links::default();
    for (name, paths) in merged_children(lower)? {
        let crel = rel.join(&name);
        let dst = root.join(&crel);
        let src = &paths[0];
        let md = fs::symlink_metadata(src).map_err(ioe(src, "stat"))?;
        if md.is_dir() {
            diff::copy_entry(src, &md, &dst, &mut links, &mut |_, _, _| {
                fill(root, &crel, &paths, base)
            })?;
            let ino = fs::symlink_metadata(&dst).map_err(ioe(&dst, "stat"))?.ino();
            base.dirs.insert(crel, ino);
        } else {
            let device = md.file_type().is_char_device() || md.file_type().is_block_device();
            match diff::copy_entry(src, &md, &dst, &mut links, &mut |_, _, _| Ok(())) {
                Ok(()) => {}
                // Rootless: device nodes cannot be made; leave them out of the copy.
                Err(DiffError::Io {
                    op: "mknod",
                    source,
                    ..
                }) if device && source.raw_os_error() == Some(libc::EPERM) => {
                    base.skipped.insert(crel);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Remove the mount points the sandbox created (deepest first, only while still empty) and
/// give their parents back the times they had before.
pub(crate) fn remove_stubs(
    root: &Path,
    stubs: &[crate::sandbox::StubRef],
) -> Result<(), SnapshotError> {
    for stub in stubs.iter().rev() {
        let p = root.join(&stub.path);
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let removed = if stub.dir {
            md.is_dir() && fs::remove_dir(&p).is_ok()
        } else {
            md.is_file() && md.len() == 0 && fs::remove_file(&p).is_ok()
        };
        if removed && let Some(parent) = p.parent() {
            let atime =
                filetime::FileTime::from_unix_time(stub.parent_atime.0, stub.parent_atime.1 as u32);
            let mtime =
                filetime::FileTime::from_unix_time(stub.parent_mtime.0, stub.parent_mtime.1 as u32);
            filetime::set_symlink_file_times(parent, atime, mtime).map_err(|source| {
                SnapshotError::Io {
                    path: parent.to_path_buf(),
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

/// Returns whether `dir` is empty afterwards.
fn norm_dir(dir: &Path, lower: &[PathBuf]) -> Result<bool, DiffError> {
    // Removing entries below changes this directory's mtime: restore it afterwards.
    let before = fs::symlink_metadata(dir).map_err(ioe(dir, "stat"))?;
    let mut removed = false;
    let left = norm_children(dir, lower, &mut removed)?;
    if removed {
        let atime = filetime::FileTime::from_last_access_time(&before);
        let mtime = filetime::FileTime::from_last_modification_time(&before);
        filetime::set_symlink_file_times(dir, atime, mtime).map_err(ioe(dir, "restore times"))?;
    }
    Ok(left == 0)
}

fn norm_children(dir: &Path, lower: &[PathBuf], removed: &mut bool) -> Result<usize, DiffError> {
    let mut left = 0usize;
    for name in read_dir_sorted(dir)? {
        let p = dir.join(&name);
        let md = fs::symlink_metadata(&p).map_err(ioe(&p, "stat"))?;
        if md.file_type().is_socket() {
            // Layers cannot carry sockets (tar has no type for them): drop them, as the copy
            // snapshotter does.
            fs::remove_file(&p).map_err(ioe(&p, "remove socket"))?;
            *removed = true;
            continue;
        }
        strip_overlay_xattrs(&p, &md)?;
        // Look up only the names the upper holds: a small layer over a big directory
        // (/usr/lib) costs a few stats, not a listing of the lower directory.
        let lp = diff::merged_lookup(lower, &name)?;
        let lp = lp.as_ref();
        if diff::is_whiteout(&md) {
            if lp.is_none() {
                fs::remove_file(&p).map_err(ioe(&p, "remove whiteout of nothing"))?;
                *removed = true;
            } else {
                left += 1;
            }
            continue;
        }
        if md.is_dir() {
            let opaque = diff::is_opaque(&p);
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
            let empty = norm_dir(&p, &lower_dirs)?;
            if !opaque
                && empty
                && let Some(first) = lower_dirs.first()
            {
                let lmd = fs::symlink_metadata(first).map_err(ioe(first, "stat"))?;
                // Re-read: removing children may have changed nothing we compare but be safe.
                let md = fs::symlink_metadata(&p).map_err(ioe(&p, "stat"))?;
                if same_entry(&p, &md, first, &lmd)? {
                    fs::remove_dir(&p).map_err(ioe(&p, "remove unchanged directory"))?;
                    *removed = true;
                    continue;
                }
            }
            left += 1;
            continue;
        }
        if let Some(v) = lp {
            let lmd = fs::symlink_metadata(&v[0]).map_err(ioe(&v[0], "stat"))?;
            if !lmd.is_dir() && same_entry(&p, &md, &v[0], &lmd)? {
                fs::remove_file(&p).map_err(ioe(&p, "remove unchanged copy-up"))?;
                *removed = true;
                continue;
            }
        }
        left += 1;
    }
    Ok(left)
}

fn strip_overlay_xattrs(p: &Path, md: &fs::Metadata) -> Result<(), DiffError> {
    if md.file_type().is_symlink() {
        return Ok(()); // user.* xattrs cannot exist on symlinks
    }
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(_) => return Ok(()),
    };
    for n in names {
        let s = n.to_string_lossy();
        if s.starts_with("user.overlay.") && s != diff::OPAQUE_XATTR {
            xattr::remove(p, &n).map_err(ioe(p, "remove overlay xattr"))?;
        }
    }
    Ok(())
}
