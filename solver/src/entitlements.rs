//! Entitlements: what the command line lets a Dockerfile ask for.
//!
//! A Dockerfile is often someone else's (a pull request, a third-party project), so the
//! person running `kiln build` bounds it, as in BuildKit: `RUN --network=host` needs
//! `--allow network.host` and `RUN --security=insecure` needs `--allow security.insecure`.
//! Every RUN of the graph is checked before anything runs or is looked up in the cache, so
//! a refused build does no work and tags nothing. An entitled insecure RUN runs with every
//! capability and no seccomp filter, still in the build's user namespace
//! (`kiln_executor::sandbox::RunSpec::insecure`).
//!
//! `--network none` on the command line wins over the Dockerfile: with it, every RUN runs
//! without a network, even a `RUN --network=host` that `--allow network.host` let through
//! (the entitlement says what a Dockerfile may ask for, `--network none` what the build
//! gets). BuildKit would give that RUN the host network; kiln's rule makes `--network none`
//! a guarantee that holds whatever the Dockerfile says.

use crate::error::{SolveError, StepError};
use kiln_parser::{BuildGraph, NetworkMode, Op, SecurityMode};

/// Network for RUN steps that do not pick one (`kiln build --network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkDefault {
    Host,
    None,
}

/// One `--allow` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `network.host`: `RUN --network=host`.
    NetworkHost,
    /// `security.insecure`: `RUN --security=insecure`.
    SecurityInsecure,
}

impl Entitlement {
    /// The name as written on the command line and in errors (BuildKit's names).
    pub fn name(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }
}

/// An `--allow` value that names no entitlement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entitlement {0:?} (known: network.host, security.insecure)")]
pub struct UnknownEntitlement(pub String);

impl std::str::FromStr for Entitlement {
    type Err = UnknownEntitlement;

    fn from_str(s: &str) -> Result<Entitlement, UnknownEntitlement> {
        match s {
            "network.host" => Ok(Entitlement::NetworkHost),
            "security.insecure" => Ok(Entitlement::SecurityInsecure),
            other => Err(UnknownEntitlement(other.to_string())),
        }
    }
}

/// The entitlements a build was given (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entitlements {
    pub network_host: bool,
    pub security_insecure: bool,
}

impl Entitlements {
    pub fn allow(&mut self, entitlement: Entitlement) {
        match entitlement {
            Entitlement::NetworkHost => self.network_host = true,
            Entitlement::SecurityInsecure => self.security_insecure = true,
        }
    }

    fn allows(&self, entitlement: Entitlement) -> bool {
        match entitlement {
            Entitlement::NetworkHost => self.network_host,
            Entitlement::SecurityInsecure => self.security_insecure,
        }
    }
}

/// Refuses the first RUN of `graph` that asks for more than `allowed`, naming its line.
pub fn check(graph: &BuildGraph, allowed: &Entitlements) -> Result<(), SolveError> {
    for step in graph.stages.iter().flat_map(|s| &s.steps) {
        let Op::Run(run) = &step.op else { continue };
        let wants = [
            (run.network == NetworkMode::Host).then_some(Entitlement::NetworkHost),
            (run.security == SecurityMode::Insecure).then_some(Entitlement::SecurityInsecure),
        ];
        for entitlement in wants.into_iter().flatten() {
            if !allowed.allows(entitlement) {
                return Err(SolveError::at(
                    step.span,
                    &step.source,
                    StepError::NotEntitled(entitlement.name()),
                ));
            }
        }
    }
    Ok(())
}

/// The network a RUN gets: `--network none` on the command line always wins, then the
/// RUN's own `--network`, then the command line's default. Used for both the cache key and
/// the sandbox, so a step is keyed by the network it really ran with.
pub fn effective_network(run: NetworkMode, command_line: NetworkDefault) -> NetworkMode {
    match (command_line, run) {
        (NetworkDefault::None, _) => NetworkMode::None,
        (NetworkDefault::Host, NetworkMode::Default) => NetworkMode::Host,
        (NetworkDefault::Host, chosen) => chosen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_lines_none_wins_and_default_follows_it() {
        use NetworkMode::*;
        for run in [Default, None, Host] {
            assert_eq!(effective_network(run, NetworkDefault::None), None);
        }
        assert_eq!(effective_network(Default, NetworkDefault::Host), Host);
        assert_eq!(effective_network(Host, NetworkDefault::Host), Host);
        assert_eq!(effective_network(None, NetworkDefault::Host), None);
    }

    #[test]
    fn entitlement_names_round_trip() {
        for e in [Entitlement::NetworkHost, Entitlement::SecurityInsecure] {
            assert_eq!(e.name().parse::<Entitlement>(), Ok(e));
        }
        assert!("network.none".parse::<Entitlement>().is_err());
    }
}
