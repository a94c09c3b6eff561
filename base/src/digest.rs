//! `sha256:<64 lowercase hex>` digests: formatting, validation and the hex part.
//!
//! Digests arrive from manifests, archives, registries and the command line and become
//! file names (`blobs/sha256/<hex>`, `snapshots/<hex>`), so every one is validated the same
//! way before it is used: exactly `sha256:` and 64 lowercase hex digits, which can carry
//! no `/` or `..`. The streaming hashers stay with the code that streams (kiln-image).

use sha2::{Digest as _, Sha256};

/// The only algorithm kiln accepts, as written before the hex.
pub const SHA256_PREFIX: &str = "sha256:";

/// A digest string that is not `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct InvalidDigest(pub String);

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", sha256_hex(bytes))
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True when `s` is exactly 64 lowercase hex characters (the hex part of a digest).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks that `digest` is `sha256:` and 64 lowercase hex digits and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str, InvalidDigest> {
    match digest.strip_prefix(SHA256_PREFIX) {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(InvalidDigest(digest.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(sha256_hex(b"")[..8], *"e3b0c442");
    }

    #[test]
    fn digest_hex_refuses_paths_uppercase_and_other_algorithms() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&good), Ok(&*"a".repeat(64)));
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}/", "a".repeat(64)),
            "a".repeat(64),
        ] {
            assert_eq!(digest_hex(&bad), Err(InvalidDigest(bad.clone())), "{bad}");
        }
        assert_eq!(
            InvalidDigest("x".into()).to_string(),
            "invalid digest \"x\": expected sha256:<64 lowercase hex digits>"
        );
    }
}
