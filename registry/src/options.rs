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
