//! [`RegistryOptions`]: what a pull, push or login may be told (insecure hosts, where
//! certificates and credentials live, platform, parallelism, upload chunking, progress).

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::Credentials;
use crate::dockerconfig::DockerConfig;
use crate::error::Result;

/// One line of progress from a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to this manifest digest.
    Resolved { reference: String, digest: String },
    /// A blob is already where it needs to be (in the store, or in the registry).
    BlobExists { digest: String },
    /// A blob was mounted from another repository of the same registry.
    BlobMounted { digest: String, from: String },
    /// A blob finished downloading or uploading.
    BlobDone { digest: String, size: u64 },
    /// The manifest was written (pull: into the store; push: to the registry).
    ManifestDone { digest: String },
}

impl Progress {
    /// The line that shows it (`kiln pull` and `kiln push` print one per event); `verb`
    /// says what happened to a finished blob (`downloaded`, `pushed`).
    pub fn line(&self, verb: &str) -> String {
        match self {
            Progress::Resolved { reference, digest } => {
                format!("{reference}: resolved to {digest}")
            }
            Progress::BlobExists { digest } => format!("{}: already exists", short(digest)),
            Progress::BlobMounted { digest, from } => {
                format!("{}: mounted from {from}", short(digest))
            }
            Progress::BlobDone { digest, size } => {
                format!("{}: {verb} ({size} bytes)", short(digest))
            }
            Progress::ManifestDone { digest } => format!("manifest {digest}: done"),
        }
    }
}

/// A blob as docker names it in progress: the digest's first 12 hex digits.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// Called from worker threads as blobs move.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Settings for pull, push and login.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) where plain HTTP and unverified TLS are allowed.
    /// Loopback hosts may use plain HTTP without being listed.
    pub insecure_registries: Vec<String>,
    /// `certs.d` roots searched for `HOST[:PORT]/*.crt` (CAs) and `*.cert`+`*.key`.
    pub certs_dirs: Vec<PathBuf>,
    /// The docker config file; `None`: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub docker_config_path: Option<PathBuf>,
    /// Where `docker-credential-*` helpers are looked up; `None`: `$PATH`.
    pub credential_helper_dir: Option<PathBuf>,
    /// Credentials to use instead of the docker config's.
    pub credentials: Option<Credentials>,
    /// `os/arch[/variant]` to choose from an index; `None`: the host's.
    pub platform: Option<String>,
    /// Blobs transferred at once.
    pub parallel: usize,
    /// Blobs up to this size are uploaded with one PUT; larger ones in PATCH chunks.
    pub monolithic_max: u64,
    /// Chunk size for chunked uploads.
    pub chunk_size: u64,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("insecure_registries", &self.insecure_registries)
            .field("certs_dirs", &self.certs_dirs)
            .field("docker_config_path", &self.docker_config_path)
            .field("credential_helper_dir", &self.credential_helper_dir)
            .field("credentials", &self.credentials)
            .field("platform", &self.platform)
            .field("parallel", &self.parallel)
            .field("monolithic_max", &self.monolithic_max)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            certs_dirs: crate::tls::default_certs_dirs(),
            docker_config_path: None,
            credential_helper_dir: None,
            credentials: None,
            platform: None,
            parallel: 4,
            monolithic_max: 32 << 20,
            chunk_size: 16 << 20,
            progress: None,
        }
    }
}

impl RegistryOptions {
    /// The docker config file (missing file: empty config).
    pub fn docker_config(&self) -> Result<DockerConfig> {
        let path = match &self.docker_config_path {
            Some(p) => p.clone(),
            None => crate::dockerconfig::default_config_path(),
        };
        let mut cfg = DockerConfig::load(&path)?;
        cfg.set_helper_dir(self.credential_helper_dir.clone());
        Ok(cfg)
    }

    pub(crate) fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_name_blobs_by_short_digest() {
        let blob = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let digest = || blob.to_string();
        let line = |p: Progress| p.line("downloaded");
        assert_eq!(
            line(Progress::Resolved {
                reference: "docker.io/library/busybox:latest".to_string(),
                digest: digest(),
            }),
            format!("docker.io/library/busybox:latest: resolved to {blob}")
        );
        assert_eq!(
            line(Progress::BlobExists { digest: digest() }),
            "0123456789ab: already exists"
        );
        assert_eq!(
            line(Progress::BlobMounted {
                digest: digest(),
                from: "team/base".to_string(),
            }),
            "0123456789ab: mounted from team/base"
        );
        assert_eq!(
            Progress::BlobDone {
                digest: digest(),
                size: 4096,
            }
            .line("pushed"),
            "0123456789ab: pushed (4096 bytes)"
        );
        assert_eq!(
            line(Progress::ManifestDone { digest: digest() }),
            format!("manifest {blob}: done")
        );
        assert_eq!(
            line(Progress::BlobExists {
                digest: "abc".to_string(),
            }),
            "abc: already exists"
        );
    }
}
