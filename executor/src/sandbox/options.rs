//! What `kiln build`'s command line sets in every RUN's environment beyond what the
//! Dockerfile says: extra `/etc/hosts` entries (`--add-host`), resource limits
//! (`--ulimit`) and the size of `/dev/shm` (`--shm-size`). [`RunOptions`] defaults to none
//! of it, which is every RUN as it was before these flags existed.
//!
//! The values arrive checked (the build crate parses the flags); the helper's modules read
//! them: `rootfs` writes the hosts file, `rlimit` sets the limits, `kernel_fs` mounts
//! `/dev/shm`.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Settings of every RUN of a build that the Dockerfile does not make.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Lines added to `/etc/hosts`, in order (`--add-host`).
    #[serde(default)]
    pub extra_hosts: Vec<ExtraHost>,
    /// Resource limits the RUN process gets before exec (`--ulimit`), one per name, sorted
    /// by name.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// The size of `/dev/shm` in bytes; `None`: 64 MiB, BuildKit's.
    #[serde(default)]
    pub shm_size: Option<u64>,
}

impl RunOptions {
    /// Whether nothing is set (a RUN as every RUN before these options existed).
    pub fn is_empty(&self) -> bool {
        self == &RunOptions::default()
    }
}

/// One `/etc/hosts` entry: `ip<TAB>host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    /// A host name without whitespace or `#` (either would change the line's meaning),
    /// lower-cased as BuildKit does.
    pub host: String,
    pub ip: IpAddr,
}

impl ExtraHost {
    /// The entry as a line of `/etc/hosts`, with its newline.
    pub fn hosts_line(&self) -> String {
        format!("{}\t{}\n", self.ip, self.host)
    }
}

/// One resource limit, as `docker build --ulimit NAME=SOFT[:HARD]` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// One of [`ULIMIT_NAMES`].
    pub name: String,
    /// [`UNLIMITED`] for no limit.
    pub soft: u64,
    /// At least `soft`; [`UNLIMITED`] for no limit.
    pub hard: u64,
}

/// A limit of "unlimited" (`RLIM_INFINITY`; docker writes it -1).
pub const UNLIMITED: u64 = u64::MAX;

/// The names `--ulimit` takes: docker's (every `RLIMIT_*` but `as`, which docker leaves
/// out too).
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl std::fmt::Display for Ulimit {
    /// `name=soft:hard`, -1 for unlimited, as docker prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: u64| match v {
            UNLIMITED => "-1".to_string(),
            v => v.to_string(),
        };
        write!(f, "{}={}:{}", self.name, n(self.soft), n(self.hard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_line_is_ip_tab_name() {
        let h = ExtraHost {
            host: "db.local".into(),
            ip: "fd00::1".parse().unwrap(),
        };
        assert_eq!(h.hosts_line(), "fd00::1\tdb.local\n");
        assert!(RunOptions::default().is_empty());
    }
}
