//! What the values of `kiln build`'s flags mean: `K=V` pairs (a bare `--build-arg K`
//! read from the environment), `--secret` specs, `--allow` entitlements, the limits of
//! every RUN and where their cgroups go, what the command line adds to every RUN
//! (`--add-host`, `--ulimit`, `--shm-size`) and `--timestamp`. The command line keeps the
//! flags themselves; the rules for their values live here beside the request they fill,
//! as `-o` and `--cache-to` specs do ([`crate::OutputSpec`],
//! [`crate::cache_io::CacheSpec`]). Errors name the flag, as the command line has always
//! printed them.

use crate::BuildError;
use kiln_executor::cgroup::Limits;
use kiln_executor::sandbox::{ExtraHost, ULIMIT_NAMES, UNLIMITED, Ulimit};
use kiln_solver::{Entitlement, Entitlements, SecretSource, SshSource};
use std::path::PathBuf;

/// `--build-arg` values: `K=V`; a bare `K` takes its value from the environment (skipped
/// when unset).
pub fn build_args(args: &[String]) -> Result<Vec<(String, String)>, BuildError> {
    let mut out = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            Some(_) => return Err(bad(format!("--build-arg {a:?}: expected KEY=VALUE"))),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.push((a.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

/// `--label K=V` values.
pub fn labels(labels: &[String]) -> Result<Vec<(String, String)>, BuildError> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(format!("--label {l:?}: expected KEY=VALUE"))),
        })
        .collect()
}

/// `--secret id=X,src=FILE` or `id=X,env=NAME`; without a source, the environment
/// variable named as the id (as buildx).
pub fn secret(spec: &str) -> Result<(String, SecretSource), BuildError> {
    let mut id = None;
    let mut source = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => source = Some(SecretSource::File(PathBuf::from(v))),
            Some(("env", v)) => source = Some(SecretSource::Env(v.to_string())),
            Some(("type", "file" | "env")) => {}
            _ => {
                return Err(bad(format!(
                    "--secret {spec:?}: expected id=ID,src=FILE or id=ID,env=NAME"
                )));
            }
        }
    }
    let id = id.ok_or_else(|| bad(format!("--secret {spec:?}: missing id=")))?;
    let source = source.unwrap_or_else(|| SecretSource::Env(id.clone()));
    Ok((id, source))
}

/// `--ssh ID[=SOCKET|KEYFILE[,KEYFILE...]]`, as buildx reads it: without paths, the agent
/// at `$SSH_AUTH_SOCK`; one path that is a socket, that agent; else private key files,
/// served by an agent kiln starts for the build.
pub fn ssh(spec: &str) -> Result<(String, SshSource), BuildError> {
    use std::os::unix::fs::FileTypeExt;
    let (id, paths) = match spec.split_once('=') {
        Some((id, paths)) => (id, paths.split(',').collect::<Vec<_>>()),
        None => (spec, Vec::new()),
    };
    if id.is_empty() || paths.iter().any(|p| p.is_empty()) {
        return Err(bad(format!(
            "--ssh {spec:?}: expected ID, ID=SOCKET or ID=KEYFILE[,KEYFILE...]"
        )));
    }
    if paths.is_empty() {
        let socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                bad(format!(
                    "--ssh {spec}: SSH_AUTH_SOCK is not set: start an ssh-agent, or give \
                     --ssh {id}=SOCKET or --ssh {id}=KEYFILE"
                ))
            })?;
        return Ok((id.to_string(), SshSource::Socket(PathBuf::from(socket))));
    }
    let mut keys = Vec::new();
    for p in &paths {
        let meta = std::fs::metadata(p).map_err(|e| bad(format!("--ssh {id}={p}: {e}")))?;
        if meta.file_type().is_socket() {
            if paths.len() > 1 {
                return Err(bad(format!(
                    "--ssh {spec}: {p} is a socket; give one agent socket or key files"
                )));
            }
            return Ok((id.to_string(), SshSource::Socket(PathBuf::from(p))));
        }
        keys.push(PathBuf::from(p));
    }
    Ok((id.to_string(), SshSource::Keys(keys)))
}

/// `--allow` values.
pub fn entitlements(allow: &[String]) -> Result<Entitlements, BuildError> {
    let mut entitlements = Entitlements::default();
    for name in allow {
        let entitlement = name
            .parse::<Entitlement>()
            .map_err(|e| bad(format!("--allow {name}: {e}")))?;
        entitlements.allow(entitlement);
    }
    Ok(entitlements)
}

/// `--memory`, `--cpus`, `--pids-limit` → the limits every RUN gets (a negative pids
/// limit lifts it; 0 would leave no room for the RUN itself).
pub fn limits(
    memory: Option<&str>,
    cpus: Option<f64>,
    pids_limit: Option<i64>,
) -> Result<Limits, BuildError> {
    let mut l = Limits::default();
    if let Some(m) = memory {
        let bytes = kiln_base::size::parse_size("--memory", m)
            .map_err(|e| BuildError::Request(e.to_string()))?;
        l.memory = Some(bytes);
    }
    if let Some(c) = cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(bad(format!(
                "--cpus {c}: must be a positive number of CPUs"
            )));
        }
        l.cpus = Some(c);
    }
    match pids_limit {
        None => {}
        Some(n) if n < 0 => l.pids = None,
        Some(0) => {
            return Err(bad(
                "--pids-limit 0: a RUN needs at least one process (-1: no limit)".into(),
            ));
        }
        Some(n) => l.pids = Some(n.unsigned_abs()),
    }
    Ok(l)
}

/// `--add-host` values, as `docker buildx build` takes them: `HOST:IP` or `HOST=IP`, the
/// address optionally in brackets (`[::1]`), several comma separated. The name is
/// lower-cased as BuildKit does. `host-gateway` (the docker daemon's bridge address) has
/// no meaning here: RUN shares the host's network namespace.
pub fn extra_hosts(values: &[String]) -> Result<Vec<ExtraHost>, BuildError> {
    let mut out = Vec::new();
    for v in values {
        let (host, ips) = v
            .split_once('=')
            .or_else(|| v.split_once(':'))
            .filter(|(h, ip)| !h.is_empty() && !ip.is_empty())
            .ok_or_else(|| bad(format!("--add-host {v:?}: expected HOST:IP or HOST=IP")))?;
        if host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '#') {
            return Err(bad(format!(
                "--add-host {v:?}: {host:?} is not a host name (no spaces or #)"
            )));
        }
        if ips == "host-gateway" {
            return Err(bad(format!(
                "--add-host {v:?}: host-gateway is not supported: RUN shares the host's \
                 network, where the host is 127.0.0.1 (or ::1)"
            )));
        }
        for ip in ips.split(',') {
            let bare = ip
                .strip_prefix('[')
                .and_then(|i| i.strip_suffix(']'))
                .unwrap_or(ip);
            let ip = bare.parse().map_err(|_| {
                bad(format!(
                    "--add-host {v:?}: {ip:?} is not an IPv4 or IPv6 address"
                ))
            })?;
            out.push(ExtraHost {
                host: host.to_lowercase(),
                ip,
            });
        }
    }
    Ok(out)
}

/// `--ulimit` values, as docker takes them: `NAME=SOFT[:HARD]` (the hard limit defaults to
/// the soft one, -1 is unlimited). A later value for the same name wins; the result is
/// sorted by name, so the order of the flags does not change the RUNs' keys.
pub fn ulimits(values: &[String]) -> Result<Vec<Ulimit>, BuildError> {
    let mut out: Vec<Ulimit> = Vec::new();
    for v in values {
        let shape = || bad(format!("--ulimit {v:?}: expected NAME=SOFT[:HARD]"));
        let (name, limits) = v.split_once('=').ok_or_else(shape)?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(bad(format!(
                "--ulimit {v:?}: unknown limit {name:?} (one of {})",
                ULIMIT_NAMES.join(", ")
            )));
        }
        let number = |n: &str| match n.parse::<i64>() {
            Ok(-1) => Ok(UNLIMITED),
            Ok(n) if n >= 0 => Ok(n.unsigned_abs()),
            _ => Err(bad(format!(
                "--ulimit {v:?}: {n:?} is not a limit (a number, -1 for unlimited)"
            ))),
        };
        let (soft, hard) = match limits.split(':').collect::<Vec<_>>()[..] {
            [soft] => (number(soft)?, number(soft)?),
            [soft, hard] => (number(soft)?, number(hard)?),
            _ => return Err(shape()),
        };
        if soft > hard {
            return Err(bad(format!(
                "--ulimit {v:?}: the soft limit must not be above the hard limit"
            )));
        }
        out.retain(|u| u.name != name);
        out.push(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `--shm-size`, in docker's units: bytes, or a number with `k`, `m`, `g`, `t` or `p` (and
/// an optional `b` or `ib`), all of them powers of 1024 as docker's (`64m` is 64 MiB, the
/// size a RUN's `/dev/shm` has without the flag).
pub fn shm_size(value: &str) -> Result<u64, BuildError> {
    let err = || {
        bad(format!(
            "--shm-size {value:?}: expected a size such as 128m or 1g (more than 0)"
        ))
    };
    let t = value.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| err())?;
    let unit = unit.trim_start();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(err()),
    };
    let bytes = number * 1024f64.powi(power);
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// `--cgroup-parent`: a cgroup path below the cgroup mount, as docker's cgroupfs driver
/// takes it (a leading `/` or not); `.` and `..` would leave the hierarchy.
pub fn cgroup_parent(value: &str) -> Result<String, BuildError> {
    let parts: Vec<&str> = value.split('/').filter(|p| !p.is_empty()).collect();
    if value.is_empty() || value.contains('\0') || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad(format!(
            "--cgroup-parent {value:?}: expected a cgroup path such as /ci/builds (no . or ..)"
        )));
    }
    Ok(value.to_string())
}

/// `--timestamp`: `keep` keeps real file times (else they are clamped to
/// SOURCE_DATE_EPOCH).
pub fn keep_timestamps(timestamp: Option<&str>) -> Result<bool, BuildError> {
    match timestamp {
        None => Ok(false),
        Some("keep") => Ok(true),
        Some(t) => Err(bad(format!("--timestamp {t:?}: the only value is `keep`"))),
    }
}

fn bad(message: String) -> BuildError {
    BuildError::Request(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_checked_in_the_flags_words() {
        assert_eq!(
            labels(&["=x".into()]).unwrap_err().to_string(),
            "--label \"=x\": expected KEY=VALUE"
        );
        let (id, source) = secret("id=tok").unwrap();
        assert_eq!(id, "tok");
        assert!(matches!(source, SecretSource::Env(v) if v == "tok"));
        assert!(secret("src=f").is_err());
        assert_eq!(limits(None, None, Some(-1)).unwrap().pids, None);
        assert!(limits(None, Some(0.0), None).is_err());
        assert!(keep_timestamps(Some("now")).is_err());
    }

    #[test]
    fn shm_size_counts_in_powers_of_1024_as_docker() {
        assert_eq!(shm_size("64m").unwrap(), 64 << 20);
        assert_eq!(shm_size("1G").unwrap(), 1 << 30);
        assert_eq!(shm_size("512kb").unwrap(), 512 << 10);
        assert_eq!(shm_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(shm_size("1.5k").unwrap(), 1536);
        assert_eq!(shm_size("4096").unwrap(), 4096);
        for bad in ["0", "", "m", "12x", "-1m"] {
            assert!(shm_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cgroup_parent_stays_below_the_mount() {
        assert_eq!(cgroup_parent("/ci/builds").unwrap(), "/ci/builds");
        assert_eq!(cgroup_parent("ci").unwrap(), "ci");
        for bad in ["", "../x", "/ci/../..", "./ci"] {
            assert!(cgroup_parent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimit_takes_what_docker_takes() {
        let one = |v: &str| ulimits(&[v.to_string()]).map(|u| u[0].to_string());
        assert_eq!(one("nofile=1024:2048").unwrap(), "nofile=1024:2048");
        assert_eq!(one("nproc=512").unwrap(), "nproc=512:512");
        assert_eq!(one("core=0:-1").unwrap(), "core=0:-1");
        assert_eq!(
            one("nofile=2048:1024").unwrap_err().to_string(),
            "--ulimit \"nofile=2048:1024\": the soft limit must not be above the hard limit"
        );
        assert!(one("nofile").is_err());
        assert!(one("nofile=1:2:3").is_err());
        assert!(one("nofile=-2").is_err());
        assert!(one("nofile=many").is_err());
        assert!(
            one("as=1")
                .unwrap_err()
                .to_string()
                .contains("unknown limit \"as\"")
        );
        // The last one of a name wins; the list is sorted by name.
        let list = ulimits(&[
            "nproc=10".to_string(),
            "nofile=1".to_string(),
            "nproc=20".to_string(),
        ])
        .unwrap();
        let shown: Vec<String> = list.iter().map(|u| u.to_string()).collect();
        assert_eq!(shown, ["nofile=1:1", "nproc=20:20"]);
    }

    #[test]
    fn add_host_takes_what_buildx_takes() {
        let hosts = |v: &str| extra_hosts(&[v.to_string()]);
        let line =
            |v: &str| -> Vec<String> { hosts(v).unwrap().iter().map(|h| h.hosts_line()).collect() };
        assert_eq!(line("db:10.0.0.2"), ["10.0.0.2\tdb\n"]);
        assert_eq!(line("DB=10.0.0.2"), ["10.0.0.2\tdb\n"]);
        // The first colon splits: the rest is an IPv6 address, bracketed or not.
        assert_eq!(line("v6:fd00::1"), ["fd00::1\tv6\n"]);
        assert_eq!(line("v6=[::1]"), ["::1\tv6\n"]);
        assert_eq!(
            line("two=10.0.0.1,10.0.0.2"),
            ["10.0.0.1\ttwo\n", "10.0.0.2\ttwo\n"]
        );
        assert_eq!(
            hosts("db").unwrap_err().to_string(),
            "--add-host \"db\": expected HOST:IP or HOST=IP"
        );
        assert_eq!(
            hosts("db:10.0.0.300").unwrap_err().to_string(),
            "--add-host \"db:10.0.0.300\": \"10.0.0.300\" is not an IPv4 or IPv6 address"
        );
        assert!(hosts(":10.0.0.1").is_err());
        assert!(hosts("a b:10.0.0.1").is_err());
        assert!(
            hosts("gw:host-gateway")
                .unwrap_err()
                .to_string()
                .contains("host-gateway is not supported")
        );
    }
}
