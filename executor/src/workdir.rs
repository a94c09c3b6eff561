//! WORKDIR's directory: `mkdir -p` as the current USER on top of a stack of layers,
//! written into the step's empty layer directory.

use crate::layered::{LayeredError, LayeredFs, components};
use crate::sandbox::user::{UserError, resolve_user};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why WORKDIR's directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error("WORKDIR {path}: {source}")]
    Resolve { path: String, source: LayeredError },
    #[error(transparent)]
    Layered(#[from] LayeredError),
    #[error("mkdir {0}: not a directory")]
    NotADirectory(String),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
}

/// Makes `path` (absolute, clean) as `mkdir -p` would on the stack `lowers` (bottom
/// first), as `user` (resolved in the stack's `/etc/passwd` and `/etc/group`), mode 0755,
/// writing the new directories into the empty layer directory `out`. Nothing is written
/// when the directory exists (an empty layer); otherwise existing parents are repeated with
/// their own metadata (as an overlay copy-up would) and the missing ones created.
pub fn make_workdir(
    lowers: Vec<PathBuf>,
    path: &str,
    user: &str,
    out: &Path,
) -> Result<(), WorkdirError> {
    let view = LayeredFs::new(lowers);
    let resolved = view
        .resolve(path, true)
        .map_err(|source| WorkdirError::Resolve {
            path: path.to_string(),
            source,
        })?;
    let comps = components(&resolved);
    let mut existing = Vec::with_capacity(comps.len());
    let mut inside = String::new();
    for comp in &comps {
        inside.push('/');
        inside.push_str(comp);
        match view.metadata(&inside)? {
            Some(e) if e.is_dir() => existing.push(Some(e)),
            Some(_) => return Err(WorkdirError::NotADirectory(inside)),
            None => existing.push(None),
        }
    }
    if existing.iter().all(Option::is_some) {
        return Ok(());
    }
    let read = |p: &str| {
        view.read_file(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let owner = resolve_user(user, &read("/etc/passwd"), &read("/etc/group"))?;
    let mut inside = String::new();
    for (comp, existing) in comps.iter().zip(existing) {
        inside.push('/');
        inside.push_str(comp);
        let io = |op: &'static str| {
            let path = inside.clone();
            move |source| WorkdirError::Io { op, path, source }
        };
        let host = out.join(inside.trim_start_matches('/'));
        std::fs::create_dir(&host).map_err(io("mkdir"))?;
        let (mode, uid, gid, mtime) = match existing {
            Some(e) => (
                e.mode(),
                e.uid(),
                e.gid(),
                Some(filetime::FileTime::from_last_modification_time(&e.metadata)),
            ),
            None => (0o755, owner.uid, owner.gid, None),
        };
        std::os::unix::fs::chown(&host, Some(uid), Some(gid)).map_err(io("chown"))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod"))?;
        if let Some(t) = mtime {
            filetime::set_file_mtime(&host, t).map_err(io("utime"))?;
        }
    }
    Ok(())
}
