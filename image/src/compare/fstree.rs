//! The final filesystem of an image as metadata: layers are streamed one
//! entry at a time (file contents are hashed, never kept) and OCI whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) are applied, giving path → [`FileMeta`].

use crate::digest::HashingWriter;
use crate::limits::{MAX_ARCHIVE_NAME, MAX_IMAGE_FILES, MAX_IMAGE_TREE_BYTES, TooLarge};
use kiln_base::gopath;
use kiln_base::whiteout::{self, Marker};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Read};

/// What kind of filesystem object a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to another path of the image.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// The metadata of one path that a comparison looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMeta {
    /// Object type.
    #[serde(rename = "type")]
    pub kind: FileType,
    /// Permission bits, setuid/setgid/sticky included (`0o7777`).
    pub mode: u32,
    /// Owner user ID.
    pub uid: u64,
    /// Owner group ID.
    pub gid: u64,
    /// Content size in bytes (regular files).
    pub size: u64,
    /// `sha256:` digest of the content (regular files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, or the hard link's target path (absolute, normalized).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Device major and minor numbers (devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<(u32, u32)>,
    /// Modification time, whole seconds.
    pub mtime: u64,
    /// Extended attributes: name → value (UTF-8 as is, else `0x` + hex).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// An image's final filesystem: absolute normalized path (`/`, `/etc/passwd`)
/// → metadata, sorted by path.
///
/// [`FileTree::apply_layer`] holds what it keeps to kiln's caps (a layer is
/// input kiln does not control, and a few hundred KB of gzip can name
/// gigabytes of paths): no path or link target over
/// [`MAX_ARCHIVE_NAME`](crate::limits::MAX_ARCHIVE_NAME), at most
/// [`MAX_IMAGE_FILES`](crate::limits::MAX_IMAGE_FILES) paths and
/// [`MAX_IMAGE_TREE_BYTES`](crate::limits::MAX_IMAGE_TREE_BYTES) of names,
/// link targets, digests and xattrs.
#[derive(Debug, Clone, Default)]
pub struct FileTree {
    /// Every path of the image.
    pub entries: BTreeMap<String, FileMeta>,
    /// What `weight` gives for `entries`, as kept by `apply_layer` (entries
    /// changed directly through the public field are not counted).
    bytes: u64,
    caps: Caps,
}

/// The caps a tree is held to: kiln's own, lowered by unit tests (a million
/// entries is too slow to build for each run).
#[derive(Debug, Clone, Copy)]
struct Caps {
    files: usize,
    bytes: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            files: MAX_IMAGE_FILES,
            bytes: MAX_IMAGE_TREE_BYTES,
        }
    }
}

impl PartialEq for FileTree {
    // `bytes` follows from `entries`: two trees with the same paths are equal.
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for FileTree {}

/// Why a layer could not be applied to a [`FileTree`].
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The layer is not a readable tar (or a tar metadata entry is over its cap).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A path or link target, or all of them together, over kiln's cap.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// More paths than kiln holds for one image.
    #[error("the image has more than {limit} files and directories (kiln's limit)")]
    TooManyFiles {
        /// The cap ([`MAX_IMAGE_FILES`]).
        limit: usize,
    },
}

/// The bytes one entry keeps beyond its fixed-size fields: what a hostile
/// layer can make large.
fn weight(path_len: usize, meta: &FileMeta) -> u64 {
    let strings = path_len
        + meta.sha256.as_ref().map_or(0, String::len)
        + meta.link.as_ref().map_or(0, String::len)
        + meta
            .xattrs
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    strings as u64
}

/// Refuses a path or link target longer than PATH_MAX, naming its start.
fn check_name(what: &str, name: &[u8]) -> Result<(), TooLarge> {
    if name.len() <= MAX_ARCHIVE_NAME {
        return Ok(());
    }
    let start: String = String::from_utf8_lossy(&name[..64])
        .chars()
        .take(64)
        .collect();
    Err(TooLarge {
        what: format!("{what} {start:?}..."),
        size: Some(name.len() as u64),
        limit: MAX_ARCHIVE_NAME as u64,
    })
}

/// Normalizes a tar member name to `/a/b`: no `./`, no trailing `/`, `.`
/// parts dropped and `..` resolved lexically. Names that climb above the
/// root give `None` (they cannot be part of the filesystem).
pub fn normalize_path(name: &str) -> Option<String> {
    gopath::components_within(name).map(|parts| format!("/{}", parts.join("/")))
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((dir, base)) => (dir, base),
        None => ("/", path),
    }
}

fn join(dir: &str, base: &str) -> String {
    if dir == "/" {
        format!("/{base}")
    } else {
        format!("{dir}/{base}")
    }
}

/// The prefix every descendant of `dir` starts with.
fn child_prefix(dir: &str) -> String {
    if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    }
}

fn xattr_value(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", hex::encode(v)),
    }
}

impl FileTree {
    /// An empty filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes `path` from the tree (the lower layers' view).
    fn remove_lower(&mut self, path: &str) {
        if let Some(old) = self.entries.remove(path) {
            self.bytes = self.bytes.saturating_sub(weight(path.len(), &old));
        }
    }

    /// Removes every descendant of `dir` (never `/` itself). The range holds
    /// only what is removed (plus `/` when `dir` is `/`), so the cost is that
    /// of the removals: a marker repeated on a directory already emptied is
    /// one lookup.
    fn remove_lower_children(&mut self, dir: &str) {
        let prefix = child_prefix(dir);
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.as_str() != "/")
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.remove_lower(&k);
        }
    }

    /// Applies one uncompressed layer tar read from `tar_stream`: entries
    /// are added or replace what lower layers had; whiteouts delete lower
    /// paths (an opaque directory hides everything below it that this layer
    /// did not add itself). Contents are hashed as they stream past.
    ///
    /// Paths and link targets over PATH_MAX, and a tree over kiln's caps
    /// (see [`FileTree`]), are refused. After an error the tree is partly
    /// updated and should be dropped.
    pub fn apply_layer(&mut self, tar_stream: impl Read) -> Result<(), TreeError> {
        let mut archive = tar::Archive::new(crate::limits::TarGuard::new(tar_stream));
        // This layer's own entries are kept apart from the lower layers' until
        // the layer ends. Whiteouts and opaque markers hide only what lies
        // below, so they act on `self.entries` alone, each visiting just what
        // it removes: the layer's own files are never rescanned (N opaque
        // markers after N files used to cost N x N).
        let mut upper: BTreeMap<String, FileMeta> = BTreeMap::new();
        let mut upper_bytes: u64 = 0;
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = {
                let raw = entry.path_bytes();
                check_name("a path in the layer", &raw)?;
                let Some(path) = normalize_path(&String::from_utf8_lossy(&raw)) else {
                    continue;
                };
                path
            };
            let (dir, base) = split_parent(&path);
            // The unpacker's rules: aufs metadata and `.wh.` alone delete nothing, and a
            // whiteout of `.` or `..` names no entry of the tree.
            match whiteout::classify(base.as_bytes()) {
                None => {}
                Some(Marker::Opaque) => {
                    let dir = dir.to_string();
                    self.remove_lower_children(&dir);
                    continue;
                }
                Some(Marker::Ignored) => continue,
                Some(Marker::Whiteout(b".." | b".")) => continue,
                Some(Marker::Whiteout(gone)) => {
                    let gone = join(dir, &String::from_utf8_lossy(gone));
                    self.remove_lower(&gone);
                    self.remove_lower_children(&gone);
                    continue;
                }
            }
            let header = entry.header().clone();
            let kind = match header.entry_type() {
                tar::EntryType::Directory => FileType::Dir,
                tar::EntryType::Symlink => FileType::Symlink,
                tar::EntryType::Link => FileType::Hardlink,
                tar::EntryType::Char => FileType::Char,
                tar::EntryType::Block => FileType::Block,
                tar::EntryType::Fifo => FileType::Fifo,
                tar::EntryType::Regular | tar::EntryType::Continuous => FileType::File,
                // PAX/GNU metadata records are consumed by the tar reader;
                // anything else is not a filesystem object.
                _ => continue,
            };
            let link_bytes = match kind {
                FileType::Symlink | FileType::Hardlink => entry.link_name_bytes(),
                _ => None,
            };
            if let Some(l) = &link_bytes {
                check_name(&format!("the link target of {path}:"), l)?;
            }
            let link = match (kind, link_bytes) {
                (FileType::Symlink, Some(l)) => Some(String::from_utf8_lossy(&l).into_owned()),
                (FileType::Hardlink, Some(l)) => normalize_path(&String::from_utf8_lossy(&l)),
                _ => None,
            };
            let device = match kind {
                FileType::Char | FileType::Block => Some((
                    header.device_major()?.unwrap_or(0),
                    header.device_minor()?.unwrap_or(0),
                )),
                _ => None,
            };
            let mut xattrs = BTreeMap::new();
            if let Some(pax) = entry.pax_extensions()? {
                for ext in pax {
                    let ext = ext?;
                    if let Ok(key) = ext.key()
                        && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                    {
                        xattrs.insert(name.to_string(), xattr_value(ext.value_bytes()));
                    }
                }
            }
            let (size, sha256) = if kind == FileType::File {
                let mut hashing = HashingWriter::new(io::sink());
                io::copy(&mut entry, &mut hashing)?;
                let (_, digest, size) = hashing.finish();
                (size, Some(digest))
            } else {
                (0, None)
            };
            let meta = FileMeta {
                kind,
                mode: header.mode()? & 0o7777,
                uid: header.uid()?,
                gid: header.gid()?,
                size,
                sha256,
                link,
                device,
                mtime: header.mtime()?,
                xattrs,
            };
            if kind != FileType::Dir {
                // A non-directory replaces a lower directory and all it held.
                self.remove_lower_children(&path);
            }
            // What is held while the layer is read is the lower tree plus this
            // layer's entries (a path in both is held twice until the merge).
            let replaced = match upper.get(&path) {
                Some(old) => weight(path.len(), old),
                None => {
                    let held = self.entries.len().saturating_add(upper.len());
                    if held >= self.caps.files {
                        return Err(TreeError::TooManyFiles {
                            limit: self.caps.files,
                        });
                    }
                    0
                }
            };
            upper_bytes = upper_bytes.saturating_sub(replaced) + weight(path.len(), &meta);
            let total = self.bytes.saturating_add(upper_bytes);
            if total > self.caps.bytes {
                return Err(TooLarge {
                    what: "the image's file list (paths, link targets, digests, xattrs)".into(),
                    size: None,
                    limit: self.caps.bytes,
                }
                .into());
            }
            upper.insert(path, meta);
        }
        for (path, meta) in upper {
            let len = path.len();
            self.bytes = self.bytes.saturating_add(weight(len, &meta));
            if let Some(old) = self.entries.insert(path, meta) {
                self.bytes = self.bytes.saturating_sub(weight(len, &old));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Regular as F};

    #[test]
    fn whiteout_removes_a_lower_file_and_its_children() {
        let mut t = FileTree::new();
        t.apply_layer(&tar_of(&[("a/", D, b""), ("a/x", F, b"1"), ("b", F, b"2")])[..])
            .unwrap();
        t.apply_layer(&tar_of(&[(".wh.a", F, b""), ("c", F, b"3")])[..])
            .unwrap();
        let keys: Vec<&str> = t.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/b", "/c"]);
    }

    /// As the unpacker reads them: `.wh.` alone and aufs metadata delete nothing (a bare
    /// `.wh.` at the root used to delete the whole tree here).
    #[test]
    fn bare_and_aufs_markers_delete_nothing() {
        let mut t = FileTree::new();
        t.apply_layer(&tar_of(&[("a/", D, b""), ("a/x", F, b"1"), ("b", F, b"2")])[..])
            .unwrap();
        t.apply_layer(&tar_of(&[(".wh.", F, b""), ("a/.wh..wh.plnk", F, b"")])[..])
            .unwrap();
        let keys: Vec<&str> = t.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/a", "/a/x", "/b"]);
    }

    #[test]
    fn opaque_dir_hides_lower_children_but_keeps_its_own_layer() {
        let mut t = FileTree::new();
        t.apply_layer(&tar_of(&[("d/", D, b""), ("d/old", F, b"1"), ("e", F, b"")])[..])
            .unwrap();
        t.apply_layer(
            &tar_of(&[
                ("d/", D, b""),
                ("d/.wh..wh..opq", F, b""),
                ("d/new", F, b"2"),
            ])[..],
        )
        .unwrap();
        let mut t2 = FileTree::new();
        t2.apply_layer(&tar_of(&[("d/", D, b""), ("d/old", F, b"1"), ("e", F, b"")])[..])
            .unwrap();
        // The opaque marker after the new entry must not hide it either.
        t2.apply_layer(
            &tar_of(&[
                ("d/", D, b""),
                ("d/new", F, b"2"),
                ("d/.wh..wh..opq", F, b""),
            ])[..],
        )
        .unwrap();
        for tree in [&t, &t2] {
            let keys: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
            assert_eq!(keys, ["/d", "/d/new", "/e"]);
        }
    }

    #[test]
    fn file_content_is_hashed_and_a_file_replacing_a_dir_drops_its_children() {
        let mut t = FileTree::new();
        t.apply_layer(&tar_of(&[("./d/", D, b""), ("./d/x", F, b"x")])[..])
            .unwrap();
        t.apply_layer(&tar_of(&[("./d", F, b"hello")])[..]).unwrap();
        let keys: Vec<&str> = t.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/d"]);
        let d = &t.entries["/d"];
        assert_eq!(d.kind, FileType::File);
        assert_eq!(d.size, 5);
        assert_eq!(
            d.sha256.as_deref(),
            Some("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
    }

    fn capped(files: usize, bytes: u64) -> FileTree {
        FileTree {
            caps: Caps { files, bytes },
            ..FileTree::new()
        }
    }

    #[test]
    fn the_file_cap_counts_what_is_held_and_refuses_one_more() {
        // Three paths fit: "/a", "/b" from the first layer, "/c" from the second.
        let mut t = capped(3, u64::MAX);
        t.apply_layer(&tar_of(&[("a", F, b""), ("b", F, b"")])[..])
            .unwrap();
        // Rewriting a path already in this layer is not one more.
        t.apply_layer(&tar_of(&[("c", F, b""), ("c", F, b"x")])[..])
            .unwrap();
        assert_eq!(t.entries.len(), 3);
        // A fourth path is refused, even one that a whiteout made room for in
        // the end: while the layer is read both sides are held.
        let err = t
            .apply_layer(&tar_of(&[("d", F, b""), (".wh.a", F, b"")])[..])
            .unwrap_err();
        assert!(
            matches!(err, TreeError::TooManyFiles { limit: 3 }),
            "{err:?}"
        );
        // Whited-out paths leave the count: a fresh tree of three, one removed,
        // takes one more.
        let mut t = capped(3, u64::MAX);
        t.apply_layer(&tar_of(&[("a", F, b""), ("b", F, b""), ("c", F, b"")])[..])
            .unwrap();
        t.apply_layer(&tar_of(&[(".wh.a", F, b""), ("d", F, b"")])[..])
            .unwrap();
        let keys: Vec<&str> = t.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/b", "/c", "/d"]);
    }

    #[test]
    fn the_byte_cap_counts_names_and_digests_and_frees_what_is_removed() {
        // A regular file costs its path plus a 71-byte digest.
        let file = |p: &str| {
            weight(
                p.len(),
                &FileMeta {
                    kind: FileType::File,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    sha256: Some(format!("sha256:{}", "0".repeat(64))),
                    link: None,
                    device: None,
                    mtime: 0,
                    xattrs: BTreeMap::new(),
                },
            )
        };
        let two = file("/a") + file("/b");
        let mut t = capped(usize::MAX, two);
        t.apply_layer(&tar_of(&[("a", F, b"1"), ("b", F, b"2")])[..])
            .unwrap();
        assert_eq!(t.bytes, two);
        let err = t.apply_layer(&tar_of(&[("c", F, b"")])[..]).unwrap_err();
        match err {
            TreeError::TooLarge(e) => {
                assert_eq!(e.limit, two);
                assert!(e.to_string().contains("file list"), "{e}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Once "/a" is whited out (and "/b" replaced in place) there is room.
        let mut t = capped(usize::MAX, two);
        t.apply_layer(&tar_of(&[("a", F, b"1"), ("b", F, b"2")])[..])
            .unwrap();
        t.apply_layer(&tar_of(&[(".wh.a", F, b""), ("b", F, b"3")])[..])
            .unwrap();
        assert_eq!(t.bytes, file("/b"));
        t.apply_layer(&tar_of(&[("c", F, b"")])[..]).unwrap();
        assert_eq!(t.bytes, two);
    }

    #[test]
    fn whiteouts_of_every_kind_match_the_rules_across_layers() {
        // Lower: a dir with children, a nested dir, files at the root.
        let lower = tar_of(&[
            ("d/", D, b""),
            ("d/x", F, b"x"),
            ("d/sub/", D, b""),
            ("d/sub/y", F, b"y"),
            ("e/", D, b""),
            ("e/z", F, b"z"),
            ("f", F, b"f"),
            ("g/", D, b""),
            ("g/w", F, b"w"),
        ]);
        let upper = tar_of(&[
            // Opaque twice, with the layer's own child between: kept.
            ("d/.wh..wh..opq", F, b""),
            ("d/new", F, b"n"),
            ("d/.wh..wh..opq", F, b""),
            // Whiteout of a dir takes its children; the layer re-adds one.
            (".wh.e", F, b""),
            ("e/", D, b""),
            ("e/again", F, b"a"),
            // A file replaces the lower dir g and all it held.
            ("g", F, b"g"),
            // A whiteout of something never there is nothing.
            (".wh.nothing", F, b""),
        ]);
        let mut t = FileTree::new();
        t.apply_layer(&lower[..]).unwrap();
        t.apply_layer(&upper[..]).unwrap();
        let keys: Vec<&str> = t.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/d", "/d/new", "/e", "/e/again", "/f", "/g"]);
        assert_eq!(t.entries["/g"].kind, FileType::File);
    }

    #[test]
    fn normalize_path_makes_absolute_paths_and_refuses_escapes() {
        assert_eq!(normalize_path("./a//b/").as_deref(), Some("/a/b"));
        assert_eq!(normalize_path("./").as_deref(), Some("/"));
        assert_eq!(normalize_path("../x"), None);
    }
}
