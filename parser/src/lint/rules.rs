//! The rule table: every build check kiln runs, by BuildKit's name, with the one-line
//! description BuildKit's `linter/ruleset.go` gives it (its documentation links left out).

use std::fmt;

/// A build check, named as BuildKit names it (the names `# check=skip=` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    StageNameCasing,
    FromAsCasing,
    NoEmptyContinuation,
    ConsistentInstructionCasing,
    DuplicateStageName,
    ReservedStageName,
    JSONArgsRecommended,
    MaintainerDeprecated,
    UndefinedArgInFrom,
    WorkdirRelativePath,
    UndefinedVar,
    MultipleInstructionsDisallowed,
    LegacyKeyValueFormat,
    InvalidBaseImagePlatform,
    RedundantTargetPlatform,
    SecretsUsedInArgOrEnv,
    InvalidDefaultArgInFrom,
    FromPlatformFlagConstDisallowed,
    CopyIgnoredFile,
    ExposeProtoCasing,
    ExposeInvalidFormat,
}

/// Every rule with its description, in BuildKit's order.
pub const RULES: &[(Rule, &str)] = &[
    (Rule::StageNameCasing, "Stage names should be lowercase"),
    (
        Rule::FromAsCasing,
        "The 'as' keyword should match the case of the 'from' keyword",
    ),
    (
        Rule::NoEmptyContinuation,
        "Empty continuation lines will become errors in a future release",
    ),
    (
        Rule::ConsistentInstructionCasing,
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
    ),
    (Rule::DuplicateStageName, "Stage names should be unique"),
    (
        Rule::ReservedStageName,
        "Reserved words should not be used as stage names",
    ),
    (
        Rule::JSONArgsRecommended,
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    ),
    (
        Rule::MaintainerDeprecated,
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    ),
    (
        Rule::UndefinedArgInFrom,
        "FROM command must use declared ARGs",
    ),
    (
        Rule::WorkdirRelativePath,
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    ),
    (
        Rule::UndefinedVar,
        "Variables should be defined before their use",
    ),
    (
        Rule::MultipleInstructionsDisallowed,
        "Multiple instructions of the same type should not be used in the same stage",
    ),
    (
        Rule::LegacyKeyValueFormat,
        "Legacy key/value format with whitespace separator should not be used",
    ),
    (
        Rule::InvalidBaseImagePlatform,
        "Base image platform does not match expected target platform",
    ),
    (
        Rule::RedundantTargetPlatform,
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    ),
    (
        Rule::SecretsUsedInArgOrEnv,
        "Sensitive data should not be used in the ARG or ENV commands",
    ),
    (
        Rule::InvalidDefaultArgInFrom,
        "Default value for global ARG results in an empty or invalid base image name",
    ),
    (
        Rule::FromPlatformFlagConstDisallowed,
        "FROM --platform flag should not use a constant value",
    ),
    (
        Rule::CopyIgnoredFile,
        "Attempting to Copy file that is excluded by .dockerignore",
    ),
    (
        Rule::ExposeProtoCasing,
        "Protocol in EXPOSE instruction should be lowercase",
    ),
    (
        Rule::ExposeInvalidFormat,
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    ),
];

impl Rule {
    /// BuildKit's name of the rule.
    pub fn name(self) -> &'static str {
        match self {
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::ReservedStageName => "ReservedStageName",
            Rule::JSONArgsRecommended => "JSONArgsRecommended",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::UndefinedArgInFrom => "UndefinedArgInFrom",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::UndefinedVar => "UndefinedVar",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
            Rule::InvalidBaseImagePlatform => "InvalidBaseImagePlatform",
            Rule::RedundantTargetPlatform => "RedundantTargetPlatform",
            Rule::SecretsUsedInArgOrEnv => "SecretsUsedInArgOrEnv",
            Rule::InvalidDefaultArgInFrom => "InvalidDefaultArgInFrom",
            Rule::FromPlatformFlagConstDisallowed => "FromPlatformFlagConstDisallowed",
            Rule::CopyIgnoredFile => "CopyIgnoredFile",
            Rule::ExposeProtoCasing => "ExposeProtoCasing",
            Rule::ExposeInvalidFormat => "ExposeInvalidFormat",
        }
    }

    /// The one-line description of what the rule asks for.
    pub fn description(self) -> &'static str {
        RULES
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("", |(_, d)| d)
    }

    /// The rule of that name (exact, as BuildKit compares skip lists).
    pub fn from_name(name: &str) -> Option<Rule> {
        RULES.iter().map(|(r, _)| *r).find(|r| r.name() == name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_description_and_round_trips_by_name() {
        for (rule, description) in RULES {
            assert!(!description.is_empty());
            assert_eq!(Rule::from_name(rule.name()), Some(*rule));
            assert!(!description.contains("http"), "{rule}: link-free");
        }
        assert_eq!(RULES.len(), 21);
        assert_eq!(Rule::from_name("fromascasing"), None);
    }
}
