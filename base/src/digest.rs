//! `sha256:<64 lowercase hex>` digests: the [`Digest`] type, hashing, validation and the
//! hex part.
//!
//! Digests arrive from manifests, archives, registries and the command line and become
//! file names (`blobs/sha256/<hex>`, `snapshots/<hex>`), so every one is validated the same
//! way before it is used: exactly `sha256:` and 64 lowercase hex digits, which can carry
//! no `/` or `..`. A [`Digest`] is such a string parsed once; the string functions below
//! are the same rules for code that keeps digests as `String` (the OCI documents do, so
//! that a foreign malformed one is reported where it is used). The streaming hashers stay
//! with the code that streams (kiln-image); they finish into a [`Digest`] here.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The only algorithm kiln accepts, as written before the hex.
pub const SHA256_PREFIX: &str = "sha256:";

/// A digest string that is not `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct InvalidDigest(pub String);

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, InvalidDigest> {
        digest_hex(s)?;
        Ok(Digest(s.to_string()))
    }

    /// The digest whose hex part is `hex` (64 lowercase hex digits).
    pub fn from_hex(hex: &str) -> Result<Digest, InvalidDigest> {
        if is_sha256_hex(hex) {
            Ok(Digest(format!("{SHA256_PREFIX}{hex}")))
        } else {
            Err(InvalidDigest(format!("{SHA256_PREFIX}{hex}")))
        }
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a streaming sha256 hasher has computed.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("{SHA256_PREFIX}{}", hex::encode(hasher.finalize())))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, as the store names files.
    pub fn hex(&self) -> &str {
        &self.0[SHA256_PREFIX.len()..]
    }

    /// `sha256:<hex>`, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;
    fn from_str(s: &str) -> Result<Digest, InvalidDigest> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    Digest::of(bytes).into_string()
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

    #[test]
    fn a_digest_is_parsed_once_and_knows_its_hex() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::of(b"");
        assert_eq!(d.as_str(), format!("sha256:{hex}"));
        assert_eq!(d.hex(), hex);
        assert_eq!(Digest::parse(d.as_str()), Ok(d.clone()));
        assert_eq!(Digest::from_hex(hex), Ok(d.clone()));
        assert_eq!(d.to_string(), sha256_digest(b""));
        assert_eq!(format!("{d:?}"), format!("\"sha256:{hex}\""));
        assert!(Digest::parse("sha256:abc").is_err());
        assert_eq!(
            Digest::from_hex("../x"),
            Err(InvalidDigest("sha256:../x".into()))
        );
        let mut h = Sha256::new();
        h.update(b"a");
        h.update(b"b");
        assert_eq!(Digest::from_hasher(h), Digest::of(b"ab"));
    }
}
