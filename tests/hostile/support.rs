//! The hostile suite's own helpers: a busybox base made `FROM scratch`, and searches of a
//! store for what must not be there. Who runs kiln lives in `common::identity`.

pub use crate::common::identity::*;
use std::path::{Path, PathBuf};

/// Every regular file below `dir` whose bytes contain `needle` (symlinks not followed).
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_where(dir, |path, _| {
        std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

/// Every regular file below `dir` for which `keep(path, metadata)` holds (symlinks not
/// followed, unreadable directories skipped).
pub fn files_where(dir: &Path, keep: impl Fn(&Path, &std::fs::Metadata) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() && keep(&e.path(), &md) {
                found.push(e.path());
            }
        }
    }
    found
}

/// A tmpfs mounted on a directory (with mount options `opts`), unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, opts: &str) -> Tmpfs {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "kiln-test-tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
