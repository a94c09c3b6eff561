//! Where a compared image comes from: any [`BlobSource`] plus a manifest
//! digest (the local store goes through this door), an OCI layout
//! directory, or an OCI / docker archive unpacked into a scratch blob
//! directory. Every manifest, config and layer read here is verified
//! against its digest.

use super::CompareError;
use super::fstree::{FileTree, TreeError};
use crate::archive::{BlobSink, BlobSource, read_archive};
use crate::digest::{HashingReader, HashingWriter, digest_hex, sha256_digest};
use crate::layer::compress::decompressor;
use crate::limits::{self, CappedReadError, MAX_JSON_SIZE, MAX_MANIFEST_SIZE};
use crate::oci::{ImageConfig, Manifest, ManifestKind, parse_config, parse_manifest_or_index};
use kiln_base::atomic::AtomicFile;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// Where an image named on the command line lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLocation {
    /// A name or ID in the local store.
    Store(String),
    /// `oci:DIR`: an OCI image layout directory.
    OciLayout(PathBuf),
    /// `oci-archive:FILE`: an OCI image layout as a tar.
    OciArchive(PathBuf),
    /// `docker-archive:FILE`: a `docker save` tar.
    DockerArchive(PathBuf),
}

impl ImageLocation {
    /// Parses `oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE`; anything
    /// else is a store reference.
    pub fn parse(s: &str) -> ImageLocation {
        if let Some(p) = s.strip_prefix("oci:") {
            ImageLocation::OciLayout(PathBuf::from(p))
        } else if let Some(p) = s.strip_prefix("oci-archive:") {
            ImageLocation::OciArchive(PathBuf::from(p))
        } else if let Some(p) = s.strip_prefix("docker-archive:") {
            ImageLocation::DockerArchive(PathBuf::from(p))
        } else {
            ImageLocation::Store(s.to_string())
        }
    }
}

/// Blobs in a directory as `<dir>/sha256/<hex>` (an OCI layout's `blobs/`,
/// or a scratch directory an archive is unpacked into).
#[derive(Debug, Clone)]
pub struct DirBlobs {
    dir: PathBuf,
}

impl DirBlobs {
    /// Blobs under `dir` (created when an archive is put into it).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, digest: &str) -> io::Result<PathBuf> {
        let hex = digest_hex(digest).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self.dir.join("sha256").join(hex))
    }
}

/// Opens a blob file: never through a symlink (`O_NOFOLLOW`), and never
/// anything but a regular file. A layout directory is input kiln does not
/// control: a blob linked to `/dev/zero` would be read forever, and a FIFO
/// would block the open itself (hence `O_NONBLOCK` until the type is known).
/// Returns the file and its length.
fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        // What O_NOFOLLOW reports for a symlink; "too many levels of symbolic
        // links" would not say what is wrong.
        Err(rustix::io::Errno::LOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "is a symbolic link; blobs must be regular files",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "is not a regular file; blobs must be regular files",
        ));
    }
    // Reads of a regular file never block; the flag goes so that the file
    // behaves as any other to whoever reads it.
    rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    let len = u64::try_from(st.st_size).map_err(io::Error::other)?;
    Ok((File::from(fd), len))
}

impl BlobSource for DirBlobs {
    fn open_blob(&self, digest: &str) -> io::Result<Box<dyn Read + '_>> {
        let (file, _) = open_regular(&self.path(digest)?)?;
        Ok(Box::new(BufReader::new(file)))
    }

    fn blob_size(&self, digest: &str) -> io::Result<u64> {
        Ok(open_regular(&self.path(digest)?)?.1)
    }
}

impl BlobSink for DirBlobs {
    fn put_blob(&self, reader: &mut dyn Read, expected_digest: &str) -> io::Result<()> {
        let path = self.path(expected_digest)?;
        if path.exists() {
            return Ok(());
        }
        let dir = self.dir.join("sha256");
        fs::create_dir_all(&dir)?;
        let mut w = HashingWriter::new(AtomicFile::create(&path, 0o666)?);
        io::copy(reader, &mut w)?;
        let (file, actual, _) = w.finish();
        if actual != expected_digest {
            return Err(io::Error::other(format!(
                "blob {expected_digest} has digest {actual}: content does not match"
            )));
        }
        file.commit()
    }
}

/// An image opened for comparison: its verified manifest and config, and
/// the blobs its layers are streamed from.
pub struct OpenImage<'a> {
    /// What the user called it (for messages).
    pub name: String,
    /// Digest of the image manifest (after choosing from an index).
    pub manifest_digest: String,
    /// The manifest.
    pub manifest: Manifest,
    /// Digest of the config blob (the image ID).
    pub config_digest: String,
    /// The config.
    pub config: ImageConfig,
    blobs: Box<dyn BlobSource + 'a>,
}

impl std::fmt::Debug for OpenImage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenImage")
            .field("name", &self.name)
            .field("manifest_digest", &self.manifest_digest)
            .field("config_digest", &self.config_digest)
            .finish_non_exhaustive()
    }
}

/// Reads a small JSON blob whole and checks its digest.
fn read_verified(blobs: &dyn BlobSource, digest: &str) -> Result<Vec<u8>, CompareError> {
    let blob_err = |source| CompareError::Blob {
        digest: digest.to_string(),
        source,
    };
    let reader = blobs.open_blob(digest).map_err(blob_err)?;
    let bytes = match limits::read_capped(reader, MAX_JSON_SIZE, format!("blob {digest}")) {
        Ok(bytes) => bytes,
        Err(CappedReadError::TooLarge(e)) => return Err(e.into()),
        Err(CappedReadError::Io { source, .. }) => return Err(blob_err(source)),
    };
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(CompareError::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Follows `digest` (a manifest or an index) to one image manifest: in an
/// index, the entry for linux on this machine's architecture, else the only
/// entry.
fn resolve_manifest(
    blobs: &dyn BlobSource,
    name: &str,
    digest: &str,
) -> Result<(String, Manifest), CompareError> {
    let mut digest = digest.to_string();
    for _ in 0..4 {
        let bytes = read_verified(blobs, &digest)?;
        let doc = parse_manifest_or_index(&bytes).map_err(|source| CompareError::Oci {
            what: "manifest",
            digest: digest.clone(),
            source,
        })?;
        match doc {
            ManifestKind::Manifest(m) => return Ok((digest, m)),
            ManifestKind::Index(index) => {
                let arch = kiln_base::platform::Platform::host().architecture;
                let chosen = index
                    .manifests
                    .iter()
                    .find(|d| {
                        d.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                    })
                    .or(if index.manifests.len() == 1 {
                        index.manifests.first()
                    } else {
                        None
                    });
                match chosen {
                    Some(d) => digest = d.digest.clone(),
                    None => {
                        return Err(CompareError::Invalid {
                            name: name.to_string(),
                            reason: format!(
                                "index {digest} has {} images and none for linux/{arch}",
                                index.manifests.len()
                            ),
                        });
                    }
                }
            }
        }
    }
    Err(CompareError::Invalid {
        name: name.to_string(),
        reason: "image indexes nested too deep".into(),
    })
}

impl<'a> OpenImage<'a> {
    /// Opens the image whose manifest (or index) has `manifest_digest` in
    /// `blobs`; `name` is how messages refer to it.
    pub fn from_blobs(
        name: &str,
        manifest_digest: &str,
        blobs: Box<dyn BlobSource + 'a>,
    ) -> Result<Self, CompareError> {
        let (manifest_digest, manifest) = resolve_manifest(&*blobs, name, manifest_digest)?;
        let config_digest = manifest.config.digest.clone();
        let config_bytes = read_verified(&*blobs, &config_digest)?;
        let config = parse_config(&config_bytes).map_err(|source| CompareError::Oci {
            what: "config",
            digest: config_digest.clone(),
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            manifest_digest,
            manifest,
            config_digest,
            config,
            blobs,
        })
    }

    /// Streams every layer, base first, into the final filesystem. Each
    /// layer blob is hashed as it is read and must have its descriptor's
    /// size and digest.
    pub fn file_tree(&self) -> Result<FileTree, CompareError> {
        let mut tree = FileTree::new();
        for layer in &self.manifest.layers {
            let layer_err = |source: TreeError| CompareError::Layer {
                name: self.name.clone(),
                digest: layer.digest.clone(),
                source,
            };
            let io_err = |source: io::Error| layer_err(source.into());
            let raw = self
                .blobs
                .open_blob(&layer.digest)
                .map_err(|source| CompareError::Blob {
                    digest: layer.digest.clone(),
                    source,
                })?;
            // Never read past the descriptor's size (one byte more tells a
            // longer blob from an exact one): whatever the blob is, the read
            // ends.
            let mut hashing = HashingReader::new(raw.take(layer.size.saturating_add(1)));
            {
                let (_, tar_stream) = decompressor(BufReader::new(&mut hashing)).map_err(io_err)?;
                tree.apply_layer(tar_stream).map_err(layer_err)?;
            }
            // The tar reader stops at the end-of-archive blocks: hash the rest.
            io::copy(&mut hashing, &mut io::sink()).map_err(io_err)?;
            let (actual, read) = hashing.finish();
            if read != layer.size {
                return Err(CompareError::BlobSize {
                    digest: layer.digest.clone(),
                    declared: layer.size,
                    found: (read <= layer.size).then_some(read),
                });
            }
            if actual != layer.digest {
                return Err(CompareError::DigestMismatch {
                    expected: layer.digest.clone(),
                    actual,
                });
            }
        }
        Ok(tree)
    }
}

/// Opens an OCI layout directory (`oci:DIR`) in place.
pub fn open_oci_layout(dir: &Path) -> Result<OpenImage<'static>, CompareError> {
    let name = format!("oci:{}", dir.display());
    let index_path = dir.join("index.json");
    let io_err = |source| CompareError::Io {
        path: index_path.clone(),
        source,
    };
    // index.json is held to what blobs are: a FIFO or a link to a device
    // there would hang the read as surely.
    let (file, _) = open_regular(&index_path).map_err(io_err)?;
    let bytes = match limits::read_capped(file, MAX_MANIFEST_SIZE, "index.json") {
        Ok(bytes) => bytes,
        Err(CappedReadError::TooLarge(e)) => return Err(e.into()),
        Err(CappedReadError::Io { source, .. }) => return Err(io_err(source)),
    };
    let index_digest = sha256_digest(&bytes);
    let blobs = DirBlobs::new(dir.join("blobs"));
    // index.json is not a blob: resolve its entries by hand, then go on by digest.
    let doc = parse_manifest_or_index(&bytes).map_err(|source| CompareError::Oci {
        what: "index.json",
        digest: index_digest,
        source,
    })?;
    let ManifestKind::Index(index) = doc else {
        return Err(CompareError::Invalid {
            name,
            reason: "index.json is not an image index".into(),
        });
    };
    let digest = match index.manifests.as_slice() {
        [one] => one.digest.clone(),
        [] => {
            return Err(CompareError::Invalid {
                name,
                reason: "index.json lists no image".into(),
            });
        }
        many => {
            return Err(CompareError::Invalid {
                name,
                reason: format!(
                    "index.json lists {} images; kiln diff compares one",
                    many.len()
                ),
            });
        }
    };
    OpenImage::from_blobs(&name, &digest, Box::new(blobs))
}

/// Opens an OCI archive or docker-archive by unpacking its blobs into
/// `scratch` (a directory the caller removes afterwards).
pub fn open_archive(
    name: &str,
    file: &Path,
    scratch: &Path,
) -> Result<OpenImage<'static>, CompareError> {
    // The archive is read twice (a scan, then the blobs), and a FIFO or a
    // device never ends or cannot be read again: only a regular file (the
    // name given may be a symlink to one) is an archive.
    let md = fs::metadata(file).map_err(|source| CompareError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(CompareError::Invalid {
            name: name.to_string(),
            reason: "not a regular file (an archive must be a file, not a pipe or device)".into(),
        });
    }
    let blobs = DirBlobs::new(scratch);
    let images = read_archive(file, &blobs).map_err(|source| CompareError::Archive {
        name: name.to_string(),
        source,
    })?;
    let digest = match images.as_slice() {
        [one] => one.manifest_digest.clone(),
        [] => {
            return Err(CompareError::Invalid {
                name: name.to_string(),
                reason: "the archive holds no image".into(),
            });
        }
        many => {
            return Err(CompareError::Invalid {
                name: name.to_string(),
                reason: format!(
                    "the archive holds {} images; kiln diff compares one",
                    many.len()
                ),
            });
        }
    };
    OpenImage::from_blobs(name, &digest, Box::new(blobs))
}

/// Opens an image that is not in the store: `oci:`, `oci-archive:` or
/// `docker-archive:`. `scratch` is an empty directory for archive blobs.
/// A store reference is refused (the caller opens those with
/// [`OpenImage::from_blobs`]).
pub fn open_location(
    location: &ImageLocation,
    scratch: &Path,
) -> Result<OpenImage<'static>, CompareError> {
    let check = |path: &Path, want_dir: bool, name: String| -> Result<String, CompareError> {
        let md = fs::metadata(path).map_err(|source| CompareError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if want_dir && !md.is_dir() {
            return Err(CompareError::Invalid {
                name,
                reason: "not a directory (oci: wants an OCI layout directory)".into(),
            });
        }
        if !want_dir && md.is_dir() {
            return Err(CompareError::Invalid {
                name,
                reason: "is a directory (use oci:DIR for an OCI layout directory)".into(),
            });
        }
        Ok(name)
    };
    match location {
        ImageLocation::OciLayout(dir) => {
            check(dir, true, format!("oci:{}", dir.display()))?;
            open_oci_layout(dir)
        }
        ImageLocation::OciArchive(file) => {
            let name = check(file, false, format!("oci-archive:{}", file.display()))?;
            open_archive(&name, file, scratch)
        }
        ImageLocation::DockerArchive(file) => {
            let name = check(file, false, format!("docker-archive:{}", file.display()))?;
            open_archive(&name, file, scratch)
        }
        ImageLocation::Store(r) => Err(CompareError::Invalid {
            name: r.clone(),
            reason: "a store reference needs the store".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Descriptor, MEDIA_TYPE_CONFIG, json_blob};

    fn put(blobs: &DirBlobs, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        blobs.put_blob(&mut &bytes[..], &digest).unwrap();
        digest
    }

    /// An image of one uncompressed layer holding `/hello`, stored in `blobs`.
    fn image(blobs: &DirBlobs) -> (String, String) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(2);
        h.set_path("hello").unwrap();
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        let layer = b.into_inner().unwrap();
        let layer_digest = put(blobs, &layer);
        let (config, config_digest, config_size) = json_blob(&ImageConfig::default());
        put(blobs, &config);
        let manifest = Manifest::new(
            Descriptor::new(MEDIA_TYPE_CONFIG, &config_digest, config_size),
            vec![Descriptor::new(
                crate::layer::compress::MEDIA_TYPE_LAYER_TAR,
                &layer_digest,
                layer.len() as u64,
            )],
        );
        let (bytes, manifest_digest, _) = json_blob(&manifest);
        put(blobs, &bytes);
        (manifest_digest, layer_digest)
    }

    #[test]
    fn an_image_opens_from_any_blob_source_and_streams_its_tree() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobs::new(dir.path());
        let (manifest, _) = image(&blobs);
        let img = OpenImage::from_blobs("test", &manifest, Box::new(blobs)).unwrap();
        let tree = img.file_tree().unwrap();
        let keys: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/hello"]);
        assert_eq!(tree.entries["/hello"].size, 2);
    }

    #[test]
    fn a_corrupted_layer_is_refused_with_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobs::new(dir.path());
        let (manifest, layer) = image(&blobs);
        let path = blobs.path(&layer).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[600] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let actual = sha256_digest(&bytes);
        let img = OpenImage::from_blobs("test", &manifest, Box::new(blobs)).unwrap();
        let err = img.file_tree().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {layer} has digest {actual}: content does not match")
        );
    }

    #[test]
    fn the_blob_sink_refuses_content_that_does_not_match_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobs::new(dir.path());
        let wrong = sha256_digest(b"other");
        let err = blobs.put_blob(&mut &b"data"[..], &wrong).unwrap_err();
        assert!(err.to_string().contains("content does not match"), "{err}");
        assert!(blobs.open_blob(&wrong).is_err());
    }

    #[test]
    fn locations_parse_by_prefix() {
        assert_eq!(
            ImageLocation::parse("oci:/x"),
            ImageLocation::OciLayout("/x".into())
        );
        assert_eq!(
            ImageLocation::parse("oci-archive:a.tar"),
            ImageLocation::OciArchive("a.tar".into())
        );
        assert_eq!(
            ImageLocation::parse("docker-archive:b.tar"),
            ImageLocation::DockerArchive("b.tar".into())
        );
        assert_eq!(
            ImageLocation::parse("app:1"),
            ImageLocation::Store("app:1".into())
        );
    }
}
