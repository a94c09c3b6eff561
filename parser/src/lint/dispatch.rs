//! The checks BuildKit runs while it dispatches a stage's instructions (so only for the
//! stages a build needs, and every stage for `--check`): UndefinedVar, SecretsUsedInArgOrEnv,
//! LegacyKeyValueFormat, JSONArgsRecommended, WorkdirRelativePath,
//! MultipleInstructionsDisallowed, ExposeProtoCasing, ExposeInvalidFormat and
//! CopyIgnoredFile. The lowering calls these with the state it holds at that instruction.

use super::vars::Lookups;
use super::{Finding, Rule, search};

/// Build args that never reach the environment (BuildKit's `nonEnvArgs`).
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Answers whether a COPY/ADD source from the context is excluded by `.dockerignore`.
/// The caller owns the ignore file; `None` from [`IgnoreCheck::ignored`] means "do not
/// judge" (no ignore file, or one with `!` exceptions, which BuildKit does not judge).
pub trait IgnoreCheck {
    /// Whether `path` (cleaned, as written after expansion) or a parent of it is ignored.
    fn ignored(&self, path: &str) -> bool;
}

/// The last CMD, ENTRYPOINT and HEALTHCHECK of a stage, by line, for
/// MultipleInstructionsDisallowed.
#[derive(Debug, Default, Clone)]
pub struct UsedOnce {
    cmd: Option<usize>,
    entrypoint: Option<usize>,
    healthcheck: Option<usize>,
}

impl UsedOnce {
    /// Records `keyword` (CMD, ENTRYPOINT or HEALTHCHECK, any case) at `line`; a repeat is
    /// reported at the line of the earlier one, the one that is ignored.
    pub fn mark(&mut self, keyword: &str, line: usize) -> Option<Finding> {
        let slot = match keyword.to_ascii_lowercase().as_str() {
            "cmd" => &mut self.cmd,
            "entrypoint" => &mut self.entrypoint,
            "healthcheck" => &mut self.healthcheck,
            _ => return None,
        };
        let earlier = slot.replace(line)?;
        Some(Finding::new(
            Rule::MultipleInstructionsDisallowed,
            earlier,
            format!(
                "Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
            ),
        ))
    }
}

/// UndefinedVar: the names an instruction's expansion found unset that no ARG in scope
/// declares. `env_keys` are the names set (for a suggestion).
pub fn undefined_vars(
    lookups: &Lookups,
    declared_args: &[&str],
    env_keys: &[&str],
    line: usize,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for name in &lookups.unmatched {
        let n = name.as_str();
        if declared_args.contains(&n) || NON_ENV_ARGS.contains(&n) {
            continue;
        }
        let mut message = format!("Usage of undefined variable '${name}'");
        if let Some(s) = search(name, env_keys, true) {
            message.push_str(&format!(" (did you mean ${s}?)"));
        }
        out.push(Finding::new(Rule::UndefinedVar, line, message));
    }
    out
}

/// SecretsUsedInArgOrEnv: an ARG or ENV key whose first or last `_`-separated word (or
/// whole name) names a secret, unless one also says it is public, a file or a version.
pub fn secret_key(instruction: &str, key: &str, line: usize) -> Option<Finding> {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    (has_token(key, DENY) && !has_token(key, ALLOW)).then(|| {
        Finding::new(
            Rule::SecretsUsedInArgOrEnv,
            line,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                crate::goformat::quote(key)
            ),
        )
    })
}

/// `(?i)(?:_|^)(?:TOKENS)(?:_|$)`: a token bounded by `_` or the ends of the key.
fn has_token(key: &str, tokens: &[&str]) -> bool {
    let lower = key.to_lowercase();
    tokens.iter().any(|t| {
        let mut from = 0;
        while let Some(i) = lower[from..].find(t) {
            let start = from + i;
            let end = start + t.len();
            let before = start == 0 || lower.as_bytes()[start - 1] == b'_';
            let after = end == lower.len() || lower.as_bytes()[end] == b'_';
            if before && after {
                return true;
            }
            from = start + 1;
            while !lower.is_char_boundary(from) {
                from += 1;
            }
        }
        false
    })
}

/// LegacyKeyValueFormat: `ENV k v` / `LABEL k v`.
pub fn legacy_key_value(keyword: &str, line: usize) -> Finding {
    Finding::new(
        Rule::LegacyKeyValueFormat,
        line,
        format!(
            "\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"
        ),
    )
}

/// JSONArgsRecommended: a shell-form CMD or ENTRYPOINT while no SHELL is set (inherited
/// from the base image or set in the build).
pub fn json_args(keyword: &str, shell_set: bool, line: usize) -> Option<Finding> {
    (!shell_set).then(|| {
        Finding::new(
            Rule::JSONArgsRecommended,
            line,
            format!(
                "JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"
            ),
        )
    })
}

/// WorkdirRelativePath: the first WORKDIR of a stage (and the stages it is built from)
/// is relative, so it depends on the base image's directory.
pub fn workdir_relative(path: &str, workdir_set: bool, line: usize) -> Option<Finding> {
    (!workdir_set && !path.starts_with('/')).then(|| {
        Finding::new(
            Rule::WorkdirRelativePath,
            line,
            format!(
                "Relative workdir {} can have unexpected results if the base image changes",
                crate::goformat::quote(path)
            ),
        )
    })
}

/// ExposeProtoCasing and ExposeInvalidFormat for one port spec after expansion
/// (`[ip:][hostPort:]containerPort[/proto]`).
pub fn expose(raw: &str, line: usize) -> Vec<Finding> {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host_port, container) = match n {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let mut out = Vec::new();
    let proto = container.split('/').nth(1).unwrap_or("");
    if proto != proto.to_lowercase() {
        out.push(Finding::new(
            Rule::ExposeProtoCasing,
            line,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        ));
    }
    if !ip.is_empty() || !host_port.is_empty() {
        out.push(Finding::new(
            Rule::ExposeInvalidFormat,
            line,
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
            ),
        ));
    }
    out
}

/// CopyIgnoredFile for one source from the context (after expansion).
pub fn copy_ignored(
    add: bool,
    src: &str,
    ignore: &dyn IgnoreCheck,
    line: usize,
) -> Option<Finding> {
    let cleaned = kiln_base::gopath::clean(src);
    ignore.ignored(&cleaned).then(|| {
        Finding::new(
            Rule::CopyIgnoredFile,
            line,
            format!(
                "Attempting to {} file {} that is excluded by .dockerignore",
                if add { "Add" } else { "Copy" },
                crate::goformat::quote(&cleaned)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_instructions_report_the_earlier_line() {
        let mut u = UsedOnce::default();
        assert!(u.mark("CMD", 2).is_none());
        assert!(u.mark("ENTRYPOINT", 3).is_none());
        assert_eq!(
            u.mark("CMD", 5).unwrap().to_string(),
            "MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used (line 2)"
        );
        assert!(u.mark("RUN", 6).is_none());
        assert!(u.mark("HEALTHCHECK", 7).is_none());
    }

    #[test]
    fn secrets_by_word() {
        for key in [
            "AWS_SECRET_ACCESS_KEY",
            "api_key",
            "GITHUB_TOKEN",
            "password",
            "AUTH",
            "secret_MESSAGE",
        ] {
            assert!(secret_key("ENV", key, 1).is_some(), "{key}");
        }
        for key in [
            "PUBLIC_KEY",
            "KEY_FILE",
            "TOKEN_VERSION",
            "MONKEY",
            "AUTHOR",
            "PASSWORDS",
            "tokens",
        ] {
            assert!(secret_key("ARG", key, 1).is_none(), "{key}");
        }
        assert_eq!(
            secret_key("ARG", "GITHUB_TOKEN", 4).unwrap().to_string(),
            "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\") (line 4)"
        );
    }

    #[test]
    fn undefined_vars_skip_declared_args() {
        let l = Lookups {
            matched: Default::default(),
            unmatched: ["PAHT", "DECLARED"].iter().map(|s| s.to_string()).collect(),
        };
        let f = undefined_vars(&l, &["DECLARED"], &["PATH"], 3);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].to_string(),
            "UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?) (line 3)"
        );
    }

    #[test]
    fn expose_formats() {
        assert_eq!(
            expose("80/TCP", 1)[0].to_string(),
            "ExposeProtoCasing: Defined protocol '80/TCP' in EXPOSE instruction should be lowercase (line 1)"
        );
        assert_eq!(
            expose("127.0.0.1:80:80", 1)[0].to_string(),
            "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80' (line 1)"
        );
        assert_eq!(expose("8080:80/udp", 1).len(), 1);
        assert!(expose("80", 1).is_empty());
        assert!(expose("80/udp", 1).is_empty());
    }

    #[test]
    fn json_args_and_workdir() {
        assert_eq!(
            json_args("CMD", false, 2).unwrap().to_string(),
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"
        );
        assert!(json_args("CMD", true, 2).is_none());
        assert_eq!(
            workdir_relative("app", false, 3).unwrap().to_string(),
            "WorkdirRelativePath: Relative workdir \"app\" can have unexpected results if the base image changes (line 3)"
        );
        assert!(workdir_relative("app", true, 3).is_none());
        assert!(workdir_relative("/app", false, 3).is_none());
    }

    #[test]
    fn copy_ignored_names_the_cleaned_path() {
        struct Ig;
        impl IgnoreCheck for Ig {
            fn ignored(&self, p: &str) -> bool {
                p == "secret.txt"
            }
        }
        assert_eq!(
            copy_ignored(false, "./secret.txt", &Ig, 4)
                .unwrap()
                .to_string(),
            "CopyIgnoredFile: Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore (line 4)"
        );
        assert!(copy_ignored(true, "other", &Ig, 4).is_none());
    }
}
