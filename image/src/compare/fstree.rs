//! The final filesystem of an image as metadata: layers are streamed one
//! entry at a time (file contents are hashed, never kept) and OCI whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) are applied, giving path → [`FileMeta`].

use crate::digest::HashingWriter;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    /// Every path of the image.
    pub entries: BTreeMap<String, FileMeta>,
}

/// Normalizes a tar member name to `/a/b`: no `./`, no trailing `/`, `.`
/// parts dropped and `..` resolved lexically. Names that climb above the
/// root give `None` (they cannot be part of the filesystem).
pub fn normalize_path(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
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

    /// Removes the descendants of `dir` that `keep` does not hold.
    fn remove_children(&mut self, dir: &str, keep: &BTreeSet<String>) {
        let prefix = child_prefix(dir);
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.as_str() != "/" && !keep.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// Applies one uncompressed layer tar read from `tar_stream`: entries
    /// are added or replace what lower layers had; whiteouts delete lower
    /// paths (an opaque directory hides everything below it that this layer
    /// did not add itself). Contents are hashed as they stream past.
    pub fn apply_layer(&mut self, tar_stream: impl Read) -> io::Result<()> {
        let mut archive = tar::Archive::new(crate::limits::TarGuard::new(tar_stream));
        // Paths this layer wrote: whiteouts only hide what lies below.
        let mut added: BTreeSet<String> = BTreeSet::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normalize_path(&raw) else {
                continue;
            };
            let (dir, base) = split_parent(&path);
            if base == ".wh..wh..opq" {
                let dir = dir.to_string();
                self.remove_children(&dir, &added);
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = join(dir, gone);
                if !added.contains(&gone) {
                    self.entries.remove(&gone);
                }
                self.remove_children(&gone, &added);
                continue;
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
            let link = match kind {
                FileType::Symlink => entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
                FileType::Hardlink => entry
                    .link_name_bytes()
                    .and_then(|l| normalize_path(&String::from_utf8_lossy(&l))),
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
                self.remove_children(&path, &added);
            }
            added.insert(path.clone());
            self.entries.insert(path, meta);
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

    #[test]
    fn normalize_path_makes_absolute_paths_and_refuses_escapes() {
        assert_eq!(normalize_path("./a//b/").as_deref(), Some("/a/b"));
        assert_eq!(normalize_path("./").as_deref(), Some("/"));
        assert_eq!(normalize_path("../x"), None);
    }
}
