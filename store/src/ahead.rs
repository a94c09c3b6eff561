//! Empty staging directories made ahead of need, off the build's path.
//!
//! Every snapshot starts as an empty directory in the process's scratch directory, which
//! spreads its subdirectories over the disk ([`crate::fsutil::spread_subdirectories`]).
//! On ext4 that placement weighs every block group: a mkdir there costs ~0.2 ms, ten
//! times a plain one, and a RUN step needs two (its upper and its work directory), a
//! tenth of a small RUN's whole cost. So one background thread keeps a few made ahead,
//! under names nobody else uses (`.ahead-*`), and a step takes one and renames it to the
//! name it would have made (a rename within the directory costs what a plain mkdir does).
//!
//! A directory made ahead is one made on demand, earlier: empty, with the process umask's
//! mode, in the same scratch directory, so it goes with it (at exit, or through the next
//! reclaim when the process dies). Taking never waits: with none ready, the caller makes
//! its own.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_base::worker::Worker;

use crate::fsutil::unique_name;

/// How many a scratch directory keeps ready: a RUN takes two, a burst of steps a few more.
const AHEAD: usize = 4;

/// Name prefix of a directory made ahead and not yet taken.
pub(crate) const AHEAD_PREFIX: &str = ".ahead";

/// The ready directories of one scratch directory.
struct Pool {
    scratch: PathBuf,
    ready: Vec<PathBuf>,
    /// The thread has been asked to fill this pool and has not finished.
    filling: bool,
}

static POOLS: Mutex<Vec<Pool>> = Mutex::new(Vec::new());

/// Held by the filler across each mkdir, and by [`forget`]: once a pool is forgotten, no
/// directory of it is still being made.
static MAKING: Mutex<()> = Mutex::new(());

/// A directory made ahead in `scratch`, renamed to `name` there; `None` when none is ready
/// (or the rename failed). Either way, has the pool filled again in the background.
pub(crate) fn take(scratch: &Path, name: &str) -> Option<PathBuf> {
    let taken = {
        let mut pools = POOLS.lock().ok()?;
        let pool = match pools.iter().position(|p| p.scratch == scratch) {
            Some(i) => &mut pools[i],
            None => {
                pools.push(Pool {
                    scratch: scratch.to_path_buf(),
                    ready: Vec::new(),
                    filling: false,
                });
                pools.last_mut()?
            }
        };
        let taken = pool.ready.pop();
        if !pool.filling && pool.ready.len() < AHEAD && request_fill(scratch) {
            pool.filling = true;
        }
        taken
    }?;
    let path = scratch.join(name);
    match std::fs::rename(&taken, &path) {
        Ok(()) => Some(path),
        Err(_) => {
            let _ = std::fs::remove_dir(&taken);
            None
        }
    }
}

/// Asks the filler thread (started on first use) to fill `scratch`'s pool.
fn request_fill(scratch: &Path) -> bool {
    static FILLER: Worker<PathBuf> = Worker::new("kiln-staging-ahead", fill);
    FILLER.send(scratch.to_path_buf()).is_ok()
}

/// Makes directories in `scratch` until its pool holds [`AHEAD`]; a directory that
/// cannot be made (the scratch directory is gone, the disk is full) ends the fill, and the
/// next take asks again.
fn fill(scratch: PathBuf) {
    let scratch = scratch.as_path();
    loop {
        let Ok(_making) = MAKING.lock() else { return };
        // Forgotten since it asked: its scratch directory is being removed.
        let wanted = POOLS
            .lock()
            .is_ok_and(|pools| pools.iter().any(|p| p.scratch == scratch));
        if !wanted {
            return;
        }
        let path = scratch.join(unique_name(AHEAD_PREFIX));
        let made = std::fs::create_dir(&path).is_ok();
        let Ok(mut pools) = POOLS.lock() else { return };
        let Some(pool) = pools.iter_mut().find(|p| p.scratch == scratch) else {
            return;
        };
        if made {
            pool.ready.push(path);
        }
        if !made || pool.ready.len() >= AHEAD {
            pool.filling = false;
            return;
        }
    }
}

/// Stops making directories in `scratch`, before it is removed: when this returns,
/// nothing more appears in it from here (a later take starts a new pool).
pub(crate) fn forget(scratch: &Path) {
    let _making = MAKING.lock();
    if let Ok(mut pools) = POOLS.lock() {
        pools.retain(|p| p.scratch != scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a step takes is an empty directory under the name it asked for, and the pool's
    /// own directories keep their reserved prefix until taken.
    #[test]
    fn a_taken_directory_is_empty_and_named_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path();
        // The first take finds nothing ready and has the pool filled.
        assert_eq!(take(scratch, "first"), None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let taken = loop {
            if let Some(p) = take(scratch, "second") {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never filled"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(taken, scratch.join("second"));
        assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 0);
        for entry in std::fs::read_dir(scratch).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name == "second" || name.starts_with(AHEAD_PREFIX),
                "unexpected {name}"
            );
        }
    }

    /// A scratch directory that is gone ends the fill: nothing is made, nothing is taken.
    #[test]
    fn a_missing_scratch_directory_gives_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        for _ in 0..3 {
            assert_eq!(take(&gone, "x"), None);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!gone.exists());
    }
}
