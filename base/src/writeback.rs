//! Starting a file's way to the disk early, so that the build's one sync finds it written.
//!
//! A build ends with one `syncfs` of the store (see the store's `durability`), which waits
//! for every dirty page: after a big layer, the blob's and the snapshot's hundreds of
//! megabytes. Most of them were written long before the end, while the build compressed or
//! ran the next step. `sync_file_range(SYNC_FILE_RANGE_WRITE)` starts their writeback then
//! and returns without waiting, so the disk works while the build does; it promises nothing
//! (no metadata, no flush of the disk's cache), so the sync at the end stays what makes them
//! durable. Best effort: a failure only leaves the pages to that sync.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

/// Files smaller than this are left to the final sync: for them a call costs more than it
/// saves.
pub const MIN_FILE: u64 = 1 << 20;

/// Files waiting for the thread of [`start_in_background`] at most.
const QUEUED: usize = 32;

/// How much a stream writes between two starts of writeback ([`Stream`]).
const STRIDE: u64 = 8 << 20;

/// Starts writeback of `len` bytes of `file` from `offset` (`len` 0: to its end), without
/// waiting for it.
pub fn start(file: &impl AsFd, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // rustix does not wrap sync_file_range.
    // SAFETY: a plain syscall on a borrowed, open descriptor; no memory is passed.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync_file_range(
            file.as_fd().as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// [`start`] for all of `file`, on a thread of its own: queueing a file's dirty pages
/// takes the call tens of milliseconds for a big one (128 MiB: ~30 ms), which a caller
/// about to read the file (into a layer, beside its hashing) should not wait for. The
/// thread gets its own descriptor of the file, and at most [`QUEUED`] wait (each holds a
/// descriptor open). Best effort as [`start`]: a file that finds the queue full, or whose
/// descriptor cannot be duplicated, or a thread that cannot be started, leaves its pages to
/// the sync.
pub fn start_in_background(file: &std::fs::File) {
    static QUEUE: OnceLock<Option<SyncSender<std::fs::File>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<std::fs::File>(QUEUED);
        std::thread::Builder::new()
            .name("kiln-writeback".into())
            .spawn(move || {
                for file in rx {
                    start(&file, 0, 0);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let (Some(queue), Ok(dup)) = (queue, file.try_clone()) else {
        return;
    };
    let _ = queue.try_send(dup);
}

/// A file written from start to end: starts writeback of each [`STRIDE`] once it is
/// written, so a big file's pages go to the disk as it grows.
#[derive(Debug, Default)]
pub struct Stream {
    /// Bytes written, and where writeback has been started up to.
    written: u64,
    started: u64,
}

impl Stream {
    /// After `n` more bytes were written to `file`.
    pub fn wrote(&mut self, file: &impl AsFd, n: u64) {
        self.written += n;
        if self.written - self.started >= STRIDE {
            start(file, self.started, self.written - self.started);
            self.started = self.written;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_stream_starts_writeback_by_strides_and_changes_no_byte() {
        let d = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(d.path().join("f")).unwrap();
        let mut stream = Stream::default();
        let chunk = vec![7u8; 3 << 20];
        for _ in 0..6 {
            f.write_all(&chunk).unwrap();
            stream.wrote(&f, chunk.len() as u64);
        }
        // Started at 9 MiB (the first 8 MiB stride passed) and again at 18.
        assert_eq!((stream.written, stream.started), (18 << 20, 18 << 20));
        f.write_all(&chunk).unwrap();
        stream.wrote(&f, chunk.len() as u64);
        assert_eq!(stream.started, 18 << 20);
        start(&f, 0, 0);
        let back = std::fs::read(d.path().join("f")).unwrap();
        assert_eq!(back.len(), 21 << 20);
        assert!(back.iter().all(|&b| b == 7));
    }

    #[test]
    fn writeback_started_in_the_background_leaves_the_file_and_its_descriptor_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        std::fs::write(&path, vec![9u8; 3 << 20]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // More files than the queue holds: the ones that find it full are skipped.
        for _ in 0..(QUEUED * 4) {
            start_in_background(&f);
        }
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut back).unwrap();
        assert_eq!(back.len(), 3 << 20);
        assert!(back.iter().all(|&b| b == 9));
    }
}
