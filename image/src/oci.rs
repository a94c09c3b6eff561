//! OCI image types (config, manifest, index, descriptor) as our own serde
//! structs with sorted maps, canonical JSON for anything that is hashed, and
//! parsing of manifests and configs written by other tools (Docker schema2
//! media types included).
//!
//! Why not the `oci-spec` crate: it was tried (0.10, feature `image`) by parsing kiln's
//! own configs, manifests and indexes with it and writing them back as canonical JSON.
//! Manifests, indexes, `ExposedPorts`/`Volumes`, variants and history came back
//! byte-identical, but its `Config` has no `Healthcheck`, `Shell`, `OnBuild` or
//! `ArgsEscaped` (Docker's fields, not the OCI spec's): a base image's HEALTHCHECK, SHELL or
//! ONBUILD would be dropped silently and every image built on it would get another ID. Its
//! descriptors also validate digests while parsing, so a malformed manifest would fail
//! with oci-spec's words instead of [`kiln_base::digest::InvalidDigest`]'s. One set of
//! types for every document, written here, keeps the bytes and the error texts.

use crate::digest::sha256_digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest media type.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema2 manifest media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Annotation naming an image in an OCI layout's index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd and `docker save` put the full image name in.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An empty JSON object (the values of `ExposedPorts` and `Volumes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>` digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Optional annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform (in indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Alternate download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A descriptor without annotations or platform.
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            annotations: BTreeMap::new(),
            platform: None,
            urls: Vec::new(),
        }
    }
}

/// A platform in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`...).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture variant (`v8`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version.
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// The platform this index entry names, as kiln compares platforms.
    pub fn to_platform(&self) -> kiln_base::platform::Platform {
        kiln_base::platform::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// An image manifest (OCI; Docker schema2 parses into it too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (OCI manifests written by kiln always carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    pub layers: Vec<Descriptor>,
    /// Optional annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// An OCI manifest for `config` and `layers`.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.into()),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }
}

/// An image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
    /// Optional annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An OCI index over `manifests`.
    pub fn new(manifests: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.into()),
            manifests,
            annotations: BTreeMap::new(),
        }
    }
}

/// A healthcheck in the image config (durations in nanoseconds, as Docker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time before a check is considered hung.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Interval during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures needed to report unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `user[:group]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `port/proto` → {}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// `KEY=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volume paths → {}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Healthcheck (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Shell for shell-form commands (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Windows-only quirk kept for round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, base first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment (`buildkit.dockerfile.v0` in BuildKit images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for steps that made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author (MAINTAINER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Runtime defaults.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Layer diff_ids.
    #[serde(default)]
    pub rootfs: RootFs,
    /// History, one entry per step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The platform the config says the image is for.
    pub fn platform(&self) -> kiln_base::platform::Platform {
        kiln_base::platform::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        let host = kiln_base::platform::Platform::host();
        Self {
            created: None,
            author: None,
            architecture: host.architecture,
            os: "linux".into(),
            variant: host.variant,
            config: ContainerConfig::default(),
            rootfs: RootFs::default(),
            history: Vec::new(),
        }
    }
}

/// Errors while parsing image JSON.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not valid JSON for the expected type.
    #[error("parsing {what}: {source}")]
    Json {
        /// What was being parsed.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// A media type we do not handle here.
    #[error("unsupported media type {0:?}")]
    MediaType(String),
}

/// `value` as canonical JSON ([`kiln_base::canonical_json`]), for the image's own types,
/// whose serialization cannot fail (string keys only); use this for every byte that is
/// hashed.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    kiln_base::canonical_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

/// Canonical JSON of `value` with its `sha256:` digest and size.
pub fn json_blob<T: Serialize + ?Sized>(value: &T) -> (Vec<u8>, String, u64) {
    let bytes = canonical_json(value);
    let digest = sha256_digest(&bytes);
    let size = bytes.len() as u64;
    (bytes, digest, size)
}

/// What a manifest-like JSON document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema2).
    Manifest(Manifest),
    /// An index (OCI or Docker manifest list).
    Index(Index),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Parses a manifest or index, telling them apart by `mediaType` (or, when
/// absent as OCI allows, by the presence of `manifests` / `config`).
pub fn parse_manifest_or_index(bytes: &[u8]) -> Result<ManifestKind, OciError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: "manifest",
        source,
    })?;
    let is_index = match probe.media_type.as_deref() {
        Some(MEDIA_TYPE_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST) => true,
        Some(MEDIA_TYPE_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST) => false,
        Some(other) => return Err(OciError::MediaType(other.to_string())),
        None if probe.manifests.is_some() => true,
        None if probe.config.is_some() => false,
        None => return Err(OciError::MediaType("<none>".into())),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(ManifestKind::Index)
            .map_err(|source| OciError::Json {
                what: "image index",
                source,
            })
    } else {
        serde_json::from_slice(bytes)
            .map(ManifestKind::Manifest)
            .map_err(|source| OciError::Json {
                what: "image manifest",
                source,
            })
    }
}

/// Parses an image manifest (OCI or Docker schema2).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, OciError> {
    match parse_manifest_or_index(bytes)? {
        ManifestKind::Manifest(m) => Ok(m),
        ManifestKind::Index(_) => Err(OciError::MediaType(MEDIA_TYPE_INDEX.into())),
    }
}

/// Parses an image config (OCI or Docker; unknown fields are ignored).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, OciError> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: "image config",
        source,
    })
}

/// RFC 3339 UTC time (`1970-01-01T00:00:00Z`) for seconds since the epoch, the form Go
/// (and so BuildKit) writes for whole seconds. A time outside the years 0000-9999, which
/// Go refuses to write into JSON, is clamped to them (the last instant jiff has is
/// 9999-12-30T22:00:00Z).
pub fn rfc3339(secs: i64) -> String {
    /// 0000-01-01T00:00:00Z.
    const FIRST: i64 = -62_167_219_200;
    let last = jiff::Timestamp::MAX.as_second();
    // Clamped into jiff's range, so this cannot fail.
    jiff::Timestamp::from_second(secs.clamp(FIRST, last))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let mut cfg = ImageConfig {
            architecture: "amd64".into(),
            ..Default::default()
        };
        cfg.config.labels = Some(BTreeMap::from([
            ("z".into(), "1".into()),
            ("a".into(), "2".into()),
        ]));
        cfg.config.exposed_ports = Some(BTreeMap::from([("80/tcp".into(), Empty {})]));
        cfg.rootfs.diff_ids.push("sha256:00".into());
        let json = String::from_utf8(canonical_json(&cfg)).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","config":{"ExposedPorts":{"80/tcp":{}},"Labels":{"a":"2","z":"1"}},"os":"linux","rootfs":{"diff_ids":["sha256:00"],"type":"layers"}}"#
        );
    }

    #[test]
    fn docker_schema2_manifest_parses_and_index_is_told_apart() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"sha256:aa"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"sha256:bb"}]}"#;
        let m = parse_manifest(docker).unwrap();
        assert_eq!(m.layers[0].size, 9);
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest_or_index(idx).unwrap(),
            ManifestKind::Index(_)
        ));
        assert!(parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#).is_err());
    }

    #[test]
    fn rfc3339_formats_epoch_and_a_known_date() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-30T22:00:00Z");
        assert_eq!(rfc3339(253_402_207_200), "9999-12-30T22:00:00Z");
    }

    #[test]
    fn history_omits_false_empty_layer() {
        let h = History {
            created_by: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(canonical_json(&h), br#"{"created_by":"x"}"#);
    }
}
