//! Loading images from an OCI layout directory, an OCI archive or a
//! docker-archive (plain or gzip-compressed tar) into a [`BlobSink`].
//!
//! Archives are read as streams, twice: the first pass keeps the small JSON
//! documents (index, manifests, configs, `manifest.json`) and hashes entries
//! not named by digest; the second pass streams the blobs the images need
//! into the sink, which verifies each digest. Nothing large is held in
//! memory, and a name in the archive never becomes a path on disk.
//!
//! When `index.json` is present (OCI layouts, and docker-archives from
//! `docker save` >= 25 or kiln) its manifests are loaded as they are.
//! Otherwise `manifest.json` is read and an OCI manifest is synthesized: the
//! config blob as is, and each layer file as a blob whose media type follows
//! its magic bytes (plain tar, gzip or zstd).
//!
//! Here: the two passes over the input (directory or tar); `plan`: which images and
//! blobs the kept documents name.

mod plan;

use super::{ArchiveError, BlobSink};
use crate::digest::{HashingReader, sha256_digest};
use crate::layer::compress::decompressor;
use crate::limits::{
    self, CappedReadError, MAX_ARCHIVE_ENTRIES, MAX_ARCHIVE_JSON_ENTRIES, MAX_ARCHIVE_JSON_TOTAL,
    MAX_ARCHIVE_NAME, MAX_ARCHIVE_NAMES_TOTAL, MAX_JSON_SIZE,
};
use kiln_base::digest::Digest;
use plan::Plan;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One image found in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Names recorded for it (`io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name`, else docker `RepoTags`).
    pub ref_names: Vec<String>,
    /// Digest of its manifest (or index) blob, now in the sink.
    pub manifest_digest: String,
    /// Media type of that blob.
    pub media_type: String,
}

/// A file in the archive.
#[derive(Debug, Clone, Default)]
struct FileInfo {
    size: u64,
    /// `sha256:<hex>` of the content; for a name of the form `blobs/sha256/<hex>`, the
    /// digest the name says (such a file is not hashed in the scan).
    digest: String,
    magic: Vec<u8>,
}

/// What the first pass learned.
#[derive(Debug, Default)]
struct Scan {
    small: BTreeMap<String, Vec<u8>>,
    /// Total bytes held in `small`.
    small_bytes: u64,
    files: BTreeMap<String, FileInfo>,
    /// Link name → resolved target, each at most [`MAX_ARCHIVE_NAME`] bytes.
    symlinks: BTreeMap<String, String>,
    /// Total bytes of the names and link targets recorded in `files` and `symlinks`.
    names_bytes: u64,
}

impl Scan {
    /// Whether to record an entry named `name` (with a link target of `target_len` bytes,
    /// 0 for a file): every recorded name is held until the load ends, so their number
    /// and their total size are capped, and a name longer than any path (which no
    /// manifest can refer to) is passed over rather than kept.
    fn admit(&mut self, name: &str, target_len: usize) -> Result<bool, ArchiveError> {
        if name.len() > MAX_ARCHIVE_NAME {
            return Ok(false);
        }
        if self.files.len() + self.symlinks.len() >= MAX_ARCHIVE_ENTRIES {
            return Err(ArchiveError::TooManyEntries {
                limit: MAX_ARCHIVE_ENTRIES,
            });
        }
        // Counted as admitted (a repeated name is counted again: the count only errs high).
        let total = self
            .names_bytes
            .saturating_add(name.len() as u64)
            .saturating_add(target_len as u64);
        limits::check_size(
            "the archive's entry names and link targets",
            total,
            MAX_ARCHIVE_NAMES_TOTAL,
        )?;
        self.names_bytes = total;
        Ok(true)
    }
}

enum Input {
    Dir(PathBuf),
    Tar(PathBuf),
}

/// Reads a docker-archive, OCI archive (tar, optionally gzip/zstd) or OCI
/// layout directory at `path`, stores every blob of every image in `sink`
/// (children before the manifests that reference them) and returns the images.
pub fn read_archive(path: &Path, sink: &dyn BlobSink) -> Result<Vec<LoadedImage>, ArchiveError> {
    let md = fs::metadata(path).map_err(|source| ArchiveError::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let input = if md.is_dir() {
        Input::Dir(path.to_path_buf())
    } else {
        Input::Tar(path.to_path_buf())
    };
    let scan = input.scan()?;
    let mut plan = Plan::new(path, &scan);
    let images = if scan.small.contains_key("index.json") {
        plan.load_index()?
    } else if scan.small.contains_key("manifest.json") {
        plan.load_docker_manifest()?
    } else {
        return Err(ArchiveError::Invalid {
            archive: path.to_path_buf(),
            reason:
                "neither index.json nor manifest.json found: not an OCI layout or docker-archive"
                    .into(),
        });
    };
    // Large blobs first, then the JSON documents, children before parents.
    input.put_big(&plan.big, sink)?;
    for (digest, bytes) in &plan.small_puts {
        let mut r: &[u8] = bytes;
        sink.put_blob(&mut r, digest)
            .map_err(|source| ArchiveError::Sink {
                digest: digest.clone(),
                source,
            })?;
    }
    Ok(images)
}

/// Normalizes an archive name: no leading `./` or `/`, no empty or `.`
/// parts, `..` resolved lexically (escaping names give `None`).
fn normalize(name: &str) -> Option<String> {
    kiln_base::gopath::components_within(name).map(|parts| parts.join("/"))
}

/// The digest a `blobs/sha256/<hex>` name says its content has.
fn blob_name_digest(name: &str) -> Option<Digest> {
    name.strip_prefix("blobs/sha256/")
        .and_then(|hex| Digest::from_hex(hex).ok())
}

/// Reads an entry during the scan: JSON-looking small files are kept, names
/// not addressed by digest are hashed, and the first bytes are recorded.
///
/// What is kept is bounded per entry ([`MAX_JSON_SIZE`]) and per archive (count and
/// total), so an archive of a million small JSON files is refused instead of being held.
fn scan_entry(
    scan: &mut Scan,
    name: String,
    size: u64,
    mut r: impl Read,
    io_err: &dyn Fn(io::Error) -> ArchiveError,
) -> Result<(), ArchiveError> {
    if !scan.admit(&name, 0)? {
        return Ok(());
    }
    let mut head = Vec::new();
    (&mut r).take(4).read_to_end(&mut head).map_err(io_err)?;
    let jsonish =
        size <= MAX_JSON_SIZE && (head.first() == Some(&b'{') || head.first() == Some(&b'['));
    let named = blob_name_digest(&name);
    let blob = named.is_some();
    let mut info = FileInfo {
        size,
        digest: named.map(Digest::into_string).unwrap_or_default(),
        magic: head.clone(),
    };
    if !jsonish && size > MAX_JSON_SIZE && (name == "index.json" || name == "manifest.json") {
        // Said here, or the load would fail later as "no index.json nor manifest.json".
        limits::check_size(format!("{name} in the archive"), size, MAX_JSON_SIZE)?;
    }
    if jsonish {
        if scan.small.len() >= MAX_ARCHIVE_JSON_ENTRIES {
            return Err(ArchiveError::TooManyDocuments {
                limit: MAX_ARCHIVE_JSON_ENTRIES,
            });
        }
        limits::check_size(
            "the archive's JSON",
            scan.small_bytes.saturating_add(size),
            MAX_ARCHIVE_JSON_TOTAL,
        )?;
        // The declared size bounds a tar entry's reader, not a directory's file (it can
        // grow while read), so the read is capped too.
        let what = format!("{name} in the archive");
        let rest = match limits::read_capped(r, MAX_JSON_SIZE - head.len() as u64, what) {
            Ok(rest) => rest,
            Err(CappedReadError::TooLarge(e)) => return Err(e.into()),
            Err(CappedReadError::Io { source, .. }) => return Err(io_err(source)),
        };
        let mut all = head;
        all.extend_from_slice(&rest);
        if !blob {
            info.digest = sha256_digest(&all);
        }
        scan.small_bytes += all.len() as u64;
        if let Some(old) = scan.small.insert(name.clone(), all) {
            scan.small_bytes -= old.len() as u64;
        }
    } else if !blob {
        let mut h = HashingReader::new(io::Cursor::new(head).chain(r));
        io::copy(&mut h, &mut io::sink()).map_err(io_err)?;
        info.digest = h.finish().0;
    }
    scan.files.insert(name, info);
    Ok(())
}

impl Input {
    fn path(&self) -> &Path {
        match self {
            Input::Dir(p) | Input::Tar(p) => p,
        }
    }

    fn io_err(&self, op: &'static str) -> impl Fn(io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Io {
            op,
            path: self.path().to_path_buf(),
            source,
        }
    }

    /// Opens the tar stream, decompressing a gzip/zstd archive.
    fn open_tar(&self) -> Result<tar::Archive<Box<dyn Read>>, ArchiveError> {
        let file = File::open(self.path()).map_err(self.io_err("opening"))?;
        let (_, reader) = decompressor(BufReader::new(file)).map_err(self.io_err("reading"))?;
        let guarded: Box<dyn Read> = Box::new(limits::TarGuard::new(reader));
        Ok(tar::Archive::new(guarded))
    }

    fn scan(&self) -> Result<Scan, ArchiveError> {
        let mut scan = Scan::default();
        match self {
            Input::Tar(_) => {
                let mut archive = self.open_tar()?;
                for entry in archive.entries().map_err(self.io_err("reading"))? {
                    let entry = entry.map_err(self.io_err("reading"))?;
                    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let Some(name) = normalize(&raw) else {
                        continue;
                    };
                    match entry.header().entry_type() {
                        tar::EntryType::Regular | tar::EntryType::Continuous => {
                            let size = entry.size();
                            scan_entry(&mut scan, name, size, entry, &self.io_err("reading"))?;
                        }
                        tar::EntryType::Symlink | tar::EntryType::Link => {
                            let target = entry.link_name_bytes().unwrap_or_default();
                            // A target longer than PATH_MAX is one no kernel follows, and
                            // keeping each whole (a PAX linkpath can be 1 MiB) would let a
                            // small gzip fill memory: passed over, as a long name is.
                            if target.len() > MAX_ARCHIVE_NAME {
                                continue;
                            }
                            let target = String::from_utf8_lossy(&target).into_owned();
                            let resolved = if entry.header().entry_type() == tar::EntryType::Link
                                || target.starts_with('/')
                            {
                                normalize(&target)
                            } else {
                                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                                normalize(&format!("{dir}/{target}"))
                            };
                            // A resolved target over the cap cannot name a recorded file.
                            if let Some(r) = resolved
                                && r.len() <= MAX_ARCHIVE_NAME
                                && scan.admit(&name, r.len())?
                            {
                                scan.symlinks.insert(name, r);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Input::Dir(root) => self.scan_dir(root, "", &mut scan, 0)?,
        }
        Ok(scan)
    }

    fn scan_dir(
        &self,
        dir: &Path,
        prefix: &str,
        scan: &mut Scan,
        depth: u32,
    ) -> Result<(), ArchiveError> {
        if depth > 8 {
            return Ok(());
        }
        let err = |source| ArchiveError::Io {
            op: "reading",
            path: dir.to_path_buf(),
            source,
        };
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let Some(n_str) = n.to_str() else { continue };
            let name = if prefix.is_empty() {
                n_str.to_string()
            } else {
                format!("{prefix}/{n_str}")
            };
            let path = dir.join(&n);
            let md = fs::symlink_metadata(&path).map_err(|source| ArchiveError::Io {
                op: "reading",
                path: path.clone(),
                source,
            })?;
            if md.is_dir() {
                self.scan_dir(&path, &name, scan, depth + 1)?;
            } else if md.is_file() {
                let f = File::open(&path).map_err(|source| ArchiveError::Io {
                    op: "reading",
                    path: path.clone(),
                    source,
                })?;
                let io_err = |source| ArchiveError::Io {
                    op: "reading",
                    path: path.clone(),
                    source,
                };
                scan_entry(scan, name, md.len(), f, &io_err)?;
            }
        }
        Ok(())
    }

    /// Streams the named large blobs into the sink.
    fn put_big(
        &self,
        big: &BTreeMap<String, String>,
        sink: &dyn BlobSink,
    ) -> Result<(), ArchiveError> {
        if big.is_empty() {
            return Ok(());
        }
        let put = |name: &str, r: &mut dyn Read| -> Result<(), ArchiveError> {
            let digest = &big[name];
            sink.put_blob(r, digest)
                .map_err(|source| ArchiveError::Sink {
                    digest: digest.clone(),
                    source,
                })
        };
        let mut done = BTreeSet::new();
        match self {
            Input::Dir(root) => {
                for name in big.keys() {
                    let path = root.join(name);
                    let mut f = File::open(&path).map_err(|source| ArchiveError::Io {
                        op: "opening",
                        path: path.clone(),
                        source,
                    })?;
                    put(name, &mut f)?;
                    done.insert(name.clone());
                }
            }
            Input::Tar(_) => {
                let mut archive = self.open_tar()?;
                for entry in archive.entries().map_err(self.io_err("reading"))? {
                    let mut entry = entry.map_err(self.io_err("reading"))?;
                    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let Some(name) = normalize(&raw) else {
                        continue;
                    };
                    if big.contains_key(&name) && !done.contains(&name) {
                        put(&name, &mut entry)?;
                        done.insert(name);
                    }
                }
            }
        }
        match big.keys().find(|k| !done.contains(*k)) {
            Some(missing) => Err(ArchiveError::Missing {
                archive: self.path().to_path_buf(),
                what: missing.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_and_refuses_escapes() {
        assert_eq!(normalize("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize("x/../y").as_deref(), Some("y"));
        assert_eq!(normalize("../etc/passwd"), None);
    }
}
