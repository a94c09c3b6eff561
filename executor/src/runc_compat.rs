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

/// The directories runc-based BuildKit leaves in a RUN layer when the rootfs lacks them.
pub const RUNC_MOUNT_DIRS: [&str; 4] = ["dev", "etc", "proc", "sys"];

/// Adds to the layer directory `upper` each of [`RUNC_MOUNT_DIRS`] that neither the layers
/// below (`lowers`, bottom first) nor the layer itself has.
pub fn add_runc_mount_dirs(lowers: &[PathBuf], upper: &Path) -> io::Result<()> {
    let view = LayeredFs::new(lowers.to_vec());
    for name in RUNC_MOUNT_DIRS {
        let below = view
            .metadata(&format!("/{name}"))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let here = upper.join(name);
        if below.is_some() || here.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir(&here)?;
        std::fs::set_permissions(&here, std::fs::Permissions::from_mode(0o755))?;
        std::os::unix::fs::chown(&here, Some(0), Some(0))?;
    }
    Ok(())
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
}
