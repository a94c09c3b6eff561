//! Digest strings (`sha256:<64 lowercase hex>`), hashing helpers and canonical JSON.
//!
//! Every path the store builds from a digest goes through [`parse_digest`] first, so a
//! digest string from a manifest or the user can never name a file outside `blobs/`.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::StoreError;

/// The only algorithm the store accepts.
pub const SHA256_PREFIX: &str = "sha256:";

/// True when `s` is exactly 64 lowercase hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validates `sha256:<hex>` and returns the hex part.
pub fn parse_digest(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix(SHA256_PREFIX) {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(StoreError::InvalidDigest {
            digest: digest.to_string(),
        }),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serializes `value` as canonical JSON: object keys sorted (byte order), no whitespace.
///
/// serde_json is built with `preserve_order` in this workspace, so `Value` maps keep
/// insertion order; sorting here makes the bytes independent of field order.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&sort_value(v))
}

fn sort_value(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_value(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_value).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_validation_rejects_paths_and_uppercase() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(parse_digest(&good).is_ok());
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            "a".repeat(64),
        ] {
            assert!(parse_digest(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":2}}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v).unwrap()).unwrap(),
            r#"{"a":{"c":2,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
