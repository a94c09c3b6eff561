//! Selecting sources: a plain path resolved inside the context, or a wildcard pattern
//! expanded one component at a time; `.dockerignore` decides what exists.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{ChecksumOptions, Context, ContextError};
use crate::resolve::resolve_rel;
use kiln_base::gopath::{self, Pattern as GlobPattern, has_meta, has_wildcards};

/// A selected source: the path as matched (lexical) and where it resolved to.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub requested: String,
    /// Context-relative, `""` for the root.
    pub resolved: String,
    /// Matched by a wildcard: if it turns out to hold nothing visible it is skipped
    /// rather than reported missing.
    pub from_wildcard: bool,
}

/// Lexically cleaned, root-relative form of a pattern (`""` for the root).
fn lexical(pattern: &str) -> String {
    let c = gopath::clean(&format!("/{pattern}"));
    c.trim_start_matches('/').to_string()
}

/// Sorted names in `dir`.
fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// `dir/name`, or `name` at the root (`""`).
pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        // Not `format!`: this runs once per walked entry, and the formatter showed up in
        // no-op rebuild profiles.
        let mut s = String::with_capacity(dir.len() + 1 + name.len());
        s.push_str(dir);
        s.push('/');
        s.push_str(name);
        s
    }
}

impl Context {
    pub(super) fn is_ignored(&self, rel: &str) -> bool {
        !rel.is_empty() && !self.matcher.is_empty() && self.matcher.matches(rel)
    }

    /// The sources `pattern` selects.
    pub(super) fn select(
        &self,
        pattern: &str,
        opts: &ChecksumOptions,
    ) -> Result<Vec<Source>, ContextError> {
        let lex = lexical(pattern);
        if !(opts.wildcard && has_wildcards(&lex)) {
            let resolved = resolve_rel(&self.root, pattern, opts.follow_links)?;
            let not_found = || ContextError::NotFound {
                pattern: pattern.to_string(),
            };
            match fs::symlink_metadata(self.root.join(&resolved)) {
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory =>
                {
                    return Err(not_found());
                }
                Err(source) => {
                    return Err(ContextError::Io {
                        path: self.root.join(&resolved),
                        source,
                    });
                }
            }
            // An excluded path does not exist in the context BuildKit would see. (An
            // excluded directory with re-included content is checked by the walk.)
            if self.is_ignored(&lex) && !self.matcher.may_reinclude_under(&lex) {
                return Err(not_found());
            }
            return Ok(vec![Source {
                requested: lex,
                resolved,
                from_wildcard: false,
            }]);
        }

        // Wildcards: expand one component at a time, listing only the directories the
        // pattern walks through. As in BuildKit, the components before the first one with
        // a wildcard are names as written (`\` included); from there on each is a
        // `filepath.Match` pattern (where `\` escapes), the copy's reading too.
        let mut candidates = vec![String::new()];
        let mut matching = false;
        for comp in lex.split('/') {
            matching |= has_wildcards(comp);
            if !(matching && has_meta(comp)) {
                for c in &mut candidates {
                    *c = join(c, comp);
                }
                continue;
            }
            let glob = GlobPattern::new(comp).map_err(|source| ContextError::BadPattern {
                pattern: pattern.to_string(),
                source,
            })?;
            let mut next = Vec::new();
            for c in &candidates {
                let dir = self.root.join(resolve_rel(&self.root, c, true)?);
                let names = match sorted_names(&dir) {
                    Ok(n) => n,
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            || e.kind() == io::ErrorKind::NotADirectory =>
                    {
                        continue;
                    }
                    Err(source) => return Err(ContextError::Io { path: dir, source }),
                };
                for name in names {
                    let name = name.to_string_lossy();
                    if glob.matches(&name) {
                        next.push(join(c, &name));
                    }
                }
            }
            candidates = next;
        }
        let mut out = Vec::new();
        for c in candidates {
            let resolved = resolve_rel(&self.root, &c, opts.follow_links)?;
            let exists = fs::symlink_metadata(self.root.join(&resolved)).is_ok();
            if !exists || (self.is_ignored(&c) && !self.matcher.may_reinclude_under(&c)) {
                continue;
            }
            out.push(Source {
                requested: c,
                resolved,
                from_wildcard: true,
            });
        }
        Ok(out)
    }
}
