//! A read-only merged view over a stack of layer directories.
//!
//! A layer directory holds exactly what one layer adds or changes; a deletion is an overlay
//! whiteout (a character device 0:0) and a directory that hides lower content carries the
//! xattr `user.overlay.opaque=y` (or `trusted.overlay.opaque=y`). [`LayeredFs`] answers
//! questions about the merged tree (what `ls` would show in the container) without mounting
//! anything: lookups, sorted directory listings, symlink resolution confined to the view's
//! root, file reads, and flattening into a real directory ([`LayeredFs::materialize`]).
//!
//! Every lookup walks each layer component by component with `lstat`, so a symlink inside a
//! layer directory is never followed by the host kernel: symlinks are resolved here, with
//! the view's root as `/`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::limits::{self, CappedReadError, MAX_IMAGE_FILE_SIZE, TooLarge};

use crate::copy::meta;

/// Most symlinks followed while resolving one path (Linux uses 40; BuildKit's
/// `fs.RootPath` allows 255).
pub const MAX_SYMLINKS: usize = 255;

/// Errors from reading a layered view.
#[derive(Debug, thiserror::Error)]
pub enum LayeredError {
    #[error("resolving {path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("{path} is a symlink written by this step; refusing to follow it")]
    SymlinkInLayer { path: String },
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: file name is not UTF-8 ({host})")]
    NonUtf8Name { path: String, host: PathBuf },
    #[error("reading {host}: {source}")]
    Io { host: PathBuf, source: io::Error },
    #[error("writing {host}: {source}")]
    Write { host: PathBuf, source: io::Error },
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

fn io_err(host: &Path) -> impl FnOnce(io::Error) -> LayeredError + '_ {
    move |source| LayeredError::Io {
        host: host.to_path_buf(),
        source,
    }
}

/// What kind of file an entry is (after whiteouts are interpreted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Devices, fifos and sockets.
    Other,
}

impl FileKind {
    /// The kind of an `lstat` result.
    pub fn of(m: &Metadata) -> FileKind {
        let ft = m.file_type();
        if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        }
    }
}

/// One visible file of the merged view.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Absolute, clean path inside the view (`/` for the root).
    pub path: String,
    /// Where the top-most copy lives on the host.
    pub host_path: PathBuf,
    /// Index of the layer holding it (0 = bottom).
    pub layer: usize,
    pub kind: FileKind,
    /// `lstat` of `host_path`.
    pub metadata: Metadata,
}

impl Entry {
    /// Permission bits including setuid, setgid and sticky.
    pub fn mode(&self) -> u32 {
        self.metadata.mode() & 0o7777
    }
    pub fn uid(&self) -> u32 {
        self.metadata.uid()
    }
    pub fn gid(&self) -> u32 {
        self.metadata.gid()
    }
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
    /// The final path component (empty for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// One child in a merged directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub entry: Entry,
}

/// Splits a view path into clean components: `.` dropped, `..` clamped at the root.
pub fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

/// A path [`components`] and [`join_components`] would give back unchanged (`/`, or `/`
/// followed by names joined by single slashes, none `.` or `..`), without its leading `/`:
/// the paths of a walk are built clean, and this spares their hot paths the allocations of
/// a split and a join.
pub fn clean_relative(path: &str) -> Option<&str> {
    let rel = path.strip_prefix('/')?;
    if rel.is_empty() {
        return Some(rel);
    }
    rel.split('/')
        .all(|c| !matches!(c, "" | "." | ".."))
        .then_some(rel)
}

/// Joins components back into an absolute view path.
pub fn join_components<S: AsRef<str>>(comps: &[S]) -> String {
    if comps.is_empty() {
        return "/".to_string();
    }
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(c.as_ref());
    }
    s
}

/// Result of probing one layer for a path.
enum Probe {
    Found(Metadata),
    /// Not present in this layer; `opaque` when a directory above it in this layer is opaque.
    Missing {
        opaque: bool,
    },
    /// A whiteout or a non-directory on the way hides the path and everything below.
    Hidden,
}

/// A read-only merged view over layer directories (bottom first).
#[derive(Clone, Debug, Default)]
pub struct LayeredFs {
    layers: Vec<PathBuf>,
    /// A plain directory: no whiteout or opaque interpretation (a build context).
    plain: bool,
}

impl LayeredFs {
    /// A view over `layers`, bottom first. An empty stack is `scratch`.
    pub fn new(layers: Vec<PathBuf>) -> LayeredFs {
        LayeredFs {
            layers,
            plain: false,
        }
    }

    /// A view over one ordinary directory (a build context): character devices and opaque
    /// xattrs there are ordinary files, not layer markers.
    pub fn plain_dir(root: PathBuf) -> LayeredFs {
        LayeredFs {
            layers: vec![root],
            plain: true,
        }
    }

    /// The layer directories, bottom first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// This view with one more layer on top.
    pub fn with_top(&self, dir: PathBuf) -> LayeredFs {
        let mut layers = self.layers.clone();
        layers.push(dir);
        LayeredFs {
            layers,
            plain: self.plain,
        }
    }

    fn is_whiteout(&self, m: &Metadata) -> bool {
        !self.plain && kiln_base::whiteout::is_whiteout_device(m)
    }

    fn is_opaque(&self, host: &Path) -> bool {
        !self.plain && crate::layer_dir::is_opaque(host)
    }

    fn probe(&self, layer: usize, comps: &[String]) -> Result<Probe, LayeredError> {
        let mut p = self.layers[layer].clone();
        let mut opaque = false;
        if comps.is_empty() {
            return match fs::symlink_metadata(&p) {
                Ok(m) => Ok(Probe::Found(m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Probe::Missing { opaque }),
                Err(e) => Err(LayeredError::Io { host: p, source: e }),
            };
        }
        for (k, c) in comps.iter().enumerate() {
            p.push(c);
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    return Ok(Probe::Missing { opaque });
                }
                Err(e) => return Err(LayeredError::Io { host: p, source: e }),
            };
            if self.is_whiteout(&m) {
                return Ok(Probe::Hidden);
            }
            if k + 1 == comps.len() {
                return Ok(Probe::Found(m));
            }
            if !m.is_dir() {
                return Ok(Probe::Hidden);
            }
            // Nothing lies below the bottom layer, so its opaque markers hide nothing.
            if layer > 0 && self.is_opaque(&p) {
                opaque = true;
            }
        }
        Ok(Probe::Missing { opaque })
    }

    fn host_of(&self, layer: usize, comps: &[String]) -> PathBuf {
        let mut p = self.layers[layer].clone();
        for c in comps {
            p.push(c);
        }
        p
    }

    /// Looks a clean component path up without following any symlink.
    fn lookup_raw(&self, comps: &[String]) -> Result<Option<Entry>, LayeredError> {
        for i in (0..self.layers.len()).rev() {
            match self.probe(i, comps)? {
                Probe::Found(m) => {
                    return Ok(Some(Entry {
                        path: join_components(comps),
                        host_path: self.host_of(i, comps),
                        layer: i,
                        kind: FileKind::of(&m),
                        metadata: m,
                    }));
                }
                Probe::Hidden => return Ok(None),
                Probe::Missing { opaque: true } => return Ok(None),
                Probe::Missing { opaque: false } => {}
            }
        }
        Ok(None)
    }

    /// What layer `layer` alone says of `path` (parents known to be real directories, as
    /// for [`LayeredFs::lookup`]): `Some(true)` when it holds the path, `Some(false)` when it
    /// hides it from the layers below (a whiteout, an opaque or non-directory parent),
    /// `None` when the layers below decide. A lookup is the first layer from the top that
    /// decides.
    pub fn decides(&self, layer: usize, path: &str) -> Result<Option<bool>, LayeredError> {
        Ok(match self.probe(layer, &components(path))? {
            Probe::Found(_) => Some(true),
            Probe::Hidden | Probe::Missing { opaque: true } => Some(false),
            Probe::Missing { opaque: false } => None,
        })
    }

    /// `lstat` of a view path: parents are resolved through symlinks (inside the view), the
    /// last component is not followed. `None` when nothing is visible there.
    pub fn metadata(&self, path: &str) -> Result<Option<Entry>, LayeredError> {
        let resolved = self.resolve(path, false)?;
        self.lookup_raw(&components(&resolved))
    }

    /// Looks up a path whose parents are known to be real directories (no symlink is
    /// followed anywhere; a symlink among the parents hides the path). Cheaper than
    /// [`LayeredFs::metadata`] for walks that only descend through directories.
    pub fn lookup(&self, path: &str) -> Result<Option<Entry>, LayeredError> {
        self.lookup_raw(&components(path))
    }

    /// `stat` of a view path: every symlink is followed (inside the view).
    pub fn stat(&self, path: &str) -> Result<Option<Entry>, LayeredError> {
        let resolved = self.resolve(path, true)?;
        self.lookup_raw(&components(&resolved))
    }

    /// Resolves symlinks in `path` with the view's root as `/`; `..` never climbs above it.
    /// Missing components are kept as written. With `follow_last`, a final symlink is
    /// followed too. Returns a clean absolute path.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, LayeredError> {
        self.resolve_inner(path, follow_last, None)
    }

    /// Like [`LayeredFs::resolve`], but fails with [`LayeredError::SymlinkInLayer`] rather
    /// than follow a symlink that lives in layer `layer` (used while extracting an archive,
    /// so the archive can never redirect its own writes through a symlink it planted).
    pub fn resolve_avoiding(
        &self,
        path: &str,
        follow_last: bool,
        layer: usize,
    ) -> Result<String, LayeredError> {
        self.resolve_inner(path, follow_last, Some(layer))
    }

    fn resolve_inner(
        &self,
        path: &str,
        follow_last: bool,
        avoid: Option<usize>,
    ) -> Result<String, LayeredError> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .rev()
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0usize;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            if todo.is_empty() && !follow_last {
                break;
            }
            let Some(e) = self.lookup_raw(&cur)? else {
                continue;
            };
            if e.kind != FileKind::Symlink {
                continue;
            }
            if avoid == Some(e.layer) {
                return Err(LayeredError::SymlinkInLayer { path: e.path });
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(LayeredError::SymlinkLoop {
                    path: path.to_string(),
                });
            }
            let target = fs::read_link(&e.host_path).map_err(io_err(&e.host_path))?;
            let target = target.to_str().ok_or_else(|| LayeredError::NonUtf8Name {
                path: e.path.clone(),
                host: e.host_path.clone(),
            })?;
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .rev()
                    .map(str::to_string),
            );
        }
        Ok(join_components(&cur))
    }

    /// The merged, name-sorted children of a directory (symlinks in `path` are followed).
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, LayeredError> {
        let resolved = self.resolve(path, true)?;
        self.read_dir_resolved(&resolved)
    }

    /// [`LayeredFs::read_dir`] for a path already free of symlinks (an [`Entry::path`] of a
    /// directory met while walking): skips resolution.
    pub fn read_dir_resolved(&self, path: &str) -> Result<Vec<DirEntry>, LayeredError> {
        let comps = components(path);
        let resolved = join_components(&comps);
        match self.lookup_raw(&comps)? {
            None if !comps.is_empty() || self.layers.is_empty() => {
                if comps.is_empty() {
                    return Ok(Vec::new());
                }
                return Err(LayeredError::NotFound { path: resolved });
            }
            Some(e) if !e.is_dir() => return Err(LayeredError::NotADirectory { path: resolved }),
            _ => {}
        }
        let mut seen: BTreeMap<String, Option<Entry>> = BTreeMap::new();
        for i in (0..self.layers.len()).rev() {
            let (m, opaque_above) = match self.probe(i, &comps)? {
                Probe::Found(m) => (m, false),
                Probe::Hidden | Probe::Missing { opaque: true } => break,
                Probe::Missing { opaque: false } => continue,
            };
            if !m.is_dir() {
                break;
            }
            let host = self.host_of(i, &comps);
            let rd = fs::read_dir(&host).map_err(io_err(&host))?;
            for ent in rd {
                let ent = ent.map_err(io_err(&host))?;
                let name = ent.file_name();
                let Some(name) = name.to_str() else {
                    return Err(LayeredError::NonUtf8Name {
                        path: resolved.clone(),
                        host: ent.path(),
                    });
                };
                if seen.contains_key(name) {
                    continue;
                }
                let child_host = ent.path();
                // lstat on the directory's fd: no walk of the whole path per child.
                let cm = ent.metadata().map_err(io_err(&child_host))?;
                let value = if self.is_whiteout(&cm) {
                    None
                } else {
                    // `resolved` is clean and `name` one component: their join is.
                    let path = if comps.is_empty() {
                        format!("/{name}")
                    } else {
                        format!("{resolved}/{name}")
                    };
                    Some(Entry {
                        path,
                        host_path: child_host,
                        layer: i,
                        kind: FileKind::of(&cm),
                        metadata: cm,
                    })
                };
                seen.insert(name.to_string(), value);
            }
            if opaque_above || (i > 0 && self.is_opaque(&host)) {
                break;
            }
        }
        Ok(seen
            .into_iter()
            .filter_map(|(name, e)| e.map(|entry| DirEntry { name, entry }))
            .collect())
    }

    /// Reads a regular file (symlinks followed inside the view), refusing one over
    /// [`MAX_IMAGE_FILE_SIZE`]: the image (or an earlier RUN) decides how big it is.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, LayeredError> {
        let resolved = self.resolve(path, true)?;
        match self.lookup_raw(&components(&resolved))? {
            None => Err(LayeredError::NotFound { path: resolved }),
            Some(e) if e.kind != FileKind::File => Err(LayeredError::NotAFile { path: resolved }),
            Some(e) => {
                let f = fs::File::open(&e.host_path).map_err(io_err(&e.host_path))?;
                let len = f.metadata().map_err(io_err(&e.host_path))?.len();
                limits::check_size(resolved.as_str(), len, MAX_IMAGE_FILE_SIZE)?;
                match limits::read_capped(f, MAX_IMAGE_FILE_SIZE, resolved.as_str()) {
                    Ok(bytes) => Ok(bytes),
                    Err(CappedReadError::TooLarge(e)) => Err(e.into()),
                    Err(CappedReadError::Io { source, .. }) => Err(io_err(&e.host_path)(source)),
                }
            }
        }
    }

    /// Flattens the merged view into `dest` (created if missing): contents, owners, modes,
    /// mtimes, xattrs (overlay markers excluded), symlinks, devices and hardlinks between
    /// files of the same layer.
    pub fn materialize(&self, dest: &Path) -> Result<(), LayeredError> {
        let wr = |host: &Path| {
            let host = host.to_path_buf();
            move |source| LayeredError::Write { host, source }
        };
        fs::create_dir_all(dest).map_err(wr(dest))?;
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut dirs: Vec<(PathBuf, Metadata)> = Vec::new();
        if let Some(root) = self.lookup_raw(&[])? {
            dirs.push((dest.to_path_buf(), root.metadata.clone()));
            meta::apply_owner_mode(dest, &root.metadata).map_err(wr(dest))?;
            meta::copy_xattrs(&root.host_path, dest).map_err(wr(dest))?;
        }
        let mut stack: Vec<(String, PathBuf)> = vec![("/".to_string(), dest.to_path_buf())];
        while let Some((vpath, hdir)) = stack.pop() {
            for child in self.read_dir_resolved(&vpath)? {
                let e = child.entry;
                let target = hdir.join(&child.name);
                let m = &e.metadata;
                match e.kind {
                    FileKind::Dir => {
                        fs::create_dir(&target).map_err(wr(&target))?;
                        dirs.push((target.clone(), m.clone()));
                        stack.push((e.path.clone(), target.clone()));
                    }
                    FileKind::File => {
                        let key = (m.dev(), m.ino());
                        if m.nlink() > 1 {
                            if let Some(first) = links.get(&key) {
                                fs::hard_link(first, &target).map_err(wr(&target))?;
                                continue;
                            }
                            links.insert(key, target.clone());
                        }
                        fs::copy(&e.host_path, &target).map_err(wr(&target))?;
                    }
                    FileKind::Symlink => {
                        let t = fs::read_link(&e.host_path).map_err(io_err(&e.host_path))?;
                        std::os::unix::fs::symlink(&t, &target).map_err(wr(&target))?;
                    }
                    FileKind::Other => {
                        meta::mknod_like(&target, m).map_err(wr(&target))?;
                    }
                }
                meta::apply_owner_mode(&target, m).map_err(wr(&target))?;
                meta::copy_xattrs(&e.host_path, &target).map_err(wr(&target))?;
                if e.kind != FileKind::Dir {
                    meta::set_times(&target, m).map_err(wr(&target))?;
                }
            }
        }
        // Directory times last, deepest first: creating children bumps a parent's mtime.
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, m) in dirs {
            meta::set_times(&p, &m).map_err(wr(&p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_path_is_the_one_components_and_join_give_back() {
        for p in ["/", "/a", "/a/b", "/a/.b/c..", "/..a/b"] {
            assert_eq!(join_components(&components(p)), p);
            assert_eq!(clean_relative(p), Some(&p[1..]), "{p}");
        }
        for p in [
            "", "a", "//a", "/a/", "/a//b", "/./a", "/a/.", "/a/../b", "/..",
        ] {
            assert_eq!(clean_relative(p), None, "{p}");
        }
    }
}
