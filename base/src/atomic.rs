//! Replacing a file so that a crash at any instant leaves the old file or the new one.
//!
//! Write a temp file in the destination's directory (same filesystem), fsync it, rename it
//! over the destination, fsync the directory (else the rename itself may not survive a
//! crash). A temp file left by a killed process has a name no reader looks at. Store
//! records, refs, the registry credentials file, exported archives and layouts all go
//! through here, so none of them can be found half written or lost after a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A process-unique name for a temp file: `prefix`, the pid, a counter and the clock, so
/// concurrent writers (threads or processes) never pick the same one.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id())
}

/// fsync a directory, so that a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Atomically replaces `path` with `bytes` (mode 0666 less the umask, as `fs::write`).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path, 0o666)?;
    file.write_all(bytes)?;
    file.commit()
}

/// [`write`] without its fsyncs, for hints only (a file whose loss or emptiness after a
/// power cut costs nothing but a recomputation): a killed process still leaves the old
/// file or the new one, never part of one.
pub fn write_hint(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path, 0o666)?;
    file.write_all(bytes)?;
    file.commit_unsynced()
}

/// A new version of a file, written beside it and put in place by [`AtomicFile::commit`].
/// Dropped without a commit, the temp file is removed and the destination is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Starts replacing `dest`; the new file gets `mode` less the umask.
    pub fn create(dest: &Path, mode: u32) -> io::Result<AtomicFile> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_string());
        let tmp = parent(dest).join(format!(".{}.tmp", unique_name(&name)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        Ok(AtomicFile {
            file,
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// The temp file, for writers that need a `File` (or `&mut` of one).
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// fsyncs the new file, renames it over the destination and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        put_in_place(&self.file, &self.tmp, &self.dest)?;
        self.committed = true;
        Ok(())
    }

    /// Only renames the new file over the destination: atomic for readers and for a killed
    /// process, but durable only once the caller syncs the filesystem. For callers that
    /// sync many files with one `syncfs` (the data before the rename, the rename before
    /// anything durable points at it) or that write a hint ([`write_hint`]).
    pub fn commit_unsynced(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(())
    }
}

/// Puts a finished temp file in place under a name chosen only now (a content-addressed
/// blob is named by its digest, known once the last byte is written): the steps of
/// [`AtomicFile::commit`] for a temp file made elsewhere on `dest`'s filesystem.
pub fn persist(file: File, tmp: &Path, dest: &Path) -> io::Result<()> {
    put_in_place(&file, tmp, dest)
}

/// fsyncs `file` (written at `tmp`), renames it to `dest` and fsyncs `dest`'s directory.
fn put_in_place(file: &File, tmp: &Path, dest: &Path) -> io::Result<()> {
    file.sync_all()?;
    fs::rename(tmp, dest)?;
    fsync_dir(parent(dest))
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The directory `path` is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), ["f.json"]);
    }

    #[test]
    fn a_dropped_file_leaves_the_old_content_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write(&p, b"old").unwrap();
        let mut f = AtomicFile::create(&p, 0o600).unwrap();
        f.write_all(b"half").unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d.path()), ["f"]);
    }

    #[test]
    fn the_mode_is_the_one_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        let mut f = AtomicFile::create(&p, 0o600).unwrap();
        f.write_all(b"x").unwrap();
        f.commit().unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_nothing_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("no/such/dir/f");
        assert_eq!(write(&p, b"x").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn unique_names_differ_within_a_process() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }

    #[test]
    fn persist_names_a_temp_file_made_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("tmp")).unwrap();
        fs::create_dir(d.path().join("blobs")).unwrap();
        let tmp = d.path().join("tmp/x");
        let mut f = File::create(&tmp).unwrap();
        f.write_all(b"content").unwrap();
        persist(f, &tmp, &d.path().join("blobs/abc")).unwrap();
        assert_eq!(fs::read(d.path().join("blobs/abc")).unwrap(), b"content");
        assert!(names(&d.path().join("tmp")).is_empty());
    }
}
