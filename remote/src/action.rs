//! How a kiln cache key becomes a REAPI Action, and what its ActionResult holds.
//!
//! The scheme (version 1), so that any REAPI client can find kiln's entries:
//! - the Command's arguments are `["kiln-step", "1", KEY]` (KEY: the step's cache key,
//!   64 lowercase hex digits), its output paths `["kiln/layer", "kiln/record.json"]`, and
//!   it has no environment, working directory or platform;
//! - the Action names that Command and the empty Directory as its input root, and nothing
//!   else (no timeout, no salt, no platform), so its bytes, and its digest, are a
//!   function of the key alone;
//! - the ActionResult has exit code 0 and two output files: `kiln/layer`, the layer blob
//!   itself (its REAPI digest is its OCI digest: both are sha256 and size), and
//!   `kiln/record.json`, the canonical JSON of [`RemoteRecord`]: the layer's diff_id,
//!   digest, media type and size.
//!
//! The key already covers everything the step's result depends on (its command, its
//! parent's key, the content of what it copies, the layer format), so an Action keyed
//! this way is found exactly when the local cache would be. A step's config changes
//! (ENV, WORKDIR...) are not results: the solver derives them from the Dockerfile.

use crate::RemoteError;
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use kiln_store::LayerRef;
use prost::Message;
use serde::{Deserialize, Serialize};

/// The version of the scheme above, in every Command: a change to it is a new version.
pub const SCHEME: &str = "1";
/// The output path of the layer blob.
pub const LAYER_PATH: &str = "kiln/layer";
/// The output path of the record.
pub const RECORD_PATH: &str = "kiln/record.json";
/// A record is a few hundred bytes; a bigger one is not kiln's.
pub const RECORD_LIMIT: usize = 4096;

/// A blob as REAPI names it: sha256 hex and size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobDigest {
    pub hash: String,
    pub size: u64,
}

impl BlobDigest {
    pub fn of(bytes: &[u8]) -> BlobDigest {
        BlobDigest {
            hash: kiln_store::sha256_hex(bytes),
            size: bytes.len() as u64,
        }
    }

    /// `sha256:<hex>` of size `size` (an OCI digest).
    pub fn from_oci(digest: &str, size: u64) -> Result<BlobDigest, RemoteError> {
        let hash = kiln_store::parse_digest(digest)
            .map_err(|_| RemoteError::Garbage(format!("{digest:?} is not a sha256 digest")))?;
        Ok(BlobDigest {
            hash: hash.to_string(),
            size,
        })
    }

    /// What a server sent, checked: 64 lowercase hex digits and a size that is not negative.
    pub fn from_proto(d: &re::Digest) -> Result<BlobDigest, RemoteError> {
        if !kiln_store::is_sha256_hex(&d.hash) || d.size_bytes < 0 {
            return Err(RemoteError::Garbage(format!(
                "digest {:?}/{} is not a sha256 digest",
                d.hash, d.size_bytes
            )));
        }
        Ok(BlobDigest {
            hash: d.hash.clone(),
            size: d.size_bytes as u64,
        })
    }

    pub fn to_proto(&self) -> re::Digest {
        re::Digest {
            hash: self.hash.clone(),
            size_bytes: self.size as i64,
        }
    }

    pub fn oci(&self) -> String {
        format!("sha256:{}", self.hash)
    }
}

impl std::fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.hash, self.size)
    }
}

/// The record output file: what kiln's local cache record holds, minus the time. Fields in
/// sorted order, so the derived serialization is canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRecord {
    pub layer: LayerRef,
    /// [`SCHEME`]: a record of another scheme is not read.
    pub scheme: String,
}

impl RemoteRecord {
    pub fn new(layer: LayerRef) -> RemoteRecord {
        RemoteRecord {
            layer,
            scheme: SCHEME.to_string(),
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, RemoteError> {
        kiln_store::canonical_json(self)
            .map_err(|e| RemoteError::Garbage(format!("encoding a record: {e}")))
    }

    /// Reads a record a server sent: bounded, of this scheme, naming a sha256 layer blob
    /// and diff_id.
    pub fn parse(bytes: &[u8]) -> Result<RemoteRecord, RemoteError> {
        if bytes.len() > RECORD_LIMIT {
            return Err(RemoteError::Garbage(format!(
                "{RECORD_PATH} is {} bytes, more than a record's {RECORD_LIMIT}",
                bytes.len()
            )));
        }
        let record: RemoteRecord = serde_json::from_slice(bytes)
            .map_err(|e| RemoteError::Garbage(format!("{RECORD_PATH}: {e}")))?;
        if record.scheme != SCHEME {
            return Err(RemoteError::Garbage(format!(
                "{RECORD_PATH} is of scheme {:?}, not {SCHEME}",
                record.scheme
            )));
        }
        for digest in [&record.layer.digest, &record.layer.diff_id] {
            kiln_store::parse_digest(digest).map_err(|_| {
                RemoteError::Garbage(format!("{RECORD_PATH} names {digest:?}, not a digest"))
            })?;
        }
        Ok(record)
    }
}

/// The Command, Action and their digests for one cache key.
#[derive(Debug, Clone)]
pub struct StepAction {
    pub command: Vec<u8>,
    pub action: Vec<u8>,
    pub action_digest: BlobDigest,
}

impl StepAction {
    pub fn for_key(key: &str) -> Result<StepAction, RemoteError> {
        if !kiln_store::is_sha256_hex(key) {
            return Err(RemoteError::Garbage(format!("{key:?} is not a cache key")));
        }
        let command = re::Command {
            arguments: vec!["kiln-step".into(), SCHEME.into(), key.into()],
            output_paths: vec![LAYER_PATH.into(), RECORD_PATH.into()],
            ..Default::default()
        }
        .encode_to_vec();
        let action = re::Action {
            command_digest: Some(BlobDigest::of(&command).to_proto()),
            input_root_digest: Some(BlobDigest::of(&[]).to_proto()),
            ..Default::default()
        }
        .encode_to_vec();
        Ok(StepAction {
            action_digest: BlobDigest::of(&action),
            command,
            action,
        })
    }

    /// The blobs the Action names, besides itself (the empty input root is every
    /// server's).
    pub fn blobs(&self) -> [(BlobDigest, &[u8]); 2] {
        [
            (BlobDigest::of(&self.command), &self.command),
            (self.action_digest.clone(), &self.action),
        ]
    }
}

/// The ActionResult for a step whose layer is `layer` and record bytes `record`.
pub fn action_result(layer: &BlobDigest, record: &[u8]) -> re::ActionResult {
    re::ActionResult {
        output_files: vec![
            re::OutputFile {
                path: LAYER_PATH.into(),
                digest: Some(layer.to_proto()),
                ..Default::default()
            },
            re::OutputFile {
                path: RECORD_PATH.into(),
                digest: Some(BlobDigest::of(record).to_proto()),
                ..Default::default()
            },
        ],
        exit_code: 0,
        ..Default::default()
    }
}

/// What an ActionResult says, checked: the record output (inline bytes, or its digest to
/// read) and the layer output's digest.
pub struct ResultFiles {
    pub record_inline: Option<Vec<u8>>,
    pub record: BlobDigest,
    pub layer: BlobDigest,
}

pub fn result_files(result: &re::ActionResult) -> Result<ResultFiles, RemoteError> {
    if result.exit_code != 0 {
        return Err(RemoteError::Garbage(format!(
            "the action result has exit code {}",
            result.exit_code
        )));
    }
    let find = |path: &str| {
        let mut found = result.output_files.iter().filter(|f| f.path == path);
        match (found.next(), found.next()) {
            (Some(file), None) => Ok(file),
            (None, _) => Err(RemoteError::Garbage(format!(
                "the action result has no output {path}"
            ))),
            (Some(_), Some(_)) => Err(RemoteError::Garbage(format!(
                "the action result has two outputs {path}"
            ))),
        }
    };
    let digest = |file: &re::OutputFile| {
        file.digest
            .as_ref()
            .ok_or_else(|| RemoteError::Garbage(format!("output {} has no digest", file.path)))
            .and_then(BlobDigest::from_proto)
    };
    let record_file = find(RECORD_PATH)?;
    let record = digest(record_file)?;
    let record_inline = (!record_file.contents.is_empty()).then(|| record_file.contents.clone());
    Ok(ResultFiles {
        record_inline,
        record,
        layer: digest(find(LAYER_PATH)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_action_digest_is_a_function_of_the_key_alone() {
        let a = StepAction::for_key(KEY).unwrap();
        let b = StepAction::for_key(KEY).unwrap();
        assert_eq!(a.action_digest, b.action_digest);
        let other = StepAction::for_key(&KEY.replace('0', "1")).unwrap();
        assert_ne!(a.action_digest, other.action_digest);
        // Pinned: a change here is a change of scheme, which needs a new SCHEME.
        assert_eq!(
            a.action_digest.to_string(),
            "d481e42783ce81afaac5664ad1a6c1302eb6aca0e2c54e46f52176c56b9baacb/138"
        );
    }

    #[test]
    fn a_key_that_is_not_hex_is_refused() {
        assert!(StepAction::for_key("../etc").is_err());
    }

    fn layer() -> LayerRef {
        LayerRef {
            diff_id: format!("sha256:{KEY}"),
            digest: format!("sha256:{}", KEY.replace('1', "2")),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 42,
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = RemoteRecord::new(layer());
        let bytes = record.to_bytes().unwrap();
        assert_eq!(RemoteRecord::parse(&bytes).unwrap(), record);
        assert!(RemoteRecord::parse(b"{}").is_err());
        assert!(RemoteRecord::parse(&vec![b' '; RECORD_LIMIT + 1]).is_err());
        let other_scheme = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"scheme\":\"1\"", "\"scheme\":\"2\"");
        assert!(RemoteRecord::parse(other_scheme.as_bytes()).is_err());
        let bad_digest = String::from_utf8(bytes)
            .unwrap()
            .replace("sha256:0123", "md5:0123");
        assert!(RemoteRecord::parse(bad_digest.as_bytes()).is_err());
    }

    #[test]
    fn results_name_both_outputs_once() {
        let layer = BlobDigest::of(b"layer");
        let result = action_result(&layer, b"record");
        let files = result_files(&result).unwrap();
        assert_eq!(files.layer, layer);
        assert_eq!(files.record, BlobDigest::of(b"record"));
        let mut twice = result.clone();
        twice.output_files.push(twice.output_files[0].clone());
        assert!(result_files(&twice).is_err());
        let mut failed = result.clone();
        failed.exit_code = 1;
        assert!(result_files(&failed).is_err());
        let mut bad = result;
        bad.output_files[0].digest.as_mut().unwrap().hash = "zz".into();
        assert!(result_files(&bad).is_err());
    }
}
