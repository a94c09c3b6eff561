//! Copying one source entry (file, directory tree, symlink, device) into the layer with
//! BuildKit's `cp -a`-like rules: symlinks inside directories are copied as symlinks, a
//! nested directory that already exists takes the source's metadata, a file never replaces
//! a directory, hardlinked source files stay hardlinked, `--chown`/`--chmod` apply to every
//! copied entry, mtimes and xattrs come from the source.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rayon::prelude::*;

use filetime::FileTime;

use super::owner::Owner;
use super::relink::{PreviousCopy, Wanted};
use super::writer::{LayerWriter, io_at};
use super::{CopyError, SourceFilter, meta};
use crate::layered::{Entry, FileKind, LayeredFs};
use kiln_context::IgnoreMatcher;
use kiln_image::{ExternalContent, ExternalFile};
use kiln_parser::chmod::ModeSpec;

/// Where a source entry comes from and how its ownership is treated.
pub(crate) struct Source<'a> {
    pub fs: &'a LayeredFs,
    /// `.dockerignore` filter on context-relative paths (false = excluded).
    pub filter: Option<&'a SourceFilter>,
    /// Keep the source's uid/gid (`--from` a stage); context files become 0:0.
    pub preserve_owner: bool,
    /// The source root is a context directory (its paths are the ones step keys name).
    pub from_context: bool,
}

impl Source<'_> {
    /// Whether a source entry is visible (not excluded by `.dockerignore`).
    pub fn visible(&self, e: &Entry) -> bool {
        match self.filter {
            // The context root itself is always there.
            Some(f) if e.path != "/" => f(e.path.trim_start_matches('/')),
            _ => true,
        }
    }
}

/// Per-source-argument copier state (BuildKit makes one copier per copy action).
pub(crate) struct Copier<'a> {
    pub chown: Option<Owner>,
    pub mode: Option<&'a ModeSpec>,
    pub excludes: &'a IgnoreMatcher,
    /// Source inode → first host path written, to recreate hardlinks.
    links: HashMap<(u64, u64), PathBuf>,
    /// Regular files to write in [`Copier::flush`].
    jobs: Vec<FileJob>,
    /// (first name, new name) hardlinks to make once the jobs ran.
    hardlinks: Vec<(PathBuf, PathBuf)>,
    pub bytes: u64,
    /// Write regular files as empty placeholders and record their sources in `content`.
    pub reference: bool,
    /// Record every regular file written (placeholders in `content`, real files removed
    /// from it): an inode freed by a replaced placeholder may come back as a real file.
    pub track: bool,
    pub content: ExternalContent,
    /// The step's previous snapshot, to link unchanged context files from, and the layer
    /// directory's root (what the snapshot's paths are relative to).
    pub relink: Option<(Arc<PreviousCopy>, &'a Path)>,
    /// Batches of jobs handed to the thread pool while the walk goes on (relinking only):
    /// their bytes or first error, and how many were handed over.
    batches: (mpsc::Sender<BatchDone>, mpsc::Receiver<BatchDone>),
    in_flight: usize,
}

/// What a batch of jobs run on the thread pool sends back: its bytes or its first error.
type BatchDone = Result<u64, CopyError>;

/// Jobs a relinking copy queues before it hands them to the thread pool as one batch: the
/// walk (a `statx` and some bookkeeping per file) and the links (a `statat`, two
/// `listxattrat` and a `linkat` per file) then overlap instead of following each other.
const BATCH: usize = 256;

/// One regular file to copy with its final metadata (run in parallel: the walk is
/// sequential, the per-file syscalls are not).
struct FileJob {
    src: PathBuf,
    dst: PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
    metadata: std::fs::Metadata,
    /// Where the previous snapshot may hold this very file (layer-relative).
    relink: Option<PathBuf>,
}

/// What a finished [`FileJob`] left: its bytes, and with tracking the written file's
/// `lstat` and its external source (None: it holds its own bytes).
type JobResult = (u64, Option<(std::fs::Metadata, Option<ExternalFile>)>);

impl FileJob {
    fn run(
        &self,
        reference: bool,
        track: bool,
        previous: Option<&PreviousCopy>,
    ) -> Result<JobResult, CopyError> {
        let dst = &self.dst;
        let n = if self.link_from(previous) {
            // The previous snapshot's file has exactly this content and metadata.
            self.metadata.len()
        } else {
            let n = if reference {
                fs::File::create_new(dst).map_err(io_at("create", dst))?;
                self.metadata.len()
            } else {
                fs::copy(&self.src, dst).map_err(io_at("copy to", dst))?
            };
            meta::set_owner(dst, self.uid, self.gid).map_err(io_at("chown", dst))?;
            meta::set_mode(dst, self.mode).map_err(io_at("chmod", dst))?;
            meta::copy_xattrs(&self.src, dst).map_err(io_at("copy xattrs to", dst))?;
            meta::set_times(dst, &self.metadata).map_err(io_at("set times of", dst))?;
            n
        };
        if !track {
            return Ok((n, None));
        }
        let staged = fs::symlink_metadata(dst).map_err(io_at("stat", dst))?;
        let source = reference.then(|| ExternalFile::new(self.src.clone(), &self.metadata));
        Ok((n, Some((staged, source))))
    }

    /// Links the destination to the previous snapshot's copy of this file, when the job
    /// may ([`FileJob::relink`]) and that copy is what this one would write.
    fn link_from(&self, previous: Option<&PreviousCopy>) -> bool {
        let (Some(previous), Some(rel)) = (previous, &self.relink) else {
            return false;
        };
        let want = Wanted {
            source: &self.metadata,
            source_path: &self.src,
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        };
        previous.link(rel, &want, &self.dst)
    }
}

impl Drop for Copier<'_> {
    /// A copy that failed half-way still waits for its batches: none may write into the
    /// layer directory once the caller has it back.
    fn drop(&mut self) {
        let _ = self.wait_for_batches();
    }
}

/// A directory [`Copier::copy`] is filling.
struct CopyFrame {
    entry: Entry,
    rel: String,
    dst: String,
    host: PathBuf,
    /// Whether the directory's own metadata is applied once its children are in.
    apply: bool,
    children: std::vec::IntoIter<crate::layered::DirEntry>,
}

impl<'a> Copier<'a> {
    pub fn new(
        chown: Option<Owner>,
        mode: Option<&'a ModeSpec>,
        excludes: &'a IgnoreMatcher,
    ) -> Copier<'a> {
        Copier {
            chown,
            mode,
            excludes,
            links: HashMap::new(),
            jobs: Vec::new(),
            hardlinks: Vec::new(),
            bytes: 0,
            reference: false,
            track: false,
            content: ExternalContent::new(),
            relink: None,
            batches: mpsc::channel(),
            in_flight: 0,
        }
    }

    /// Hands the queued jobs to the thread pool when a batch is full and they may run while
    /// the walk goes on: when relinking, which needs neither placeholders nor tracking (the
    /// jobs of one source write distinct paths, and [`Copier::flush`] waits for them).
    fn send_full_batch(&mut self) {
        let Some((previous, _)) = &self.relink else {
            return;
        };
        if self.jobs.len() < BATCH || self.reference || self.track {
            return;
        }
        let jobs = std::mem::take(&mut self.jobs);
        let previous = Arc::clone(previous);
        let done = self.batches.0.clone();
        self.in_flight += 1;
        rayon::spawn(move || {
            let bytes = jobs
                .par_iter()
                .map(|j| j.run(false, false, Some(&previous)).map(|(n, _)| n))
                .sum();
            // The receiver outlives every batch (see `wait_for_batches`).
            let _ = done.send(bytes);
        });
    }

    /// Waits for every batch handed over; their bytes are counted, the first error kept.
    fn wait_for_batches(&mut self) -> Result<(), CopyError> {
        let mut first_error = None;
        while self.in_flight > 0 {
            self.in_flight -= 1;
            // A batch that panicked aborts the process (rayon::spawn), so each one sends.
            match self.batches.1.recv() {
                Ok(Ok(n)) => self.bytes += n,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Copies `src` to the view path `dst` (its parent exists in the layer). `rel` is the
    /// path below the copy's source root, used by `--exclude` (empty at the top).
    /// `overwrite_meta`: an existing directory at `dst` takes the source's metadata
    /// (true below the top, as in BuildKit).
    ///
    /// Directories being copied are an explicit stack, not recursion: a stage or a context
    /// can nest directories deeper than a thread's stack survives.
    pub fn copy(
        &mut self,
        w: &mut LayerWriter,
        src: &Source<'_>,
        e: &Entry,
        rel: &str,
        dst: &str,
        overwrite_meta: bool,
    ) -> Result<(), CopyError> {
        let Some(top) = self.copy_one(w, src, e, rel, dst, overwrite_meta)? else {
            return Ok(());
        };
        let mut stack = vec![top];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.next() else {
                let done = stack.pop().expect("the loop holds a frame");
                if done.apply {
                    self.apply_meta(&done.host, src, &done.entry)?;
                }
                // Even an existing top-level destination takes the source directory's
                // times (fsutil's `restoreFileTimestamp`), though not its owner or mode.
                w.defer_dir_time(
                    done.host,
                    FileTime::from_last_access_time(&done.entry.metadata),
                    FileTime::from_last_modification_time(&done.entry.metadata),
                );
                continue;
            };
            if !src.visible(&child.entry) {
                continue;
            }
            let crel = if frame.rel.is_empty() {
                child.name.clone()
            } else {
                format!("{}/{}", frame.rel, child.name)
            };
            let cdst = if frame.dst == "/" {
                format!("/{}", child.name)
            } else {
                format!("{}/{}", frame.dst, child.name)
            };
            if let Some(sub) = self.copy_one(w, src, &child.entry, &crel, &cdst, true)? {
                stack.push(sub);
            }
        }
        Ok(())
    }

    /// One entry of [`Copier::copy`]: a directory is created (its children and its own
    /// metadata are left to the caller, returned as a frame), anything else copied whole.
    fn copy_one(
        &mut self,
        w: &mut LayerWriter,
        src: &Source<'_>,
        e: &Entry,
        rel: &str,
        dst: &str,
        overwrite_meta: bool,
    ) -> Result<Option<CopyFrame>, CopyError> {
        if !rel.is_empty() && !self.excludes.is_empty() && self.excludes.matches(rel) {
            // An excluded directory is still walked when an exception may re-include below.
            if !(e.is_dir() && self.excludes.may_reinclude_under(rel)) {
                return Ok(None);
            }
        }
        match e.kind {
            FileKind::Dir => {
                let (host, created) = w.prepare_dir_target(dst, e.mode() | 0o700)?;
                let children = src.fs.read_dir_resolved(&e.path)?;
                return Ok(Some(CopyFrame {
                    entry: e.clone(),
                    rel: rel.to_string(),
                    dst: dst.to_string(),
                    host,
                    apply: created || overwrite_meta,
                    children: children.into_iter(),
                }));
            }
            FileKind::File => {
                let host = w.prepare_file_target(dst)?;
                let m = &e.metadata;
                if m.nlink() > 1 {
                    let key = (m.dev(), m.ino());
                    if let Some(first) = self.links.get(&key) {
                        // Linked once the first name has its content (see `flush`).
                        self.hardlinks.push((first.clone(), host));
                        return Ok(None);
                    }
                    self.links.insert(key, host.clone());
                }
                let (uid, gid, mode) = self.owner_mode(src, e);
                let relink = match &self.relink {
                    Some((previous, root))
                        if src.from_context
                            && !self.reference
                            && previous.is_unchanged(e.path.trim_start_matches('/')) =>
                    {
                        host.strip_prefix(root).ok().map(Path::to_path_buf)
                    }
                    _ => None,
                };
                self.jobs.push(FileJob {
                    src: e.host_path.clone(),
                    dst: host,
                    uid,
                    gid,
                    mode,
                    metadata: e.metadata.clone(),
                    relink,
                });
                self.send_full_batch();
            }
            FileKind::Symlink => {
                let host = w.prepare_file_target(dst)?;
                let target =
                    fs::read_link(&e.host_path).map_err(io_at("readlink", &e.host_path))?;
                std::os::unix::fs::symlink(&target, &host).map_err(io_at("symlink", &host))?;
                self.apply_meta(&host, src, e)?;
                meta::set_times(&host, &e.metadata).map_err(io_at("set times of", &host))?;
            }
            FileKind::Other => {
                let host = w.prepare_file_target(dst)?;
                meta::mknod_like(&host, &e.metadata).map_err(io_at("mknod", &host))?;
                self.apply_meta(&host, src, e)?;
                meta::set_times(&host, &e.metadata).map_err(io_at("set times of", &host))?;
            }
        }
        Ok(None)
    }

    /// Creates a directory like `e` (no contents) unless one is already there: used for the
    /// parents kept by `--parents`.
    pub fn copy_dir_only(
        &mut self,
        w: &mut LayerWriter,
        src: &Source<'_>,
        e: &Entry,
        dst: &str,
    ) -> Result<(), CopyError> {
        let (host, created) = w.prepare_dir_target(dst, e.mode() | 0o700)?;
        if created {
            self.apply_meta(&host, src, e)?;
            w.defer_dir_time(
                host,
                FileTime::from_last_access_time(&e.metadata),
                FileTime::from_last_modification_time(&e.metadata),
            );
        }
        Ok(())
    }

    /// Writes the queued regular files (contents, owner, mode, xattrs, times) in parallel,
    /// then the hardlinks to them. Called after each source; the queued paths are distinct.
    pub fn flush(&mut self) -> Result<(), CopyError> {
        self.wait_for_batches()?;
        let jobs = std::mem::take(&mut self.jobs);
        let (reference, track) = (self.reference, self.track);
        let previous = self.relink.as_ref().map(|(p, _)| p.as_ref());
        let done: Result<Vec<JobResult>, CopyError> = jobs
            .par_iter()
            .map(|j| j.run(reference, track, previous))
            .collect();
        for (n, placed) in done? {
            self.bytes += n;
            match placed {
                Some((staged, Some(source))) => self.content.insert(&staged, source),
                Some((staged, None)) => self.content.remove(&staged),
                None => {}
            }
        }
        for (first, host) in std::mem::take(&mut self.hardlinks) {
            fs::hard_link(&first, &host).map_err(io_at("hardlink", &host))?;
        }
        Ok(())
    }

    /// The owner and permission bits a copied entry gets.
    fn owner_mode(&self, src: &Source<'_>, e: &Entry) -> (u32, u32, u32) {
        let (uid, gid) = match self.chown {
            Some(o) => (o.uid, o.gid),
            None if src.preserve_owner => (e.uid(), e.gid()),
            None => (0, 0),
        };
        let mode = match self.mode {
            Some(spec) => spec.apply(e.mode(), e.is_dir()),
            None => e.mode(),
        };
        (uid, gid, mode)
    }

    /// Owner, mode and xattrs of a copied entry.
    fn apply_meta(&self, host: &Path, src: &Source<'_>, e: &Entry) -> Result<(), CopyError> {
        let (uid, gid, mode) = self.owner_mode(src, e);
        meta::set_owner(host, uid, gid).map_err(io_at("chown", host))?;
        if e.kind != FileKind::Symlink {
            meta::set_mode(host, mode).map_err(io_at("chmod", host))?;
        }
        meta::copy_xattrs(&e.host_path, host).map_err(io_at("copy xattrs to", host))?;
        Ok(())
    }
}
