//! The second half of reading an archive: from the documents the first pass kept, which
//! images there are and which blobs they need. `index.json` is walked as it is (indexes,
//! manifests, their configs and layers, each at most once); without it `manifest.json`
//! gives a synthesized OCI manifest per image. What to put is collected here, put by the
//! parent module.

use super::{LoadedImage, Scan, normalize};
use crate::archive::ArchiveError;
use crate::digest::{digest_hex, sha256_digest};
use crate::layer::compress::Compression;
use crate::limits::{self, MAX_ARCHIVE_DESCRIPTORS, MAX_CONFIG_SIZE, MAX_JSON_SIZE};
use crate::oci::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Descriptor, MEDIA_TYPE_CONFIG, Manifest,
    ManifestKind, json_blob, parse_manifest_or_index,
};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Collects what to put, and the images.
pub(super) struct Plan<'s> {
    archive: PathBuf,
    scan: &'s Scan,
    /// Archive file name → digest, for blobs streamed in the second pass.
    pub(super) big: BTreeMap<String, String>,
    /// JSON blobs to put from memory, in order.
    pub(super) small_puts: Vec<(String, Vec<u8>)>,
    seen: BTreeSet<String>,
    /// Manifests and indexes already walked: a digest names one content, so walking it
    /// again would queue nothing new, only re-hash and re-parse it (quadratic work when
    /// thousands of index entries share one index of thousands of entries).
    walked: BTreeSet<String>,
    /// Manifest digest → its config's digest, for the docker tags of `index.json`'s
    /// entries without re-parsing each.
    configs: BTreeMap<String, String>,
    /// Descriptors walked so far, repeats included (see [`MAX_ARCHIVE_DESCRIPTORS`]).
    descriptors: usize,
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl<'s> Plan<'s> {
    /// An empty plan over what the first pass of `archive` found.
    pub(super) fn new(archive: &Path, scan: &'s Scan) -> Plan<'s> {
        Plan {
            archive: archive.to_path_buf(),
            scan,
            big: BTreeMap::new(),
            small_puts: Vec::new(),
            seen: BTreeSet::new(),
            walked: BTreeSet::new(),
            configs: BTreeMap::new(),
            descriptors: 0,
        }
    }

    fn missing(&self, what: String) -> ArchiveError {
        ArchiveError::Missing {
            archive: self.archive.clone(),
            what,
        }
    }

    fn invalid(&self, reason: String) -> ArchiveError {
        ArchiveError::Invalid {
            archive: self.archive.clone(),
            reason,
        }
    }

    /// Resolves symlinks (docker's legacy layout shares layer.tar that way).
    fn resolve(&self, name: &str) -> Option<String> {
        let mut cur = normalize(name)?;
        for _ in 0..16 {
            if self.scan.files.contains_key(&cur) {
                return Some(cur);
            }
            cur = self.scan.symlinks.get(&cur)?.clone();
        }
        None
    }

    /// The verified JSON blob with this digest.
    fn json_blob(&self, digest: &str) -> Result<&'s [u8], ArchiveError> {
        let hex = digest_hex(digest).map_err(|e| self.invalid(e.to_string()))?;
        let name = format!("blobs/sha256/{hex}");
        let Some(bytes) = self.scan.small.get(&name) else {
            // Present but not kept: too big to be a manifest (or not JSON at all).
            if let Some(info) = self.scan.files.get(&name) {
                limits::check_size(format!("manifest {digest}"), info.size, MAX_JSON_SIZE)?;
            }
            return Err(self.missing(format!("blob {digest}")));
        };
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(ArchiveError::DigestMismatch {
                expected: digest.into(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Queues a blob named by digest: from memory if it was small, else streamed.
    fn want(&mut self, digest: &str) -> Result<(), ArchiveError> {
        if !self.seen.insert(digest.to_string()) {
            return Ok(());
        }
        let hex = digest_hex(digest).map_err(|e| self.invalid(e.to_string()))?;
        let name = format!("blobs/sha256/{hex}");
        if let Some(bytes) = self.scan.small.get(&name) {
            self.small_puts.push((digest.to_string(), bytes.clone()));
        } else if self.scan.files.contains_key(&name) {
            self.big.insert(name, digest.to_string());
        } else {
            return Err(self.missing(format!("blob {digest}")));
        }
        Ok(())
    }

    fn walk(&mut self, desc: &Descriptor, depth: u32) -> Result<(), ArchiveError> {
        // Counted before the repeat check: even a cheap repeat costs a lookup, and an
        // index of millions of entries is refused rather than walked.
        self.descriptors += 1;
        if self.descriptors > MAX_ARCHIVE_DESCRIPTORS {
            return Err(ArchiveError::TooManyDescriptors {
                limit: MAX_ARCHIVE_DESCRIPTORS,
            });
        }
        if depth > 4 {
            return Err(self.invalid(format!("index nesting too deep at {}", desc.digest)));
        }
        // Its children and itself were queued the first time (children first, so the
        // order of puts is unchanged); digests cannot form a cycle.
        if !self.walked.insert(desc.digest.clone()) {
            return Ok(());
        }
        let bytes = self.json_blob(&desc.digest)?;
        match parse_manifest_or_index(bytes).map_err(|source| ArchiveError::Oci {
            what: format!("manifest {}", desc.digest),
            source,
        })? {
            ManifestKind::Manifest(m) => {
                // Every later FROM reads the config whole: refuse an oversized one now.
                limits::check_size(
                    format!("config {}", m.config.digest),
                    m.config.size,
                    MAX_CONFIG_SIZE,
                )?;
                self.configs
                    .insert(desc.digest.clone(), m.config.digest.clone());
                self.want(&m.config.digest)?;
                for l in &m.layers {
                    self.want(&l.digest)?;
                }
            }
            ManifestKind::Index(idx) => {
                for child in &idx.manifests {
                    self.walk(child, depth + 1)?;
                }
            }
        }
        self.want(&desc.digest)
    }

    fn docker_tags(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        let entries = self
            .scan
            .small
            .get("manifest.json")
            .and_then(|b| serde_json::from_slice::<Vec<DockerManifestEntry>>(b).ok())
            .unwrap_or_default();
        for e in entries {
            if let Some(n) = normalize(&e.config) {
                out.insert(n, e.repo_tags.unwrap_or_default());
            }
        }
        out
    }

    pub(super) fn load_index(&mut self) -> Result<Vec<LoadedImage>, ArchiveError> {
        let bytes = &self.scan.small["index.json"];
        let index = match parse_manifest_or_index(bytes).map_err(|source| ArchiveError::Oci {
            what: "index.json".into(),
            source,
        })? {
            ManifestKind::Index(i) => i,
            ManifestKind::Manifest(_) => {
                return Err(self.invalid("index.json is not an index".into()));
            }
        };
        let docker_tags = self.docker_tags();
        let mut images = Vec::new();
        for desc in &index.manifests {
            self.walk(desc, 0)?;
            let mut names = Vec::new();
            if let Some(n) = desc.annotations.get(ANNOTATION_CONTAINERD_NAME) {
                names.push(n.clone());
            } else if let Some(n) = desc.annotations.get(ANNOTATION_REF_NAME) {
                names.push(n.clone());
            }
            if names.is_empty() {
                // docker save lists tags in manifest.json, keyed by config path. The walk
                // above verified and parsed the manifest and noted its config.
                if let Some(config) = self.configs.get(&desc.digest)
                    && let Ok(hex) = digest_hex(config)
                    && let Some(tags) = docker_tags.get(&format!("blobs/sha256/{hex}"))
                {
                    names.extend(tags.iter().cloned());
                }
            }
            images.push(LoadedImage {
                ref_names: names,
                manifest_digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            });
        }
        Ok(images)
    }

    pub(super) fn load_docker_manifest(&mut self) -> Result<Vec<LoadedImage>, ArchiveError> {
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&self.scan.small["manifest.json"])
                .map_err(|e| self.invalid(format!("manifest.json: {e}")))?;
        let mut images = Vec::new();
        for entry in entries {
            let config_name = self
                .resolve(&entry.config)
                .ok_or_else(|| self.missing(format!("config {}", entry.config)))?;
            let Some(config_bytes) = self.scan.small.get(&config_name).cloned() else {
                let size = self.scan.files.get(&config_name).map_or(0, |f| f.size);
                limits::check_size(format!("config {}", entry.config), size, MAX_CONFIG_SIZE)?;
                return Err(self.invalid(format!("config {} is not JSON", entry.config)));
            };
            let config_digest = sha256_digest(&config_bytes);
            let config =
                crate::oci::parse_config(&config_bytes).map_err(|source| ArchiveError::Oci {
                    what: format!("config {}", entry.config),
                    source,
                })?;
            if config.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(self.invalid(format!(
                    "config {} lists {} diff_ids but manifest.json {} layers",
                    entry.config,
                    config.rootfs.diff_ids.len(),
                    entry.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
                let name = self
                    .resolve(layer)
                    .ok_or_else(|| self.missing(format!("layer {layer}")))?;
                let info = &self.scan.files[&name];
                let digest = info.digest.clone();
                let compression = Compression::detect(&info.magic);
                if compression == Compression::None && digest != *diff_id {
                    return Err(ArchiveError::DigestMismatch {
                        expected: diff_id.clone(),
                        actual: digest,
                    });
                }
                if self.seen.insert(digest.clone()) {
                    self.big.insert(name.clone(), digest.clone());
                }
                layers.push(Descriptor::new(
                    compression.media_type(),
                    &digest,
                    info.size,
                ));
            }
            let manifest = Manifest::new(
                Descriptor::new(MEDIA_TYPE_CONFIG, &config_digest, config_bytes.len() as u64),
                layers,
            );
            let (bytes, manifest_digest, _) = json_blob(&manifest);
            if self.seen.insert(config_digest.clone()) {
                self.small_puts.push((config_digest, config_bytes));
            }
            if self.seen.insert(manifest_digest.clone()) {
                self.small_puts.push((manifest_digest.clone(), bytes));
            }
            images.push(LoadedImage {
                ref_names: entry.repo_tags.unwrap_or_default(),
                manifest_digest,
                media_type: crate::oci::MEDIA_TYPE_MANIFEST.into(),
            });
        }
        Ok(images)
    }
}
