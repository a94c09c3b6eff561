//! Writing images out of a [`BlobSource`]: an OCI layout directory, the same
//! layout as a tar stream (OCI archive), and a docker-archive that is also an
//! OCI layout (like `docker save` since v25).
//!
//! docker-archive layers: the stored blobs are written as they are
//! (compressed) under `blobs/sha256/<digest hex>`, and `manifest.json` lists
//! those paths. `docker load` and skopeo's docker-archive reader both
//! decompress layer files by magic and check them against the config's
//! diff_ids, and keeping the compressed blobs lets the same files serve the
//! OCI `index.json` view with no duplicated bytes.

use super::{ArchiveError, BlobSource};
use crate::digest::{HashingReader, digest_hex};
use crate::layer::tarfmt::{EntryMeta, TarEntryKind, TarEntryWriter};
use crate::limits::{self, CappedReadError, MAX_JSON_SIZE};
use crate::oci::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Descriptor, Index, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST, ManifestKind, canonical_json, parse_manifest_or_index,
};
use kiln_base::atomic::AtomicFile;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// One image to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportImage {
    /// Digest of its manifest (or index) blob.
    pub manifest_digest: String,
    /// Name to record (`name:tag`), if any.
    pub ref_name: Option<String>,
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The blobs an image needs, in the order to write them.
struct Closure {
    /// Top-level descriptor for `index.json`.
    top: Descriptor,
    /// For single-manifest images: config digest and layer digests.
    single: Option<(String, Vec<String>)>,
    /// Every blob, children before parents.
    blobs: Vec<String>,
}

fn read_json_blob(src: &dyn BlobSource, digest: &str) -> Result<Vec<u8>, ArchiveError> {
    let source_err = |source| ArchiveError::Source {
        digest: digest.to_string(),
        source,
    };
    let what = format!("manifest {digest}");
    let size = src.blob_size(digest).map_err(source_err)?;
    limits::check_size(what.as_str(), size, MAX_JSON_SIZE)?;
    let mut reader = HashingReader::new(src.open_blob(digest).map_err(source_err)?);
    let buf = match limits::read_capped(&mut reader, MAX_JSON_SIZE, what) {
        Ok(buf) => buf,
        Err(CappedReadError::TooLarge(e)) => return Err(e.into()),
        Err(CappedReadError::Io { source, .. }) => return Err(source_err(source)),
    };
    let (actual, _) = reader.finish();
    if actual != digest {
        return Err(ArchiveError::DigestMismatch {
            expected: digest.into(),
            actual,
        });
    }
    Ok(buf)
}

fn closure(src: &dyn BlobSource, digest: &str) -> Result<Closure, ArchiveError> {
    let mut blobs = Vec::new();
    let (media_type, single) = walk(src, digest, &mut blobs, 0)?;
    let size = src
        .blob_size(digest)
        .map_err(|source| ArchiveError::Source {
            digest: digest.into(),
            source,
        })?;
    Ok(Closure {
        top: Descriptor::new(&media_type, digest, size),
        single,
        blobs,
    })
}

type Single = Option<(String, Vec<String>)>;

fn walk(
    src: &dyn BlobSource,
    digest: &str,
    blobs: &mut Vec<String>,
    depth: u32,
) -> Result<(String, Single), ArchiveError> {
    digest_hex(digest).map_err(|e| ArchiveError::Unsupported(e.to_string()))?;
    if depth > 4 {
        return Err(ArchiveError::Unsupported(format!(
            "index nesting too deep at {digest}"
        )));
    }
    let bytes = read_json_blob(src, digest)?;
    let parsed = parse_manifest_or_index(&bytes).map_err(|source| ArchiveError::Oci {
        what: format!("manifest {digest}"),
        source,
    })?;
    let out = match parsed {
        ManifestKind::Manifest(m) => {
            blobs.push(m.config.digest.clone());
            for l in &m.layers {
                digest_hex(&l.digest).map_err(|e| ArchiveError::Unsupported(e.to_string()))?;
                blobs.push(l.digest.clone());
            }
            let layers = m.layers.iter().map(|l| l.digest.clone()).collect();
            let mt = m.media_type.unwrap_or_else(|| MEDIA_TYPE_MANIFEST.into());
            (mt, Some((m.config.digest, layers)))
        }
        ManifestKind::Index(idx) => {
            for child in &idx.manifests {
                walk(src, &child.digest, blobs, depth + 1)?;
            }
            (
                idx.media_type.unwrap_or_else(|| MEDIA_TYPE_INDEX.into()),
                None,
            )
        }
    };
    blobs.push(digest.to_string());
    Ok(out)
}

/// Collects closures for all images and the deduplicated, sorted blob list.
fn plan(
    src: &dyn BlobSource,
    images: &[ExportImage],
) -> Result<(Vec<Closure>, Vec<String>), ArchiveError> {
    let mut all = BTreeSet::new();
    let mut closures = Vec::new();
    for image in images {
        let c = closure(src, &image.manifest_digest)?;
        all.extend(c.blobs.iter().cloned());
        closures.push(c);
    }
    Ok((closures, all.into_iter().collect()))
}

fn index_json(images: &[ExportImage], closures: &[Closure]) -> Vec<u8> {
    let manifests = images
        .iter()
        .zip(closures)
        .map(|(image, c)| {
            let mut d = c.top.clone();
            if let Some(name) = &image.ref_name {
                d.annotations
                    .insert(ANNOTATION_REF_NAME.into(), name.clone());
                d.annotations
                    .insert(ANNOTATION_CONTAINERD_NAME.into(), name.clone());
            }
            d
        })
        .collect();
    canonical_json(&Index::new(manifests))
}

/// Writes an OCI image layout into `dir`: `oci-layout`, `index.json` (one
/// entry per image, named by `org.opencontainers.image.ref.name`), and
/// `blobs/sha256/*` (each verified while copied; present ones are kept).
pub fn write_oci_layout(
    dir: &Path,
    src: &dyn BlobSource,
    images: &[ExportImage],
) -> Result<(), ArchiveError> {
    let (closures, blobs) = plan(src, images)?;
    let blob_dir = dir.join("blobs").join("sha256");
    let io_err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { op, path, source }
    };
    fs::create_dir_all(&blob_dir).map_err(io_err("creating", &blob_dir))?;
    for digest in &blobs {
        let hex = digest_hex(digest).map_err(|e| ArchiveError::Unsupported(e.to_string()))?;
        let path = blob_dir.join(hex);
        let size = src
            .blob_size(digest)
            .map_err(|source| ArchiveError::Source {
                digest: digest.clone(),
                source,
            })?;
        if fs::metadata(&path)
            .map(|m| m.len() == size)
            .unwrap_or(false)
        {
            continue;
        }
        let mut file = AtomicFile::create(&path, 0o666).map_err(io_err("creating", &path))?;
        copy_verified(src, digest, &mut file)?;
        file.commit().map_err(io_err("writing", &path))?;
    }
    write_atomic(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_atomic(&dir.join("index.json"), &index_json(images, &closures))?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    kiln_base::atomic::write(path, bytes).map_err(|source| ArchiveError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Copies a blob from `src` to `out`, failing if it does not hash to `digest`.
fn copy_verified(
    src: &dyn BlobSource,
    digest: &str,
    out: &mut dyn Write,
) -> Result<u64, ArchiveError> {
    let source_err = |source| ArchiveError::Source {
        digest: digest.to_string(),
        source,
    };
    let mut reader = HashingReader::new(src.open_blob(digest).map_err(source_err)?);
    io::copy(&mut reader, out).map_err(source_err)?;
    let (actual, n) = reader.finish();
    if actual != digest {
        return Err(ArchiveError::DigestMismatch {
            expected: digest.into(),
            actual,
        });
    }
    Ok(n)
}

/// A deterministic tar of layout files: root-owned, mtime 0.
struct ArchiveTar<W: Write> {
    tar: TarEntryWriter<W>,
}

impl<W: Write> ArchiveTar<W> {
    fn new(out: W) -> Result<Self, ArchiveError> {
        let mut t = Self {
            tar: TarEntryWriter::new(out),
        };
        t.dir(b"blobs")?;
        t.dir(b"blobs/sha256")?;
        Ok(t)
    }

    fn dir(&mut self, name: &[u8]) -> Result<(), ArchiveError> {
        let meta = EntryMeta {
            mode: 0o755,
            ..Default::default()
        };
        self.tar
            .append(name, &TarEntryKind::Directory, &meta, io::empty())
            .map_err(out_err)
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let meta = EntryMeta {
            mode: 0o644,
            ..Default::default()
        };
        let kind = TarEntryKind::File {
            size: bytes.len() as u64,
        };
        self.tar
            .append(name.as_bytes(), &kind, &meta, bytes)
            .map_err(out_err)
    }

    fn blobs(&mut self, src: &dyn BlobSource, blobs: &[String]) -> Result<(), ArchiveError> {
        for digest in blobs {
            let hex = digest_hex(digest).map_err(|e| ArchiveError::Unsupported(e.to_string()))?;
            let source_err = |source| ArchiveError::Source {
                digest: digest.clone(),
                source,
            };
            let size = src.blob_size(digest).map_err(source_err)?;
            let mut reader = HashingReader::new(src.open_blob(digest).map_err(source_err)?);
            let meta = EntryMeta {
                mode: 0o644,
                ..Default::default()
            };
            let name = format!("blobs/sha256/{hex}");
            self.tar
                .append(
                    name.as_bytes(),
                    &TarEntryKind::File { size },
                    &meta,
                    &mut reader,
                )
                .map_err(|source| ArchiveError::Source {
                    digest: digest.clone(),
                    source,
                })?;
            let (actual, _) = reader.finish();
            if actual != *digest {
                return Err(ArchiveError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<W, ArchiveError> {
        self.tar.finish().map_err(out_err)
    }
}

fn out_err(source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        op: "writing the archive",
        path: "<output>".into(),
        source,
    }
}

/// Writes an OCI layout as a tar stream (an OCI archive) to `out`. Entries:
/// `blobs/`, `blobs/sha256/`, the blobs sorted by digest, `index.json`,
/// `oci-layout`; all root-owned with mtime 0. Returns the writer.
pub fn write_oci_archive<W: Write>(
    out: W,
    src: &dyn BlobSource,
    images: &[ExportImage],
) -> Result<W, ArchiveError> {
    let (closures, blobs) = plan(src, images)?;
    let mut tar = ArchiveTar::new(out)?;
    tar.blobs(src, &blobs)?;
    tar.file("index.json", &index_json(images, &closures))?;
    tar.file("oci-layout", OCI_LAYOUT)?;
    tar.finish()
}

#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `name` as a docker RepoTag: `:latest` added when no tag is given; `None`
/// for digest references, which RepoTags cannot hold.
fn repo_tag(name: &str) -> Option<String> {
    if name.contains('@') {
        return None;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        Some(name.to_string())
    } else {
        Some(format!("{name}:latest"))
    }
}

/// Writes a `docker load` archive to `out`: `manifest.json`
/// (`[{Config, RepoTags, Layers}]`, entries in the order of first
/// appearance, tags of the same manifest merged), config and layer blobs at
/// `blobs/sha256/<hex>` (layers as stored, compressed), plus `index.json`
/// and `oci-layout` so the archive is an OCI layout too. Every image must be
/// a single-platform manifest. Returns the writer.
pub fn write_docker_archive<W: Write>(
    out: W,
    src: &dyn BlobSource,
    images: &[ExportImage],
) -> Result<W, ArchiveError> {
    let (closures, blobs) = plan(src, images)?;
    let mut entries: Vec<DockerManifestEntry> = Vec::new();
    let mut by_manifest: BTreeMap<String, usize> = BTreeMap::new();
    for (image, c) in images.iter().zip(&closures) {
        let Some((config, layers)) = &c.single else {
            return Err(ArchiveError::Unsupported(format!(
                "docker-archive holds single-platform images; {} is an index",
                image.manifest_digest
            )));
        };
        let path = |d: &str| -> Result<String, ArchiveError> {
            let hex = digest_hex(d).map_err(|e| ArchiveError::Unsupported(e.to_string()))?;
            Ok(format!("blobs/sha256/{hex}"))
        };
        let i = match by_manifest.get(&image.manifest_digest) {
            Some(&i) => i,
            None => {
                entries.push(DockerManifestEntry {
                    config: path(config)?,
                    repo_tags: Vec::new(),
                    layers: layers.iter().map(|l| path(l)).collect::<Result<_, _>>()?,
                });
                by_manifest.insert(image.manifest_digest.clone(), entries.len() - 1);
                entries.len() - 1
            }
        };
        if let Some(tag) = image.ref_name.as_deref().and_then(repo_tag)
            && !entries[i].repo_tags.contains(&tag)
        {
            entries[i].repo_tags.push(tag);
        }
    }
    let mut tar = ArchiveTar::new(out)?;
    tar.blobs(src, &blobs)?;
    tar.file("index.json", &index_json(images, &closures))?;
    tar.file("manifest.json", &canonical_json(&entries))?;
    tar.file("oci-layout", OCI_LAYOUT)?;
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tag_adds_latest_and_skips_digests() {
        assert_eq!(repo_tag("app").as_deref(), Some("app:latest"));
        assert_eq!(
            repo_tag("localhost:5000/app").as_deref(),
            Some("localhost:5000/app:latest")
        );
        assert_eq!(repo_tag("app:1").as_deref(), Some("app:1"));
        assert_eq!(repo_tag("app@sha256:00"), None);
    }
}
