//! `--cache-to` / `--cache-from`: moving build-cache records and their layer blobs between
//! the store and a registry (through kiln-registry) or a local directory.
//!
//! A local cache directory holds `kiln-cache.json` (cache key → record, canonical JSON) and
//! the layers as `blobs/sha256/<hex>`; both are written through temporary names, so a
//! reader never sees half a cache.

use anyhow::{Context, Result, anyhow, bail};
use kiln_cache::{CacheRecord, Store};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    Registry { reference: String, max: bool },
    Local { dir: PathBuf, max: bool },
}

const LOCAL_INDEX: &str = "kiln-cache.json";

impl CacheSpec {
    /// Parses `type=registry,ref=R[,mode=min|max]` or `type=local,dest=DIR|src=DIR`.
    pub fn parse(spec: &str) -> Result<CacheSpec> {
        let mut kind = None;
        let mut reference = None;
        let mut dir = None;
        let mut max = false;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("ref", v)) => reference = Some(v.to_string()),
                Some(("dest" | "src", v)) => dir = Some(PathBuf::from(v)),
                Some(("mode", "max")) => max = true,
                Some(("mode", "min")) => max = false,
                Some(("mode", other)) => {
                    bail!("cache {spec:?}: mode must be min or max, not {other:?}")
                }
                // Accepted for compatibility with buildx; kiln's format has no such knobs.
                Some(("ignore-error" | "oci-mediatypes" | "image-manifest" | "compression", _)) => {
                }
                _ => bail!("cache {spec:?}: unknown option {part:?}"),
            }
        }
        match kind.as_deref() {
            Some("registry") => Ok(CacheSpec::Registry {
                reference: reference.ok_or_else(|| anyhow!("cache {spec:?}: missing ref="))?,
                max,
            }),
            Some("local") => Ok(CacheSpec::Local {
                dir: dir.ok_or_else(|| anyhow!("cache {spec:?}: missing dest= or src="))?,
                max,
            }),
            Some(other) => bail!("cache {spec:?}: unsupported type {other:?} (registry or local)"),
            None => bail!("cache {spec:?}: missing type="),
        }
    }

    /// Whether every step of every stage is exported (`mode=max`), not only the image's.
    pub fn max(&self) -> bool {
        match self {
            CacheSpec::Registry { max, .. } | CacheSpec::Local { max, .. } => *max,
        }
    }
}

/// Imports the cache at `spec` into `store`; returns how many records arrived.
pub fn import(
    store: &Store,
    spec: &CacheSpec,
    registry: &kiln_registry::RegistryOptions,
) -> Result<usize> {
    match spec {
        CacheSpec::Registry { reference, .. } => {
            kiln_registry::pull_cache(store, reference, registry)
                .with_context(|| format!("importing the cache from {reference}"))
        }
        CacheSpec::Local { dir, .. } => import_local(store, dir),
    }
}

/// Exports the records of `keys` (those the store has) with their layers to `spec`.
pub fn export(
    store: &Store,
    spec: &CacheSpec,
    keys: &[String],
    registry: &kiln_registry::RegistryOptions,
) -> Result<usize> {
    let mut records = Vec::new();
    for key in keys {
        if let Some(record) = store.get_record(key)? {
            records.push((key.clone(), record));
        }
    }
    match spec {
        CacheSpec::Registry { reference, .. } => {
            kiln_registry::push_cache(store, &records, reference, registry)
                .with_context(|| format!("exporting the cache to {reference}"))?;
        }
        CacheSpec::Local { dir, .. } => export_local(store, dir, &records)?,
    }
    Ok(records.len())
}

fn export_local(store: &Store, dir: &Path, records: &[(String, CacheRecord)]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    for (_, record) in records {
        let Some(layer) = &record.layer else { continue };
        let hex = kiln_image::digest_hex(&layer.digest).map_err(|e| anyhow!("{e}"))?;
        let dest = blobs.join(hex);
        if dest.exists() {
            continue;
        }
        let mut src = store.open_blob(&layer.digest)?;
        crate::outputs::write_file(&dest, |out| {
            std::io::copy(&mut src, out)?;
            Ok(())
        })?;
    }
    let index: BTreeMap<&str, &CacheRecord> =
        records.iter().map(|(k, r)| (k.as_str(), r)).collect();
    kiln_cache::atomic_write(&dir.join(LOCAL_INDEX), &kiln_cache::canonical_json(&index)?)
        .with_context(|| format!("writing {}", dir.join(LOCAL_INDEX).display()))?;
    Ok(())
}

fn import_local(store: &Store, dir: &Path) -> Result<usize> {
    let index_path = dir.join(LOCAL_INDEX);
    let bytes = std::fs::read(&index_path)
        .with_context(|| format!("reading the cache index {}", index_path.display()))?;
    let index: BTreeMap<String, CacheRecord> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a kiln cache index", index_path.display()))?;
    let mut imported = 0;
    for (key, record) in index {
        if let Some(layer) = &record.layer
            && !store.has_blob(&layer.digest)
        {
            let hex = kiln_image::digest_hex(&layer.digest).map_err(|e| anyhow!("{e}"))?;
            let path = dir.join("blobs/sha256").join(hex);
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("cache blob {}", path.display()))?;
            let mut writer = store.blob_writer()?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut writer, &buf[..n])?;
            }
            // A tampered cache blob is refused here and never stored.
            writer
                .commit_verified(&layer.digest)
                .with_context(|| format!("cache blob {}", path.display()))?;
        }
        store.put_record(&key, &record)?;
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
            CacheSpec::parse("type=registry,ref=127.0.0.1:5000/c:1,mode=max").unwrap(),
            CacheSpec::Registry {
                reference: "127.0.0.1:5000/c:1".into(),
                max: true
            }
        );
        assert_eq!(
            CacheSpec::parse("type=local,dest=/tmp/c").unwrap(),
            CacheSpec::Local {
                dir: "/tmp/c".into(),
                max: false
            }
        );
        assert!(CacheSpec::parse("type=gha").is_err());
        assert!(CacheSpec::parse("type=registry").is_err());
        assert!(CacheSpec::parse("type=local,dest=/x,mode=huge").is_err());
    }
}
