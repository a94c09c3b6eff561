//! Path resolution clamped to a root directory, with BuildKit's rules: the path is cleaned
//! as if rooted at `/` (so `..` and absolute paths cannot leave the root), and each
//! symlink met on the way is resolved with the root standing in for `/` (an absolute
//! target restarts at the root, `..` at the root stays at the root).
//!
//! Components that do not exist are appended as they are, so the result can name a file
//! to be created. The result is always `root` joined with a relative path free of `..`.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

/// More than this many symlinks on one resolution is a loop (Linux uses 40; BuildKit 255).
const MAX_SYMLINKS: u32 = 255;

/// Resolution failures.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("too many levels of symbolic links resolving {path:?}")]
    TooManyLinks { path: String },
    #[error("cannot resolve {path:?}: cannot read {}: {source}", at.display())]
    Io {
        path: String,
        at: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Resolves `path` inside `root`, following every symlink including the last component.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, ResolveError> {
    Ok(root.join(resolve_rel(root, path, true)?))
}

/// Like [`resolve_in_root`] but a symlink in the last component is not followed (the
/// result names the link itself). Parent components are still resolved.
pub fn resolve_in_root_nofollow(root: &Path, path: &str) -> Result<PathBuf, ResolveError> {
    Ok(root.join(resolve_rel(root, path, false)?))
}

/// The resolved path relative to `root`, `/`-separated, `""` for the root itself.
pub fn resolve_rel(root: &Path, path: &str, follow_final: bool) -> Result<String, ResolveError> {
    // Lexical clean first, as BuildKit does with sources: `a/../b` is `b` whatever `a` is.
    let mut remaining: VecDeque<String> = split(&kiln_base::gopath::clean(&format!("/{path}")));
    let mut current: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = remaining.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        for part in &current {
            candidate.push(part);
        }
        candidate.push(&c);
        let is_last = remaining.is_empty();
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => Some(m),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                None
            }
            Err(source) => {
                return Err(ResolveError::Io {
                    path: path.to_string(),
                    at: candidate,
                    source,
                });
            }
        };
        match meta {
            Some(m) if m.file_type().is_symlink() && (!is_last || follow_final) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManyLinks {
                        path: path.to_string(),
                    });
                }
                let target = std::fs::read_link(&candidate).map_err(|source| ResolveError::Io {
                    path: path.to_string(),
                    at: candidate.clone(),
                    source,
                })?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    current.clear();
                }
                for part in split(&target).into_iter().rev() {
                    remaining.push_front(part);
                }
            }
            _ => current.push(c),
        }
    }
    Ok(current.join("/"))
}

/// Where a host path names a file of the build context rooted at `root`: when `path` lies
/// inside the context (lexically, against the context as given or as canonicalized), the
/// rest is resolved inside it like every other context path, so a symlink there (a
/// `Dockerfile` or `.dockerignore` pointing at `/etc/shadow`) cannot lead out. A path outside
/// the context was named by the user and is returned as it is.
pub fn resolve_context_path(root: &Path, path: &Path) -> Result<PathBuf, ResolveError> {
    let path = lexical_absolute(path);
    let roots = [
        Some(lexical_absolute(root)),
        std::fs::canonicalize(root).ok(),
    ];
    for r in roots.into_iter().flatten() {
        if let Ok(rel) = path.strip_prefix(&r) {
            return resolve_in_root(&r, &rel.to_string_lossy());
        }
    }
    Ok(path)
}

/// `path` made absolute against the working directory, with `.` and `..` applied by name:
/// no symlink is read, so a link inside the context cannot make a path look outside it.
fn lexical_absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn split(p: &str) -> VecDeque<String> {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_file_symlinked_out_resolves_inside_the_context() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host").unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let link = ctx.path().join("Dockerfile");
        std::os::unix::fs::symlink(outside.path().join("secret"), &link).unwrap();
        let real = resolve_context_path(ctx.path(), &link).unwrap();
        let canon = std::fs::canonicalize(ctx.path()).unwrap();
        assert!(
            real.starts_with(ctx.path()) || real.starts_with(&canon),
            "{real:?} left the context"
        );
        assert!(std::fs::read(&real).is_err(), "{real:?} is readable");
        // A relative link climbing with `..` stops at the context's root.
        let rel = ctx.path().join("Dockerfile.rel");
        std::os::unix::fs::symlink("../../../../../../../../etc/passwd", &rel).unwrap();
        let real = resolve_context_path(ctx.path(), &rel).unwrap();
        assert!(
            real.starts_with(ctx.path()) || real.starts_with(&canon),
            "{real:?} left the context"
        );
    }

    #[test]
    fn a_path_outside_the_context_is_the_callers_choice() {
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("Dockerfile");
        std::fs::write(&file, b"FROM scratch\n").unwrap();
        let ctx = tempfile::tempdir().unwrap();
        assert_eq!(resolve_context_path(ctx.path(), &file).unwrap(), file);
    }
}
