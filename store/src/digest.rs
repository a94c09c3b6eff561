//! The store's side of digests: [`kiln_base::digest`]'s rules, with the store's error.
//!
//! Every path the store builds from a digest goes through [`parse_digest`] first, so a
//! digest string from a manifest or the user can never name a file outside `blobs/`.

pub use kiln_base::canonical_json::to_vec as canonical_json;
pub use kiln_base::digest::{is_sha256_hex, sha256_digest, sha256_hex};

use crate::error::StoreError;

/// Validates `sha256:<hex>` and returns the hex part.
pub fn parse_digest(digest: &str) -> Result<&str, StoreError> {
    kiln_base::digest::digest_hex(digest).map_err(|e| StoreError::InvalidDigest { digest: e.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_digest_is_a_store_error_naming_it() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_digest(&good).unwrap(), "a".repeat(64));
        let err = parse_digest("sha256:../../etc/passwd").unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidDigest { digest } if digest == "sha256:../../etc/passwd"),
            "{err:?}"
        );
    }
}
