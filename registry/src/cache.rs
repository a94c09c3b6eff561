//! Remote build cache in a registry (`--cache-to type=registry,ref=R`,
//! `--cache-from type=registry,ref=R`).
//!
//! Format: one OCI image manifest under `R` whose config blob
//! (`application/vnd.kiln.cache.config.v1+json`) is the canonical JSON
//! `{"records":{KEY: CacheRecord}}` and whose layers are the distinct layer blobs those
//! records name. Exporting pushes it like an image (HEAD, mount, upload, manifest last);
//! importing pulls the blobs (verified) and then writes each record with
//! `Store::put_record`, so a record never points at a missing blob. Which records to
//! export (mode=min: the final stage's; mode=max: every step) is the caller's choice.

use std::collections::BTreeMap;

use kiln_image::oci::{Descriptor, MEDIA_TYPE_MANIFEST, Manifest, ManifestKind, canonical_json};
use kiln_store::{CacheRecord, Store};

use crate::auth::repository_scope;
use crate::client::Client;
use crate::error::{RegistryError, Result};
use crate::name::RegistryRef;
use crate::options::{Progress, RegistryOptions};
use crate::pull::{fetch_blob_into_store, fetch_manifest, run_parallel};
use crate::push::{PushedImage, push_manifest};

/// Media type of the cache config blob.
pub const MEDIA_TYPE_CACHE_CONFIG: &str = "application/vnd.kiln.cache.config.v1+json";

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheConfig {
    records: BTreeMap<String, CacheRecord>,
}

/// Pushes `records` (cache key → record) and their layer blobs to `dest`.
pub fn push_cache(
    store: &Store,
    records: &[(String, CacheRecord)],
    dest: &str,
    opts: &RegistryOptions,
) -> Result<PushedImage> {
    let map: BTreeMap<String, CacheRecord> = records.iter().cloned().collect();
    let mut layers: BTreeMap<String, Descriptor> = BTreeMap::new();
    for rec in map.values() {
        if let Some(l) = &rec.layer {
            layers
                .entry(l.digest.clone())
                .or_insert_with(|| Descriptor::new(&l.media_type, &l.digest, l.size));
        }
    }
    let config_bytes = canonical_json(&CacheConfig { records: map });
    let config = store
        .put_blob_bytes(&config_bytes)
        .map_err(RegistryError::store("writing the cache config"))?;
    let manifest = Manifest::new(
        Descriptor::new(MEDIA_TYPE_CACHE_CONFIG, &config.digest, config.size),
        layers.into_values().collect(),
    );
    let manifest_bytes = canonical_json(&manifest);
    let stored = store
        .put_blob_bytes(&manifest_bytes)
        .map_err(RegistryError::store("writing the cache manifest"))?;
    push_manifest(
        store,
        &manifest_bytes,
        &stored.digest,
        &manifest,
        dest,
        opts,
        &format!("build cache for {dest}"),
    )
}

/// Fetches the cache under `source` into the store; returns how many records were
/// written. Blobs already in the store are not downloaded again.
pub fn pull_cache(store: &Store, source: &str, opts: &RegistryOptions) -> Result<usize> {
    let rref = RegistryRef::parse(source)?;
    let client = Client::connect(
        &rref.domain,
        opts,
        &[repository_scope(&rref.repository, "pull")],
    )?;
    let fetched = fetch_manifest(&client, &rref.repository, rref.manifest_reference())?;
    let manifest = match kiln_image::oci::parse_manifest_or_index(&fetched.bytes) {
        Ok(ManifestKind::Manifest(m)) if m.config.media_type == MEDIA_TYPE_CACHE_CONFIG => m,
        _ => {
            return Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                what: format!("cache {rref}"),
                reason: format!(
                    "not a kiln build cache (expected a {MEDIA_TYPE_MANIFEST} with config {MEDIA_TYPE_CACHE_CONFIG})"
                ),
            });
        }
    };
    // The cache config is read whole: refuse an oversized one before downloading it.
    kiln_image::limits::check_size(
        format!("cache config {} of {rref}", manifest.config.digest),
        manifest.config.size,
        kiln_image::limits::MAX_CONFIG_SIZE,
    )
    .map_err(|e| client.too_large(e))?;
    let mut blobs: Vec<&Descriptor> = vec![&manifest.config];
    for l in &manifest.layers {
        if store.has_blob(&l.digest) {
            opts.report(Progress::BlobExists {
                digest: l.digest.clone(),
            });
        } else {
            blobs.push(l);
        }
    }
    run_parallel(&blobs, opts.parallel, |d| {
        if !store.has_blob(&d.digest) {
            fetch_blob_into_store(&client, &rref.repository, d, store)?;
            opts.report(Progress::BlobDone {
                digest: d.digest.clone(),
                size: d.size,
            });
        }
        Ok(())
    })?;
    let bytes = store
        .read_blob(&manifest.config.digest)
        .map_err(RegistryError::store("reading the cache config"))?;
    let config: CacheConfig =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
            registry: client.registry().to_string(),
            what: format!("cache config of {rref}"),
            reason: e.to_string(),
        })?;
    let mut written = 0;
    for (key, record) in &config.records {
        if let Some(l) = &record.layer
            && !store.has_blob(&l.digest)
        {
            // The manifest did not carry this layer: skip the record (a miss, not an error).
            continue;
        }
        store
            .put_record(key, record)
            .map_err(RegistryError::store(format!("writing cache record {key}")))?;
        written += 1;
    }
    Ok(written)
}
