//! The build checks of a build ([`kiln_parser::lint`]): which `.dockerignore` judges
//! CopyIgnoredFile, and what a build does with the findings: tell each as a
//! [`crate::Notice::Check`], and fail after telling them when the Dockerfile says
//! `# check=error=true`.

use kiln_context::ignore::IgnoreMatcher;
use kiln_parser::lint::dispatch::IgnoreCheck;
use kiln_parser::lint::{CheckConfig, Finding};
use std::path::Path;

/// The context's `.dockerignore` as BuildKit's CopyIgnoredFile reads it.
pub struct DockerIgnore(IgnoreMatcher);

impl DockerIgnore {
    /// The ignore file of a build, `None` when there is none or it does not load (the
    /// build reports an unreadable one itself, when it reads the context).
    pub fn load(context: &Path, dockerfile: &Path) -> Option<DockerIgnore> {
        let m = kiln_context::ignore::load_for(context, dockerfile).ok()?;
        (!m.is_empty()).then_some(DockerIgnore(m))
    }
}

impl IgnoreCheck for DockerIgnore {
    fn ignored(&self, path: &str) -> bool {
        // BuildKit does not judge a file with `!` exceptions: a directory may be ignored
        // and a file in it brought back, which it cannot tell without the files.
        if self.0.has_exclusions() {
            return false;
        }
        if (path == "." || path == "/") && !self.0.ignores_every_root_entry() {
            return false;
        }
        self.0.matches_or_parent_matches(path)
    }
}

/// What the checks of one Dockerfile found, after the `check` directive's skips.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    pub config: CheckConfig,
}

impl CheckReport {
    /// BuildKit's error for a build with findings under `error=true`, `None` otherwise.
    pub fn violation(&self) -> Option<String> {
        if !self.config.error || self.findings.is_empty() {
            return None;
        }
        let mut rules: Vec<&str> = self.findings.iter().map(|f| f.rule.name()).collect();
        rules.sort_unstable();
        rules.dedup();
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }

    /// The line that ends `kiln build --check`'s findings: how many there were.
    pub fn summary(&self) -> String {
        match self.findings.len() {
            0 => "check complete, no warnings found".to_string(),
            1 => "check complete, 1 warning has been found".to_string(),
            n => format!("check complete, {n} warnings have been found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_parser::lint::Rule;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore(IgnoreMatcher::parse(text).unwrap())
    }

    #[test]
    fn ignore_judges_like_buildkit() {
        let i = ignore("secret\n*.log\n");
        assert!(i.ignored("secret"));
        assert!(i.ignored("secret/a"));
        assert!(i.ignored("x.log"));
        assert!(!i.ignored("src"));
        assert!(!i.ignored("."));
        assert!(ignore("*\n").ignored("."));
        assert!(!ignore("secret\n!secret/keep\n").ignored("secret/a"));
    }

    #[test]
    fn error_true_names_the_rules_once() {
        let f = |r| Finding::new(r, 1, "m");
        let mut report = CheckReport {
            findings: vec![
                f(Rule::UndefinedVar),
                f(Rule::FromAsCasing),
                f(Rule::UndefinedVar),
            ],
            config: CheckConfig::default(),
        };
        assert_eq!(report.violation(), None);
        report.config.error = true;
        assert_eq!(
            report.violation().unwrap(),
            "lint violation found for rules: FromAsCasing, UndefinedVar"
        );
    }

    #[test]
    fn the_summary_counts_the_findings() {
        let mut report = CheckReport::default();
        assert_eq!(report.summary(), "check complete, no warnings found");
        report
            .findings
            .push(Finding::new(Rule::UndefinedVar, 2, "m"));
        assert_eq!(report.summary(), "check complete, 1 warning has been found");
        report
            .findings
            .push(Finding::new(Rule::FromAsCasing, 1, "m"));
        assert_eq!(
            report.summary(),
            "check complete, 2 warnings have been found"
        );
    }
}
