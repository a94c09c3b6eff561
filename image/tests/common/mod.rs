//! Test helpers: building layer trees, a directory blob store, raw tars.
#![allow(dead_code)]

use kiln_image::archive::{BlobSink, BlobSource};
use kiln_image::digest::{HashingReader, digest_hex};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A blob store in a directory, verifying on put.
pub struct DirStore(pub PathBuf);

impl DirStore {
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap();
        DirStore(dir.to_path_buf())
    }
    fn path(&self, digest: &str) -> io::Result<PathBuf> {
        let hex = digest_hex(digest).map_err(io::Error::other)?;
        Ok(self.0.join(hex))
    }
    pub fn put_bytes(&self, bytes: &[u8]) -> String {
        let digest = kiln_image::sha256_digest(bytes);
        fs::write(self.path(&digest).unwrap(), bytes).unwrap();
        digest
    }
    pub fn get(&self, digest: &str) -> Vec<u8> {
        fs::read(self.path(digest).unwrap()).unwrap()
    }
    pub fn count(&self) -> usize {
        fs::read_dir(&self.0).unwrap().count()
    }
}

impl BlobSource for DirStore {
    fn open_blob(&self, digest: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(fs::File::open(self.path(digest)?)?))
    }
    fn blob_size(&self, digest: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(digest)?)?.len())
    }
}

impl BlobSink for DirStore {
    fn put_blob(&self, reader: &mut dyn Read, expected: &str) -> io::Result<()> {
        let path = self.path(expected)?;
        let tmp = path.with_extension("tmp");
        let mut h = HashingReader::new(reader);
        io::copy(&mut h, &mut fs::File::create(&tmp)?)?;
        let (actual, _) = h.finish();
        if actual != expected {
            fs::remove_file(&tmp)?;
            return Err(io::Error::other(format!(
                "digest mismatch: {actual} != {expected}"
            )));
        }
        fs::rename(tmp, path)
    }
}

/// Creates a varied layer tree under `root` (files, nested dirs, a long
/// name, symlinks, a hardlink pair, a fifo, special mode bits, a user xattr,
/// a whiteout and an opaque dir), with umask `umask` in force.
pub fn make_tree(root: &Path, umask: u32) {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("etc/app/config.toml"), b"key = 1\n").unwrap();
    fs::write(root.join("a.b"), b"dot").unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a/b"), b"slash").unwrap();
    let long = "d".repeat(120);
    fs::create_dir_all(root.join(&long)).unwrap();
    fs::write(root.join(&long).join("f".repeat(90)), b"long name").unwrap();
    fs::write(root.join("bin"), vec![0x7fu8; 70_000]).unwrap();
    fs::set_permissions(root.join("bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("etc/app/config.toml", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", root.join("dangling")).unwrap();
    fs::hard_link(root.join("a.b"), root.join("hard")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // Explicit modes where tests assert them (the umask is process-wide and
    // other tests change it).
    fs::set_permissions(
        root.join("etc/app/config.toml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(root.join("a.b"), fs::Permissions::from_mode(0o644)).unwrap();
    xattr::set(root.join("etc/app/config.toml"), "user.kiln.test", b"v1").unwrap();
    // Deletion of `gone` and an opaque directory `opq` (with one new file).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    fs::create_dir_all(root.join("opq")).unwrap();
    fs::write(root.join("opq/new"), b"fresh").unwrap();
    xattr::set(root.join("opq"), "user.overlay.opaque", b"y").unwrap();
    rustix::process::umask(old);
}

/// Sets every entry's mtime (symlinks included) to `secs`.
pub fn touch_all(root: &Path, secs: i64) {
    let t = filetime_from(secs);
    for entry in walk(root) {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &entry,
            &t,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

fn filetime_from(secs: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// All paths under root (not root), sorted.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A comparable description of a tree: path → (type, mode, uid, gid, mtime,
/// rdev, size, content hash or link target, xattrs).
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let what = if ft.is_symlink() {
            format!("link:{}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            kiln_image::sha256_digest(&fs::read(&p).unwrap())
        } else {
            String::new()
        };
        let mut xattrs: Vec<String> = xattr::list(&p)
            .map(|l| {
                l.map(|n| {
                    let v = xattr::get(&p, &n).ok().flatten().unwrap_or_default();
                    format!("{}={}", n.to_string_lossy(), String::from_utf8_lossy(&v))
                })
                .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let mtime = if ft.is_dir() {
            String::from("-")
        } else {
            md.mtime().to_string()
        };
        out.insert(
            rel,
            format!(
                "mode={:o} uid={} gid={} mtime={} rdev={} nlink={} {} [{}]",
                md.mode(),
                md.uid(),
                md.gid(),
                mtime,
                md.rdev(),
                if ft.is_dir() { 0 } else { md.nlink() },
                what,
                xattrs.join(",")
            ),
        );
    }
    out
}

/// A tar with one raw header per (name, type, link, data): names are written
/// byte for byte, so hostile names (`..`, absolute) can be made.
pub fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            u.name[..name.len()].copy_from_slice(name.as_bytes());
            u.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_mode(if *kind == b'5' { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}
