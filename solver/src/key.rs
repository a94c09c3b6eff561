//! Cache keys: one sha256 per vertex over its kind, canonical parameters and input keys.
//!
//! The rules (DESIGN.md, "Cache rules"): RUN is keyed by its command as expanded plus
//! everything that shapes the process (env, cwd, user, network, mounts); COPY/ADD by the
//! content checksum of the selected sources and the copy options; FROM by the base's
//! manifest digest. Every key folds in the keys of its inputs, so a change upstream re-keys
//! everything below it. Parameters are hashed as canonical JSON (sorted keys, no spaces) so
//! that the bytes never depend on map order or on serde_json's features.

use crate::error::StepError;
use kiln_base::digest::sha256_hex;
use kiln_context::{ChecksumOptions, Context, HashedEntry};
use kiln_image::oci::canonical_json;
use serde::Serialize;

/// Bumped whenever the meaning of a key changes, so old records are never misread.
const KEY_VERSION: u32 = 1;

/// The key of a vertex: `sha256(canonical {"v", "kind", "params", "inputs"})`, hex.
pub fn vertex_key<P: Serialize>(kind: &str, params: &P, inputs: &[&str]) -> String {
    // Our op types always serialize; Null would only make the key less specific.
    let params = serde_json::to_value(params).unwrap_or(serde_json::Value::Null);
    let doc = serde_json::json!({
        "v": KEY_VERSION,
        "kind": kind,
        "params": params,
        "inputs": inputs,
    });
    sha256_hex(&canonical_json(&doc))
}

/// The key of an empty rootfs (`FROM scratch`).
pub fn scratch_key() -> String {
    vertex_key("scratch", &(), &[])
}

/// How COPY and ADD select sources in a context: a named symlink followed, wildcards,
/// minus `excludes`.
pub(crate) fn copy_selection(excludes: &[String]) -> ChecksumOptions {
    ChecksumOptions {
        follow_links: true,
        wildcard: true,
        excludes: excludes.to_vec(),
    }
}

/// A key input from a context (the build's or a named one): the checksum of what
/// `pattern` selects, minus `excludes`, as COPY selects it; each selected file's digest is
/// added to `files` for `--explain-cache` (as it is: the explain log's digests of 20,000
/// entries cost more than the walk's bookkeeping, and a cache hit never needs them).
pub(crate) fn context_checksum(
    context: &Context,
    pattern: &str,
    excludes: &[String],
    files: &mut Vec<HashedEntry>,
) -> Result<String, StepError> {
    let sum = context.checksum(pattern, &copy_selection(excludes))?;
    if files.is_empty() {
        *files = sum.files;
    } else {
        files.extend(sum.files);
    }
    Ok(sum.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_any_input_or_parameter() {
        let base = vertex_key("run", &vec!["echo", "hi"], &["p"]);
        assert_eq!(base, vertex_key("run", &vec!["echo", "hi"], &["p"]));
        assert_ne!(base, vertex_key("run", &vec!["echo", "ho"], &["p"]));
        assert_ne!(base, vertex_key("run", &vec!["echo", "hi"], &["q"]));
        assert_ne!(base, vertex_key("copy", &vec!["echo", "hi"], &["p"]));
        assert_eq!(base.len(), 64);
    }
}
