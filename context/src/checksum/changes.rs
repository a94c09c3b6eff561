//! Human-readable differences between two entry lists, for `--explain-cache`.

use std::collections::BTreeMap;

use super::{ContextFileType, HashedEntry};

fn kind_name(k: ContextFileType) -> &'static str {
    match k {
        ContextFileType::File => "file",
        ContextFileType::Dir => "directory",
        ContextFileType::Symlink => "symlink",
        ContextFileType::Other => "special file",
    }
}

/// Describes how `new` differs from `old`, one line per path, sorted by path:
/// `added: x`, `removed: y`, `changed: z` (content), or `changed: z (mode 0644 -> 0755)`,
/// `changed: z (symlink target a -> b)`, `changed: z (file -> directory)`.
pub fn diff_entries(old: &[HashedEntry], new: &[HashedEntry]) -> Vec<String> {
    let old: BTreeMap<&str, &HashedEntry> = old.iter().map(|e| (e.rel_path.as_str(), e)).collect();
    let new: BTreeMap<&str, &HashedEntry> = new.iter().map(|e| (e.rel_path.as_str(), e)).collect();
    let mut paths: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let mut out = Vec::new();
    for p in paths {
        match (old.get(p), new.get(p)) {
            (None, Some(_)) => out.push(format!("added: {p}")),
            (Some(_), None) => out.push(format!("removed: {p}")),
            (Some(a), Some(b)) => {
                if a.kind != b.kind {
                    out.push(format!(
                        "changed: {p} ({} -> {})",
                        kind_name(a.kind),
                        kind_name(b.kind)
                    ));
                } else if a.link_target != b.link_target {
                    out.push(format!(
                        "changed: {p} (symlink target {} -> {})",
                        a.link_target.as_deref().unwrap_or(""),
                        b.link_target.as_deref().unwrap_or("")
                    ));
                } else if a.sha256 != b.sha256 || a.size != b.size {
                    out.push(format!("changed: {p}"));
                } else if a.mode != b.mode {
                    out.push(format!(
                        "changed: {p} (mode {:04o} -> {:04o})",
                        a.mode, b.mode
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}
