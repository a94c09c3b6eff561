//! Parallel gzip with output that does not depend on the number of threads.
//!
//! The stream is cut into chunks at tar entry boundaries by the rules of
//! [`super::chunks::CutRule`] (the layer writer announces each entry); each chunk is
//! deflated on its own, primed with the previous chunk's last 32 KiB as a dictionary (as
//! pigz does), and ended with a sync flush, so the compressed chunks are byte-aligned and
//! simply concatenate; the last one ends the deflate stream. The chunk boundaries depend
//! only on the input, so the bytes are the same on 1 or 64 cores. The result is one
//! ordinary gzip member (header without name or mtime, CRC32 and size trailer) that any
//! gunzip reads. Memory stays bounded: at most two chunks per worker are in flight.
//!
//! Each chunk's key and CRC are computed on the worker; a chunk an earlier blob of the same
//! step holds ([`ChunkReuse`]) is copied from it instead of deflated, and the keys and
//! places of every chunk written make the new blob's [`ChunkTable`].
//!
//! The stream hashes what it takes in (the tar: the layer's diff_id) and what it writes
//! (the blob digest) itself, chunk by chunk in stream order, so that while the new stream
//! is still the old one (every chunk so far found at its own place in the old table) both
//! hashes resume from the old table's states instead of hashing those bytes again.

use super::chunks::{
    ChunkEntry, ChunkKey, ChunkReuse, ChunkTable, CutRule, Midstate, StreamPoint, chunk_key,
};
use super::hasher::{FillFrom, StreamHasher, read_onto};
use flate2::{Compress, Compression as Level, FlushCompress, Status};
use kiln_base::digest::Digest;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// deflate's window: the most a back-reference can reach.
const WINDOW: usize = 32 * 1024;

/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    data: Vec<u8>,
    /// The last 32 KiB of the previous chunk's input, as a preset dictionary
    /// (like pigz): keeps the ratio close to single-stream gzip.
    dict: Vec<u8>,
    last: bool,
    reply: Sender<io::Result<Compressed>>,
}

/// A compressed chunk, and whether it was copied from an earlier blob.
struct Compressed {
    key: ChunkKey,
    bytes: Vec<u8>,
    /// The CRC-32 of the chunk's input, joined to the stream's in order (a copied
    /// chunk's from the old table).
    crc: u32,
    reused: bool,
    /// The chunk's input buffer, handed back to be filled again: fresh megabyte-sized
    /// buffers cost a page fault (and the kernel's zeroing) per page.
    input: Vec<u8>,
}

/// A gzip writer compressing chunks on worker threads.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    chunk: Vec<u8>,
    prev_tail: Vec<u8>,
    /// The CRC-32 of the input so far.
    crc: u32,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Compressed>>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
    /// Compressed bytes written so far (the header included): the next chunk's offset.
    written: u64,
    table: ChunkTable,
    reused: usize,
    /// Input buffers the workers are done with.
    free: Vec<Vec<u8>>,
    /// The hash of the input (the tar) and its length, and the hash of the output, each
    /// on a thread of its own: reading the files and hashing them overlap.
    tar_hash: StreamHasher,
    tar_len: u64,
    blob_hash: StreamHasher,
    /// The earlier blob, and whether every chunk so far had its key at its own index.
    reuse: Option<Arc<ChunkReuse>>,
    leading: bool,
    resumed: usize,
}

/// What a finished stream tells besides its bytes.
#[derive(Debug, Default)]
pub(crate) struct GzipSummary {
    /// The chunks as written.
    pub(crate) table: ChunkTable,
    /// How many of them were copied from an earlier blob.
    pub(crate) reused: usize,
    /// How many leading chunks were not hashed: both hashes resumed after them.
    pub(crate) resumed: usize,
    /// The `sha256:` digests of the stream's input (the tar) and of its output (the blob).
    pub(crate) digests: Option<(String, String)>,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a gzip stream on `out` at `level` with `workers` threads, copying the chunks
    /// `reuse` has.
    pub(crate) fn new(
        mut out: W,
        level: u32,
        workers: usize,
        reuse: Option<Arc<ChunkReuse>>,
    ) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let workers = workers.max(1);
        let mut blob_hash = StreamHasher::new(workers * 2);
        blob_hash.hash(HEADER.to_vec(), false)?;
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..workers)
            .map(|_| {
                let rx = Arc::clone(&rx);
                let reuse = reuse.clone();
                std::thread::spawn(move || {
                    loop {
                        // A poisoned lock means another worker panicked: stop.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let result = compress_chunk(&job, level, reuse.as_deref());
                        let Job { data, reply, .. } = job;
                        let _ = reply.send(result.map(|c| Compressed { input: data, ..c }));
                    }
                })
            })
            .collect();
        Ok(Self {
            out,
            chunk: Vec::new(),
            prev_tail: Vec::new(),
            crc: 0,
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_pending: workers * 2,
            workers: handles,
            written: HEADER.len() as u64,
            table: ChunkTable::default(),
            reused: 0,
            free: Vec::new(),
            tar_hash: StreamHasher::new(workers * 2),
            tar_len: 0,
            blob_hash,
            reuse,
            leading: true,
            resumed: 0,
        })
    }

    /// Told before each tar entry (`name`, `size` bytes of content): ends the chunk here
    /// when the cut rules say so.
    pub(crate) fn entry(&mut self, name: &[u8], size: u64) -> io::Result<()> {
        if CutRule::cut_before(self.chunk.len(), name, size) {
            let full = std::mem::take(&mut self.chunk);
            self.submit(full, false)?;
        }
        Ok(())
    }

    fn submit(&mut self, data: Vec<u8>, last: bool) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let tail = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let dict = std::mem::replace(&mut self.prev_tail, tail);
        let (reply, result) = channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        jobs.send(Job {
            data,
            dict,
            last,
            reply,
        })
        .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
        self.pending.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let chunk = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            self.out.write_all(&chunk.bytes)?;
            let len = chunk.bytes.len() as u64;
            let point = StreamPoint {
                index: self.table.chunks.len(),
                key: &chunk.key,
                tar_len: self.tar_len + chunk.input.len() as u64,
                blob_len: self.written + len,
            };
            let states = match &self.reuse {
                Some(reuse) if self.leading => reuse.resume_after(&point),
                _ => None,
            };
            let tar_end = point.tar_len;
            let mut input = chunk.input;
            match states {
                // The stream so far is the old one: its hashes are the old ones.
                Some((tar_hash, blob_hash)) => {
                    self.tar_hash.resume(tar_hash)?;
                    self.blob_hash.resume(blob_hash)?;
                    self.resumed += 1;
                    input.clear();
                    self.keep_buffer(input);
                }
                None => {
                    self.leading = false;
                    self.tar_hash.hash(input, true)?;
                    self.blob_hash.hash(chunk.bytes, false)?;
                }
            }
            // The states after this chunk are filled in when the hashing threads are done.
            self.tar_hash.mark()?;
            self.blob_hash.mark()?;
            let input_len = tar_end - self.tar_len;
            self.crc = zlib_rs::crc32::crc32_combine(self.crc, chunk.crc, input_len);
            self.tar_len = tar_end;
            self.table.chunks.push(ChunkEntry {
                key: chunk.key,
                offset: self.written,
                len,
                tar_end: self.tar_len,
                crc: chunk.crc,
                tar_state: Midstate::EMPTY,
                blob_state: Midstate::EMPTY,
            });
            self.written += len;
            self.reused += usize::from(chunk.reused);
        }
        Ok(())
    }

    /// Keeps an emptied input buffer to fill again, up to a few.
    fn keep_buffer(&mut self, input: Vec<u8>) {
        if self.free.len() <= self.max_pending {
            self.free.push(input);
        }
    }

    /// An empty input buffer: one handed back by the workers or the tar's hashing thread,
    /// else a new one.
    fn next_buffer(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .or_else(|| self.tar_hash.spare())
            .unwrap_or_default()
    }

    /// Ends the deflate stream, writes the trailer and returns the writer with the
    /// stream's chunk table.
    pub(crate) fn finish(mut self) -> io::Result<(W, GzipSummary)> {
        let rest = std::mem::take(&mut self.chunk);
        self.submit(rest, true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut trailer = [0; 8];
        // ISIZE: the input's length modulo 2^32.
        trailer[..4].copy_from_slice(&self.crc.to_le_bytes());
        trailer[4..].copy_from_slice(&(self.tar_len as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        self.blob_hash.hash(trailer.to_vec(), false)?;
        let (tar_hash, tar_states) = self.tar_hash.finish()?;
        let (blob_hash, blob_states) = self.blob_hash.finish()?;
        let mut table = std::mem::take(&mut self.table);
        if tar_states.len() != table.chunks.len() || blob_states.len() != table.chunks.len() {
            return Err(io::Error::other("a hashing thread lost a chunk's state"));
        }
        for ((c, tar), blob) in table.chunks.iter_mut().zip(tar_states).zip(blob_states) {
            (c.tar_state, c.blob_state) = (tar, blob);
        }
        let summary = GzipSummary {
            table,
            reused: self.reused,
            resumed: self.resumed,
            digests: Some((
                Digest::from_hasher(tar_hash).into_string(),
                Digest::from_hasher(blob_hash).into_string(),
            )),
        };
        Ok((self.out, summary))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.capacity() == 0 {
            self.chunk = self.next_buffer();
            self.chunk.reserve(CutRule::MIN);
        }
        let take = buf.len().min(CutRule::MAX - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..take]);
        if self.chunk.len() == CutRule::MAX {
            let full = std::mem::take(&mut self.chunk);
            self.submit(full, false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunk boundaries must not depend on flush calls, so only the output
        // of already submitted chunks is flushed.
        self.out.flush()
    }
}

impl<W: Write> FillFrom for ParallelGzip<W> {
    /// Reads the file straight into the chunk being filled.
    fn fill_from(&mut self, file: &File, len: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            if self.chunk.capacity() == 0 {
                self.chunk = self.next_buffer();
            }
            // Room for a whole chunk, so a read never grows the buffer past it.
            self.chunk
                .reserve_exact(CutRule::MAX.saturating_sub(self.chunk.len()));
            let room = (CutRule::MAX - self.chunk.len()) as u64;
            let want = (len - done).min(room);
            let n = read_onto(file, want, &mut self.chunk)?;
            done += n;
            if self.chunk.len() == CutRule::MAX {
                let full = std::mem::take(&mut self.chunk);
                self.submit(full, false)?;
            }
            if n < want {
                break;
            }
        }
        Ok(done)
    }
}

/// One chunk's compressed bytes: copied from an earlier blob when it has the chunk, else
/// deflated.
fn compress_chunk(job: &Job, level: u32, reuse: Option<&ChunkReuse>) -> io::Result<Compressed> {
    let key = chunk_key(level, &job.dict, &job.data, job.last);
    if let Some((bytes, crc)) = reuse.and_then(|r| r.get(&key)) {
        return Ok(Compressed {
            key,
            bytes,
            crc,
            reused: true,
            input: Vec::new(),
        });
    }
    let crc = zlib_rs::crc32::crc32(0, &job.data);
    let bytes = deflate_chunk(&job.data, &job.dict, level, job.last)?;
    Ok(Compressed {
        key,
        bytes,
        crc,
        reused: false,
        input: Vec::new(),
    })
}

/// Raw-deflates one chunk primed with `dict`: ended by a sync flush
/// (byte-aligned, stream left open) or, for the last chunk, the final block.
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Level::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let before = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        match status {
            Status::StreamEnd => return Ok(out),
            // A flush is complete once input is used up and the call left
            // output space unused.
            Status::Ok | Status::BufError
                if !last && input.is_empty() && out.len() < out.capacity() =>
            {
                return Ok(out);
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Entries of a tar-like stream: (name, bytes).
    type Entries = Vec<(Vec<u8>, Vec<u8>)>;
    /// A named change to a list of entries.
    type Edit = (&'static str, Box<dyn Fn(&mut Entries)>);

    fn gz_with(
        entries: &Entries,
        workers: usize,
        reuse: Option<Arc<ChunkReuse>>,
    ) -> (Vec<u8>, GzipSummary) {
        let mut w = ParallelGzip::new(Vec::new(), 6, workers, reuse).unwrap();
        for (name, data) in entries {
            w.entry(name, data.len() as u64).unwrap();
            for piece in data.chunks(100_003) {
                w.write_all(piece).unwrap();
            }
        }
        w.finish().unwrap()
    }

    fn gz(data: &[u8], workers: usize) -> Vec<u8> {
        gz_with(&vec![(b"one".to_vec(), data.to_vec())], workers, None).0
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 & 0x1f)
            .collect()
    }

    /// 600 files of 9 KiB: several chunks cut at entry names.
    fn files() -> Entries {
        (0..600u32)
            .map(|i| {
                let data = (0..9000u32)
                    .map(|j| {
                        (i.wrapping_mul(31)
                            .wrapping_add(j)
                            .wrapping_mul(2_654_435_761)
                            >> 13) as u8
                            & 0x3f
                    })
                    .collect();
                (format!("src/f{i:04}").into_bytes(), data)
            })
            .collect()
    }

    fn reuse_of(blob: &[u8], table: &ChunkTable) -> Arc<ChunkReuse> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(blob).unwrap();
        Arc::new(ChunkReuse::new(table, f).unwrap())
    }

    #[test]
    fn output_is_the_same_for_any_worker_count_and_gunzips() {
        let data = sample(5 * CutRule::MAX + 12345);
        let one = gz(&data, 1);
        assert_eq!(one, gz(&data, 4));
        assert_eq!(gunzip(&one), data);
    }

    #[test]
    fn empty_and_exact_chunk_inputs_round_trip() {
        for n in [0, 1, CutRule::MAX, 2 * CutRule::MAX] {
            let data = sample(n);
            assert_eq!(gunzip(&gz(&data, 2)), data, "{n} bytes");
        }
    }

    #[test]
    fn the_table_lists_every_chunk_where_it_is_written() {
        let entries = files();
        let (blob, summary) = gz_with(&entries, 2, None);
        let table = &summary.table;
        assert!(table.len() >= 4, "{} chunks", table.len());
        assert_eq!(table.chunks[0].offset, HEADER.len() as u64);
        for pair in table.chunks.windows(2) {
            assert_eq!(pair[0].offset + pair[0].len, pair[1].offset);
        }
        let last = table.chunks.last().unwrap();
        assert_eq!(last.offset + last.len + 8, blob.len() as u64);
        assert_eq!(summary.reused, 0);
    }

    #[test]
    fn a_stream_that_reuses_chunks_is_the_stream_written_from_scratch() {
        let before = files();
        let (old_blob, old) = gz_with(&before, 2, None);
        let edits: Vec<Edit> = vec![
            (
                "start",
                Box::new(|e: &mut Entries| e[0].1.extend_from_slice(b"edit")),
            ),
            ("middle", Box::new(|e: &mut Entries| e[300].1[5] ^= 1)),
            ("end", Box::new(|e: &mut Entries| e[599].1.truncate(10))),
            (
                "add",
                Box::new(|e: &mut Entries| e.insert(200, (b"src/f0199a".to_vec(), sample(20000)))),
            ),
            (
                "delete",
                Box::new(|e: &mut Entries| {
                    e.remove(450);
                }),
            ),
        ];
        for (what, edit) in edits {
            let mut after = before.clone();
            edit(&mut after);
            let (scratch, fresh) = gz_with(&after, 2, None);
            let (incremental, summary) = gz_with(&after, 2, Some(reuse_of(&old_blob, &old.table)));
            assert_eq!(incremental, scratch, "edit at the {what}");
            assert_eq!(summary.table, fresh.table, "edit at the {what}");
            assert_eq!(gunzip(&incremental), after.concat_data());
            // The hashes resumed after the chunks before the edit are the from-scratch ones.
            assert_eq!(summary.digests, fresh.digests, "edit at the {what}");
            assert_eq!(summary.digests, Some(digests_of(&after, &scratch)));
            match what {
                "start" => assert_eq!(summary.resumed, 0),
                "end" => assert!(summary.resumed + 3 >= summary.table.len()),
                _ => assert!(summary.resumed > 0 && summary.resumed < summary.table.len()),
            }
            // All but the chunks around the edit are copied.
            assert!(
                summary.reused + 3 >= summary.table.len() && summary.reused > 0,
                "edit at the {what}: {} of {} reused",
                summary.reused,
                summary.table.len()
            );
        }
    }

    /// The sha256 of the concatenated entries and of the blob.
    fn digests_of(entries: &Entries, blob: &[u8]) -> (String, String) {
        (
            Digest::of(&entries.concat_data()).into_string(),
            Digest::of(blob).into_string(),
        )
    }

    #[test]
    fn hashes_resume_only_where_the_old_table_says_the_stream_is_the_same() {
        let before = files();
        let (old_blob, old) = gz_with(&before, 2, None);
        let mut after = before.clone();
        after[500].1[7] ^= 1;
        let (scratch, fresh) = gz_with(&after, 2, None);
        // The same stream resumes after every chunk before the edit.
        let (same, summary) = gz_with(&after, 2, Some(reuse_of(&old_blob, &old.table)));
        assert_eq!(same, scratch);
        assert!(summary.resumed > 0);
        // A table whose states claim other lengths, or whose first key differs, is not
        // resumed from at all; the bytes and digests are still the from-scratch ones.
        let mut shifted = old.table.clone();
        for c in &mut shifted.chunks {
            c.tar_end += 512;
        }
        let mut other_start = old.table.clone();
        other_start.chunks[0].key[0] ^= 1;
        let mut wrong_states = old.table.clone();
        for c in &mut wrong_states.chunks {
            std::mem::swap(&mut c.tar_state, &mut c.blob_state);
        }
        for table in [shifted, other_start, wrong_states] {
            let (bytes, summary) = gz_with(&after, 2, Some(reuse_of(&old_blob, &table)));
            assert_eq!(bytes, scratch);
            assert_eq!(summary.resumed, 0);
            assert_eq!(summary.digests, fresh.digests);
            assert_eq!(summary.digests, Some(digests_of(&after, &scratch)));
        }
    }

    #[test]
    fn chunks_from_another_level_are_not_taken() {
        let entries = files();
        let (old_blob, old) = gz_with(&entries, 2, None);
        let reuse = reuse_of(&old_blob, &old.table);
        let mut w = ParallelGzip::new(Vec::new(), 1, 2, Some(reuse)).unwrap();
        for (name, data) in &entries {
            w.entry(name, data.len() as u64).unwrap();
            w.write_all(data).unwrap();
        }
        let (_, summary) = w.finish().unwrap();
        assert_eq!(summary.reused, 0);
    }

    trait Concat {
        fn concat_data(&self) -> Vec<u8>;
    }

    impl Concat for Entries {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|(_, d)| d.iter().copied()).collect()
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// A/B timing against single-stream flate2 (run with --release --ignored).
    #[test]
    #[ignore]
    fn parallel_gzip_versus_single_stream() {
        let data: Vec<u8> = (0..64u32 << 20)
            .map(|i| {
                if i % 4 == 0 {
                    (i.wrapping_mul(2_654_435_761) >> 7) as u8
                } else {
                    b"kiln layer "[(i % 11) as usize]
                }
            })
            .collect();
        // utime + stime of the whole process (all threads), in clock ticks.
        let cpu = || {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
            let rest = stat.rsplit_once(')').unwrap().1;
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            (f[11] + f[12]) / 100.0
        };
        let (t, c0) = (std::time::Instant::now(), cpu());
        let mut g = flate2::write::GzEncoder::new(Vec::new(), Level::new(6));
        g.write_all(&data).unwrap();
        let single = g.finish().unwrap();
        let (ts, cs) = (t.elapsed(), cpu() - c0);
        let (t, c0) = (std::time::Instant::now(), cpu());
        let mut p = ParallelGzip::new(Vec::new(), 6, 2, None).unwrap();
        p.write_all(&data).unwrap();
        let (par, _) = p.finish().unwrap();
        let (tp, cp) = (t.elapsed(), cpu() - c0);
        eprintln!(
            "single {ts:?} cpu {cs:.2}s ({} bytes), parallel x2 {tp:?} cpu {cp:.2}s ({} bytes)",
            single.len(),
            par.len()
        );
    }
}
