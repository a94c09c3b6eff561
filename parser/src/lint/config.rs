//! Which checks run and whether a finding fails the build: the `# check=` directive and
//! the `BUILDKIT_DOCKERFILE_CHECK` build arg (which replaces the directive), parsed as
//! BuildKit's `linter.ParseLintOptions` parses them: up to three `;`-separated options,
//! `skip=A,B` or `skip=all`, `error=BOOL` (Go's `strconv.ParseBool`), `experimental=...`
//! (accepted; kiln has no experimental rules).

use super::Rule;
use thiserror::Error;

/// The build arg that replaces the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What the directive or build arg asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rule names to skip, as written (an unknown name skips nothing).
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: a build with findings fails after printing them.
    pub error: bool,
}

/// A `check` value BuildKit refuses (the build fails, as in BuildKit).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckConfigError {
    #[error("invalid check option {}", crate::goformat::quote(.0))]
    InvalidOption(String),
    #[error(
        "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
        crate::goformat::quote(.option),
        crate::goformat::quote(.value)
    )]
    InvalidBool { option: String, value: String },
}

impl CheckConfig {
    /// Parses a `check` value (`skip=A,B;error=true`).
    pub fn parse(value: &str) -> Result<CheckConfig, CheckConfigError> {
        let mut config = CheckConfig::default();
        let value = value.trim();
        if value.is_empty() {
            return Ok(config);
        }
        // Go's SplitN(s, ";", 3): a third `;` stays inside the last option.
        for part in value.splitn(3, ';') {
            let Some((key, v)) = part.split_once('=') else {
                return Err(CheckConfigError::InvalidOption(part.to_string()));
            };
            match key.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        config.skip_all = true;
                    } else {
                        config.skip = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "experimental" => {}
                "error" => {
                    config.error =
                        parse_go_bool(v.trim()).ok_or_else(|| CheckConfigError::InvalidBool {
                            option: part.to_string(),
                            value: v.trim().to_string(),
                        })?;
                }
                other => return Err(CheckConfigError::InvalidOption(other.to_string())),
            }
        }
        Ok(config)
    }

    /// The configuration of a build: the build arg if given, else the directive's value.
    pub fn for_build(
        directive: Option<&str>,
        build_args: &[(String, String)],
    ) -> Result<CheckConfig, CheckConfigError> {
        let arg = build_args.iter().rev().find(|(k, _)| k == CHECK_BUILD_ARG);
        match (arg, directive) {
            (Some((_, v)), _) => CheckConfig::parse(v),
            (None, Some(d)) => CheckConfig::parse(d),
            (None, None) => Ok(CheckConfig::default()),
        }
    }

    /// Whether findings of `rule` are reported.
    pub fn enabled(&self, rule: Rule) -> bool {
        !self.skip_all && !self.skip.iter().any(|s| s == rule.name())
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_lists_all_and_error_are_read() {
        let c = CheckConfig::parse("skip=FromAsCasing, UndefinedVar ;error=true").unwrap();
        assert_eq!(c.skip, ["FromAsCasing", "UndefinedVar"]);
        assert!(c.error && !c.skip_all);
        assert!(!c.enabled(Rule::FromAsCasing));
        assert!(!c.enabled(Rule::UndefinedVar));
        assert!(c.enabled(Rule::StageNameCasing));
        let all = CheckConfig::parse("skip=all").unwrap();
        assert!(all.skip_all && !all.enabled(Rule::UndefinedVar));
        assert_eq!(CheckConfig::parse("  ").unwrap(), CheckConfig::default());
        assert!(CheckConfig::parse("error=1").unwrap().error);
        assert!(!CheckConfig::parse("error=false").unwrap().error);
    }

    #[test]
    fn bad_options_are_refused_in_buildkits_words() {
        assert_eq!(
            CheckConfig::parse("skip").unwrap_err().to_string(),
            "invalid check option \"skip\""
        );
        assert_eq!(
            CheckConfig::parse("warn=all").unwrap_err().to_string(),
            "invalid check option \"warn\""
        );
        assert_eq!(
            CheckConfig::parse("error=yes").unwrap_err().to_string(),
            "failed to parse check option \"error=yes\": strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }

    #[test]
    fn the_build_arg_replaces_the_directive() {
        let args = vec![(CHECK_BUILD_ARG.to_string(), "skip=all".to_string())];
        let c = CheckConfig::for_build(Some("error=true"), &args).unwrap();
        assert!(c.skip_all && !c.error);
        let c = CheckConfig::for_build(Some("error=true"), &[]).unwrap();
        assert!(c.error);
    }
}
