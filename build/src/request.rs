//! [`BuildRequest`]: everything a build is told, and the policies decided from it before
//! anything runs: the SOURCE_DATE_EPOCH every time is clamped to, the platforms it is for
//! (`--platform`, one or several; this machine's by default), and the registry options
//! every pull and push of the build shares.

use crate::cache_io::CacheSpec;
use crate::{BuildError, Dockerfile};
use kiln_executor::snapshot::Snapshotter;
use kiln_image::Compression;
use kiln_solver::{Entitlements, NetworkDefault, SecretSource, SshSource};
use std::path::PathBuf;

/// One build, as the command line asked for it (flag values already parsed).
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory.
    pub context: PathBuf,
    /// The checkout `context` is, when the context was a git URL (kept for the build).
    pub git_context: Option<std::sync::Arc<crate::git_context::GitContext>>,
    pub dockerfile: Dockerfile,
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub labels: Vec<(String, String)>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub compression: Compression,
    /// From [`source_date_epoch`]; `None` keeps real times.
    pub source_date_epoch: Option<i64>,
    pub network: NetworkDefault,
    pub entitlements: Entitlements,
    /// `None` picks one when a RUN first needs it.
    pub snapshotter: Option<Snapshotter>,
    pub secrets: Vec<(String, SecretSource)>,
    /// `--ssh`: agents by id for `RUN --mount=type=ssh`.
    pub ssh: Vec<(String, SshSource)>,
    pub explain_cache: bool,
    /// Limits of every RUN (memory, CPUs, processes).
    pub limits: kiln_executor::cgroup::Limits,
    /// `--cgroup-parent`: the cgroup (below the cgroup mount) RUN cgroups go under.
    pub cgroup_parent: Option<String>,
    /// What the command line adds to every RUN (`--add-host`, `--ulimit`,
    /// `--shm-size`).
    pub run_options: kiln_executor::sandbox::RunOptions,
    /// `--platform`: one platform or several, comma-separated ([`BuildRequest::target_platforms`]).
    pub platform: Option<String>,
    /// Pull every base image again, even when the store has it.
    pub pull: bool,
    pub insecure_registries: Vec<String>,
    pub cache_from: Vec<CacheSpec>,
    /// `--remote`: the REAPI farm eligible RUN steps run on.
    pub remote: Option<kiln_remote::Endpoint>,
    /// `--build-context NAME=VALUE`, in order, by the name contexts are looked up by.
    pub named_contexts: Vec<(String, crate::contexts::ContextSpec)>,
}

/// The epoch every time in the image is clamped to: `keep` keeps real times, else
/// SOURCE_DATE_EPOCH from the build args (the last one) or the environment, else 0.
pub fn source_date_epoch(
    keep: bool,
    build_args: &[(String, String)],
) -> Result<Option<i64>, BuildError> {
    if keep {
        return Ok(None);
    }
    let raw = build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|v| !v.is_empty());
    match raw {
        None => Ok(Some(0)),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            BuildError::Request(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
    }
}

impl BuildRequest {
    /// The platforms this build is for, in the order given: `--platform P1,P2,...`
    /// (`os/arch[/variant]` each; one listed twice counts once), else this machine's.
    /// Each is normalized as containerd does ([`kiln_parser::Platform::parse_normalized`]).
    pub fn target_platforms(&self) -> Result<Vec<kiln_parser::Platform>, BuildError> {
        let host = kiln_parser::lower::host_platform();
        let Some(list) = &self.platform else {
            return Ok(vec![host]);
        };
        let mut platforms: Vec<kiln_parser::Platform> = Vec::new();
        for p in list.split(',').map(str::trim) {
            let platform = kiln_parser::Platform::parse_normalized(p)
                .map_err(|e| BuildError::Request(format!("--platform {list}: {e}")))?;
            if !platforms.contains(&platform) {
                platforms.push(platform);
            }
        }
        Ok(platforms)
    }

    /// The one platform of a build that can have only one (`--verify-reproducible`,
    /// `--check`): [`BuildRequest::target_platforms`], which must name one; `what` says
    /// which mode asks.
    pub fn target_platform(&self, what: &str) -> Result<kiln_parser::Platform, BuildError> {
        let mut platforms = self.target_platforms()?;
        if platforms.len() > 1 {
            return Err(BuildError::Request(format!(
                "--platform {}: {what} takes one platform at a time: run it once per platform",
                self.platform.as_deref().unwrap_or_default()
            )));
        }
        Ok(platforms.remove(0))
    }

    /// The registry options of this build's pulls and pushes: its insecure registries and
    /// the platform a base is pulled for (none for pushes and caches, which name no
    /// platform).
    pub fn registry_options(
        &self,
        platform: Option<&kiln_parser::Platform>,
    ) -> kiln_registry::RegistryOptions {
        kiln_registry::RegistryOptions {
            insecure_registries: self.insecure_registries.clone(),
            platform: platform.map(ToString::to_string),
            ..kiln_registry::RegistryOptions::default()
        }
    }

    /// Every `FROM --platform=` of the graph names a platform, before anything runs (an
    /// error naming the line when one does not). Each stage is then built for its own
    /// platform ([`kiln_solver::stage_platform`]): a `FROM --platform=$BUILDPLATFORM`
    /// stage runs natively, once for every target platform that reads it, as in BuildKit.
    pub fn check_stage_platforms(&self, graph: &kiln_parser::BuildGraph) -> Result<(), BuildError> {
        for stage in &graph.stages {
            if let Some(written) = &stage.platform {
                kiln_parser::Platform::parse(written).map_err(|e| {
                    BuildError::Dockerfile(format!(
                        "{}:{}: FROM --platform: {e}",
                        self.dockerfile.display, stage.span.line
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Fails, before anything runs, when a stage has a RUN this machine cannot execute for
    /// the stage's platform (no emulator registered for it), naming what to install.
    pub fn check_execution(&self, graph: &kiln_parser::BuildGraph) -> Result<(), BuildError> {
        let mut checked = Vec::new();
        for stage in &graph.stages {
            let runs = stage
                .steps
                .iter()
                .any(|step| matches!(step.op, kiln_parser::Op::Run(_)));
            let platform = kiln_solver::stage_platform(graph, stage);
            if runs && !checked.contains(&platform) {
                kiln_executor::binfmt::execution(&platform)
                    .map_err(|e| BuildError::Request(e.to_string()))?;
                checked.push(platform);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_build_arg_sets_the_epoch_and_keep_keeps_real_times() {
        let args = vec![
            ("SOURCE_DATE_EPOCH".to_string(), "5".to_string()),
            ("SOURCE_DATE_EPOCH".to_string(), " 7 ".to_string()),
        ];
        assert_eq!(source_date_epoch(false, &args).unwrap(), Some(7));
        assert_eq!(source_date_epoch(true, &args).unwrap(), None);
        let bad = vec![("SOURCE_DATE_EPOCH".to_string(), "soon".to_string())];
        assert_eq!(
            source_date_epoch(false, &bad).unwrap_err().to_string(),
            "SOURCE_DATE_EPOCH=\"soon\" is not a number of seconds"
        );
    }
}
