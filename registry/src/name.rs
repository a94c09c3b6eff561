//! Image names as registries see them: `[host[:port]/]path[:tag][@digest]`, with Docker
//! Hub's defaults filled in (`busybox` → `docker.io/library/busybox:latest`, served by
//! `registry-1.docker.io`).
//!
//! Syntax checks are `kiln_store::Reference`'s (Docker's grammar); this module only
//! splits off the registry host and applies the Hub defaults.

use crate::error::{RegistryError, Result};

/// The name users write for Docker Hub.
pub const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// Registry domain as written (`docker.io`, `localhost:5000`, `ghcr.io`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned.
    pub digest: Option<String>,
}

impl RegistryRef {
    /// Parses `s`, adding Docker Hub's domain, `library/` and `:latest` where Docker would.
    pub fn parse(s: &str) -> Result<RegistryRef> {
        let parsed = kiln_store::Reference::parse(s).map_err(|e| match e {
            kiln_store::StoreError::InvalidReference { reason, .. } => {
                RegistryError::InvalidReference {
                    reference: s.to_string(),
                    reason,
                }
            }
            other => RegistryError::InvalidReference {
                reference: s.to_string(),
                reason: other.to_string(),
            },
        })?;
        let (domain, path) = match parsed.name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB_DOMAIN.to_string(), parsed.name.clone()),
        };
        let domain = if domain == "index.docker.io" {
            DOCKER_HUB_DOMAIN.to_string()
        } else {
            domain
        };
        let repository = if domain == DOCKER_HUB_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (&parsed.tag, &parsed.digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.clone(),
        };
        Ok(RegistryRef {
            domain,
            repository,
            tag,
            digest: parsed.digest,
        })
    }

    /// The `host[:port]` whose `/v2/` API serves this image.
    pub fn api_host(&self) -> &str {
        registry_api_host(&self.domain)
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `domain/repository` (no tag or digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// This reference with `digest` pinned (tag kept for display).
    pub fn with_digest(&self, digest: &str) -> RegistryRef {
        RegistryRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The API host for a registry domain as users write it (`docker.io` → Hub's API host).
pub fn registry_api_host(domain: &str) -> &str {
    match domain {
        DOCKER_HUB_DOMAIN | "index.docker.io" => DOCKER_HUB_API_HOST,
        other => other,
    }
}

/// True when `host` (`name[:port]`, `[v6]:port`) is this machine: `localhost`, 127.0.0.0/8
/// or `::1`. Plain HTTP is allowed to these without `--insecure-registry`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map(|(n, _)| n).unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.contains(':') => n,
            _ => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        RegistryRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names_get_library_and_latest() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            full("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            full("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        let r = RegistryRef::parse("busybox").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository, "library/busybox");
    }

    #[test]
    fn other_registries_keep_their_host_and_path() {
        let d = format!("sha256:{}", "c".repeat(64));
        let r = RegistryRef::parse(&format!("localhost:5000/team/app@{d}")).unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = RegistryRef::parse("ghcr.io/o/app:v1").unwrap();
        assert_eq!((r.api_host(), r.manifest_reference()), ("ghcr.io", "v1"));
        let r = RegistryRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.repository, "app");
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        let e = RegistryRef::parse("Busybox").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid image reference \"Busybox\": repository name must be lowercase"
        );
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com:5000",
            "10.0.0.1:5000",
            "docker.io",
            "localhost.example.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
