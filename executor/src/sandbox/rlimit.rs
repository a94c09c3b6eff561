//! `--ulimit` in the sandbox: the RUN process sets its limits with setrlimit right before
//! it drops privileges and execs (as runc does), so nothing of kiln's own runs under them.
//!
//! Lowering a limit is always allowed; raising a hard limit needs CAP_SYS_RESOURCE in the
//! initial user namespace, which the RUN (always in a user namespace of the build's own)
//! never has. So a real-root helper raises the hard limits it is asked for before it
//! enters the sandbox's user namespace ([`raise_hard_limits`]), and limits are inherited
//! from there; rootless, a hard limit above the one kiln was started with cannot be had,
//! and the RUN fails saying so instead of running with less than asked.

use rustix::io::Errno;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use super::options::{UNLIMITED, Ulimit};
use super::step::StepError;

const STEP: &str = "ulimit";

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "core" => Resource::Core,
        "cpu" => Resource::Cpu,
        "data" => Resource::Data,
        "fsize" => Resource::Fsize,
        "locks" => Resource::Locks,
        "memlock" => Resource::Memlock,
        "msgqueue" => Resource::Msgqueue,
        "nice" => Resource::Nice,
        "nofile" => Resource::Nofile,
        "nproc" => Resource::Nproc,
        "rss" => Resource::Rss,
        "rtprio" => Resource::Rtprio,
        "rttime" => Resource::Rttime,
        "sigpending" => Resource::Sigpending,
        "stack" => Resource::Stack,
        _ => return None,
    })
}

fn limit(v: u64) -> Option<u64> {
    (v != UNLIMITED).then_some(v)
}

fn shown(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), |v| v.to_string())
}

fn unknown(u: &Ulimit) -> StepError {
    StepError {
        step: STEP,
        message: format!("--ulimit {u}: unknown limit {:?}", u.name),
    }
}

/// Whether `want` is above `have` (None: unlimited).
fn above(want: Option<u64>, have: Option<u64>) -> bool {
    match (want, have) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(w), Some(h)) => w > h,
    }
}

/// In the helper of a real-root kiln, before it enters the sandbox's user namespace: the
/// hard limits asked for above the current ones are raised (the soft limits stay, the RUN
/// process sets them).
pub(super) fn raise_hard_limits(ulimits: &[Ulimit]) -> Result<(), StepError> {
    for u in ulimits {
        let r = resource(&u.name).ok_or_else(|| unknown(u))?;
        let now = getrlimit(r);
        let hard = limit(u.hard);
        if above(hard, now.maximum) {
            setrlimit(
                r,
                Rlimit {
                    current: now.current,
                    maximum: hard,
                },
            )
            .map_err(|e| StepError {
                step: STEP,
                message: format!(
                    "--ulimit {u}: cannot raise the hard limit from {} to {}: {e}",
                    shown(now.maximum),
                    shown(hard)
                ),
            })?;
        }
    }
    Ok(())
}

/// In the RUN process: every limit set to what was asked.
pub(super) fn apply(ulimits: &[Ulimit]) -> Result<(), StepError> {
    for u in ulimits {
        let r = resource(&u.name).ok_or_else(|| unknown(u))?;
        let now = getrlimit(r);
        let want = Rlimit {
            current: limit(u.soft),
            maximum: limit(u.hard),
        };
        match setrlimit(r, want) {
            Ok(()) => {}
            Err(Errno::PERM) if above(limit(u.hard), now.maximum) => {
                return Err(StepError {
                    step: STEP,
                    message: format!(
                        "--ulimit {u}: the hard limit is above the one kiln was started with \
                         ({}); only real root can raise a hard limit (lower it, or raise the \
                         user's own hard limit, e.g. in /etc/security/limits.conf)",
                        shown(now.maximum)
                    ),
                });
            }
            Err(e) => {
                return Err(StepError {
                    step: STEP,
                    message: format!("--ulimit {u}: setrlimit: {e}"),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::options::ULIMIT_NAMES;

    #[test]
    fn every_name_docker_takes_is_a_resource() {
        for name in ULIMIT_NAMES {
            assert!(resource(name).is_some(), "{name}");
        }
        assert!(resource("as").is_none());
    }

    #[test]
    fn unlimited_is_above_every_number() {
        assert!(above(None, Some(5)));
        assert!(!above(Some(5), None));
        assert!(above(Some(6), Some(5)));
        assert!(!above(Some(5), Some(5)));
    }
}
