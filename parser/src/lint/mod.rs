//! Build checks: BuildKit's lint rules (`frontend/dockerfile/linter`), run on every build.
//!
//! A check never changes what is built: it reads the Dockerfile and the lowering's state
//! and gives [`Finding`]s (rule, line, message in BuildKit's words), which the caller
//! shows as warnings, filters by the `# check=` directive ([`CheckConfig`]) and, with
//! `error=true`, turns into a failed build.
//!
//! Split by when BuildKit runs a rule: [`file`] over the parsed file whatever the target
//! (casing, stage names, MAINTAINER, empty continuation lines); [`from`] while FROM lines
//! are expanded with the global ARGs (every stage); [`dispatch`] while a stage's
//! instructions are lowered (only the stages a build needs, every stage for `--check`),
//! with [`vars`] recording which variables an expansion found unset. [`rules`] is the table
//! of names and descriptions and [`config`] the directive.

mod config;
pub mod dispatch;
mod file;
pub mod from;
mod rules;
pub mod vars;

pub use config::{CHECK_BUILD_ARG, CheckConfig, CheckConfigError};
pub use file::check_file;
pub use rules::{RULES, Rule};

use std::fmt;

/// One finding: a rule broken at a line of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// 1-based line BuildKit reports it at.
    pub line: usize,
    /// BuildKit's message for it, without the rule name or line.
    pub message: String,
}

impl Finding {
    pub fn new(rule: Rule, line: usize, message: impl Into<String>) -> Finding {
        Finding {
            rule,
            line,
            message: message.into(),
        }
    }
}

/// BuildKit's short form (`linter.LintFormatShort`): `Rule: message (line N)`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)?;
        if self.line > 0 {
            write!(f, " (line {})", self.line)?;
        }
        Ok(())
    }
}

/// The findings `config` lets through, in line order (stable for one line), each
/// reported once.
pub fn select(mut findings: Vec<Finding>, config: &CheckConfig) -> Vec<Finding> {
    findings.retain(|f| config.enabled(f.rule));
    findings.sort_by_key(|f| f.line);
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// BuildKit's `suggest.Search`: the option closest to `value` by edit distance, when
/// fewer than three edits away and not equal to it.
pub(crate) fn search<'a>(
    value: &str,
    options: &[&'a str],
    case_sensitive: bool,
) -> Option<&'a str> {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let v: Vec<char> = norm(value).chars().collect();
    let mut best: Option<&str> = None;
    let mut min = 3usize;
    for &o in options {
        let on: Vec<char> = norm(o).chars().collect();
        if on == v {
            return None;
        }
        let d = distance(&v, &on);
        if d < min {
            best = Some(o);
            min = d;
        }
    }
    best
}

/// Levenshtein distance, iterative with two rows.
fn distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_print_in_buildkits_short_form() {
        let f = Finding::new(
            Rule::FromAsCasing,
            1,
            "'as' and 'FROM' keywords' casing do not match",
        );
        assert_eq!(
            f.to_string(),
            "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"
        );
    }

    #[test]
    fn select_filters_sorts_and_dedups() {
        let a = Finding::new(Rule::UndefinedVar, 3, "x");
        let b = Finding::new(Rule::FromAsCasing, 1, "y");
        let all = vec![a.clone(), b.clone(), a.clone()];
        assert_eq!(
            select(all.clone(), &CheckConfig::default()),
            [b.clone(), a.clone()]
        );
        let skip = CheckConfig::parse("skip=UndefinedVar").unwrap();
        assert_eq!(select(all.clone(), &skip), [b]);
        let none = CheckConfig::parse("skip=all").unwrap();
        assert!(select(all, &none).is_empty());
    }

    #[test]
    fn search_suggests_close_names_only() {
        assert_eq!(search("FOOO", &["FOO", "BAR"], true), Some("FOO"));
        assert_eq!(search("FOO", &["FOO", "FOOO"], true), None);
        assert_eq!(search("ABCDEFG", &["XYZ"], true), None);
    }
}
