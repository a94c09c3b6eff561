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
//!
//! Until then, when the old table can vouch for files a COPY linked from the previous
//! snapshot ([`ChunkReuse::trusting_links`]), those files are not even read: the chunk being
//! filled is its written bytes (headers) and holes where the linked files' bytes go, and
//! when it ends with the identity of the old chunk at its place, the old chunk is taken
//! (bytes, CRC, hash states) without reading them. The first chunk that is not the old one
//! reads its holes, and the last 32 KiB of the chunk before it (its dictionary); from
//! there on every byte is read as usual. A hole keeps its file open until then, so only
//! the holes of that last 32 KiB are kept past a chunk taken, and at most
//! [`MAX_OPEN_HOLES`] files are held: past them (a chunk of a thousand small files) a linked
//! file is read into the chunk at once, which keeps its identity, and so may still be the
//! old chunk taken, only not unread.

use super::chunks::{
    ChunkEntry, ChunkIdent, ChunkKey, ChunkReuse, ChunkTable, CutRule, IdentHasher, Inode,
    Midstate, StreamPoint, chunk_key,
};
use super::hasher::{FillFrom, StreamHasher, read_onto};
use flate2::{Compress, Compression as Level, FlushCompress, Status};
use kiln_base::digest::Digest;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// deflate's window: the most a back-reference can reach.
const WINDOW: usize = 32 * 1024;

/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
pub(crate) const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    data: Vec<u8>,
    /// The last 32 KiB of the previous chunk's input, as a preset dictionary
    /// (like pigz): keeps the ratio close to single-stream gzip.
    dict: Vec<u8>,
    last: bool,
    /// The chunk's place in the stream.
    index: usize,
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
    /// The old chunk at this place, its bytes not read ([`compress_chunk`]): `bytes` is
    /// empty.
    unread: bool,
    /// The chunk's input buffer, handed back to be filled again: fresh megabyte-sized
    /// buffers cost a page fault (and the kernel's zeroing) per page.
    input: Vec<u8>,
}

/// A run of a linked file's bytes in a chunk, not read (see [`Lazy`]).
struct Hole {
    /// Where it goes among the chunk's written bytes.
    at: usize,
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// The most files the holes of [`Lazy`] keep open. Each hole's file stays open until its
/// chunk is read or taken, and a megabyte chunk of small files (node_modules) holds a
/// thousand of them, past the soft RLIMIT_NOFILE of many systems (1024; kiln does not raise
/// it). Past this many, and whenever a descriptor cannot be had, a linked file is read into
/// the chunk at once: the chunk's identity is the same, so it may still be taken from the
/// old blob, but it was read.
const MAX_OPEN_HOLES: usize = 256;

/// The chunk being filled while it may be the old one (see the module doc): its written
/// bytes are in [`ParallelGzip::chunk`], the linked files' bytes are holes.
#[derive(Default)]
struct Lazy {
    holes: Vec<Hole>,
    /// The chunk's length, holes included.
    held: usize,
    /// Whether some linked file's bytes were read into the chunk ([`MAX_OPEN_HOLES`]).
    read_some: bool,
    /// The last 32 KiB (or fewer) of the last chunk taken from the old blob, as written
    /// bytes and holes: the next chunk that is not the old one takes them as its
    /// dictionary, and needs nothing before them.
    prev: Option<(Vec<u8>, Vec<Hole>)>,
    /// The files the holes (of `holes` and `prev`) keep open.
    open: usize,
}

/// How many files `holes` keep open: a file's holes follow each other, sharing its `Arc`.
fn open_files(holes: &[Hole]) -> usize {
    let mut open = 0;
    let mut last: Option<&Arc<File>> = None;
    for h in holes {
        if !last.is_some_and(|l| Arc::ptr_eq(l, &h.file)) {
            open += 1;
        }
        last = Some(&h.file);
    }
    open
}

/// The bytes from `from` on of the chunk made of `written` and `holes`, as written bytes
/// (onto `out`, emptied first) and holes placed among them; the holes before `from` are
/// dropped, and their files closed unless a later hole shares them.
fn tail_of(
    written: &[u8],
    holes: Vec<Hole>,
    from: usize,
    mut out: Vec<u8>,
) -> (Vec<u8>, Vec<Hole>) {
    out.clear();
    let mut kept = Vec::new();
    // `pos`: where the next piece starts in the whole chunk; `next`: in `written`.
    let (mut pos, mut next) = (0, 0);
    for hole in holes {
        let piece = written.get(next..hole.at).unwrap_or_default();
        let skip = from.saturating_sub(pos).min(piece.len());
        out.extend_from_slice(&piece[skip..]);
        pos += piece.len();
        next = hole.at;
        let skip = from.saturating_sub(pos).min(hole.len);
        pos += hole.len;
        if skip < hole.len {
            kept.push(Hole {
                at: out.len(),
                offset: hole.offset + skip as u64,
                len: hole.len - skip,
                ..hole
            });
        }
    }
    let piece = written.get(next..).unwrap_or_default();
    let skip = from.saturating_sub(pos).min(piece.len());
    out.extend_from_slice(&piece[skip..]);
    (out, kept)
}

/// Reads up to `len` bytes of `file` from `offset` onto the end of `buf` (fewer when the
/// file ends first), leaving the file's position alone; returns how many.
fn read_at_onto(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<u64> {
    let start = buf.len();
    buf.resize(start + len, 0);
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[start + done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
    buf.truncate(start + done);
    Ok(done as u64)
}

/// Appends the chunk made of the written bytes `written` and `holes`, reading the holes.
fn fill_holes(written: &[u8], holes: &[Hole], out: &mut Vec<u8>) -> io::Result<()> {
    let mut next = 0;
    for hole in holes {
        out.extend_from_slice(written.get(next..hole.at).unwrap_or_default());
        next = hole.at;
        let start = out.len();
        out.resize(start + hole.len, 0);
        hole.file
            .read_exact_at(&mut out[start..], hole.offset)
            .map_err(|e| io::Error::new(e.kind(), format!("reading a linked file: {e}")))?;
    }
    out.extend_from_slice(written.get(next..).unwrap_or_default());
    Ok(())
}

/// A gzip writer compressing chunks on worker threads.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    chunk: Vec<u8>,
    /// The identity of the chunk being filled, so far.
    ident: IdentHasher,
    /// While the chunks may be taken from the old blob unread.
    lazy: Option<Lazy>,
    /// Old compressed bytes being copied.
    copied: Vec<u8>,
    prev_tail: Vec<u8>,
    /// The CRC-32 of the input so far.
    crc: u32,
    jobs: Option<Sender<Job>>,
    /// Chunks handed to the workers, and their identities.
    pending: VecDeque<(Receiver<io::Result<Compressed>>, ChunkIdent)>,
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
    /// While the stream is the earlier blob's start, how many bytes of it were not written
    /// ([`ChunkReuse::withholding`]).
    withheld: Option<u64>,
    resumed: usize,
    skipped: usize,
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
    /// How many of those were not even read (linked files the old table vouched for).
    pub(crate) skipped: usize,
    /// The `sha256:` digests of the stream's input (the tar) and of its output (the blob).
    pub(crate) digests: Option<(String, String)>,
    /// The size of the earlier blob when the stream is all of it and nothing was written
    /// ([`ChunkReuse::withholding`]).
    pub(crate) reused_blob: Option<u64>,
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
        let withheld = reuse
            .as_ref()
            .filter(|r| r.withholds())
            .map(|_| HEADER.len() as u64);
        if withheld.is_none() {
            out.write_all(&HEADER)?;
        }
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
        let lazy = reuse
            .as_ref()
            .filter(|r| r.trusts_links())
            .map(|_| Lazy::default());
        Ok(Self {
            out,
            level,
            chunk: Vec::new(),
            ident: IdentHasher::new(),
            lazy,
            copied: Vec::new(),
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
            withheld,
            resumed: 0,
            skipped: 0,
        })
    }

    /// Told before each tar entry (`name`, `size` bytes of content): ends the chunk here
    /// when the cut rules say so.
    pub(crate) fn entry(&mut self, name: &[u8], size: u64) -> io::Result<()> {
        if CutRule::cut_before(self.held(), name, size) {
            self.cut(false)?;
        }
        Ok(())
    }

    /// Whether linked files are taken unread for now: the old chunks so far were the new.
    pub(crate) fn skips_linked(&self) -> bool {
        self.lazy.is_some()
    }

    /// Bytes in the chunk being filled.
    fn held(&self) -> usize {
        self.lazy.as_ref().map_or(self.chunk.len(), |l| l.held)
    }

    /// Ends the chunk being filled (`last`: the stream with it).
    fn cut(&mut self, last: bool) -> io::Result<()> {
        let ident = self.ident.finish(self.level, last);
        if self.lazy.is_some() {
            if self.take_vouched(&ident)? {
                return Ok(());
            }
            self.read_holes()?;
        }
        let data = std::mem::take(&mut self.chunk);
        self.submit(data, last, ident)
    }

    /// Takes the old chunk at this place when the old table vouches for the lazy chunk
    /// being filled (its identity `ident`); false when it does not.
    fn take_vouched(&mut self, ident: &ChunkIdent) -> io::Result<bool> {
        let (Some(lazy), Some(reuse)) = (&mut self.lazy, &self.reuse) else {
            return Ok(false);
        };
        let tar_end = self.tar_len + lazy.held as u64;
        let Some(vouched) = reuse.vouch(self.table.chunks.len(), ident, tar_end, self.written)
        else {
            return Ok(false);
        };
        match &mut self.withheld {
            Some(withheld) => *withheld += vouched.old.len,
            None => {
                // An old blob that cannot be read only means reading the files.
                let Ok(bytes) = reuse.read_into(&vouched.old, &mut self.copied) else {
                    return Ok(false);
                };
                self.out.write_all(bytes)?;
            }
        }
        self.tar_hash.resume(vouched.tar_hash)?;
        self.blob_hash.resume(vouched.blob_hash)?;
        self.tar_hash.mark()?;
        self.blob_hash.mark()?;
        let old = vouched.old;
        self.crc = zlib_rs::crc32::crc32_combine(self.crc, old.crc, lazy.held as u64);
        self.tar_len = tar_end;
        self.table.chunks.push(ChunkEntry {
            key: old.key,
            offset: self.written,
            len: old.len,
            tar_end,
            crc: old.crc,
            ident: *ident,
            tar_state: Midstate::EMPTY,
            blob_state: Midstate::EMPTY,
        });
        self.written += old.len;
        self.reused += 1;
        self.resumed += 1;
        self.skipped += usize::from(!lazy.read_some);
        // Only the chunk's last 32 KiB may be needed again (as the next one's dictionary):
        // the holes before them are dropped, and their files closed.
        let from = lazy.held.saturating_sub(WINDOW);
        let holes = std::mem::take(&mut lazy.holes);
        let spare = lazy.prev.take().map(|(w, _)| w).unwrap_or_default();
        let prev = tail_of(&self.chunk, holes, from, spare);
        lazy.open = open_files(&prev.1);
        lazy.prev = Some(prev);
        lazy.held = 0;
        lazy.read_some = false;
        let mut written = std::mem::take(&mut self.chunk);
        written.clear();
        self.keep_buffer(written);
        Ok(true)
    }

    /// Ends the lazy chunks: the chunk being filled gets its linked files' bytes, and the
    /// next chunk's dictionary is the end of the last chunk taken unread.
    fn read_holes(&mut self) -> io::Result<()> {
        let Some(lazy) = self.lazy.take() else {
            return Ok(());
        };
        if let Some((written, holes)) = &lazy.prev {
            let mut tail = Vec::with_capacity(WINDOW);
            fill_holes(written, holes, &mut tail)?;
            self.prev_tail = tail;
        }
        let written = std::mem::take(&mut self.chunk);
        let mut chunk = self.next_buffer();
        chunk.reserve_exact(CutRule::MAX.max(lazy.held));
        fill_holes(&written, &lazy.holes, &mut chunk)?;
        self.chunk = chunk;
        let mut spare = written;
        spare.clear();
        self.keep_buffer(spare);
        Ok(())
    }

    /// Appends `len` bytes of the linked file `inode` as a hole of the lazy chunk (or read,
    /// past [`MAX_OPEN_HOLES`]), as many as the lazy chunks go on, the rest read (see
    /// [`FillFrom::fill_from`]).
    fn fill_lazily(&mut self, file: &File, len: u64, inode: Inode) -> io::Result<u64> {
        // The file's descriptor for its holes, once asked for: `Some(None)` when it is read.
        let mut shared: Option<Option<Arc<File>>> = None;
        let mut done = 0;
        while done < len {
            if self.chunk.capacity() == 0 {
                self.chunk = self.next_buffer();
            }
            let Some(lazy) = &mut self.lazy else {
                // The chunk was not the old one: read the rest of the file.
                let mut at = file;
                at.seek(SeekFrom::Start(done))?;
                return Ok(done + self.fill_read(file, len - done, Some(inode), done)?);
            };
            let room = (CutRule::MAX - lazy.held) as u64;
            let want = (len - done).min(room);
            let hole_file = shared.get_or_insert_with(|| {
                // A descriptor that cannot be had (EMFILE) only means reading the file.
                let file = (lazy.open < MAX_OPEN_HOLES)
                    .then(|| file.try_clone().ok())
                    .flatten()?;
                lazy.open += 1;
                Some(Arc::new(file))
            });
            let n = match hole_file {
                Some(hole_file) => {
                    lazy.holes.push(Hole {
                        at: self.chunk.len(),
                        file: Arc::clone(hole_file),
                        offset: done,
                        len: want as usize,
                    });
                    want
                }
                None => {
                    // Room for a whole chunk, so a read never grows the buffer past it.
                    self.chunk
                        .reserve_exact(CutRule::MAX.saturating_sub(self.chunk.len()));
                    let n = read_at_onto(file, done, want as usize, &mut self.chunk)?;
                    lazy.read_some = true;
                    n
                }
            };
            lazy.held += n as usize;
            // The identity is the same read or not: the chunk may still be the old one.
            self.ident.file(Some(inode), done, n);
            done += n;
            if lazy.held == CutRule::MAX {
                self.cut(false)?;
            }
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    /// Reads `len` bytes of `file` (from its position, `start` bytes into it) straight into
    /// the chunk being filled.
    fn fill_read(
        &mut self,
        file: &File,
        len: u64,
        inode: Option<Inode>,
        start: u64,
    ) -> io::Result<u64> {
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
            self.ident.file(inode, start + done, n);
            done += n;
            if self.chunk.len() == CutRule::MAX {
                self.cut(false)?;
            }
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    fn submit(&mut self, data: Vec<u8>, last: bool, ident: ChunkIdent) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let tail = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let dict = std::mem::replace(&mut self.prev_tail, tail);
        let index = self.table.chunks.len() + self.pending.len();
        let (reply, result) = channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        jobs.send(Job {
            data,
            dict,
            last,
            index,
            reply,
        })
        .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
        self.pending.push_back((result, ident));
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some((rx, ident)) = self.pending.pop_front() {
            let chunk = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            let len = match (&self.reuse, chunk.unread) {
                (Some(reuse), true) => reuse.len_at(self.table.chunks.len())?,
                _ => chunk.bytes.len() as u64,
            };
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
                    match &mut self.withheld {
                        Some(withheld) => *withheld += len,
                        None => {
                            let bytes = self.bytes_of(chunk.bytes, chunk.unread, &chunk.key)?;
                            self.out.write_all(&bytes)?;
                        }
                    }
                    self.tar_hash.resume(tar_hash)?;
                    self.blob_hash.resume(blob_hash)?;
                    self.resumed += 1;
                    input.clear();
                    self.keep_buffer(input);
                }
                None => {
                    self.leading = false;
                    let bytes = self.bytes_of(chunk.bytes, chunk.unread, &chunk.key)?;
                    self.write_out(&bytes)?;
                    self.tar_hash.hash(input, true)?;
                    self.blob_hash.hash(bytes, false)?;
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
                ident,
                tar_state: Midstate::EMPTY,
                blob_state: Midstate::EMPTY,
            });
            self.written += len;
            self.reused += usize::from(chunk.reused);
        }
        Ok(())
    }

    /// A chunk's compressed `bytes`, read from the earlier blob when the worker left them
    /// `unread`.
    fn bytes_of(&self, bytes: Vec<u8>, unread: bool, key: &ChunkKey) -> io::Result<Vec<u8>> {
        match (&self.reuse, unread) {
            (Some(reuse), true) => reuse.bytes_of(key),
            _ => Ok(bytes),
        }
    }

    /// Writes `bytes` of a stream that is not the earlier blob (or not all of it), after
    /// the start of that blob it withheld so far.
    fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let (Some(withheld), Some(reuse)) = (self.withheld.take(), &self.reuse) {
            reuse.copy_start(withheld, &mut self.out)?;
        }
        self.out.write_all(bytes)
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
        self.cut(true)?;
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
        // Every chunk was the old one at its place, so the trailer (the CRC and length of
        // the same input) is the old one too.
        let reused_blob = match (self.withheld, &self.reuse) {
            (Some(withheld), Some(reuse)) => {
                let len = withheld + trailer.len() as u64;
                reuse
                    .is_whole_blob(self.table.chunks.len(), &trailer, len)
                    .then_some(len)
            }
            _ => None,
        };
        if reused_blob.is_none() {
            self.write_out(&trailer)?;
        }
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
            skipped: self.skipped,
            digests: Some((
                Digest::from_hasher(tar_hash).into_string(),
                Digest::from_hasher(blob_hash).into_string(),
            )),
            reused_blob,
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
        let take = buf.len().min(CutRule::MAX - self.held());
        self.chunk.extend_from_slice(&buf[..take]);
        self.ident.bytes(&buf[..take]);
        if let Some(lazy) = &mut self.lazy {
            lazy.held += take;
        }
        if self.held() == CutRule::MAX {
            self.cut(false)?;
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
    /// Reads the file straight into the chunk being filled, or not at all while a linked
    /// file's bytes may be taken from the old blob.
    fn fill_from(&mut self, file: &File, len: u64, inode: Option<Inode>) -> io::Result<u64> {
        if self.lazy.is_some() {
            let reuse = self.reuse.as_ref();
            match inode {
                Some(inode) if reuse.is_some_and(|r| r.is_linked(inode)) => {
                    return self.fill_lazily(file, len, inode);
                }
                _ => self.read_holes()?,
            }
        }
        self.fill_read(file, len, inode, 0)
    }
}

/// One chunk's compressed bytes: copied from an earlier blob when it has the chunk, else
/// deflated. Not even read when the stream withholds its output and the chunk is the old
/// one at its place: while the stream is the old blob, its bytes are not needed.
fn compress_chunk(job: &Job, level: u32, reuse: Option<&ChunkReuse>) -> io::Result<Compressed> {
    let key = chunk_key(level, &job.dict, &job.data, job.last);
    if let Some(reuse) = reuse
        && reuse.withholds()
        && let Some((old, crc)) = reuse.key_at(job.index)
        && *old == key
    {
        return Ok(Compressed {
            key,
            bytes: Vec::new(),
            crc,
            reused: true,
            unread: true,
            input: Vec::new(),
        });
    }
    if let Some((bytes, crc)) = reuse.and_then(|r| r.get(&key)) {
        return Ok(Compressed {
            key,
            bytes,
            crc,
            reused: true,
            unread: false,
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
        unread: false,
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
    use super::super::chunks::{NO_IDENT, StoredBlobUnreadable};
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

    #[test]
    fn a_withholding_stream_writes_nothing_only_when_it_is_the_whole_old_blob() {
        let before = files();
        let (old_blob, old) = gz_with(&before, 2, None);
        let withholding = || {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&old_blob).unwrap();
            Some(Arc::new(
                ChunkReuse::new(&old.table, f).unwrap().withholding(),
            ))
        };
        // The same stream: nothing written, and the digests, size and table of the old one.
        let (written, same) = gz_with(&before, 2, withholding());
        assert!(written.is_empty(), "{} bytes written", written.len());
        assert_eq!(same.reused_blob, Some(old_blob.len() as u64));
        assert_eq!(same.digests, Some(digests_of(&before, &old_blob)));
        assert_eq!(same.table, old.table);
        // Any other stream is written whole, the old blob's start included, as it is
        // written without withholding: an edit at the start, in the middle, at the very
        // end, one more entry after the last, one fewer.
        let edits: Vec<Edit> = vec![
            ("start", Box::new(|e: &mut Entries| e[0].1[0] ^= 1)),
            ("middle", Box::new(|e: &mut Entries| e[300].1[5] ^= 1)),
            (
                "last byte",
                Box::new(|e: &mut Entries| {
                    if let Some(b) = e[599].1.last_mut() {
                        *b ^= 1;
                    }
                }),
            ),
            (
                "appended",
                Box::new(|e: &mut Entries| e.push((b"src/g".to_vec(), sample(10)))),
            ),
            (
                "truncated",
                Box::new(|e: &mut Entries| {
                    e.pop();
                }),
            ),
        ];
        for (what, edit) in edits {
            let mut after = before.clone();
            edit(&mut after);
            let (scratch, fresh) = gz_with(&after, 2, None);
            let (written, summary) = gz_with(&after, 2, withholding());
            assert_eq!(summary.reused_blob, None, "edit at the {what}");
            assert_eq!(written, scratch, "edit at the {what}");
            assert_eq!(summary.digests, fresh.digests, "edit at the {what}");
            assert_eq!(summary.table, fresh.table, "edit at the {what}");
        }
        // A stored blob that is not what its table says: cut short, it is not withheld
        // from (its start could not be copied); with another trailer, the same stream is
        // not taken for it. Either way the stream is written whole, from scratch.
        let mut edited = before.clone();
        edited[300].1[5] ^= 1;
        let (edited_scratch, _) = gz_with(&edited, 2, None);
        let mut short = old_blob.clone();
        short.truncate(old_blob.len() / 2);
        let mut flipped = old_blob.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        for (what, stored) in [("short", short), ("flipped", flipped)] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&stored).unwrap();
            let reuse = Some(Arc::new(
                ChunkReuse::new(&old.table, f).unwrap().withholding(),
            ));
            let (written, summary) = gz_with(&before, 2, reuse.clone());
            assert_eq!(summary.reused_blob, None, "{what}");
            assert_eq!(written, old_blob, "{what}");
            let (written, _) = gz_with(&edited, 2, reuse);
            assert_eq!(written, edited_scratch, "{what}");
        }
    }

    #[test]
    fn a_withholding_stream_that_cannot_read_the_stored_blob_says_so() {
        let before = files();
        let (old_blob, old) = gz_with(&before, 2, None);
        let mut after = before.clone();
        after[400].1[5] ^= 1;
        // The blob is cut short after the reuse was made: the stream needs its start at
        // the edit and cannot read it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, &old_blob).unwrap();
        let reuse = ChunkReuse::new(&old.table, File::open(&path).unwrap()).unwrap();
        let reuse = Arc::new(reuse.withholding());
        assert!(reuse.withholds());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let mut w = ParallelGzip::new(Vec::new(), 6, 2, Some(reuse)).unwrap();
        let mut result = Ok(());
        for (name, data) in &after {
            result = w
                .entry(name, data.len() as u64)
                .and_then(|()| w.write_all(data));
            if result.is_err() {
                break;
            }
        }
        let e = match result {
            Err(e) => e,
            Ok(()) => w
                .finish()
                .map(drop)
                .expect_err("the stream cannot be written"),
        };
        assert!(StoredBlobUnreadable::is(&e), "{e}");
        assert!(!StoredBlobUnreadable::is(&io::Error::other("other")));
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

    /// A file of a layer directory as the tests write it: a name, a mode byte the header
    /// carries, and the file itself.
    #[derive(Clone)]
    struct OnDisk {
        name: String,
        mode: u8,
        path: std::path::PathBuf,
    }

    impl OnDisk {
        fn inode(&self) -> Inode {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(&self.path).unwrap();
            (md.dev(), md.ino())
        }
    }

    /// `n` files of 9 KiB (one of `big` bytes at index 7) in `dir`.
    fn on_disk(dir: &std::path::Path, n: usize, big: usize) -> Vec<OnDisk> {
        (0..n)
            .map(|i| {
                let name = format!("src/f{i:04}");
                let path = dir.join(format!("f{i:04}"));
                let len = if i == 7 { big } else { 9000 };
                let data: Vec<u8> = (0..len as u32)
                    .map(|j| ((i as u32 * 31 + j).wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
                    .collect();
                std::fs::write(&path, data).unwrap();
                OnDisk {
                    name,
                    mode: b'a',
                    path,
                }
            })
            .collect()
    }

    /// A tar-like stream of `files`: a 512-byte header (name, size, mode) before each
    /// file's bytes, given by inode. Returns the blob, its summary and the input.
    fn gz_files(
        files: &[OnDisk],
        reuse: Option<Arc<ChunkReuse>>,
    ) -> (Vec<u8>, GzipSummary, Vec<u8>) {
        let mut w = ParallelGzip::new(Vec::new(), 6, 2, reuse).unwrap();
        let mut input = Vec::new();
        for f in files {
            let file = File::open(&f.path).unwrap();
            let len = file.metadata().unwrap().len();
            let mut header = format!("{}:{len}:{}", f.name, f.mode as char).into_bytes();
            header.resize(512, 0);
            w.entry(f.name.as_bytes(), len).unwrap();
            w.write_all(&header).unwrap();
            assert_eq!(w.fill_from(&file, len, Some(f.inode())).unwrap(), len);
            input.extend_from_slice(&header);
            input.extend_from_slice(&std::fs::read(&f.path).unwrap());
        }
        let (blob, summary) = w.finish().unwrap();
        (blob, summary, input)
    }

    /// Reuse of `blob` trusting the inodes of `linked`.
    fn trusting(blob: &[u8], table: &ChunkTable, linked: &[&OnDisk]) -> Arc<ChunkReuse> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(blob).unwrap();
        let set = linked.iter().map(|f| f.inode()).collect();
        Arc::new(
            ChunkReuse::new(table, f)
                .unwrap()
                .trusting_links(Arc::new(set)),
        )
    }

    #[test]
    fn linked_files_before_an_edit_are_not_read_and_the_stream_is_the_one_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let before = on_disk(dir.path(), 600, 3 * CutRule::MAX + 777);
        let (old_blob, old, _) = gz_files(&before, None);
        assert!(old.table.chunks.iter().all(|c| c.ident != NO_IDENT));
        type Change = Box<dyn Fn(&mut Vec<OnDisk>, &std::path::Path)>;
        // Each edit gives a new file (a new inode) or a new header; every other file is
        // linked, as a COPY links it.
        let new_file = |files: &mut Vec<OnDisk>, dir: &std::path::Path, i: usize| {
            let path = dir.join(format!("new{i}"));
            let mut data = std::fs::read(&files[i].path).unwrap();
            data.extend_from_slice(b"edit");
            std::fs::write(&path, data).unwrap();
            files[i].path = path;
        };
        let edits: Vec<(&str, Change)> = vec![
            ("start", Box::new(move |f, d| new_file(f, d, 0))),
            ("middle", Box::new(move |f, d| new_file(f, d, 300))),
            ("end", Box::new(move |f, d| new_file(f, d, 599))),
            ("big file", Box::new(move |f, d| new_file(f, d, 7))),
            (
                "header of a linked file",
                Box::new(|f, _| f[250].mode = b'b'),
            ),
            (
                "header of the big linked file",
                Box::new(|f, _| f[7].mode = b'b'),
            ),
            ("delete", Box::new(|f, _| drop(f.remove(450)))),
            (
                "add",
                Box::new(|f, d| {
                    let path = d.join("added");
                    std::fs::write(&path, sample(20000)).unwrap();
                    f.insert(
                        200,
                        OnDisk {
                            name: "src/f0199a".into(),
                            mode: b'a',
                            path,
                        },
                    );
                }),
            ),
            ("nothing", Box::new(|_, _| {})),
        ];
        for (what, edit) in edits {
            let mut after = before.clone();
            edit(&mut after, dir.path());
            let linked: Vec<&OnDisk> = after
                .iter()
                .filter(|f| before.iter().any(|b| b.path == f.path))
                .collect();
            let (scratch, fresh, input) = gz_files(&after, None);
            let reuse = trusting(&old_blob, &old.table, &linked);
            let (incremental, summary, _) = gz_files(&after, Some(reuse));
            assert_eq!(incremental, scratch, "edit: {what}");
            assert_eq!(summary.table, fresh.table, "edit: {what}");
            assert_eq!(summary.digests, fresh.digests, "edit: {what}");
            assert_eq!(
                summary.digests,
                Some((
                    Digest::of(&input).into_string(),
                    Digest::of(&scratch).into_string()
                ))
            );
            assert_eq!(gunzip(&incremental), input, "edit: {what}");
            // The chunks before the edit are taken unread, the rest as before.
            match what {
                "start" => assert_eq!(summary.skipped, 0),
                "nothing" => assert_eq!(summary.skipped, summary.table.len()),
                // Chunk 0 ends before the big file.
                "big file" | "header of the big linked file" => assert_eq!(summary.skipped, 1),
                "end" => assert_eq!(summary.skipped + 1, summary.table.len()),
                _ => assert!(
                    summary.skipped > 0 && summary.skipped + 2 < summary.table.len(),
                    "edit: {what}: {} of {} skipped",
                    summary.skipped,
                    summary.table.len()
                ),
            }
            assert!(summary.skipped <= summary.resumed, "edit: {what}");
            assert!(summary.reused + 3 >= summary.table.len(), "edit: {what}");
        }
    }

    #[test]
    fn identities_are_trusted_only_for_linked_inodes_of_the_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = on_disk(dir.path(), 400, 9000);
        let (old_blob, old, _) = gz_files(&files, None);
        let all: Vec<&OnDisk> = files.iter().collect();
        let (same, summary, _) = gz_files(&files, Some(trusting(&old_blob, &old.table, &all)));
        assert_eq!(same, old_blob);
        assert_eq!(summary.skipped, old.table.len());
        // One file of the first chunk not linked (copied, say): nothing is skipped.
        let but_first: Vec<&OnDisk> = files.iter().skip(1).collect();
        let (bytes, summary, _) =
            gz_files(&files, Some(trusting(&old_blob, &old.table, &but_first)));
        assert_eq!((bytes, summary.skipped), (old_blob.clone(), 0));
        // No links trusted at all.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&old_blob).unwrap();
        let plain = Arc::new(ChunkReuse::new(&old.table, f).unwrap());
        let (bytes, summary, _) = gz_files(&files, Some(plain));
        assert_eq!((bytes, summary.skipped), (old_blob.clone(), 0));
        // A table whose identities sit at other places, or whose chunks end elsewhere.
        let mut rotated = old.table.clone();
        let first = rotated.chunks[0].ident;
        rotated.chunks[0].ident = rotated.chunks[1].ident;
        rotated.chunks[1].ident = first;
        let mut shifted = old.table.clone();
        for c in &mut shifted.chunks {
            c.tar_end += 512;
        }
        for table in [rotated, shifted] {
            let (bytes, summary, _) = gz_files(&files, Some(trusting(&old_blob, &table, &all)));
            assert_eq!((bytes, summary.skipped), (old_blob.clone(), 0));
        }
        // The same names and bytes in other inodes (a layer written from other files):
        // their identities are not the old ones, and every file is read.
        let copies = tempfile::tempdir().unwrap();
        for f in &mut files {
            let path = copies.path().join(f.path.file_name().unwrap());
            std::fs::copy(&f.path, &path).unwrap();
            f.path = path;
        }
        let linked: Vec<&OnDisk> = files.iter().collect();
        let (bytes, summary, _) = gz_files(&files, Some(trusting(&old_blob, &old.table, &linked)));
        assert_eq!((bytes, summary.skipped), (old_blob.clone(), 0));
        assert_eq!(summary.reused, old.table.len());
    }

    #[test]
    fn a_stream_ending_where_a_chunk_taken_unread_ends_is_the_one_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        // After its 512-byte header each file fills a chunk to the byte: the stream's last
        // byte ends a chunk, and an empty last chunk ends the deflate stream.
        let files: Vec<OnDisk> = (0..2)
            .map(|i| {
                let path = dir.path().join(format!("g{i}"));
                let mut data = sample(CutRule::MAX - 512);
                data[0] = i as u8;
                std::fs::write(&path, data).unwrap();
                OnDisk {
                    name: format!("src/g{i}"),
                    mode: b'a',
                    path,
                }
            })
            .collect();
        let (old_blob, old, input) = gz_files(&files, None);
        assert_eq!(input.len(), 2 * CutRule::MAX);
        assert_eq!(old.table.len(), 3);
        let all: Vec<&OnDisk> = files.iter().collect();
        let (bytes, summary, _) = gz_files(&files, Some(trusting(&old_blob, &old.table, &all)));
        assert_eq!(bytes, old_blob);
        assert_eq!(summary.table, old.table);
        assert_eq!(summary.digests, old.digests);
        assert_eq!((summary.skipped, summary.resumed), (3, 3));
        // The second file in a new inode (the same bytes): its chunk is read, and the empty
        // last chunk after it is compressed again.
        let mut edited = files.clone();
        let path = dir.path().join("g1-copy");
        std::fs::copy(&edited[1].path, &path).unwrap();
        edited[1].path = path;
        let (bytes, summary, _) =
            gz_files(&edited, Some(trusting(&old_blob, &old.table, &[&files[0]])));
        assert_eq!(bytes, old_blob);
        assert_eq!(gunzip(&bytes), input);
        assert_eq!(summary.digests, old.digests);
        assert_eq!((summary.skipped, summary.reused), (1, 3));
    }

    #[test]
    fn chunks_of_many_small_linked_files_keep_few_files_open_and_are_the_ones_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        // About 380 files of 300 bytes to a chunk: more than MAX_OPEN_HOLES, so each chunk
        // reads some of its files, and keeps the rest open as holes.
        let mut files: Vec<OnDisk> = (0..5000)
            .map(|i| {
                let path = dir.path().join(format!("s{i:04}"));
                let data: Vec<u8> = (0..300u32)
                    .map(|j| ((i * 7 + j).wrapping_mul(2_654_435_761) >> 17) as u8 & 0x3f)
                    .collect();
                std::fs::write(&path, data).unwrap();
                OnDisk {
                    name: format!("node_modules/s{i:04}"),
                    mode: b'a',
                    path,
                }
            })
            .collect();
        let (old_blob, old, input) = gz_files(&files, None);
        assert!(old.table.len() >= 5, "{} chunks", old.table.len());
        let per_chunk = files.len() / old.table.len();
        assert!(per_chunk > MAX_OPEN_HOLES, "{per_chunk} files a chunk");
        let all: Vec<&OnDisk> = files.iter().collect();
        let (bytes, summary, _) = gz_files(&files, Some(trusting(&old_blob, &old.table, &all)));
        assert_eq!(bytes, old_blob);
        assert_eq!(summary.table, old.table);
        assert_eq!(summary.digests, old.digests);
        // Every chunk is taken from the old blob by its identity, and none of those holding
        // more files than MAX_OPEN_HOLES counts as not read.
        let n = old.table.len();
        assert_eq!((summary.reused, summary.resumed), (n, n));
        assert!(summary.skipped <= 1, "{} of {n} not read", summary.skipped);
        // A file in the middle in a new inode: the chunks before it are taken, its chunk
        // reads its holes and its dictionary (holes of the chunk before), and the stream
        // is the one from scratch.
        let path = dir.path().join("edited");
        let mut data = std::fs::read(&files[2500].path).unwrap();
        data[10] ^= 1;
        std::fs::write(&path, data).unwrap();
        files[2500].path = path;
        let linked: Vec<&OnDisk> = files
            .iter()
            .filter(|f| !f.path.ends_with("edited"))
            .collect();
        let (scratch, fresh, edited_input) = gz_files(&files, None);
        assert_ne!(edited_input, input);
        let (bytes, summary, _) = gz_files(&files, Some(trusting(&old_blob, &old.table, &linked)));
        assert_eq!(bytes, scratch);
        assert_eq!(summary.table, fresh.table);
        assert_eq!(summary.digests, fresh.digests);
        assert_eq!(gunzip(&bytes), edited_input);
        assert!(
            summary.resumed > 0 && summary.resumed < n,
            "{} of {n} resumed",
            summary.resumed
        );
    }

    #[test]
    fn a_tail_keeps_the_bytes_and_holes_of_the_chunk_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content = sample(5000);
        std::fs::write(&path, &content).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let other = Arc::new(File::open(&path).unwrap());
        // "ab", [0..1000) of the file, "cd", [1000..3000), "ef", [3000..5000): 5006 bytes.
        let hole = |at, file: &Arc<File>, offset: u64, len| Hole {
            at,
            file: Arc::clone(file),
            offset,
            len,
        };
        let written = b"abcdef".to_vec();
        let holes = || {
            vec![
                hole(2, &file, 0, 1000),
                hole(4, &file, 1000, 2000),
                hole(6, &other, 3000, 2000),
            ]
        };
        let mut whole = Vec::new();
        fill_holes(&written, &holes(), &mut whole).unwrap();
        let mut want = b"ab".to_vec();
        want.extend_from_slice(&content[..1000]);
        want.extend_from_slice(b"cd");
        want.extend_from_slice(&content[1000..3000]);
        want.extend_from_slice(b"ef");
        want.extend_from_slice(&content[3000..]);
        assert_eq!(whole, want);
        assert_eq!(open_files(&holes()), 2);
        for from in [
            0, 1, 2, 500, 1002, 1003, 1004, 2500, 3004, 3006, 4000, 5005, 5006, 9000,
        ] {
            let (w, h) = tail_of(&written, holes(), from, vec![9; 7]);
            let mut got = Vec::new();
            fill_holes(&w, &h, &mut got).unwrap();
            assert_eq!(got, want[from.min(want.len())..], "from {from}");
            assert!(h.iter().all(|h| h.len > 0), "from {from}");
        }
        let (_, h) = tail_of(&written, holes(), 4000, Vec::new());
        assert_eq!(open_files(&h), 1);
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
