//! Compression choices for layer blobs and the streaming compressor that sits
//! between the tar writer and the output. Settings are fixed so the same tar
//! always gives the same compressed bytes: gzip with no file name and mtime 0
//! in its header, compressed in chunks cut at entry boundaries on worker threads
//! (see `pgzip` and `chunks`); zstd always in multithreaded mode (its output with >= 1
//! worker does not depend on the worker count, but differs from 0 workers).

use super::chunks::ChunkReuse;
use super::pgzip::GzipSummary;
use std::io::{self, Write};
use std::sync::Arc;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (flate2 with the zlib-rs backend); the default, like BuildKit.
    #[default]
    Gzip,
    /// zstd frames, multithreaded with a fixed format.
    Zstd,
    /// The plain tar.
    None,
}

/// Media type of an uncompressed OCI layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd OCI layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema2 media type of a gzip layer (accepted when loading).
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// gzip level used unless the caller picks one (zlib's default; BuildKit's too).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// zstd level used unless the caller picks one (zstd's default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
            Compression::None => MEDIA_TYPE_LAYER_TAR,
        }
    }

    /// Parses `gzip`, `zstd`, `none`/`uncompressed` (the CLI spelling).
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    /// Guesses the compression of a blob from its first bytes ([`kiln_base::compression`]);
    /// formats a layer cannot have (bzip2, xz) count as none.
    pub fn detect(magic: &[u8]) -> Compression {
        match kiln_base::compression::sniff(magic) {
            kiln_base::compression::Compression::Gzip => Compression::Gzip,
            kiln_base::compression::Compression::Zstd => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The compression named by a layer media type (OCI or Docker), if known.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            MEDIA_TYPE_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_GZIP => Some(Compression::Gzip),
            MEDIA_TYPE_LAYER_ZSTD => Some(Compression::Zstd),
            MEDIA_TYPE_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            _ => None,
        }
    }
}

/// Number of compression workers: never 0 (0 changes zstd's bytes), at most 4.
fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4) as u32)
}

/// A streaming compressor over `W`.
pub(crate) enum Compressor<W: Write> {
    Gzip(Box<super::pgzip::ParallelGzip<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(
        out: W,
        compression: Compression,
        level: Option<i32>,
        reuse: Option<Arc<ChunkReuse>>,
    ) -> io::Result<Self> {
        Self::with_workers(out, compression, level, zstd_workers(), reuse)
    }

    fn with_workers(
        out: W,
        compression: Compression,
        level: Option<i32>,
        workers: u32,
        reuse: Option<Arc<ChunkReuse>>,
    ) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => {
                let level = level.map_or(DEFAULT_GZIP_LEVEL, |l| l.clamp(0, 9) as u32);
                // Header without file name, mtime 0, OS byte 255; chunked so
                // the bytes do not depend on the thread count.
                Compressor::Gzip(Box::new(super::pgzip::ParallelGzip::new(
                    out,
                    level,
                    workers as usize,
                    reuse,
                )?))
            }
            Compression::Zstd => {
                let mut enc =
                    zstd::stream::write::Encoder::new(out, level.unwrap_or(DEFAULT_ZSTD_LEVEL))?;
                enc.multithread(workers.max(1))?;
                Compressor::Zstd(enc)
            }
            Compression::None => Compressor::None(out),
        })
    }

    /// Whether files linked from the previous snapshot are, for now, taken unread (see
    /// `pgzip`).
    pub(crate) fn skips_linked(&self) -> bool {
        match self {
            Compressor::Gzip(g) => g.skips_linked(),
            Compressor::Zstd(_) | Compressor::None(_) => false,
        }
    }

    /// Told before each tar entry: where gzip may cut its chunks.
    pub(crate) fn entry(&mut self, name: &[u8], size: u64) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.entry(name, size),
            Compressor::Zstd(_) | Compressor::None(_) => Ok(()),
        }
    }

    /// Flushes the compressed stream's trailer and returns the inner writer, with the
    /// chunks a gzip stream was written in.
    pub(crate) fn finish(self) -> io::Result<(W, GzipSummary)> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => Ok((z.finish()?, GzipSummary::default())),
            Compressor::None(w) => Ok((w, GzipSummary::default())),
        }
    }
}

impl<W: Write> super::hasher::FillFrom for Compressor<W> {
    fn fill_from(
        &mut self,
        file: &std::fs::File,
        len: u64,
        inode: Option<super::chunks::Inode>,
    ) -> io::Result<u64> {
        match self {
            Compressor::Gzip(g) => g.fill_from(file, len, inode),
            Compressor::Zstd(_) | Compressor::None(_) => {
                super::hasher::fill_through(self, file, len, &mut Vec::new())
            }
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// The diff_id of a layer blob: the sha256 of what it decompresses to (gzip, zstd or
/// plain, by its magic bytes). Reads the whole stream; memory stays one buffer.
pub fn diff_id_of<R: io::BufRead>(blob: R) -> io::Result<String> {
    let (_, plain) = decompressor(blob)?;
    crate::digest::digest_reader(plain).map(|(digest, _)| digest)
}

/// A streaming decompressor picked by the stream's magic bytes.
pub(crate) fn decompressor<'a, R: io::BufRead + 'a>(
    mut input: R,
) -> io::Result<(Compression, Box<dyn io::Read + 'a>)> {
    let compression = Compression::detect(input.fill_buf()?);
    let reader: Box<dyn io::Read + 'a> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Compression::None => Box::new(input),
    };
    Ok((compression, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(c: Compression, workers: u32, data: &[u8]) -> Vec<u8> {
        let mut z = Compressor::with_workers(Vec::new(), c, None, workers, None).unwrap();
        for chunk in data.chunks(7919) {
            z.write_all(chunk).unwrap();
        }
        z.finish().unwrap().0
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_worker_count() {
        // Large enough for several zstd jobs (a job is a few MiB at level 3).
        let data: Vec<u8> = (0..24u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect();
        let one = compress(Compression::Zstd, 1, &data);
        assert_eq!(one, compress(Compression::Zstd, 3, &data));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }

    #[test]
    fn gzip_output_does_not_depend_on_the_worker_count() {
        let data: Vec<u8> = (0..5u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect();
        assert_eq!(
            compress(Compression::Gzip, 1, &data),
            compress(Compression::Gzip, 3, &data)
        );
    }

    #[test]
    fn gzip_header_has_no_name_and_no_mtime() {
        let gz = compress(Compression::Gzip, 1, b"hello");
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    }

    #[test]
    fn compression_is_detected_by_magic() {
        assert_eq!(
            Compression::detect(&compress(Compression::Gzip, 1, b"x")),
            Compression::Gzip
        );
        assert_eq!(
            Compression::detect(&compress(Compression::Zstd, 1, b"x")),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
    }
}
