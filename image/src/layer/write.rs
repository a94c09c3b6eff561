//! Turning a layer directory into a layer blob. A layer directory holds what
//! one layer adds or changes, with overlayfs whiteouts (0:0 character
//! devices) for deletions and `user.overlay.opaque=y` (or `trusted.`) on
//! directories that hide the lower layers — exactly an overlayfs upperdir.
//!
//! Bytes flow tar → sha256 (diff_id) → compressor → sha256 (digest) → out,
//! so nothing is held whole in memory (gzip hashes both in its compressor, which
//! can resume them from an earlier blob's chunk table). The walk is sorted by byte order of
//! names (depth first, a directory before its contents), so the same tree
//! always gives the same tar.

use super::chunks::{ChunkReuse, ChunkTable, Inode};
use super::compress::{Compression, Compressor};
use super::external::ExternalContent;
use super::hasher::{FillFrom, TarSink};
use super::remove::DIR_FLAGS;
use super::tarfmt::{EntryMeta, TarEntryKind, TarEntryWriter};
use super::unpack::DeviceNode;
use crate::digest::HashingWriter;
use kiln_base::whiteout;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Advice, AtFlags, FileType, Mode, OFlags};

/// Options for writing a layer blob.
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// Compression of the blob (gzip by default).
    pub compression: Compression,
    /// Clamp every mtime to at most this (SOURCE_DATE_EPOCH); `None` keeps
    /// the real times.
    pub source_date_epoch: Option<i64>,
    /// Compression level; `None` picks the fixed default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// An earlier gzip blob whose compressed chunks may be copied (see
    /// [`super::chunks`]), and maybe the files linked from its snapshot, which are then
    /// not read while the chunks are the old ones ([`ChunkReuse::trusting_links`]); the
    /// bytes are the same with or without it.
    pub reuse: Option<Arc<ChunkReuse>>,
    /// (device, inode) of regular files known to carry no xattrs, whose xattrs are then
    /// not listed again: a COPY's files linked from the previous snapshot, which relink
    /// checked have none (a snapshot is never written after commit).
    pub xattr_free: Option<Arc<HashSet<(u64, u64)>>>,
}

/// The digests of a written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar (goes in the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// sha256 of the blob as written (goes in the manifest).
    pub digest: String,
    /// Size of the blob as written.
    pub size: u64,
    /// OCI media type of the blob.
    pub media_type: String,
    /// The chunks of a gzip blob (empty for other compressions), to keep beside it.
    pub chunks: ChunkTable,
    /// How many of those chunks were copied from [`LayerOptions::reuse`].
    pub reused_chunks: usize,
    /// How many leading chunks were not hashed again: the diff_id and digest hashes
    /// resumed from the earlier blob's states after them.
    pub resumed_chunks: usize,
    /// How many of those were not even read: their files were linked from the earlier
    /// layer's snapshot, and its table vouched for them.
    pub skipped_chunks: usize,
    /// The blob is the earlier one of [`LayerOptions::reuse`], byte for byte, and nothing
    /// was written to the output: only when that reuse is
    /// [`ChunkReuse::withholding`], whose caller has the blob stored already.
    pub reused_blob: bool,
}

/// Errors while writing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerWriteError {
    /// A file of the layer directory could not be read.
    #[error("reading {path} for the layer: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The output (or the compressor) failed.
    #[error("writing the layer stream (at entry {entry:?}): {source}")]
    Write {
        /// The tar entry being written.
        entry: String,
        /// The cause.
        source: io::Error,
    },
}

impl LayerWriteError {
    /// Whether a withholding write ([`ChunkReuse::withholding`]) failed only because the
    /// stored blob it copies from could not be read: writing again without withholding
    /// needs nothing of that blob.
    pub fn is_stored_blob_unreadable(&self) -> bool {
        match self {
            LayerWriteError::Read { source, .. } | LayerWriteError::Write { source, .. } => {
                super::chunks::StoredBlobUnreadable::is(source)
            }
        }
    }
}

/// xattrs that are overlayfs bookkeeping (turned into whiteout entries) or
/// machine-local labels; they never go into a layer as xattrs.
fn is_excluded_xattr(name: &str) -> bool {
    whiteout::is_overlay_xattr(name) || name == "security.selinux"
}

/// tar → sha256 (diff_id, on a thread of its own) → compressor → sha256 (digest) → buffer
/// → out (for gzip, the compressor hashes both).
type Pipeline<W> = TarSink<Compressor<HashingWriter<io::BufWriter<W>>>>;

/// Buffer size for writes to the output.
const IO_BUFFER: usize = 256 * 1024;

/// Writes a layer from entries the caller makes up (an empty layer, a COPY
/// result assembled elsewhere...). Entries must come in the order wanted in
/// the tar; [`write_layer`] uses this for directory walks.
pub struct LayerWriter<W: Write> {
    tar: TarEntryWriter<Pipeline<W>>,
    compression: Compression,
    epoch: Option<i64>,
    /// Whether big files are sent on their way to the disk as they are read (see
    /// [`LayerWriter::append_file`]).
    writeback: bool,
}

impl<W: Write> std::fmt::Debug for LayerWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("compression", &self.compression)
            .finish()
    }
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer on `out`.
    pub fn new(out: W, opts: &LayerOptions) -> io::Result<Self> {
        let out = io::BufWriter::with_capacity(IO_BUFFER, out);
        // An uncompressed blob is the tar itself: its digest is the diff_id, hashed once.
        // The gzip stream hashes both itself (resuming from an earlier blob's states where
        // it can, see `pgzip`).
        let (hash_tar, hash_blob) = match opts.compression {
            Compression::None => (true, false),
            Compression::Gzip => (false, false),
            Compression::Zstd => (true, true),
        };
        let compressor = Compressor::new(
            HashingWriter::hashing_if(out, hash_blob),
            opts.compression,
            opts.level,
            opts.reuse.clone(),
        )?;
        // Not in an uncompressed pass: that is the diff_id-only hash of a directory that is
        // thrown away when its layer is stored already (a --no-cache RUN), whose pages must
        // never reach the disk (and whose removal would wait for them). Nor when the blob
        // is expected to be the earlier one, whose layer is stored: the same directory.
        let writeback = opts.compression != Compression::None
            && !opts.reuse.as_ref().is_some_and(|r| r.withholds());
        Ok(Self {
            tar: TarEntryWriter::new(TarSink::new(compressor, hash_tar)?),
            compression: opts.compression,
            epoch: opts.source_date_epoch,
            writeback,
        })
    }

    /// Appends one entry; mtime is clamped to the epoch if one is set.
    pub fn append(
        &mut self,
        name: &[u8],
        kind: &TarEntryKind,
        meta: &EntryMeta,
        data: impl Read,
    ) -> io::Result<()> {
        self.entry_starts(name, kind)?;
        match self.epoch {
            Some(epoch) if meta.mtime > epoch => {
                let clamped = EntryMeta {
                    mtime: epoch,
                    ..meta.clone()
                };
                self.tar.append(name, kind, &clamped, data)
            }
            _ => self.tar.append(name, kind, meta, data),
        }
    }

    /// Appends a regular file of `size` bytes read from `file` straight into the
    /// pipeline's buffers; fails when the file holds fewer. mtime is clamped as in
    /// [`LayerWriter::append`]. `inode`: the file's (device, inode) when it is the layer
    /// directory's own file (see [`super::hasher::FillFrom`]).
    pub(crate) fn append_file(
        &mut self,
        name: &[u8],
        size: u64,
        meta: &EntryMeta,
        file: &fs::File,
        inode: Option<Inode>,
    ) -> io::Result<()> {
        self.entry_starts(name, &TarEntryKind::File { size })?;
        // A big file of the layer directory (a snapshot's, a RUN's upper) is written to the
        // disk by the build's final sync at the latest: start now, while it is compressed
        // (queued on another thread: this one goes on reading it).
        if inode.is_some() && size >= kiln_base::writeback::MIN_FILE && self.writeback {
            kiln_base::writeback::start_in_background(file);
        }
        let clamped;
        let meta = match self.epoch {
            Some(epoch) if meta.mtime > epoch => {
                clamped = EntryMeta {
                    mtime: epoch,
                    ..meta.clone()
                };
                &clamped
            }
            _ => meta,
        };
        self.tar
            .append_filled(name, size, meta, |out| out.fill_from(file, size, inode))
    }

    /// Whether files linked from the earlier layer's snapshot are, for now, not read.
    fn skips_linked(&self) -> bool {
        self.tar.get_ref().get_ref().skips_linked()
    }

    /// Tells the compressor an entry starts: where gzip may cut a chunk.
    fn entry_starts(&mut self, name: &[u8], kind: &TarEntryKind) -> io::Result<()> {
        let size = match kind {
            TarEntryKind::File { size } => *size,
            _ => 0,
        };
        self.tar.get_mut().get_mut().entry(name, size)
    }

    /// Appends a whiteout for `path` (the entry `dir/.wh.name`). Like
    /// containerd 2, markers carry fixed metadata (mode 0, owner 0:0, mtime
    /// 0): when or by whom something was deleted never reaches the bytes.
    pub fn append_whiteout(&mut self, path: &[u8]) -> io::Result<()> {
        let (dir, base) = split_parent(path);
        let mut name = dir.to_vec();
        name.extend_from_slice(&whiteout::whiteout_name(base));
        self.append(
            &name,
            &TarEntryKind::File { size: 0 },
            &EntryMeta::default(),
            io::empty(),
        )
    }

    /// Appends the opaque marker for directory `dir` (`dir/.wh..wh..opq`),
    /// with the same fixed metadata as whiteouts.
    pub fn append_opaque(&mut self, dir: &[u8]) -> io::Result<()> {
        let mut name = dir.to_vec();
        if !name.is_empty() && !name.ends_with(b"/") {
            name.push(b'/');
        }
        name.extend_from_slice(whiteout::OPAQUE_MARKER.as_bytes());
        self.append(
            &name,
            &TarEntryKind::File { size: 0 },
            &EntryMeta::default(),
            io::empty(),
        )
    }

    /// Ends the tar, flushes the compressor and returns the digests.
    pub fn finish(self) -> io::Result<LayerDigests> {
        self.finish_into_inner().map(|(d, _)| d)
    }

    /// Like [`LayerWriter::finish`], also handing back the output writer
    /// (e.g. the `Vec<u8>` or file the blob went to).
    pub fn finish_into_inner(self) -> io::Result<(LayerDigests, W)> {
        let hashed_tar = self.tar.finish()?;
        let (compressor, diff_id, _) = hashed_tar.finish()?;
        let (mut hashed_blob, gzip) = compressor.finish()?;
        hashed_blob.flush()?;
        let (buffered, digest, size) = hashed_blob.finish();
        let (diff_id, digest) = match self.compression {
            Compression::Gzip => gzip
                .digests
                .ok_or_else(|| io::Error::other("the gzip stream gave no digests"))?,
            Compression::None => (diff_id.clone(), diff_id),
            Compression::Zstd => (diff_id, digest),
        };
        let out = buffered.into_inner().map_err(|e| e.into_error())?;
        let digests = LayerDigests {
            diff_id,
            digest,
            size: gzip.reused_blob.unwrap_or(size),
            media_type: self.compression.media_type().to_string(),
            chunks: gzip.table,
            reused_chunks: gzip.reused,
            resumed_chunks: gzip.resumed,
            skipped_chunks: gzip.skipped,
            reused_blob: gzip.reused_blob.is_some(),
        };
        Ok((digests, out))
    }
}

/// Splits `a/b/c` into (`a/b/`, `c`) and `c` into (``, `c`).
fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&[], trimmed),
    }
}

/// Writes the layer directory `dir` as a layer blob to `out`.
///
/// The root directory itself is not an entry (as in BuildKit's diffs). An
/// empty directory gives the 1024-byte empty tar.
pub fn write_layer(
    dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
) -> Result<LayerDigests, LayerWriteError> {
    write_layer_with(dir, out, opts, &ExternalContent::new())
}

/// [`write_layer`] for a metadata tree: the bytes of placeholders listed in `content` are
/// read from their sources (see [`super::external`]).
pub fn write_layer_with(
    dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
    content: &ExternalContent,
) -> Result<LayerDigests, LayerWriteError> {
    write_walk(dir, out, opts, content, &[])
}

/// [`write_layer`] of a layer directory that an unpack in a user namespace left without
/// some device nodes: `devices` (from [`super::UnpackInfo::skipped_devices`]) are written
/// where the walk would have met them, so the layer is the one real root would write.
pub fn write_layer_adding_devices(
    dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
    devices: &[DeviceNode],
) -> Result<LayerDigests, LayerWriteError> {
    write_walk(dir, out, opts, &ExternalContent::new(), devices)
}

fn write_walk(
    dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
    content: &ExternalContent,
    devices: &[DeviceNode],
) -> Result<LayerDigests, LayerWriteError> {
    let mut extra: HashMap<Vec<u8>, Vec<(std::ffi::OsString, &DeviceNode)>> = HashMap::new();
    for d in devices {
        // The walk's prefix of a directory's children is its path with a trailing `/`.
        let (prefix, name) = match d.path.iter().rposition(|&b| b == b'/') {
            Some(i) => (d.path[..=i].to_vec(), &d.path[i + 1..]),
            None => (Vec::new(), &d.path[..]),
        };
        extra
            .entry(prefix)
            .or_default()
            .push((OsStr::from_bytes(name).to_os_string(), d));
    }
    let mut writer = LayerWriter::new(out, opts).map_err(|source| LayerWriteError::Write {
        entry: String::new(),
        source,
    })?;
    let mut walk = Walk {
        xattr_free: opts.xattr_free.as_deref(),
        writer: &mut writer,
        links: HashMap::new(),
        content,
        extra,
    };
    walk.dir(dir, &[])?;
    writer.finish().map_err(|source| LayerWriteError::Write {
        entry: "<end of layer>".into(),
        source,
    })
}

/// Entries of a directory looked up ahead of the walk at most: their files are opened and
/// their first bytes asked of the disk (`POSIX_FADV_WILLNEED`) before the walk reads them,
/// so files not in the page cache are read many at a time instead of one after another
/// (the store's files are often not: this machine's DAMON pages cold ones out).
const LOOK_AHEAD: usize = 32;
/// Files held open ahead of the walk at most, over all the directories it is in.
const AHEAD_FILES: usize = 128;
/// Bytes of one file asked for ahead at most (the kernel's readahead goes on from there).
const AHEAD_BYTES: u64 = 4 << 20;

/// An entry's `lstat` and, for a regular file, the file opened for reading.
type Looked = io::Result<(fs::Metadata, Option<fs::File>)>;

/// A directory the walk is in.
struct Frame {
    abs: PathBuf,
    /// Its tar name prefix.
    rel: Vec<u8>,
    names: std::vec::IntoIter<std::ffi::OsString>,
    fd: Option<OwnedFd>,
    /// The next names, looked up ahead.
    ahead: VecDeque<(std::ffi::OsString, Looked)>,
}

struct Walk<'a, W: Write> {
    writer: &'a mut LayerWriter<W>,
    /// (dev, ino) of multiply-linked files already written → their tar name.
    links: HashMap<(u64, u64), Vec<u8>>,
    content: &'a ExternalContent,
    /// Device nodes missing on disk, by the prefix of their directory, to write in place.
    extra: HashMap<Vec<u8>, Vec<(std::ffi::OsString, &'a DeviceNode)>>,
    xattr_free: Option<&'a HashSet<(u64, u64)>>,
}

impl<'a, W: Write> Walk<'a, W> {
    /// Writes the contents of `root` depth first, each directory's names sorted by bytes.
    /// The directories being walked are an explicit stack: a layer can nest directories
    /// thousands deep (a RUN made them), more than recursion on a thread's stack survives.
    fn dir(&mut self, root: &Path, rel: &[u8]) -> Result<(), LayerWriteError> {
        let root_fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).ok();
        let mut stack = vec![Frame {
            abs: root.to_path_buf(),
            rel: rel.to_vec(),
            names: self.names(root, rel)?.into_iter(),
            fd: root_fd,
            ahead: VecDeque::new(),
        }];
        // Files held open in the frames' look-ahead queues.
        let mut ahead_files = 0;
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else {
                break;
            };
            if let Some(fd) = &frame.fd {
                while frame.ahead.len() < LOOK_AHEAD && ahead_files < AHEAD_FILES {
                    let Some(name) = frame.names.next() else {
                        break;
                    };
                    let looked = lookup_at(fd.as_fd(), &name);
                    if let Ok((md, Some(file))) = &looked {
                        ahead_files += 1;
                        // Only a hint: a file not asked for ahead is read all the same.
                        // A linked file is likely not read while the chunks are the old.
                        let skipped = self.writer.skips_linked()
                            && self
                                .xattr_free
                                .is_some_and(|l| l.contains(&(md.dev(), md.ino())));
                        if let Some(len) = NonZeroU64::new(md.len().min(AHEAD_BYTES))
                            && !skipped
                        {
                            let _ = rustix::fs::fadvise(file, 0, Some(len), Advice::WillNeed);
                        }
                    }
                    frame.ahead.push_back((name, looked));
                }
            }
            let (name, looked) = match frame.ahead.pop_front() {
                Some((name, looked)) => {
                    if let Ok((_, Some(_))) = &looked {
                        ahead_files -= 1;
                    }
                    (name, Some(looked))
                }
                None => match frame.names.next() {
                    Some(name) => (name, None),
                    None => {
                        stack.pop();
                        continue;
                    }
                },
            };
            let child = frame.abs.join(&name);
            let dir_fd = frame.fd.as_ref().map(|fd| fd.as_fd());
            if let Some(prefix) = self.entry(&child, &frame.rel, &name, dir_fd, looked)? {
                let names = self.names(&child, &prefix)?.into_iter();
                // An fd per level down to MAX_DIR_FDS; deeper directories go by path.
                let child_fd = dir_fd
                    .filter(|_| depth < MAX_DIR_FDS)
                    .and_then(|dir| rustix::fs::openat(dir, &name, DIR_FLAGS, Mode::empty()).ok());
                stack.push(Frame {
                    abs: child,
                    rel: prefix,
                    names,
                    fd: child_fd,
                    ahead: VecDeque::new(),
                });
            }
        }
        Ok(())
    }

    /// The names to write in directory `abs` (tar prefix `rel`): those on disk and the
    /// device nodes missing there, sorted by bytes.
    fn names(&self, abs: &Path, rel: &[u8]) -> Result<Vec<std::ffi::OsString>, LayerWriteError> {
        let mut names = sorted_names(abs)?;
        if let Some(extra) = self.extra.get(rel) {
            for (name, _) in extra {
                if let Err(at) = names.binary_search_by(|n| n.as_bytes().cmp(name.as_bytes())) {
                    names.insert(at, name.clone());
                }
            }
        }
        Ok(names)
    }

    /// The device node missing on disk that `rel` + `name` names, if any.
    fn extra_device(&self, rel: &[u8], name: &OsStr) -> Option<&'a DeviceNode> {
        let extra = self.extra.get(rel)?;
        extra.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }

    /// Writes one entry; for a directory, returns the tar name prefix of its children (the
    /// caller walks them).
    /// `dir` is the directory's fd when the walk holds one: the entry is then looked up
    /// by its name alone, a regular file opened once and its xattrs read from that fd.
    /// `looked` is that lookup when the walk made it ahead.
    fn entry(
        &mut self,
        abs: &Path,
        rel: &[u8],
        name: &OsStr,
        dir: Option<BorrowedFd<'_>>,
        looked: Option<Looked>,
    ) -> Result<Option<Vec<u8>>, LayerWriteError> {
        if let Some(dev) = self.extra_device(rel, name)
            && fs::symlink_metadata(abs).is_err()
        {
            let mut tar_name = rel.to_vec();
            tar_name.extend_from_slice(name.as_bytes());
            let kind = if dev.block {
                TarEntryKind::BlockDevice {
                    major: dev.major,
                    minor: dev.minor,
                }
            } else {
                TarEntryKind::CharDevice {
                    major: dev.major,
                    minor: dev.minor,
                }
            };
            let meta = EntryMeta {
                mode: dev.mode,
                uid: dev.uid,
                gid: dev.gid,
                mtime: dev.mtime,
                xattrs: Default::default(),
            };
            self.writer
                .append(&tar_name, &kind, &meta, io::empty())
                .map_err(|source| LayerWriteError::Write {
                    entry: String::from_utf8_lossy(&tar_name).into_owned(),
                    source,
                })?;
            return Ok(None);
        }
        let read_err = |source| LayerWriteError::Read {
            path: abs.to_path_buf(),
            source,
        };
        let (md, opened) = match (looked, dir) {
            (Some(looked), _) => looked.map_err(read_err)?,
            (None, Some(dir)) => lookup_at(dir, name).map_err(read_err)?,
            (None, None) => (fs::symlink_metadata(abs).map_err(read_err)?, None),
        };
        let mut tar_name = rel.to_vec();
        tar_name.extend_from_slice(name.as_bytes());
        let ft = md.file_type();
        let known_free = ft.is_file()
            && self
                .xattr_free
                .is_some_and(|free| free.contains(&(md.dev(), md.ino())));
        let (xattrs, opaque) = match &opened {
            _ if known_free => (BTreeMap::new(), false),
            Some(file) => read_xattrs(&XattrsOf::File(file)).map_err(read_err)?,
            None => read_xattrs(&XattrsOf::Path(abs)).map_err(read_err)?,
        };
        let meta = EntryMeta {
            mode: md.mode() & 0o7777,
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: md.mtime(),
            xattrs,
        };
        let entry_name = String::from_utf8_lossy(&tar_name).into_owned();
        let write_err = |source| LayerWriteError::Write {
            entry: entry_name.clone(),
            source,
        };
        if whiteout::is_whiteout_device(&md) {
            self.writer.append_whiteout(&tar_name).map_err(write_err)?;
            return Ok(None);
        }
        if ft.is_dir() {
            self.writer
                .append(&tar_name, &TarEntryKind::Directory, &meta, io::empty())
                .map_err(write_err)?;
            tar_name.push(b'/');
            if opaque {
                self.writer.append_opaque(&tar_name).map_err(write_err)?;
            }
            return Ok(Some(tar_name));
        }
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                let kind = TarEntryKind::Hardlink {
                    target: first.clone(),
                };
                self.writer
                    .append(&tar_name, &kind, &meta, io::empty())
                    .map_err(write_err)?;
                return Ok(None);
            }
            self.links.insert(key, tar_name.clone());
        }
        if ft.is_file()
            && let Some(ext) = self.content.get(&md)
        {
            let file = ext.open().map_err(|source| LayerWriteError::Read {
                path: ext.path.clone(),
                source,
            })?;
            self.writer
                .append_file(&tar_name, ext.len, &meta, &file, None)
                .map_err(write_err)?;
            ext.check(&file).map_err(|source| LayerWriteError::Read {
                path: ext.path.clone(),
                source,
            })?;
            return Ok(None);
        }
        let kind = if ft.is_file() {
            TarEntryKind::File { size: md.size() }
        } else if ft.is_symlink() {
            let target = fs::read_link(abs).map_err(read_err)?;
            TarEntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_char_device() {
            TarEntryKind::CharDevice {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            }
        } else if ft.is_block_device() {
            TarEntryKind::BlockDevice {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            }
        } else if ft.is_fifo() {
            TarEntryKind::Fifo
        } else {
            // Sockets cannot be carried in a tar; BuildKit skips them too.
            return Ok(None);
        };
        if let TarEntryKind::File { size } = kind {
            // The inode of a file opened by the fd-relative lookup is the one `md` is of.
            let (file, inode) = match opened {
                Some(file) => (file, Some((md.dev(), md.ino()))),
                None => (fs::File::open(abs).map_err(read_err)?, None),
            };
            self.writer
                .append_file(&tar_name, size, &meta, &file, inode)
                .map_err(write_err)?;
        } else {
            self.writer
                .append(&tar_name, &kind, &meta, io::empty())
                .map_err(write_err)?;
        }
        Ok(None)
    }
}

/// The names in directory `abs`, sorted by bytes (the tar order).
fn sorted_names(abs: &Path) -> Result<Vec<std::ffi::OsString>, LayerWriteError> {
    let read_err = |source| LayerWriteError::Read {
        path: abs.to_path_buf(),
        source,
    };
    let mut names: Vec<_> = fs::read_dir(abs)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// overlayfs xattrs that mean the upperdir entry is not self-contained (its
/// content or children still live in a lower layer): such a tree is not a
/// layer directory. Mount overlayfs with `redirect_dir=off,metacopy=off`.
const INCOMPLETE_OVERLAY_XATTRS: [&str; 4] = [
    "user.overlay.redirect",
    "trusted.overlay.redirect",
    "user.overlay.metacopy",
    "trusted.overlay.metacopy",
];

/// Where an entry's xattrs are read: its path (never following a final symlink), or the
/// regular file the walk opened.
enum XattrsOf<'a> {
    Path(&'a Path),
    File(&'a fs::File),
}

impl XattrsOf<'_> {
    fn list(&self) -> io::Result<xattr::XAttrs> {
        match self {
            XattrsOf::Path(p) => xattr::list(p),
            XattrsOf::File(f) => xattr::FileExt::list_xattr(*f),
        }
    }

    fn get(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        match self {
            XattrsOf::Path(p) => xattr::get(p, name),
            XattrsOf::File(f) => xattr::FileExt::get_xattr(*f, name),
        }
    }
}

/// Directories opened this deep at most (one fd each, down the walk's stack); a layer can
/// nest thousands of directories, more than a process may hold fds.
const MAX_DIR_FDS: usize = 64;

/// The entry `name` of the directory `dir`: its `lstat`, and for a regular file the file
/// opened for reading. Looked up by name on the fd, never following a symlink; nothing
/// but a regular file is opened for reading (a device node is never opened).
fn lookup_at(dir: BorrowedFd<'_>, name: &OsStr) -> Looked {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        // Anything else is looked at through an O_PATH fd: never opened for reading.
        let path_flags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
        let at = fs::File::from(rustix::fs::openat(dir, name, path_flags, Mode::empty())?);
        return Ok((at.metadata()?, None));
    }
    let read_flags = OFlags::RDONLY
        .union(OFlags::NOFOLLOW)
        .union(OFlags::NOCTTY)
        .union(OFlags::NONBLOCK)
        .union(OFlags::CLOEXEC);
    // Without O_NOATIME the read stamps the access time of a file linked from the previous
    // snapshot (its ctime is newer), dirtying its inode for the build's sync to write: 20,000
    // inode writes for an edit of a big COPY. Only the file's owner (or CAP_FOWNER) may ask
    // for it; for others, EPERM, and the file is opened as before.
    let file = match rustix::fs::openat(dir, name, read_flags.union(OFlags::NOATIME), Mode::empty())
    {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(dir, name, read_flags, Mode::empty())?,
        opened => opened?,
    };
    let file = fs::File::from(file);
    let md = file.metadata()?;
    if !md.file_type().is_file() || (md.dev(), md.ino()) != (st.st_dev, st.st_ino) {
        return Err(io::Error::other("replaced while the layer was written"));
    }
    Ok((md, Some(file)))
}

/// Reads the xattrs to record (sorted) and whether the entry is an opaque
/// overlay directory. Symlinks only carry `trusted.`/`security.` xattrs,
/// which `llistxattr` reports like any other.
fn read_xattrs(of: &XattrsOf<'_>) -> io::Result<(BTreeMap<String, Vec<u8>>, bool)> {
    let mut out = BTreeMap::new();
    let mut opaque = false;
    let names = match of.list() {
        Ok(names) => names,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok((out, false));
        }
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(name_str) = name.to_str() else {
            continue;
        };
        if whiteout::OPAQUE_XATTRS.contains(&name_str) {
            opaque |= of.get(&name)?.as_deref() == Some(whiteout::OPAQUE_VALUE);
            continue;
        }
        if INCOMPLETE_OVERLAY_XATTRS.contains(&name_str) {
            return Err(io::Error::other(format!(
                "has the overlayfs xattr {name_str}: its content is in a lower layer \
                 (mount overlayfs with redirect_dir=off,metacopy=off)"
            )));
        }
        if is_excluded_xattr(name_str) {
            continue;
        }
        if let Some(value) = of.get(&name)? {
            out.insert(name_str.to_string(), value);
        }
    }
    Ok((out, opaque))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parent_handles_nested_and_top_level_names() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b/"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(split_parent(b"d/"), (&b""[..], &b"d"[..]));
    }

    #[test]
    fn empty_layer_is_the_1024_byte_zero_tar() {
        let mut out = Vec::new();
        let opts = LayerOptions {
            compression: Compression::None,
            ..Default::default()
        };
        let d = LayerWriter::new(&mut out, &opts).unwrap().finish().unwrap();
        assert_eq!(out, vec![0u8; 1024]);
        assert_eq!(d.diff_id, crate::digest::sha256_digest(&[0u8; 1024]));
        assert_eq!(d.digest, d.diff_id);
        assert_eq!(d.size, 1024);
        assert_eq!(d.media_type, "application/vnd.oci.image.layer.v1.tar");
    }
}
