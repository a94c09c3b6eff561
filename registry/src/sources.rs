//! Where blobs came from: `registry/sources/<hex>` under the store root lists the
//! `domain/repository` names a blob was pulled from or pushed to, one per line, so a push
//! to another repository of the same registry can mount it instead of uploading it.
//!
//! A hint only: a stale line costs one failed mount request, which falls back to an
//! upload; so writes are best effort and never fail a pull or push.

use std::path::PathBuf;

use kiln_store::Store;

use crate::name::RegistryRef;

fn path(store: &Store, digest: &str) -> Option<PathBuf> {
    let hex = kiln_store::parse_digest(digest).ok()?;
    Some(store.root().join("registry").join("sources").join(hex))
}

/// Notes that `digests` are in `rref`'s repository.
pub(crate) fn record<'a>(
    store: &Store,
    rref: &RegistryRef,
    digests: impl Iterator<Item = &'a str>,
) {
    let line = rref.name();
    for digest in digests {
        let Some(p) = path(store, digest) else {
            continue;
        };
        let mut lines = read(&p);
        if lines.contains(&line) {
            continue;
        }
        lines.push(line.clone());
        lines.sort();
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut text = lines.join("\n");
        text.push('\n');
        let _ = kiln_store::atomic_write(&p, text.as_bytes());
    }
}

fn read(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|t| {
            t.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Repositories of `domain` other than `repository` known to hold `digest`.
pub(crate) fn mount_candidates(
    store: &Store,
    digest: &str,
    domain: &str,
    repository: &str,
) -> Vec<String> {
    let Some(p) = path(store, digest) else {
        return Vec::new();
    };
    read(&p)
        .into_iter()
        .filter_map(|l| {
            let (d, repo) = l.split_once('/')?;
            (d == domain && repo != repository).then(|| repo.to_string())
        })
        .collect()
}
