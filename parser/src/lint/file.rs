//! The checks BuildKit runs while parsing, over the whole file whatever the target:
//! empty continuation lines, MAINTAINER, the casing of stage names, of `AS` and of
//! instruction keywords, and repeated or reserved stage names.

use super::{Finding, Rule};
use crate::instructions::Dockerfile;
use crate::syntax::Node;

/// Stage names BuildKit reserves (`context` for named contexts, `scratch`).
const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// The file-level findings of `df`, in the order BuildKit reports them.
pub fn check_file(df: &Dockerfile) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in &df.ast.warnings {
        out.push(Finding::new(
            Rule::NoEmptyContinuation,
            w.line,
            "Empty continuation line",
        ));
    }
    for node in &df.ast.nodes {
        parse_level(node, &mut out);
    }
    stage_names(df, &mut out);
    instruction_casing(df, &mut out);
    out
}

/// MaintainerDeprecated, StageNameCasing and FromAsCasing: what BuildKit's
/// `ParseInstructionWithLinter` says of one node.
fn parse_level(node: &Node, out: &mut Vec<Finding>) {
    let line = node.span.line;
    match node.name().as_str() {
        "maintainer" => out.push(Finding::new(
            Rule::MaintainerDeprecated,
            line,
            "Maintainer instruction is deprecated in favor of using label",
        )),
        "from" if node.args.len() == 3 => {
            let name = &node.args[2];
            if *name != name.to_lowercase() {
                out.push(Finding::new(
                    Rule::StageNameCasing,
                    line,
                    format!("Stage name '{name}' should be lowercase"),
                ));
            }
            if !from_case_matches_as(&node.keyword, &node.args[1]) {
                out.push(Finding::new(
                    Rule::FromAsCasing,
                    line,
                    format!(
                        "'{}' and '{}' keywords' casing do not match",
                        node.args[1], node.keyword
                    ),
                ));
            }
        }
        _ => {}
    }
}

/// A mixed-case `From` is ConsistentInstructionCasing's business, not this rule's.
fn from_case_matches_as(from: &str, as_word: &str) -> bool {
    if from == from.to_lowercase() {
        as_word == as_word.to_lowercase()
    } else if from == from.to_uppercase() {
        as_word == as_word.to_uppercase()
    } else {
        true
    }
}

/// ReservedStageName and DuplicateStageName (names are lower-cased when typed).
fn stage_names(df: &Dockerfile, out: &mut Vec<Finding>) {
    let mut seen: Vec<&str> = Vec::new();
    for stage in &df.stages {
        let Some(name) = stage.name.as_deref() else {
            continue;
        };
        if RESERVED_STAGE_NAMES.contains(&name) {
            out.push(Finding::new(
                Rule::ReservedStageName,
                stage.span.line,
                format!(
                    "Stage name should not use the same name as reserved stage {}",
                    crate::goformat::quote(name)
                ),
            ));
        }
        if seen.contains(&name) {
            out.push(Finding::new(
                Rule::DuplicateStageName,
                stage.span.line,
                format!(
                    "Duplicate stage name {}, stage names should be unique",
                    crate::goformat::quote(name)
                ),
            ));
        }
        seen.push(name);
    }
}

fn self_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

/// ConsistentInstructionCasing: keywords of the stages (the ARGs before the first FROM
/// are not counted) against the majority casing; a tie counts as upper case.
fn instruction_casing(df: &Dockerfile, out: &mut Vec<Finding>) {
    let first_from = df.ast.nodes.iter().position(|n| n.name() == "from");
    let Some(first) = first_from else { return };
    let nodes = &df.ast.nodes[first..];
    let (mut lower, mut upper) = (0usize, 0usize);
    for n in nodes {
        if self_consistent(&n.keyword) {
            if n.keyword == n.keyword.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for n in nodes {
        let k = &n.keyword;
        let correct = if majority_lower && *k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.push(Finding::new(
            Rule::ConsistentInstructionCasing,
            n.span.line,
            format!("Command '{k}' should match the case of the command majority ({correct})"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(src: &str) -> Vec<String> {
        let df = crate::parse(src).unwrap();
        check_file(&df).iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn from_as_casing() {
        assert_eq!(
            findings("FROM scratch as base\n"),
            ["FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"]
        );
        assert_eq!(
            findings("from scratch AS base\n"),
            ["FromAsCasing: 'AS' and 'from' keywords' casing do not match (line 1)"]
        );
        assert!(findings("FROM scratch AS base\n").is_empty());
        assert!(findings("from scratch as base\n").is_empty());
    }

    #[test]
    fn stage_name_casing() {
        assert_eq!(
            findings("FROM scratch AS Base\n"),
            ["StageNameCasing: Stage name 'Base' should be lowercase (line 1)"]
        );
        assert!(findings("FROM scratch AS base\n").is_empty());
    }

    #[test]
    fn maintainer_deprecated() {
        assert_eq!(
            findings("FROM scratch\nMAINTAINER me\n"),
            [
                "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"
            ]
        );
        assert!(findings("FROM scratch\nLABEL org.opencontainers.image.authors=me\n").is_empty());
    }

    #[test]
    fn duplicate_and_reserved_stage_names() {
        assert_eq!(
            findings("FROM scratch AS a\nFROM scratch AS A\n"),
            [
                "StageNameCasing: Stage name 'A' should be lowercase (line 2)",
                "DuplicateStageName: Duplicate stage name \"a\", stage names should be unique (line 2)"
            ]
        );
        assert_eq!(
            findings("FROM busybox AS scratch\nFROM busybox AS context\n"),
            [
                "ReservedStageName: Stage name should not use the same name as reserved stage \"scratch\" (line 1)",
                "ReservedStageName: Stage name should not use the same name as reserved stage \"context\" (line 2)"
            ]
        );
        assert!(findings("FROM scratch AS a\nFROM scratch AS b\n").is_empty());
    }

    #[test]
    fn consistent_instruction_casing() {
        assert_eq!(
            findings("FROM scratch\nCOPY a b\nrun x\n"),
            [
                "ConsistentInstructionCasing: Command 'run' should match the case of the command majority (uppercase) (line 3)"
            ]
        );
        assert_eq!(
            findings("from scratch\ncopy a b\nRun x\n"),
            [
                "ConsistentInstructionCasing: Command 'Run' should match the case of the command majority (lowercase) (line 3)"
            ]
        );
        // ARGs before the first FROM are not counted or checked.
        assert!(findings("arg A=1\nFROM scratch\nCOPY a b\n").is_empty());
        assert!(findings("FROM scratch\nCOPY a b\n").is_empty());
    }

    #[test]
    fn empty_continuation_lines() {
        assert_eq!(
            findings("FROM scratch\nCOPY a \\\n\n  b\n"),
            ["NoEmptyContinuation: Empty continuation line (line 4)"]
        );
        assert!(findings("FROM scratch\nCOPY a \\\n  b\n").is_empty());
    }
}
