//! What `kiln build`'s command line sets in every RUN's environment beyond what the
//! Dockerfile says: extra `/etc/hosts` entries (`--add-host`). [`RunOptions`] defaults to
//! none of it, which is every RUN as it was before these flags existed.
//!
//! The values arrive checked (the build crate parses the flags); the helper's modules read
//! them: `rootfs` writes the hosts file.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Settings of every RUN of a build that the Dockerfile does not make.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Lines added to `/etc/hosts`, in order (`--add-host`).
    #[serde(default)]
    pub extra_hosts: Vec<ExtraHost>,
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
