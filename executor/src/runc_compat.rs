//! What a RUN leaves in its layer besides its own changes, so images match BuildKit's.
//!
//! BuildKit runs RUN with runc, which creates the mount points of its standard mounts
//! (`/proc`, `/dev`, `/sys`) and the parent of the files BuildKit binds (`/etc`, for
//! `/etc/hosts` and `/etc/resolv.conf`) when the image lacks them. BuildKit then removes the
//! file stubs but not those directories, so the first RUN on a bare rootfs commits them as
//! empty `0755` root-owned directories. kiln's sandbox never leaves its own mount points
//! behind; this puts exactly those four back.

use crate::layered::LayeredFs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The directories runc-based BuildKit leaves in a RUN layer when the rootfs lacks them.
pub const RUNC_MOUNT_DIRS: [&str; 4] = ["dev", "etc", "proc", "sys"];

/// Adds to the layer directory `upper` each of [`RUNC_MOUNT_DIRS`] that neither the layers
/// below (`lowers`, bottom first) nor the layer itself has.
pub fn add_runc_mount_dirs(lowers: &[PathBuf], upper: &Path) -> io::Result<()> {
    let below = present_below(lowers).map_err(|e| io::Error::other(e.to_string()))?;
    for (name, below) in RUNC_MOUNT_DIRS.into_iter().zip(below) {
        let here = upper.join(name);
        if below || here.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir(&here)?;
        std::fs::set_permissions(&here, std::fs::Permissions::from_mode(0o755))?;
        std::os::unix::fs::chown(&here, Some(0), Some(0))?;
    }
    Ok(())
}

/// Stacks of lowers (bottom first) already looked at, with what [`present_below`] found:
/// the next RUN of a stage runs on the same stack plus the layer the last one gave.
/// Snapshots never change once committed, so an answer holds as long as the process.
static KNOWN: Mutex<Vec<(Vec<PathBuf>, [bool; 4])>> = Mutex::new(Vec::new());
/// Stacks remembered: one for each stage built at once is plenty.
const KNOWN_MAX: usize = 16;

/// Whether each of [`RUNC_MOUNT_DIRS`] is present in the view of `lowers`. For a stack one
/// layer above a known one, only that layer is looked at: on a deep stage the names sit
/// in a layer near the bottom, and looking them up through every layer took four lstat
/// calls a layer, each RUN.
fn present_below(lowers: &[PathBuf]) -> Result<[bool; 4], crate::layered::LayeredError> {
    let known = KNOWN.lock().ok().and_then(|known| {
        let (_, rest) = lowers.split_last()?;
        known
            .iter()
            .find(|(stack, _)| stack.as_slice() == rest)
            .map(|(_, found)| *found)
    });
    let view = LayeredFs::new(lowers.to_vec());
    let mut found = [false; 4];
    for (i, name) in RUNC_MOUNT_DIRS.iter().enumerate() {
        let path = format!("/{name}");
        found[i] = match (known, lowers.len().checked_sub(1)) {
            (Some(below), Some(top)) => view.decides(top, &path)?.unwrap_or(below[i]),
            _ => view.lookup(&path)?.is_some(),
        };
    }
    if let Ok(mut known) = KNOWN.lock() {
        if known.len() >= KNOWN_MAX {
            known.remove(0);
        }
        known.push((lowers.to_vec(), found));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_the_mount_dirs_that_are_missing_below_and_in_the_layer() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir(lower.path().join("etc")).unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("proc")).unwrap();
        std::fs::write(upper.path().join("proc/keep"), "x").unwrap();
        add_runc_mount_dirs(&[lower.path().to_path_buf()], upper.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(upper.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dev", "proc", "sys"]);
        assert!(upper.path().join("proc/keep").exists());
        let mode = std::fs::metadata(upper.path().join("dev"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn a_stack_one_layer_above_a_known_one_gives_what_a_full_lookup_gives() {
        let dir = tempfile::tempdir().unwrap();
        let layer = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).unwrap();
            p
        };
        let (base, middle) = (layer("base"), layer("middle"));
        for name in RUNC_MOUNT_DIRS {
            std::fs::create_dir(base.join(name)).unwrap();
        }
        // The top layer deletes /proc (a whiteout), replaces /etc with a file, adds
        // nothing for /dev and /sys.
        let top = layer("top");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("proc"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        std::fs::write(top.join("etc"), "x").unwrap();
        let lower = vec![base.clone(), middle.clone()];
        assert_eq!(present_below(&lower).unwrap(), [true; 4]);
        let stack = vec![base, middle, top];
        let incremental = present_below(&stack).unwrap();
        let view = LayeredFs::new(stack);
        let full: Vec<bool> = RUNC_MOUNT_DIRS
            .iter()
            .map(|n| view.lookup(&format!("/{n}")).unwrap().is_some())
            .collect();
        // dev, etc, proc, sys: the whiteout hides /proc, the file still counts.
        assert_eq!(full, [true, true, false, true]);
        assert_eq!(incremental.to_vec(), full);
    }
}
