//! Where blobs came from: a side record of the store per blob
//! ([`SideRecordKind::RegistrySources`], named by the blob's hex digest; prune drops it
//! with the blob) lists the `domain/repository` names the blob was pulled from or pushed
//! to, one per line, so a push to another repository of the same registry can mount it
//! instead of uploading it.
//!
//! A hint only: a stale line costs one failed mount request, which falls back to an
//! upload; so writes are best effort and never fail a pull or push.

use kiln_store::{SideRecordKind, Store};

use crate::name::RegistryRef;

/// The record name of `digest` (its hex), `None` for an invalid digest.
fn name(digest: &str) -> Option<&str> {
    kiln_store::parse_digest(digest).ok()
}

/// Notes that `digests` are in `rref`'s repository.
pub(crate) fn record<'a>(
    store: &Store,
    rref: &RegistryRef,
    digests: impl Iterator<Item = &'a str>,
) {
    let records = store.side_records(SideRecordKind::RegistrySources);
    let line = rref.name();
    for digest in digests {
        let Some(name) = name(digest) else {
            continue;
        };
        let mut lines = read(records.read(name));
        if lines.contains(&line) {
            continue;
        }
        lines.push(line.clone());
        lines.sort();
        let mut text = lines.join("\n");
        text.push('\n');
        let _ = records.write(name, text.as_bytes());
    }
}

/// The lines of a record (none when it is missing or not text).
fn read(record: Option<Vec<u8>>) -> Vec<String> {
    record
        .and_then(|b| String::from_utf8(b).ok())
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
    let Some(name) = name(digest) else {
        return Vec::new();
    };
    read(
        store
            .side_records(SideRecordKind::RegistrySources)
            .read(name),
    )
    .into_iter()
    .filter_map(|l| {
        let (d, repo) = l.split_once('/')?;
        (d == domain && repo != repository).then(|| repo.to_string())
    })
    .collect()
}
