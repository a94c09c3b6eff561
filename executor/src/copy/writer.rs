//! The destination side of a COPY/ADD: a layer directory being filled, seen through the
//! layers below it.
//!
//! Every question about the destination ("is this a directory?", "where does this symlink
//! lead?") is asked of the merged view (lower layers + this layer), so symlinks in the image
//! are resolved inside the image's rootfs. Writes only ever go into the layer directory,
//! and only at paths whose parents this writer created there as real directories, so the
//! host kernel never follows a symlink while writing.
//!
//! A directory that exists below and has to appear in this layer (because something is
//! written inside it) is brought up with the lower copy's owner, mode, mtime and xattrs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use filetime::FileTime;

use super::CopyError;
use super::meta;
use super::owner::Owner;
use crate::layered::{Entry, LayeredFs, clean_relative, components, join_components};

/// The layer being written and the view it merges into.
pub(crate) struct LayerWriter {
    out: PathBuf,
    view: LayeredFs,
    /// Owner of directories this step creates on the way (`--chown` user, else root).
    parent_owner: Owner,
    /// Directory times to set once everything below them is written.
    dir_times: Vec<(PathBuf, FileTime, FileTime)>,
    /// Directories this step created where nothing existed below: their children can only
    /// be in this layer, so lookups skip the lower layers.
    fresh: std::collections::HashSet<String>,
    /// View paths written, in order.
    pub written: Vec<String>,
    /// The same paths as a set: inside a fresh directory, a path this writer never wrote
    /// is not there, which spares a failing `lstat` per copied file.
    written_set: std::collections::HashSet<String>,
}

pub(crate) fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CopyError + use<> {
    let path = path.to_path_buf();
    move |source| CopyError::Io { op, path, source }
}

impl LayerWriter {
    pub fn new(out: &Path, lowers: &LayeredFs, parent_owner: Owner) -> LayerWriter {
        LayerWriter {
            out: out.to_path_buf(),
            view: lowers.with_top(out.to_path_buf()),
            parent_owner,
            dir_times: Vec::new(),
            fresh: std::collections::HashSet::new(),
            written: Vec::new(),
            written_set: std::collections::HashSet::new(),
        }
    }

    /// Like `view.lookup`, but only this layer is consulted below a fresh directory.
    fn lookup_dst(&self, vpath: &str) -> Result<Option<Entry>, CopyError> {
        if !self.fresh.contains(&super::parent_of(vpath)) {
            return Ok(self.view.lookup(vpath)?);
        }
        // A fresh directory was empty when made and everything put in it went through
        // `wrote` (a removal only makes the set say "maybe" of a path that is gone).
        if !self.written_set.contains(vpath) {
            return Ok(None);
        }
        let host = self.host(vpath);
        match fs::symlink_metadata(&host) {
            Ok(m) => Ok(Some(Entry {
                path: vpath.to_string(),
                host_path: host,
                layer: self.view.layers().len() - 1,
                kind: crate::layered::FileKind::of(&m),
                metadata: m,
            })),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                Ok(None)
            }
            Err(e) => Err(CopyError::Io {
                op: "stat",
                path: host,
                source: e,
            }),
        }
    }

    /// Records that `vpath` was put in this layer.
    fn wrote(&mut self, vpath: &str) {
        self.written.push(vpath.to_string());
        self.written_set.insert(vpath.to_string());
    }

    /// The merged view (lowers + this layer).
    pub fn view(&self) -> &LayeredFs {
        &self.view
    }

    /// Host path of a clean view path inside the layer directory.
    pub fn host(&self, vpath: &str) -> PathBuf {
        match clean_relative(vpath) {
            Some("") => return self.out.clone(),
            Some(rel) => return self.out.join(rel),
            None => {}
        }
        let mut p = self.out.clone();
        for c in components(vpath) {
            p.push(c);
        }
        p
    }

    /// `mkdir -p` in the image: resolves `vpath` through the image's symlinks, then makes
    /// every directory on the resolved path exist in this layer. Returns the resolved path.
    pub fn ensure_dir(&mut self, vpath: &str) -> Result<String, CopyError> {
        let resolved = self.view.resolve(vpath, true)?;
        let comps = components(&resolved);
        for k in 1..=comps.len() {
            let cur = join_components(&comps[..k]);
            self.ensure_one_dir(&cur, None)?;
        }
        Ok(resolved)
    }

    /// Makes the directory at the (already resolved) view path `cur` exist in this layer.
    /// Returns true when it did not exist anywhere before (freshly created with `mode`, or
    /// 0755 owned by the parent owner when `mode` is None).
    fn ensure_one_dir(&mut self, cur: &str, mode: Option<u32>) -> Result<bool, CopyError> {
        let host = self.host(cur);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => return Ok(false),
            Ok(_) => {
                return Err(CopyError::NotADirectory {
                    path: cur.to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CopyError::Io {
                    op: "stat",
                    path: host,
                    source: e,
                });
            }
        }
        match self.lookup_dst(cur)? {
            Some(e) if e.is_dir() => {
                self.bring_up_dir(&e, &host)?;
                Ok(false)
            }
            Some(_) => Err(CopyError::NotADirectory {
                path: cur.to_string(),
            }),
            None => {
                fs::create_dir(&host).map_err(io_at("mkdir", &host))?;
                let o = self.parent_owner;
                meta::set_owner(&host, o.uid, o.gid).map_err(io_at("chown", &host))?;
                meta::set_mode(&host, mode.unwrap_or(0o755)).map_err(io_at("chmod", &host))?;
                self.fresh.insert(cur.to_string());
                self.wrote(cur);
                Ok(true)
            }
        }
    }

    /// Copies a lower directory's metadata into this layer (no contents).
    fn bring_up_dir(&mut self, e: &Entry, host: &Path) -> Result<(), CopyError> {
        fs::create_dir(host).map_err(io_at("mkdir", host))?;
        meta::apply_owner_mode(host, &e.metadata).map_err(io_at("chown", host))?;
        meta::copy_xattrs(&e.host_path, host).map_err(io_at("copy xattrs to", host))?;
        self.dir_times.push((
            host.to_path_buf(),
            FileTime::from_last_access_time(&e.metadata),
            FileTime::from_last_modification_time(&e.metadata),
        ));
        Ok(())
    }

    /// Prepares `vpath` (parent already in this layer) to receive a non-directory:
    /// refuses an existing directory, removes an earlier copy in this layer.
    pub fn prepare_file_target(&mut self, vpath: &str) -> Result<PathBuf, CopyError> {
        let existing = self.lookup_dst(vpath)?;
        if let Some(e) = &existing
            && e.is_dir()
        {
            return Err(CopyError::ReplaceDirWithFile {
                path: vpath.to_string(),
            });
        }
        let host = self.host(vpath);
        // Only an entry of this layer needs removing; a lower one is simply hidden.
        let top = self.view.layers().len() - 1;
        if existing.is_none_or(|e| e.layer != top) {
            self.wrote(vpath);
            return Ok(host);
        }
        match fs::remove_file(&host) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CopyError::Io {
                    op: "remove",
                    path: host,
                    source: e,
                });
            }
        }
        self.wrote(vpath);
        Ok(host)
    }

    /// Prepares `vpath` (parent already in this layer) to receive a directory. Returns the
    /// host path and whether it was created (`mode` is the initial mode then).
    pub fn prepare_dir_target(
        &mut self,
        vpath: &str,
        mode: u32,
    ) -> Result<(PathBuf, bool), CopyError> {
        if let Some(e) = self.lookup_dst(vpath)?
            && !e.is_dir()
        {
            return Err(CopyError::CopyToNonDir {
                path: vpath.to_string(),
            });
        }
        let created = self.ensure_one_dir(vpath, Some(mode))?;
        Ok((self.host(vpath), created))
    }

    /// `tar -x` replacement at `vpath` (parent already in this layer): an existing entry of
    /// another kind is removed from this layer (a lower one is simply hidden); a directory
    /// is made to exist when `want_dir`. Returns the host path.
    pub fn prepare_replace(&mut self, vpath: &str, want_dir: bool) -> Result<PathBuf, CopyError> {
        let host = self.host(vpath);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() && want_dir => return Ok(host),
            // Iterative and never through a symlink: the tree may be a deep one from a stage.
            Ok(m) if m.is_dir() => {
                kiln_image::layer::remove::remove_tree(&host).map_err(io_at("remove", &host))?
            }
            Ok(_) => fs::remove_file(&host).map_err(io_at("remove", &host))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CopyError::Io {
                    op: "stat",
                    path: host,
                    source: e,
                });
            }
        }
        if want_dir {
            match self.lookup_dst(vpath)? {
                Some(e) if e.is_dir() => self.bring_up_dir(&e, &host)?,
                _ => fs::create_dir(&host).map_err(io_at("mkdir", &host))?,
            }
        }
        self.wrote(vpath);
        Ok(host)
    }

    /// Remembers a directory's times, applied by [`LayerWriter::finish`].
    pub fn defer_dir_time(&mut self, host: PathBuf, atime: FileTime, mtime: FileTime) {
        self.dir_times.push((host, atime, mtime));
    }

    /// Sets the deferred directory times, deepest first; the last recorded time of a
    /// directory wins.
    pub fn finish(mut self) -> Result<Vec<String>, CopyError> {
        let mut seen = std::collections::HashSet::new();
        let mut times: Vec<_> = self
            .dir_times
            .drain(..)
            .rev()
            .filter(|(p, _, _)| seen.insert(p.clone()))
            .collect();
        times.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (p, a, m) in times {
            filetime::set_symlink_file_times(&p, a, m).map_err(io_at("set times of", &p))?;
        }
        Ok(self.written)
    }
}
