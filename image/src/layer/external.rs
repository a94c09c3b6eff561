//! Layer directories whose regular files keep their bytes elsewhere.
//!
//! A COPY can be staged as a *metadata tree*: every directory, symlink and owner/mode/time
//! is real, but each regular file is an empty placeholder whose bytes still live in the
//! source (the build context or a lower snapshot). [`ExternalContent`] maps a placeholder
//! (by device and inode, so hardlinked names share one entry) to that source. The layer
//! writer and the snapshot materializer read the bytes from there, so a large COPY never
//! writes its files twice before it knows whether the result is already stored.
//!
//! Every read checks the source against the size and change times recorded when the step
//! selected it, before and after reading: a file edited during the build fails the step
//! instead of giving a blob and a snapshot with different bytes.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where one placeholder's bytes are, and what the source looked like when selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    /// The source file on the host.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// (mtime s, mtime ns, ctime s, ctime ns): any write to the file moves ctime.
    pub stamp: (i64, i64, i64, i64),
}

impl ExternalFile {
    /// The source described by its `lstat` result.
    pub fn new(path: PathBuf, m: &Metadata) -> ExternalFile {
        ExternalFile {
            path,
            len: m.size(),
            stamp: stamp_of(m),
        }
    }

    /// Opens the source, failing when it is no longer the file that was selected.
    pub fn open(&self) -> io::Result<File> {
        let file = File::open(&self.path)?;
        self.check(&file)?;
        Ok(file)
    }

    /// Fails when the open source differs from what was selected (call after reading too).
    pub fn check(&self, file: &File) -> io::Result<()> {
        let m = file.metadata()?;
        if m.size() != self.len || stamp_of(&m) != self.stamp {
            return Err(io::Error::other(format!(
                "{} changed during the build",
                self.path.display()
            )));
        }
        Ok(())
    }
}

fn stamp_of(m: &Metadata) -> (i64, i64, i64, i64) {
    (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

/// Placeholders of a metadata tree → their sources, keyed by the placeholder's
/// `(st_dev, st_ino)`.
#[derive(Debug, Clone, Default)]
pub struct ExternalContent {
    files: HashMap<(u64, u64), ExternalFile>,
}

impl ExternalContent {
    /// No external files: every file holds its own bytes.
    pub fn new() -> ExternalContent {
        ExternalContent::default()
    }

    /// Records that the placeholder with metadata `staged` holds the bytes of `source`.
    pub fn insert(&mut self, staged: &Metadata, source: ExternalFile) {
        self.files.insert((staged.dev(), staged.ino()), source);
    }

    /// Forgets a placeholder (its inode now holds its own bytes).
    pub fn remove(&mut self, staged: &Metadata) {
        self.files.remove(&(staged.dev(), staged.ino()));
    }

    /// The source of a staged regular file, if its bytes are elsewhere.
    pub fn get(&self, staged: &Metadata) -> Option<&ExternalFile> {
        self.files.get(&(staged.dev(), staged.ino()))
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }
}

/// Copies the bytes of `staged` (a placeholder or a real file) into `dst`, which must not
/// exist. Returns the bytes copied.
pub fn copy_content(
    content: &ExternalContent,
    staged_path: &std::path::Path,
    staged: &Metadata,
    dst: &std::path::Path,
) -> io::Result<u64> {
    match content.get(staged) {
        None => fs::copy(staged_path, dst),
        Some(ext) => {
            let mut src = ext.open()?;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dst)?;
            let n = io::copy(&mut src, &mut out)?;
            ext.check(&src)?;
            if n != ext.len {
                return Err(io::Error::other(format!(
                    "{} changed during the build",
                    ext.path.display()
                )));
            }
            Ok(n)
        }
    }
}
