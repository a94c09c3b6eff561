//! Image reference names (`[domain/]path[:tag][@digest]`) checked against Docker's
//! reference grammar and normalized for use as keys in the refs file.
//!
//! Unlike Docker, no `docker.io/library/` prefix is added: local names stay as written,
//! only `:latest` is appended when there is neither tag nor digest.

use std::sync::OnceLock;

use regex::Regex;

use crate::error::{Result, StoreError};

const NAME_TOTAL_LENGTH_MAX: usize = 255;

fn path_component_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("constant regex is valid")
    })
}

fn tag_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Docker's `\w` is ASCII; a Unicode class would also accept tags registries refuse,
    // and compiling 128 copies of it costs tens of milliseconds on every command.
    RE.get_or_init(|| {
        Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("constant regex is valid")
    })
}

fn domain_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$",
        )
        .expect("constant regex is valid")
    })
}

fn invalid(reference: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `[domain/]path`
    pub name: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                crate::digest::parse_digest(d)
                    .map_err(|_| invalid(s, format!("invalid digest {d:?}")))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !tag_re().is_match(tag)
        {
            return Err(invalid(
                s,
                format!(
                    "invalid tag {tag:?}: a tag is up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
                ),
            ));
        }
        if name.is_empty() {
            return Err(invalid(
                s,
                "repository name must have at least one component",
            ));
        }
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(
                s,
                format!("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"),
            ));
        }
        let mut components: Vec<&str> = name.split('/').collect();
        let first = components[0];
        if components.len() > 1
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            if !domain_re().is_match(first) {
                return Err(invalid(s, format!("invalid registry host {first:?}")));
            }
            components.remove(0);
        }
        for c in &components {
            if !path_component_re().is_match(c) {
                if c.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(invalid(s, "repository name must be lowercase"));
                }
                return Err(invalid(
                    s,
                    format!(
                        "invalid path component {c:?}: use lowercase letters, digits and single separators (., _, __, -)"
                    ),
                ));
            }
        }
        Ok(Reference {
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Validates `s` and adds `:latest` when it has neither tag nor digest.
///
/// `app` → `app:latest`; `registry.local:5000/team/app` → `...app:latest`;
/// `App` → error "repository name must be lowercase".
pub fn normalize_ref(s: &str) -> Result<String> {
    let mut r = Reference::parse(s)?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".to_string());
    }
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_adds_latest_only_without_tag_or_digest() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(normalize_ref("app").unwrap(), "app:latest");
        assert_eq!(normalize_ref("app:1.0").unwrap(), "app:1.0");
        assert_eq!(
            normalize_ref("localhost:5000/team/app").unwrap(),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            normalize_ref(&format!("app@{d}")).unwrap(),
            format!("app@{d}")
        );
        assert_eq!(
            normalize_ref("Registry.Example.com/a/b_c__d-e").unwrap(),
            "Registry.Example.com/a/b_c__d-e:latest"
        );
    }

    #[test]
    fn normalize_rejects_bad_names_with_reasons() {
        let err = |s: &str| normalize_ref(s).unwrap_err().to_string();
        assert_eq!(
            err("App"),
            "invalid reference format \"App\": repository name must be lowercase"
        );
        assert!(err("app:-x").contains("invalid tag \"-x\""));
        assert!(err("").contains("empty reference"));
        assert!(err("a//b").contains("invalid path component \"\""));
        assert!(err("app@sha256:12").contains("invalid digest"));
        assert!(err(":tag").contains("at least one component"));
        assert!(err(&format!("app:{}", "t".repeat(129))).contains("invalid tag"));
    }
}
