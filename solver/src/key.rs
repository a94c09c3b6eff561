//! Cache keys: one sha256 per vertex over its kind, canonical parameters and input keys.
//!
//! The rules (DESIGN.md, "Cache rules"): RUN is keyed by its command as expanded plus
//! everything that shapes the process (env, cwd, user, network, mounts); COPY/ADD by the
//! content checksum of the selected sources and the copy options; FROM by the base's
//! manifest digest. Every key folds in the keys of its inputs, so a change upstream re-keys
//! everything below it. Parameters are hashed as canonical JSON (sorted keys, no spaces) so
//! that the bytes never depend on map order or on serde_json's features.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bumped whenever the meaning of a key changes, so old records are never misread.
const KEY_VERSION: u32 = 1;

/// The key of a vertex: `sha256(canonical {"v", "kind", "params", "inputs"})`, hex.
pub fn vertex_key<P: Serialize>(kind: &str, params: &P, inputs: &[&str]) -> String {
    let params = serde_json::to_value(params).unwrap_or(Value::Null);
    let doc = serde_json::json!({
        "v": KEY_VERSION,
        "kind": kind,
        "params": params,
        "inputs": inputs,
    });
    hex::encode(Sha256::digest(canonical_json(&doc)))
}

/// The key of an empty rootfs (`FROM scratch`).
pub fn scratch_key() -> String {
    vertex_key("scratch", &(), &[])
}

/// Serializes `value` with object keys sorted at every level and no insignificant spaces.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string cannot fail.
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "x"}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

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
