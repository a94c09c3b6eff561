//! Parallel gzip with output that does not depend on the number of threads.
//!
//! The stream is cut into fixed 1 MiB chunks; each chunk is deflated on its
//! own, primed with the previous chunk's last 32 KiB as a dictionary (as
//! pigz does), and ended with a sync flush, so the compressed
//! chunks are byte-aligned and simply concatenate; the last one ends the
//! deflate stream. The chunk boundaries depend only on the input, so the
//! bytes are the same on 1 or 64 cores. The result is one ordinary gzip
//! member (header without name or mtime, CRC32 and size trailer) that any
//! gunzip reads. Memory stays bounded: at most two chunks per worker are in
//! flight.

use flate2::{Compress, Compression as Level, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Size of the independently compressed chunks. Fixed: changing it changes
/// every gzip layer digest.
pub(crate) const CHUNK: usize = 1 << 20;

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
    reply: Sender<io::Result<Vec<u8>>>,
}

/// A gzip writer compressing chunks on worker threads.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    chunk: Vec<u8>,
    prev_tail: Vec<u8>,
    crc: Crc,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a gzip stream on `out` at `level` with `workers` threads.
    pub(crate) fn new(mut out: W, level: u32, workers: usize) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let workers = workers.max(1);
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..workers)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        // A poisoned lock means another worker panicked: stop.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let result = deflate_chunk(&job.data, &job.dict, level, job.last);
                        let _ = job.reply.send(result);
                    }
                })
            })
            .collect();
        Ok(Self {
            out,
            chunk: Vec::with_capacity(CHUNK),
            prev_tail: Vec::new(),
            crc: Crc::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_pending: workers * 2,
            workers: handles,
        })
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
            let bytes = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            self.out.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Ends the deflate stream, writes the trailer and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.chunk);
        self.submit(rest, true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..take]);
        self.crc.update(&buf[..take]);
        if self.chunk.len() == CHUNK {
            let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
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

    fn gz(data: &[u8], workers: usize) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), 6, workers).unwrap();
        for piece in data.chunks(100_003) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 & 0x1f)
            .collect()
    }

    #[test]
    fn output_is_the_same_for_any_worker_count_and_gunzips() {
        let data = sample(5 * CHUNK + 12345);
        let one = gz(&data, 1);
        assert_eq!(one, gz(&data, 4));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn empty_and_exact_chunk_inputs_round_trip() {
        for n in [0, 1, CHUNK, 2 * CHUNK] {
            let data = sample(n);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz(&data, 2)[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{n} bytes");
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
        let mut p = ParallelGzip::new(Vec::new(), 6, 2).unwrap();
        p.write_all(&data).unwrap();
        let par = p.finish().unwrap();
        let (tp, cp) = (t.elapsed(), cpu() - c0);
        eprintln!(
            "single {ts:?} cpu {cs:.2}s ({} bytes), parallel x2 {tp:?} cpu {cp:.2}s ({} bytes)",
            single.len(),
            par.len()
        );
    }
}
