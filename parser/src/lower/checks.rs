//! Where the lowering runs the build checks ([`crate::lint`]): the FROM lines of every
//! stage, expanded with the global ARGs and with only their defaults, and each
//! instruction of a lowered stage once it is lowered. The checks read the state the
//! lowering holds; nothing they find changes the graph.

use super::Ctx;
use super::steps::StageLowering;
use crate::expand::{Env, EnvList};
use crate::graph::{BaseImage, Platform};
use crate::instructions::{Command, Instruction};
use crate::lint::vars::{Lookups, Recorder};
use crate::lint::{Finding, Rule, dispatch, from};

impl Ctx<'_> {
    /// InvalidDefaultArgInFrom: each base name expanded with the global ARGs' defaults
    /// only, as if no `--build-arg` were given. BuildKit drops the whole check when that
    /// expansion fails (the build fails on it later anyway). `automatic` holds the
    /// automatic platform args.
    pub(super) fn check_default_bases(&mut self, automatic: &EnvList) {
        let mut defaults = automatic.clone();
        for ins in &self.df.meta_args {
            let Command::Arg(decls) = &ins.command else {
                continue;
            };
            for d in decls {
                let Some(v) = &d.value else { continue };
                match self.lexer.process_word(v, &defaults) {
                    Ok(v) => defaults.set(&d.key, &v),
                    Err(_) => return,
                }
            }
        }
        let mut found = Vec::new();
        for st in &self.df.stages {
            let Ok(base) = self.lexer.process_word(&st.base, &defaults) else {
                return;
            };
            found.extend(from::invalid_default_base(
                &st.base,
                Some(&base),
                st.span.line,
            ));
        }
        self.findings.extend(found);
    }

    /// UndefinedArgInFrom, RedundantTargetPlatform and FromPlatformFlagConstDisallowed
    /// for stage `i`, whose base name and `--platform` looked up `base` and `platform`.
    pub(super) fn check_from(
        &mut self,
        i: usize,
        base: &Lookups,
        platform: Option<(&Lookups, &str)>,
    ) {
        let st = &self.df.stages[i];
        let line = st.span.line;
        let mut declared: Vec<&str> = self
            .global
            .entries()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        for ins in &self.df.meta_args {
            if let Command::Arg(decls) = &ins.command {
                declared.extend(decls.iter().map(|d| d.key.as_str()));
            }
        }
        let mut found = from::undefined_args(base, &declared, line);
        if let (Some((lookups, result)), Some(written)) = (platform, st.platform.as_deref()) {
            found.extend(from::undefined_args(lookups, &declared, line));
            found.extend(from::redundant_target_platform(
                written,
                lookups,
                result,
                self.global.get("TARGETPLATFORM"),
                line,
            ));
            found.extend(from::const_platform(
                st.name.as_deref(),
                lookups,
                result,
                line,
            ));
        }
        self.findings.extend(found);
    }

    /// InvalidBaseImagePlatform: the base image of stage `i`, as its config says, is not
    /// for the platform the stage is built for (its `--platform`, else the build's).
    pub(super) fn check_base_platform(&mut self, i: usize, name: &str, img: &BaseImage) {
        let Some(actual) = &img.platform else { return };
        let expected = self.platforms[i]
            .as_deref()
            .and_then(|p| Platform::parse(p).ok())
            .or_else(|| self.opts.platform.clone())
            .unwrap_or_else(super::host_platform);
        if expected.os != actual.os || expected.architecture != actual.architecture {
            self.findings.push(Finding::new(
                Rule::InvalidBaseImagePlatform,
                self.df.stages[i].span.line,
                format!(
                    "Base image {name} was pulled with platform {}, expected {} for current build",
                    crate::goformat::quote(&actual.to_string()),
                    crate::goformat::quote(&expected.to_string())
                ),
            ));
        }
    }

    /// Expands a FROM word with the global ARGs, noting the variables looked up.
    pub(super) fn expand_global(
        &self,
        word: &str,
    ) -> (Result<String, crate::expand::ExpandError>, Lookups) {
        let recorder = Recorder::new(&self.global);
        let r = self.lexer.process_word(word, &recorder);
        (r, recorder.into_lookups())
    }
}

impl StageLowering<'_, '_> {
    /// The ARG names in scope (with or without a value): using one that is unset is not
    /// an undefined variable.
    pub(super) fn declared_args(&self) -> Vec<String> {
        self.state
            .build_args
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The checks of one lowered instruction; `declared` are the ARG names in scope
    /// before it.
    pub(super) fn check_instruction(&mut self, ins: &Instruction, declared: &[String]) {
        let line = ins.span.line;
        let keyword = ins.source.split_whitespace().next().unwrap_or_default();
        let lookups = self.lookups.take();
        let mut found = Vec::new();
        if !lookups.unmatched.is_empty() {
            let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
            let keys: Vec<&str> = self
                .state
                .env
                .entries()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect();
            found.extend(dispatch::undefined_vars(&lookups, &declared, &keys, line));
        }
        match &ins.command {
            Command::Env(kvs) => {
                if kvs.iter().any(|kv| kv.legacy) {
                    found.push(dispatch::legacy_key_value(keyword, line));
                }
                for kv in kvs {
                    found.extend(dispatch::secret_key("ENV", &kv.key, line));
                }
            }
            Command::Label(kvs) if kvs.iter().any(|kv| kv.legacy) => {
                found.push(dispatch::legacy_key_value(keyword, line));
            }
            Command::Arg(decls) => {
                for d in decls {
                    found.extend(dispatch::secret_key("ARG", &d.key, line));
                }
            }
            Command::Cmd(c) | Command::Entrypoint(c) => {
                found.extend(self.used_once.mark(keyword, line));
                if c.prepend_shell {
                    found.extend(dispatch::json_args(
                        keyword,
                        !self.state.shell.is_empty(),
                        line,
                    ));
                }
            }
            Command::Healthcheck(_) => found.extend(self.used_once.mark(keyword, line)),
            _ => {}
        }
        self.ctx.findings.extend(found);
    }
}
