//! SHA-256 of a stream hashed on a thread of its own, and the tar end of the layer
//! pipeline that uses it.
//!
//! A layer's bytes are read from its files, hashed for the diff_id (SHA-256 of the tar),
//! and for gzip keyed chunk by chunk (BLAKE3) and hashed again compressed (the blob
//! digest). SHA-256 cannot be split over threads, and on the thread that reads the files it
//! was on one critical path with the reading: [`StreamHasher`] hashes the buffers handed to
//! it, in order, on a thread of its own, so reading the next bytes overlaps hashing the
//! ones before (a 128 MiB layer: reading about 30 ms, hashing about 65 ms with SHA-NI).
//!
//! Files reach the pipeline through [`FillFrom`]: read straight into the buffer the next
//! stage keeps anyway (a gzip chunk, a batch to hash), not through a reader's buffer and
//! `io::copy`'s, which cost two copies of every byte.

use super::chunks::{Inode, Midstate};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

/// What the hashing thread is asked, in stream order.
enum Job {
    /// Hash these bytes; hand the buffer back (to be filled again) when `give_back`.
    Bytes { data: Vec<u8>, give_back: bool },
    /// Go on from this state instead (an earlier stream's, see `chunks::Midstate`).
    Resume(Box<Sha256>),
    /// Report the state so far.
    Mark,
}

/// A SHA-256 of a stream hashed on a thread of its own (see the module doc). The first
/// [`INLINE`] bytes are hashed on the caller's thread, and the thread starts only when the
/// stream goes past them: most layers (a small RUN's) are a few KiB, which hash in less
/// time than starting a thread takes.
pub(crate) struct StreamHasher {
    queue: usize,
    /// Until the thread starts: the hash so far and how many bytes it covers.
    inline: Option<(Sha256, usize)>,
    /// States asked for before the thread started (they precede the thread's).
    early_marks: Vec<Midstate>,
    /// Buffers hashed before the thread started, to hand back.
    spares: Vec<Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    marks: Option<Receiver<Midstate>>,
    buffers: Option<Receiver<Vec<u8>>>,
    thread: Option<JoinHandle<Sha256>>,
}

/// Bytes a [`StreamHasher`] hashes on the caller's thread before it starts its own.
const INLINE: usize = 256 * 1024;

impl StreamHasher {
    /// A hasher whose thread, once started, has at most `queue` jobs waiting (then the
    /// caller waits: the memory of buffers in flight stays bounded).
    pub(crate) fn new(queue: usize) -> StreamHasher {
        StreamHasher {
            queue: queue.max(1),
            inline: Some((Sha256::new(), 0)),
            early_marks: Vec::new(),
            spares: Vec::new(),
            jobs: None,
            marks: None,
            buffers: None,
            thread: None,
        }
    }

    /// Starts the thread, going on from `hash`.
    fn start(&mut self, hash: Sha256) -> io::Result<()> {
        let (jobs, rx) = sync_channel::<Job>(self.queue);
        let (mark_tx, marks) = channel();
        let (buf_tx, buffers) = channel();
        let thread = std::thread::Builder::new()
            .name("kiln-sha256".into())
            .spawn(move || {
                let mut hash = hash;
                for job in rx {
                    match job {
                        Job::Bytes {
                            mut data,
                            give_back,
                        } => {
                            hash.update(&data);
                            if give_back {
                                data.clear();
                                let _ = buf_tx.send(data);
                            }
                        }
                        Job::Resume(state) => hash = *state,
                        Job::Mark => {
                            let _ = mark_tx.send(Midstate::of(&hash));
                        }
                    }
                }
                hash
            })?;
        self.jobs = Some(jobs);
        self.marks = Some(marks);
        self.buffers = Some(buffers);
        self.thread = Some(thread);
        Ok(())
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        if let Some((hash, hashed)) = &mut self.inline {
            match job {
                Job::Bytes {
                    mut data,
                    give_back,
                } if *hashed + data.len() <= INLINE => {
                    hash.update(&data);
                    *hashed += data.len();
                    if give_back {
                        data.clear();
                        self.spares.push(data);
                    }
                    return Ok(());
                }
                Job::Resume(state) => {
                    *hash = *state;
                    return Ok(());
                }
                Job::Mark => {
                    self.early_marks.push(Midstate::of(hash));
                    return Ok(());
                }
                // Past INLINE: the thread goes on from the hash so far, these bytes first.
                Job::Bytes { .. } => {
                    let (hash, _) = self.inline.take().unwrap_or_default();
                    self.start(hash)?;
                    return self.send_to_thread(job);
                }
            }
        }
        self.send_to_thread(job)
    }

    fn send_to_thread(&self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the hash is finished"))?
            .send(job)
            .map_err(|_| io::Error::other("the hashing thread stopped"))
    }

    /// Hashes `data` next; [`StreamHasher::spare`] hands it back when `give_back`.
    pub(crate) fn hash(&mut self, data: Vec<u8>, give_back: bool) -> io::Result<()> {
        if data.is_empty() && !give_back {
            return Ok(());
        }
        self.send(Job::Bytes { data, give_back })
    }

    /// Goes on from `state` (what the stream so far hashes to, known otherwise).
    pub(crate) fn resume(&mut self, state: Sha256) -> io::Result<()> {
        self.send(Job::Resume(Box::new(state)))
    }

    /// Asks for the state at this point of the stream ([`StreamHasher::marks`], in order).
    pub(crate) fn mark(&mut self) -> io::Result<()> {
        self.send(Job::Mark)
    }

    /// A buffer hashed and handed back, emptied, if one is there.
    pub(crate) fn spare(&mut self) -> Option<Vec<u8>> {
        if let Some(spare) = self.spares.pop() {
            return Some(spare);
        }
        self.buffers.as_ref()?.try_recv().ok()
    }

    /// Waits for the thread (if it started) to hash everything; returns the hash and the
    /// states asked for with [`StreamHasher::mark`], in order.
    pub(crate) fn finish(mut self) -> io::Result<(Sha256, Vec<Midstate>)> {
        let mut marks = std::mem::take(&mut self.early_marks);
        if let Some((hash, _)) = self.inline.take() {
            return Ok((hash, marks));
        }
        self.jobs = None;
        let hash = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("the hash is finished"))?
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        if let Some(rx) = &self.marks {
            marks.extend(rx.try_iter());
        }
        Ok((hash, marks))
    }
}

impl Drop for StreamHasher {
    fn drop(&mut self) {
        // Dropping the sender ends the thread's loop; wait so no thread outlives its stream.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A writer that takes a file's bytes straight from the file (see the module doc).
pub(crate) trait FillFrom: Write {
    /// Appends `len` bytes read from `file` (fewer when it ends first); returns how many.
    /// `inode`: the file's (device, inode) when it is a file of the layer directory (not
    /// one whose content is elsewhere), for gzip's chunk identities (see `chunks`).
    fn fill_from(&mut self, file: &File, len: u64, inode: Option<Inode>) -> io::Result<u64>;
}

/// Reads up to `len` bytes of `file` onto the end of `buf`, into its spare capacity
/// (std reads a `File` into uninitialized memory: nothing is zeroed first). `buf` must have
/// room for them, else it grows.
pub(crate) fn read_onto(file: &File, len: u64, buf: &mut Vec<u8>) -> io::Result<u64> {
    let before = buf.len();
    file.take(len).read_to_end(buf)?;
    Ok((buf.len() - before) as u64)
}

/// The [`FillFrom`] of a writer without a buffer of its own: through `scratch`.
pub(crate) fn fill_through(
    out: &mut impl Write,
    file: &File,
    len: u64,
    scratch: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut done = 0;
    while done < len {
        scratch.clear();
        let want = (len - done).min(BATCH as u64);
        let n = read_onto(file, want, scratch)?;
        out.write_all(scratch)?;
        done += n;
        if n < want {
            break;
        }
    }
    Ok(done)
}

/// Bytes handed to the hashing thread at once.
const BATCH: usize = 1 << 20;
/// Batches waiting for the hashing thread at most.
const QUEUE: usize = 4;

/// The tar end of the layer pipeline: counts the tar's bytes and, unless the next stage
/// hashes them itself (gzip does, chunk by chunk), hashes them on a [`StreamHasher`].
pub(crate) struct TarSink<W> {
    inner: W,
    hasher: Option<StreamHasher>,
    /// Bytes passed on but not yet handed to the hasher.
    batch: Vec<u8>,
    count: u64,
}

impl<W: FillFrom> TarSink<W> {
    /// Over `inner`, hashing the tar when `hash`.
    pub(crate) fn new(inner: W, hash: bool) -> io::Result<TarSink<W>> {
        Ok(TarSink {
            inner,
            hasher: hash.then(|| StreamHasher::new(QUEUE)),
            batch: Vec::new(),
            count: 0,
        })
    }

    /// The next stage.
    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The next stage.
    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// An empty batch buffer with room for [`BATCH`] bytes (a recycled one if there is).
    fn fresh_batch(hasher: &mut StreamHasher) -> Vec<u8> {
        hasher
            .spare()
            .unwrap_or_else(|| Vec::with_capacity(BATCH + 64 * 1024))
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if let Some(hasher) = &mut self.hasher {
            let next = Self::fresh_batch(hasher);
            let full = std::mem::replace(&mut self.batch, next);
            hasher.hash(full, true)?;
        }
        Ok(())
    }

    /// The next stage, the `sha256:` digest of the tar (empty when not hashed) and its
    /// length.
    pub(crate) fn finish(mut self) -> io::Result<(W, String, u64)> {
        let digest = match self.hasher.take() {
            Some(mut hasher) => {
                hasher.hash(std::mem::take(&mut self.batch), false)?;
                let (hash, _) = hasher.finish()?;
                kiln_base::digest::Digest::from_hasher(hash).into_string()
            }
            None => String::new(),
        };
        Ok((self.inner, digest, self.count))
    }
}

impl<W: FillFrom> Write for TarSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        if self.hasher.is_some() {
            self.batch.extend_from_slice(&buf[..n]);
            if self.batch.len() >= BATCH {
                self.hand_over()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: FillFrom> FillFrom for TarSink<W> {
    fn fill_from(&mut self, file: &File, len: u64, inode: Option<Inode>) -> io::Result<u64> {
        if self.hasher.is_none() {
            let n = self.inner.fill_from(file, len, inode)?;
            self.count += n;
            return Ok(n);
        }
        let mut done = 0;
        while done < len {
            if self.batch.capacity() == 0
                && let Some(hasher) = &mut self.hasher
            {
                self.batch = Self::fresh_batch(hasher);
            }
            let start = self.batch.len();
            let room = (BATCH.saturating_sub(start)).max(1) as u64;
            let want = (len - done).min(room);
            let n = read_onto(file, want, &mut self.batch)?;
            self.inner.write_all(&self.batch[start..])?;
            self.count += n;
            done += n;
            if self.batch.len() >= BATCH {
                self.hand_over()?;
            }
            if n < want {
                break;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_hashes_in_order_resumes_and_marks() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = StreamHasher::new(2);
        for piece in data.chunks(700_001) {
            h.hash(piece.to_vec(), true).unwrap();
            h.mark().unwrap();
        }
        let (hash, marks) = h.finish().unwrap();
        assert_eq!(hash.finalize(), Sha256::digest(&data));
        assert_eq!(marks.len(), data.chunks(700_001).count());
        let mut first = Sha256::new();
        first.update(&data[..700_001]);
        assert_eq!(marks[0], Midstate::of(&first));
        // A resumed state goes on where it left off.
        let mut h = StreamHasher::new(1);
        h.hash(b"ignored".to_vec(), false).unwrap();
        h.resume(first).unwrap();
        h.hash(data[700_001..].to_vec(), false).unwrap();
        assert_eq!(h.finish().unwrap().0.finalize(), Sha256::digest(&data));
    }

    #[test]
    fn small_pieces_hash_inline_until_the_thread_starts_and_marks_stay_in_order() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 11 % 239) as u8).collect();
        for piece in [1_000, 100_000, INLINE, INLINE + 1] {
            let mut h = StreamHasher::new(2);
            let mut want = Vec::new();
            let mut so_far = Sha256::new();
            for p in data.chunks(piece) {
                h.hash(p.to_vec(), true).unwrap();
                h.mark().unwrap();
                so_far.update(p);
                want.push(Midstate::of(&so_far));
            }
            // Buffers hashed inline come back as those hashed by the thread do.
            assert!(h.spare().is_some(), "piece {piece}");
            let (hash, marks) = h.finish().unwrap();
            assert_eq!(hash.finalize(), Sha256::digest(&data), "piece {piece}");
            assert_eq!(marks, want, "piece {piece}");
        }
        // A stream that never leaves the caller's thread, resumed on the way.
        let mut h = StreamHasher::new(1);
        h.hash(b"ignored".to_vec(), false).unwrap();
        let mut first = Sha256::new();
        first.update(&data[..1000]);
        h.resume(first).unwrap();
        h.hash(data[1000..2000].to_vec(), false).unwrap();
        assert!(h.thread.is_none());
        assert_eq!(
            h.finish().unwrap().0.finalize(),
            Sha256::digest(&data[..2000])
        );
    }

    /// A writer with no buffer of its own, collecting what it gets.
    struct Collect(Vec<u8>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl FillFrom for Collect {
        fn fill_from(&mut self, file: &File, len: u64, _: Option<Inode>) -> io::Result<u64> {
            fill_through(self, file, len, &mut Vec::new())
        }
    }

    #[test]
    fn a_tar_sink_passes_on_and_hashes_writes_and_files_alike() {
        let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let mut sink = TarSink::new(Collect(Vec::new()), true).unwrap();
        sink.write_all(b"header").unwrap();
        let f = File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .unwrap();
        // Asking for more than the file holds gives what it holds.
        assert_eq!(
            sink.fill_from(&f, 3_000_000, None).unwrap(),
            data.len() as u64
        );
        sink.write_all(b"end").unwrap();
        let (out, digest, count) = sink.finish().unwrap();
        let mut want = b"header".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"end");
        assert_eq!(out.0, want);
        assert_eq!(count, want.len() as u64);
        assert_eq!(digest, kiln_base::digest::Digest::of(&want).into_string());
    }
}
