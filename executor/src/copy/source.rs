//! The source side of COPY/ADD: turning a source argument into the entries it names.
//!
//! Like BuildKit: the path is cleaned with `/` as the root (a leading `/` and any `..` are
//! clamped), the part before the first wildcard component is resolved through symlinks
//! inside the source root, the rest is matched with Go's `filepath.Match` against paths
//! below it (a matched directory is not descended into), and each match is then followed if
//! it is a symlink (BuildKit's `FollowSymlinks` for the named source itself; entries inside
//! directories are copied as symlinks). A wildcard matching nothing is allowed; a plain path
//! that does not exist is an error.

use super::CopyError;
use super::pattern::match_parents_pattern;
use super::tree::Source;
use crate::layered::{Entry, components, join_components};
use kiln_base::gopath::{self, filepath_match, has_wildcards};

/// One source entry selected by a source argument.
pub(crate) struct Match {
    /// The name it is copied under (basename of the path as matched, before following).
    pub name: String,
    /// The entry after following symlinks.
    pub entry: Entry,
    /// Selected by a wildcard (then `--exclude` also filters the match itself).
    pub wildcard: bool,
}

/// Expands one source path (wildcards allowed).
pub(crate) fn expand(src: &Source<'_>, path: &str) -> Result<Vec<Match>, CopyError> {
    let comps = components(path);
    let split = comps
        .iter()
        .position(|c| has_wildcards(c))
        .unwrap_or(comps.len());
    if split == comps.len() {
        let clean = join_components(&comps);
        let not_found = || CopyError::SourceNotFound {
            path: clean.clone(),
        };
        let resolved = src.fs.resolve(&clean, true)?;
        let entry = src.fs.metadata(&resolved)?.ok_or_else(not_found)?;
        if !src.visible(&entry) {
            return Err(not_found());
        }
        let name = comps.last().cloned().unwrap_or_default();
        return Ok(vec![Match {
            name,
            entry,
            wildcard: false,
        }]);
    }
    let base = src.fs.resolve(&join_components(&comps[..split]), true)?;
    let pattern = comps[split..].join("/");
    let depth = comps.len() - split;
    let mut out = Vec::new();
    match src.fs.metadata(&base)? {
        Some(e) if e.is_dir() => {}
        _ => return Ok(out),
    }
    walk_matches(src, &base, "", depth, &pattern, &mut out)?;
    Ok(out)
}

fn walk_matches(
    src: &Source<'_>,
    dir: &str,
    rel: &str,
    depth_left: usize,
    pattern: &str,
    out: &mut Vec<Match>,
) -> Result<(), CopyError> {
    for child in src.fs.read_dir_resolved(dir)? {
        if !src.visible(&child.entry) {
            continue;
        }
        let crel = if rel.is_empty() {
            child.name.clone()
        } else {
            format!("{rel}/{}", child.name)
        };
        if filepath_match(pattern, &crel).map_err(|e| CopyError::Pattern(e.to_string()))? {
            let resolved = src.fs.resolve(&child.entry.path, true)?;
            // A dangling symlink matched by a wildcard has nothing to copy.
            if let Some(entry) = src.fs.metadata(&resolved)? {
                out.push(Match {
                    name: child.name.clone(),
                    entry,
                    wildcard: true,
                });
            }
            continue;
        }
        if child.entry.is_dir() && depth_left > 1 {
            walk_matches(src, &child.entry.path, &crel, depth_left - 1, pattern, out)?;
        }
    }
    Ok(())
}

/// A `--parents` source: the pivot directory and the pattern below it.
pub(crate) struct ParentsSpec {
    /// Resolved view path of the pivot (`/` without a `/./` in the source).
    pub base: String,
    pub pattern: Vec<String>,
    /// The path that must exist when the source has no wildcards.
    pub required: Option<String>,
}

/// Splits a `--parents` source at its `/./` pivot, like BuildKit's frontend.
pub(crate) fn parents_spec(src: &Source<'_>, path: &str) -> Result<ParentsSpec, CopyError> {
    let (base, pattern) = match path.split_once("/./") {
        Some((b, p)) => (b.to_string(), p.to_string()),
        None => ("/".to_string(), path.to_string()),
    };
    let pattern = components(&pattern);
    let required = if has_wildcards(&base) || pattern.iter().any(|c| has_wildcards(c)) {
        None
    } else {
        let mut all = components(&base);
        all.extend(pattern.iter().cloned());
        Some(join_components(&all))
    };
    let base = src.fs.resolve(&gopath::clean(&format!("/{base}")), true)?;
    Ok(ParentsSpec {
        base,
        pattern,
        required,
    })
}

/// Walks the pivot and returns `(path below the pivot, entry)` for every match, in order.
/// Directories that only partly match are descended into; a full match is returned whole.
pub(crate) fn parents_matches(
    src: &Source<'_>,
    spec: &ParentsSpec,
) -> Result<Vec<(Vec<String>, Entry)>, CopyError> {
    let mut out = Vec::new();
    match src.fs.metadata(&spec.base)? {
        Some(e) if e.is_dir() => {
            walk_parents(src, &spec.base, &mut Vec::new(), &spec.pattern, &mut out)?
        }
        _ => {}
    }
    if out.is_empty()
        && let Some(req) = &spec.required
    {
        return Err(CopyError::SourceNotFound { path: req.clone() });
    }
    Ok(out)
}

fn walk_parents(
    src: &Source<'_>,
    dir: &str,
    rel: &mut Vec<String>,
    pattern: &[String],
    out: &mut Vec<(Vec<String>, Entry)>,
) -> Result<(), CopyError> {
    for child in src.fs.read_dir_resolved(dir)? {
        if !src.visible(&child.entry) {
            continue;
        }
        rel.push(child.name.clone());
        let refs: Vec<&str> = rel.iter().map(String::as_str).collect();
        let (full, partial) =
            match_parents_pattern(pattern, &refs).map_err(|e| CopyError::Pattern(e.to_string()))?;
        if full {
            out.push((rel.clone(), child.entry.clone()));
        } else if partial && child.entry.is_dir() {
            walk_parents(src, &child.entry.path, rel, pattern, out)?;
        }
        rel.pop();
    }
    Ok(())
}
