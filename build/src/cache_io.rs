//! `--cache-to` / `--cache-from`: moving build-cache records and their layer blobs between
//! the store and a registry (through kiln-registry) or a local directory, and the REAPI
//! cache (through kiln-remote), which a build asks per step ([`connect_remote`]) instead of
//! importing it whole.
//!
//! A local cache directory holds `kiln-cache.json` (cache key → record, canonical JSON) and
//! the layers as `blobs/sha256/<hex>`; both are written through temporary names, so a
//! reader never sees half a cache.

use crate::BuildError;
use crate::files::write_file;
use kiln_store::{CacheRecord, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    Registry {
        reference: String,
        max: bool,
    },
    Local {
        dir: PathBuf,
        max: bool,
    },
    /// `type=reapi,endpoint=grpc[s]://HOST:PORT[,instance=NAME][,token-file=F|token-env=V]`.
    Reapi {
        endpoint: kiln_remote::Endpoint,
        max: bool,
    },
}

const LOCAL_INDEX: &str = "kiln-cache.json";

impl std::str::FromStr for CacheSpec {
    type Err = BuildError;

    /// Parses `type=registry,ref=R[,mode=min|max]`, `type=local,dest=DIR|src=DIR` or
    /// `type=reapi,endpoint=URL[,instance=NAME][,token-file=F|token-env=V][,mode=min|max]`.
    fn from_str(spec: &str) -> Result<CacheSpec, BuildError> {
        let bad = |why: String| BuildError::Request(format!("cache {spec:?}: {why}"));
        let mut kind = None;
        let mut reference = None;
        let mut dir = None;
        let mut max = false;
        let mut endpoint = None;
        let mut instance = None;
        let mut token = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("endpoint", v)) => endpoint = Some(v.to_string()),
                Some(("instance", v)) => instance = Some(v.to_string()),
                Some(("token-file", v)) => {
                    token = Some(kiln_remote::TokenSource::File(PathBuf::from(v)))
                }
                Some(("token-env", v)) => {
                    token = Some(kiln_remote::TokenSource::Env(v.to_string()))
                }
                Some(("ref", v)) => reference = Some(v.to_string()),
                Some(("dest" | "src", v)) => dir = Some(PathBuf::from(v)),
                Some(("mode", "max")) => max = true,
                Some(("mode", "min")) => max = false,
                Some(("mode", other)) => {
                    return Err(bad(format!("mode must be min or max, not {other:?}")));
                }
                // Accepted for compatibility with buildx; kiln's format has no such knobs.
                Some(("ignore-error" | "oci-mediatypes" | "image-manifest" | "compression", _)) => {
                }
                _ => return Err(bad(format!("unknown option {part:?}"))),
            }
        }
        match kind.as_deref() {
            Some("registry") => Ok(CacheSpec::Registry {
                reference: reference.ok_or_else(|| bad("missing ref=".into()))?,
                max,
            }),
            Some("local") => Ok(CacheSpec::Local {
                dir: dir.ok_or_else(|| bad("missing dest= or src=".into()))?,
                max,
            }),
            Some("reapi") => {
                let url =
                    endpoint.ok_or_else(|| bad("missing endpoint=grpc://HOST:PORT".into()))?;
                let mut endpoint =
                    kiln_remote::Endpoint::parse(&url).map_err(|e| bad(e.to_string()))?;
                endpoint.instance = instance.unwrap_or_default();
                endpoint.token = token;
                Ok(CacheSpec::Reapi { endpoint, max })
            }
            Some(other) => Err(bad(format!(
                "unsupported type {other:?} (registry, local or reapi)"
            ))),
            None => Err(bad("missing type=".into())),
        }
    }
}

impl CacheSpec {
    /// Whether every step of every stage is exported (`mode=max`), not only the image's.
    pub fn max(&self) -> bool {
        match self {
            CacheSpec::Registry { max, .. }
            | CacheSpec::Local { max, .. }
            | CacheSpec::Reapi { max, .. } => *max,
        }
    }

    /// Whether the cache is a service a build goes on without (a REAPI cache): failing to
    /// reach it is a warning, not a failed build.
    pub fn optional(&self) -> bool {
        matches!(self, CacheSpec::Reapi { .. })
    }
}

impl std::fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheSpec::Registry { reference, .. } => write!(f, "registry {reference}"),
            CacheSpec::Local { dir, .. } => write!(f, "directory {}", dir.display()),
            CacheSpec::Reapi { endpoint, .. } if endpoint.instance.is_empty() => {
                write!(f, "REAPI cache {}", endpoint.url)
            }
            CacheSpec::Reapi { endpoint, .. } => {
                write!(
                    f,
                    "REAPI cache {} (instance {})",
                    endpoint.url, endpoint.instance
                )
            }
        }
    }
}

/// A REAPI cache as the solver asks it, per step.
#[derive(Debug)]
struct ReapiStepCache {
    cache: kiln_remote::RemoteCache,
    name: String,
}

impl kiln_solver::StepCache for ReapiStepCache {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        store: &'a Store,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Option<kiln_store::LayerRef>, kiln_solver::StepCacheError>,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(async move { Ok(self.cache.fetch(key, store).await?) })
    }
}

/// Connects to the REAPI cache of `spec` for a build to ask per step; `Ok(None)` for a
/// spec that is imported whole ([`import`]).
pub async fn connect_remote(
    spec: &CacheSpec,
    registry: &kiln_registry::RegistryOptions,
) -> Result<Option<std::sync::Arc<dyn kiln_solver::StepCache>>, BuildError> {
    let CacheSpec::Reapi { endpoint, .. } = spec else {
        return Ok(None);
    };
    let cache = kiln_remote::RemoteCache::connect(endpoint, &registry.certs_dirs)
        .await
        .map_err(|e| BuildError::Remote {
            what: format!("the {spec}"),
            source: Box::new(e),
        })?;
    Ok(Some(std::sync::Arc::new(ReapiStepCache {
        cache,
        name: endpoint.url.clone(),
    })))
}

/// Imports the cache at `spec` into `store`; returns how many records arrived.
pub fn import(
    store: &Store,
    spec: &CacheSpec,
    registry: &kiln_registry::RegistryOptions,
) -> Result<usize, BuildError> {
    match spec {
        CacheSpec::Registry { reference, .. } => {
            kiln_registry::pull_cache(store, reference, registry).map_err(BuildError::registry(
                format!("importing the cache from {reference}"),
            ))
        }
        CacheSpec::Local { dir, .. } => import_local(store, dir),
        // Asked per step (`connect_remote`), never copied whole.
        CacheSpec::Reapi { .. } => Ok(0),
    }
}

/// Exports the records of `keys` (those the store has) with their layers to `spec`.
pub fn export(
    store: &Store,
    spec: &CacheSpec,
    keys: &[String],
    registry: &kiln_registry::RegistryOptions,
) -> Result<Exported, BuildError> {
    let mut records = Vec::new();
    for key in keys {
        if let Some(record) = store
            .get_record(key)
            .map_err(BuildError::store(format!("reading cache record {key}")))?
        {
            records.push((key.clone(), record));
        }
    }
    match spec {
        CacheSpec::Registry { reference, .. } => {
            kiln_registry::push_cache(store, &records, reference, registry).map_err(
                BuildError::registry(format!("exporting the cache to {reference}")),
            )?;
        }
        CacheSpec::Local { dir, .. } => export_local(store, dir, &records)?,
        CacheSpec::Reapi { endpoint, .. } => {
            let report =
                kiln_remote::push_blocking(endpoint, &registry.certs_dirs, store, &records)
                    .map_err(|e| BuildError::Remote {
                        what: format!("exporting the cache to the {spec}"),
                        source: Box::new(e),
                    })?;
            return Ok(Exported {
                records: report.records,
                uploaded: Some((report.blobs_uploaded, report.bytes_uploaded)),
            });
        }
    }
    Ok(Exported {
        records: records.len(),
        uploaded: None,
    })
}

/// What an export sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub records: usize,
    /// For a REAPI cache: the blobs (and their bytes) the server lacked and was sent.
    pub uploaded: Option<(usize, u64)>,
}

fn blob_hex(digest: &str) -> Result<&str, BuildError> {
    kiln_image::digest_hex(digest).map_err(|e| BuildError::Request(e.to_string()))
}

fn export_local(
    store: &Store,
    dir: &Path,
    records: &[(String, CacheRecord)],
) -> Result<(), BuildError> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)
        .map_err(BuildError::io(format!("creating {}", blobs.display())))?;
    for (_, record) in records {
        let Some(layer) = &record.layer else { continue };
        let dest = blobs.join(blob_hex(&layer.digest)?);
        if dest.exists() {
            continue;
        }
        let mut src = store
            .open_blob(&layer.digest)
            .map_err(BuildError::store(format!("opening blob {}", layer.digest)))?;
        write_file(&dest, |out| std::io::copy(&mut src, out).map(drop))?;
    }
    let index: BTreeMap<&str, &CacheRecord> =
        records.iter().map(|(k, r)| (k.as_str(), r)).collect();
    let index_path = dir.join(LOCAL_INDEX);
    let writing = || format!("writing {}", index_path.display());
    let bytes = kiln_store::canonical_json(&index)
        .map_err(|e| BuildError::io(writing())(std::io::Error::other(e)))?;
    kiln_store::atomic_write(&index_path, &bytes).map_err(BuildError::store(writing()))?;
    Ok(())
}

fn import_local(store: &Store, dir: &Path) -> Result<usize, BuildError> {
    let index_path = dir.join(LOCAL_INDEX);
    let bytes = std::fs::read(&index_path).map_err(BuildError::io(format!(
        "reading the cache index {}",
        index_path.display()
    )))?;
    let index: BTreeMap<String, CacheRecord> = serde_json::from_slice(&bytes).map_err(|e| {
        BuildError::io(format!("{}: not a kiln cache index", index_path.display()))(
            std::io::Error::other(e),
        )
    })?;
    let mut imported = 0;
    for (key, record) in index {
        if let Some(layer) = &record.layer
            && !store.has_blob(&layer.digest)
        {
            let path = dir.join("blobs/sha256").join(blob_hex(&layer.digest)?);
            let what = || format!("cache blob {}", path.display());
            let mut file = std::fs::File::open(&path).map_err(BuildError::io(what()))?;
            let mut writer = store.blob_writer().map_err(BuildError::store(what()))?;
            std::io::copy(&mut file, &mut writer).map_err(BuildError::io(what()))?;
            // A tampered cache blob is refused here and never stored.
            writer
                .commit_verified(&layer.digest)
                .map_err(BuildError::store(what()))?;
        }
        store
            .put_record(&key, &record)
            .map_err(BuildError::store(format!("storing cache record {key}")))?;
        imported += 1;
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs_parse() {
        assert_eq!(
            "type=registry,ref=127.0.0.1:5000/c:1,mode=max"
                .parse::<CacheSpec>()
                .unwrap(),
            CacheSpec::Registry {
                reference: "127.0.0.1:5000/c:1".into(),
                max: true
            }
        );
        assert_eq!(
            "type=local,dest=/tmp/c".parse::<CacheSpec>().unwrap(),
            CacheSpec::Local {
                dir: "/tmp/c".into(),
                max: false
            }
        );
        assert!("type=gha".parse::<CacheSpec>().is_err());
        assert!("type=registry".parse::<CacheSpec>().is_err());
        assert!("type=local,dest=/x,mode=huge".parse::<CacheSpec>().is_err());
        let spec = "type=reapi,endpoint=grpcs://farm.example:8980,instance=main,token-env=FARM_TOKEN,mode=max"
            .parse::<CacheSpec>()
            .unwrap();
        let CacheSpec::Reapi { endpoint, max } = &spec else {
            panic!("{spec:?}")
        };
        assert!(*max && endpoint.tls && endpoint.port == 8980 && endpoint.instance == "main");
        assert_eq!(
            endpoint.token,
            Some(kiln_remote::TokenSource::Env("FARM_TOKEN".into()))
        );
        assert_eq!(
            spec.to_string(),
            "REAPI cache grpcs://farm.example:8980 (instance main)"
        );
        assert!(spec.optional());
        assert!("type=reapi".parse::<CacheSpec>().is_err());
        assert!(
            "type=reapi,endpoint=http://h:1"
                .parse::<CacheSpec>()
                .is_err()
        );
    }
}
