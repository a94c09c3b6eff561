//! The rules a COPY or ADD's sources must keep, with BuildKit's error texts.
//!
//! Written once: the parser applies them to what the Dockerfile says (and points at the
//! instruction), and the executor applies the same function to a copy request however it
//! was made, so the two can never accept different things.

/// What a COPY/ADD source is, as far as these rules care (heredocs are not sources here:
/// BuildKit counts only the named sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A path in the context or a stage (wildcards allowed).
    Path,
    /// An `http://` or `https://` URL, which ADD downloads.
    Url,
    /// A git repository ([`crate::git_ref`]), which ADD checks out.
    Git,
}

impl SourceKind {
    /// The kind of a source as written.
    pub fn of(source: &str) -> SourceKind {
        // A git reference whose query is wrong is still one (lowering says what is wrong).
        if !matches!(crate::git_ref::parse_git_ref(source), Ok(None)) {
            SourceKind::Git
        } else if source.starts_with("http://") || source.starts_with("https://") {
            SourceKind::Url
        } else {
            SourceKind::Path
        }
    }
}

/// A COPY/ADD whose sources break a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyRuleError {
    #[error("source can't be a URL for COPY")]
    UrlForCopy,
    #[error("source can't be a git ref for COPY")]
    GitForCopy,
    #[error("checksum can't be specified for COPY")]
    ChecksumForCopy,
    #[error("checksum can't be specified for multiple sources")]
    ChecksumMultipleSources,
    #[error("checksum requires HTTP(S) or Git sources")]
    ChecksumNeedsUrl,
}

/// Checks the named sources of a COPY (`add` false) or ADD, and whether `--checksum` was
/// given, in BuildKit's order: a URL or git reference in a COPY first, then what
/// `--checksum` needs (ADD, exactly one source, a URL or git reference).
pub fn check_sources(
    add: bool,
    checksum: bool,
    sources: &[SourceKind],
) -> Result<(), CopyRuleError> {
    if !add && sources.contains(&SourceKind::Url) {
        return Err(CopyRuleError::UrlForCopy);
    }
    if !add && sources.contains(&SourceKind::Git) {
        return Err(CopyRuleError::GitForCopy);
    }
    if checksum {
        if !add {
            return Err(CopyRuleError::ChecksumForCopy);
        }
        if sources.len() != 1 {
            return Err(CopyRuleError::ChecksumMultipleSources);
        }
        if sources[0] == SourceKind::Path {
            return Err(CopyRuleError::ChecksumNeedsUrl);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SourceKind::{Path, Url};
    use super::*;

    #[test]
    fn urls_are_http_and_https_only() {
        assert_eq!(SourceKind::of("https://x/y"), Url);
        assert_eq!(SourceKind::of("http://x"), Url);
        assert_eq!(SourceKind::of("ftp://x"), Path);
        assert_eq!(SourceKind::of("src/http://x"), Path);
        assert_eq!(SourceKind::of("https://x/y.git#main"), SourceKind::Git);
        assert_eq!(SourceKind::of("git@x:y.git"), SourceKind::Git);
        assert_eq!(
            check_sources(false, false, &[SourceKind::Git])
                .unwrap_err()
                .to_string(),
            "source can't be a git ref for COPY"
        );
        assert!(check_sources(true, true, &[SourceKind::Git]).is_ok());
    }

    #[test]
    fn each_rule_gives_buildkits_text_in_buildkits_order() {
        let err = |add, sum, s: &[SourceKind]| check_sources(add, sum, s).unwrap_err().to_string();
        assert_eq!(err(false, true, &[Url]), "source can't be a URL for COPY");
        assert_eq!(
            err(false, true, &[Path]),
            "checksum can't be specified for COPY"
        );
        assert_eq!(
            err(true, true, &[Url, Url]),
            "checksum can't be specified for multiple sources"
        );
        assert_eq!(
            err(true, true, &[]),
            "checksum can't be specified for multiple sources"
        );
        assert_eq!(
            err(true, true, &[Path]),
            "checksum requires HTTP(S) or Git sources"
        );
        assert!(check_sources(true, true, &[Url]).is_ok());
        assert!(check_sources(true, false, &[Url, Path]).is_ok());
        assert!(check_sources(false, false, &[Path, Path]).is_ok());
    }
}
