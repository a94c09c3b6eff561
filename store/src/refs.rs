//! Image refs: normalized `name:tag` → manifest digest (plus the config digest, so
//! `kiln images` and prune need not parse manifests). A multi-platform image also names
//! its OCI index; its `manifest` and `config` are then one child's (the build machine's
//! platform when built for it, else the first), so every command that reads one image
//! reads that one, and those that write the image out (save, `-o`, push) take the index.
//!
//! One JSON file, `refs`, replaced atomically. Updates take `refs.lock` exclusively and
//! re-read the file under the lock, so concurrent builds tagging different names both
//! survive. Reads take no lock: the file is always either the old or the new version.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::digest::{canonical_json, parse_digest};
use crate::error::{Result, StoreError};
use crate::fsutil::atomic_write;
use crate::reference::normalize_ref;
use crate::store::Store;

/// What a ref points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// `sha256:<hex>` of the image config blob.
    pub config: String,
    /// `sha256:<hex>` of the manifest blob.
    pub manifest: String,
    /// `sha256:<hex>` of the OCI index blob of a multi-platform image, whose children
    /// include `manifest`. Absent (and not written) for a single-platform image, so the
    /// refs of every store written before it existed read and write the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RefsFile {
    refs: BTreeMap<String, ImageRef>,
    /// The last images built without a name, oldest first (docker's `<none>` images):
    /// listed by `kiln images`, kept by prune like refs, forgotten by `prune --all`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    untagged: Vec<ImageRef>,
}

/// How many untagged build results the store remembers.
const MAX_UNTAGGED: usize = 16;

impl Store {
    fn read_refs(&self) -> Result<RefsFile> {
        Ok(self.read_refs_raw()?.0)
    }

    /// The refs file and the bytes it was read from (empty when there is none).
    fn read_refs_raw(&self) -> Result<(RefsFile, Vec<u8>)> {
        let path = self.refs_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(|refs| (refs, bytes))
                .map_err(|source| StoreError::Json { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((RefsFile::default(), Vec::new())),
            Err(source) => Err(StoreError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Lock, re-read, modify, write; a change that leaves the bytes as they were (a
    /// no-op rebuild naming the same image again) writes nothing, sparing the fsyncs.
    fn update_refs<T>(&self, f: impl FnOnce(&mut RefsFile) -> T) -> Result<T> {
        let _guard = self.lock_refs()?;
        let (mut refs, before) = self.read_refs_raw()?;
        let out = f(&mut refs);
        let bytes = canonical_json(&refs).map_err(|source| StoreError::Encode {
            what: "refs",
            source,
        })?;
        if bytes != before {
            atomic_write(&self.refs_file(), &bytes)?;
        }
        Ok(out)
    }

    /// Points `name` (normalized with [`normalize_ref`]) at `image`.
    pub fn set_ref(&self, name: &str, image: ImageRef) -> Result<()> {
        let name = normalize_ref(name)?;
        parse_digest(&image.manifest)?;
        parse_digest(&image.config)?;
        if let Some(index) = &image.index {
            parse_digest(index)?;
        }
        self.update_refs(|r| {
            r.refs.insert(name, image);
        })
    }

    /// What `image` is as a whole in this store (what an archive, an OCI layout or a push
    /// writes): its index when the store holds every manifest the index lists (a build
    /// for several platforms), else its manifest (a base pulled for some of the platforms
    /// of its registry's index).
    pub fn whole_image(&self, image: &ImageRef) -> String {
        let Some(index) = &image.index else {
            return image.manifest.clone();
        };
        let complete = self
            .read_blob(index)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|json| {
                Some(json.get("manifests")?.as_array()?.iter().all(|m| {
                    m.get("digest")
                        .and_then(|d| d.as_str())
                        .is_some_and(|d| self.has_blob(d))
                }))
            })
            .unwrap_or(false);
        if complete {
            index.clone()
        } else {
            image.manifest.clone()
        }
    }

    /// What `name` points at, if anything.
    pub fn get_ref(&self, name: &str) -> Result<Option<ImageRef>> {
        let name = normalize_ref(name)?;
        Ok(self.read_refs()?.refs.remove(&name))
    }

    /// All refs, sorted by name.
    pub fn list_refs(&self) -> Result<Vec<(String, ImageRef)>> {
        Ok(self.read_refs()?.refs.into_iter().collect())
    }

    /// Remembers `image`, built without a name, as the newest untagged image (the oldest
    /// beyond the 16 newest is forgotten; its blobs go with the next prune).
    pub fn record_untagged(&self, image: ImageRef) -> Result<()> {
        self.update_refs(|r| {
            r.untagged.retain(|u| u != &image);
            r.untagged.push(image);
            let extra = r.untagged.len().saturating_sub(MAX_UNTAGGED);
            r.untagged.drain(..extra);
        })
    }

    /// Untagged build results, newest first.
    pub fn list_untagged(&self) -> Result<Vec<ImageRef>> {
        Ok(self.read_refs()?.untagged.into_iter().rev().collect())
    }

    /// Forgets every untagged image (`prune --all`).
    pub(crate) fn forget_untagged(&self) -> Result<()> {
        self.update_refs(|r| r.untagged.clear())
    }

    /// Removes `name`; true if it existed. The image's blobs stay until prune.
    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        let name = normalize_ref(name)?;
        self.update_refs(|r| r.refs.remove(&name).is_some())
    }
}
