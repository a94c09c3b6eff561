//! Removing what a build threw away, off the build's path.
//!
//! A `--no-cache` rebuild that gives a stored layer again throws its own copy away: a RUN's
//! upper directory (128 MB of a big layer: ~15 ms to unlink, the disk being mounted with
//! `discard`), a COPY's metadata tree of thousands of placeholders. Nothing reads them
//! again, so one background thread removes them while the next step runs
//! ([`StagingDir::discard`]).
//!
//! They stay in the process's scratch directory (or its tmpfs staging) until removed, so
//! whatever the thread has not reached when the process ends goes with those: at exit,
//! [`stop`] first waits for the directory being removed and leaves the rest to the removal
//! of the whole scratch directory (never two removals of one tree at once); after a
//! `kill -9`, to the next build's reclaim.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln_base::worker::Worker;

use crate::fsutil::remove_any;
use crate::snapshot::StagingDir;

/// Set by [`stop`]: nothing more is removed in the background.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Held by the thread while it removes a directory, and by [`stop`] to wait for that.
static REMOVING: Mutex<()> = Mutex::new(());

impl StagingDir {
    /// Throws the directory away: it is removed in the background (or here, when no
    /// thread can take it).
    pub fn discard(self) {
        let path = self.into_path_uncommitted();
        if let Err(path) = send(path) {
            let _ = remove_any(&path);
        }
    }
}

/// Hands `path` to the removing thread (started on first use); gives it back when that
/// cannot be done (the thread could not start, or the process is ending).
fn send(path: PathBuf) -> Result<(), PathBuf> {
    static REMOVER: Worker<PathBuf> = Worker::new("kiln-discard", remove);
    if STOPPED.load(Ordering::Acquire) {
        return Err(path);
    }
    REMOVER.send(path)
}

/// The thread's job: removes `path`, unless the process is ending (see [`stop`]).
fn remove(path: PathBuf) {
    let _removing = REMOVING.lock();
    if !STOPPED.load(Ordering::Acquire) {
        let _ = remove_any(&path);
    }
}

/// Stops the thread before the scratch directories are removed: waits for the directory it
/// is removing, and has it take no other.
pub(crate) fn stop() {
    STOPPED.store(true, Ordering::Release);
    let _removing = REMOVING.lock();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discarded_directory_is_removed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thrown-away");
        std::fs::create_dir_all(path.join("a/b")).unwrap();
        std::fs::write(path.join("a/b/f"), vec![7u8; 1 << 16]).unwrap();
        let staging = StagingDir::for_test(path.clone());
        staging.discard();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while path.exists() {
            assert!(std::time::Instant::now() < deadline, "never removed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
