//! [`Dockerfile`]: the build's Dockerfile as read, from the context, a path, or stdin,
//! and lowered with its build checks told.

use crate::checks::CheckReport;
use crate::{BuildError, Notice};
use kiln_parser::CheckOptions;
use kiln_parser::lint::dispatch::IgnoreCheck;
use kiln_parser::lint::{CHECK_BUILD_ARG, CheckConfig};
use std::path::{Path, PathBuf};

/// A Dockerfile as read: where from (for messages and the ignore file) and its text.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Its path (`CONTEXT/Dockerfile` for stdin): the ignore file is looked up beside it.
    pub path: PathBuf,
    /// Its name in messages.
    pub display: String,
    pub text: String,
}

impl Dockerfile {
    /// Checks the context directory and reads `file` (default `CONTEXT/Dockerfile`; `-`
    /// reads stdin), at most [`kiln_parser::MAX_DOCKERFILE_SIZE`] bytes.
    pub fn read_for_build(context: &Path, file: Option<&Path>) -> Result<Dockerfile, BuildError> {
        if !context.is_dir() {
            if std::fs::symlink_metadata(context).is_err() {
                return Err(BuildError::Request(format!(
                    "build context {}: the path does not exist",
                    context.display()
                )));
            }
            return Err(BuildError::Request(format!(
                "build context {}: not a directory",
                context.display()
            )));
        }
        Dockerfile::read(context, file)
    }

    /// Reads `file` (default `CONTEXT/Dockerfile`; `-` reads stdin).
    pub fn read(context: &Path, file: Option<&Path>) -> Result<Dockerfile, BuildError> {
        let not_utf8 = |what: String| BuildError::Request(what);
        match file {
            Some(p) if p == Path::new("-") => {
                let bytes = kiln_image::limits::read_capped(
                    std::io::stdin(),
                    kiln_parser::MAX_DOCKERFILE_SIZE,
                    "the Dockerfile from stdin",
                )
                .map_err(capped)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| not_utf8("the Dockerfile from stdin is not UTF-8 text".into()))?;
                Ok(Dockerfile {
                    path: context.join("Dockerfile"),
                    display: "Dockerfile".into(),
                    text,
                })
            }
            _ => {
                let path = file
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| default_dockerfile(context));
                // A Dockerfile inside the context is one of its files: a symlink there
                // resolves inside the context (a planted `Dockerfile -> /etc/shadow` must not
                // be read and echoed in a parse error). One outside it is the user's choice.
                let real =
                    kiln_context::resolve::resolve_context_path(context, &path).map_err(|e| {
                        BuildError::io(format!("finding the Dockerfile {}", path.display()))(
                            std::io::Error::other(e),
                        )
                    })?;
                let reading = || format!("reading the Dockerfile {}", path.display());
                let meta = std::fs::metadata(&real).map_err(BuildError::io(reading()))?;
                if !meta.is_file() {
                    return Err(BuildError::Request(format!(
                        "the Dockerfile {}: not a regular file",
                        path.display()
                    )));
                }
                let file = std::fs::File::open(&real).map_err(BuildError::io(reading()))?;
                let what = format!("the Dockerfile {}", path.display());
                let bytes =
                    kiln_image::limits::read_capped(file, kiln_parser::MAX_DOCKERFILE_SIZE, what)
                        .map_err(capped)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    not_utf8(format!(
                        "{}: the Dockerfile is not UTF-8 text",
                        path.display()
                    ))
                })?;
                let display = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                Ok(Dockerfile {
                    path,
                    display,
                    text,
                })
            }
        }
    }

    /// Parses and lowers this Dockerfile as `opts` say, with base images from `resolver`. What the
    /// build goes on with but the user should hear of goes to `warn`: a `# syntax=`
    /// frontend kiln does not run, as soon as the directives are read (so a file whose
    /// instructions then fail to parse has said which frontend it wanted), then what the
    /// build checks found ([`crate::checks`]), before a lowering error is returned too.
    /// With `# check=error=true`, findings fail the build once told.
    pub fn lower(
        &self,
        opts: kiln_parser::LowerOptions,
        resolver: &dyn kiln_parser::BaseResolver,
        ignore: Option<&dyn IgnoreCheck>,
        warn: &dyn Fn(Notice),
    ) -> Result<kiln_parser::BuildGraph, BuildError> {
        let check = CheckOptions {
            all_stages: false,
            ignore,
        };
        let (graph, report) = self.lower_checked(opts, resolver, check, warn)?;
        for finding in &report.findings {
            warn(Notice::Check {
                file: self.display.clone(),
                finding: finding.clone(),
            });
        }
        let graph = graph?;
        match report.violation() {
            Some(message) => Err(BuildError::Dockerfile(format!(
                "{}: {message}",
                self.display
            ))),
            None => Ok(graph),
        }
    }

    /// Runs the build checks only (`kiln build --check`): every stage is lowered, as
    /// BuildKit's lint request does, and nothing is built. The findings come back, after
    /// the `check` directive's skips, with the error that stopped the lowering, if any.
    pub fn check(
        &self,
        build_args: Vec<(String, String)>,
        target: Option<String>,
        platform: Option<kiln_parser::Platform>,
        resolver: &dyn kiln_parser::BaseResolver,
        ignore: Option<&dyn IgnoreCheck>,
        warn: &dyn Fn(Notice),
    ) -> Result<(CheckReport, Option<BuildError>), BuildError> {
        let check = CheckOptions {
            all_stages: true,
            ignore,
        };
        let opts = kiln_parser::LowerOptions {
            build_args,
            target,
            platform,
            ..Default::default()
        };
        let (graph, report) = self.lower_checked(opts, resolver, check, warn)?;
        Ok((report, graph.err()))
    }

    /// Parses, reads the `check` directive and lowers with the checks on. The outer error
    /// is one that leaves nothing to report (the file does not parse, the directive is
    /// invalid); the inner one a lowering error, which comes with what was found before it.
    #[allow(clippy::type_complexity)]
    fn lower_checked(
        &self,
        opts: kiln_parser::LowerOptions,
        resolver: &dyn kiln_parser::BaseResolver,
        check: CheckOptions<'_>,
        warn: &dyn Fn(Notice),
    ) -> Result<(Result<kiln_parser::BuildGraph, BuildError>, CheckReport), BuildError> {
        let parse_error = |e: kiln_parser::ParseError| {
            BuildError::Dockerfile(e.render(&self.display, &self.text))
        };
        let syntax = kiln_parser::parse_syntax(&self.text).map_err(parse_error)?;
        if let Some(warning) =
            kiln_parser::frontend::syntax_directive(&syntax).and_then(|d| d.warning(&self.display))
        {
            warn(Notice::Dockerfile(warning));
        }
        let directive = syntax.directives.iter().find(|d| d.name == "check");
        let config = CheckConfig::for_build(directive.map(|d| d.value.as_str()), &opts.build_args)
            .map_err(|e| match directive {
                Some(d) => BuildError::Dockerfile(format!("{}:{}: {e}", self.display, d.line)),
                None => BuildError::Request(format!("--build-arg {CHECK_BUILD_ARG}: {e}")),
            })?;
        let ast = kiln_parser::instructions::from_ast(syntax, &self.text).map_err(parse_error)?;
        let mut findings = kiln_parser::lint::check_file(&ast);
        let graph = match kiln_parser::lower_checked(&ast, &opts, resolver, check) {
            Ok((graph, found)) => {
                findings.extend(found);
                Ok(graph)
            }
            Err(e) => Err(BuildError::Dockerfile(e.render(&self.display, &self.text))),
        };
        let findings = kiln_parser::lint::select(findings, &config);
        Ok((graph, CheckReport { findings, config }))
    }
}

/// A capped read's error as it was (its message names the file and the limit).
fn capped(e: kiln_image::limits::CappedReadError) -> BuildError {
    BuildError::Request(e.to_string())
}

/// `CONTEXT/Dockerfile`, or `CONTEXT/dockerfile` when only that exists (docker's fallback).
fn default_dockerfile(context: &Path) -> PathBuf {
    let upper = context.join("Dockerfile");
    let lower = context.join("dockerfile");
    if std::fs::symlink_metadata(&upper).is_err() && std::fs::symlink_metadata(&lower).is_ok() {
        lower
    } else {
        upper
    }
}
