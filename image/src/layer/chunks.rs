//! Compressed chunks that outlive their layer: what makes an edit cost what changed.
//!
//! A gzip layer is compressed in chunks ([`super::pgzip`]) cut at tar entry boundaries by
//! rules that look only at the entries themselves ([`CutRule`]): a chunk ends before an
//! entry whose name hashes to a cut point (once the chunk holds [`CutRule::MIN`] bytes), before an
//! entry that would not fit in [`CutRule::MAX`], and inside an entry bigger than that
//! every [`CutRule::MAX`] bytes from the entry's start. Editing, adding or removing a file
//! therefore changes the chunk that holds it (and at most the run of chunks up to the next
//! name cut point); every other chunk has the same input as before.
//!
//! A chunk's compressed bytes depend only on its [`ChunkKey`]: its input, the dictionary it
//! was primed with, whether it ends the stream, the level and [`CHUNK_FORMAT`]. When a layer
//! is written, the key, offset and length of each of its chunks is kept ([`ChunkTable`], a
//! store side record beside the blob); the next layer written from the same step looks its
//! chunks up there ([`ChunkReuse`]) and copies the compressed bytes of the chunks it finds
//! from the old blob instead of deflating them again. The result is byte for byte the blob a
//! from-scratch build writes: the keys cover everything the bytes depend on.
//!
//! The table also keeps, after each chunk, the SHA-256 state of the uncompressed stream
//! (the diff_id's hash) and of the compressed one (the blob digest's) ([`Midstate`]). While
//! every chunk of the new stream so far has the key of the old chunk at the same place,
//! the new stream's bytes so far are the old ones, so both hashes resume from the old
//! states instead of hashing those bytes again: an edit near the end of a big layer hashes
//! little more than what follows the edit.
//!
//! Those leading chunks need not even be read when the old table can vouch for them. Each
//! chunk also has an identity ([`ChunkIdent`]): a digest of the bytes the tar writer made
//! itself (headers, padding) and, for each run of file content, the file's (device, inode)
//! and the range read, instead of the bytes. What makes an identity name the chunk's bytes
//! is not the inodes (the table may have been written from other files: a table is kept
//! only for a blob that has none yet, and a snapshot can be removed and made again, its
//! inode numbers given to other files meanwhile) but three things together:
//!
//! - a header's bytes (name, size, mode, owner, mtime) are in the identity, and every run
//!   of a file's content follows its header in the same chain of identities: a chunk is
//!   compared only while every chunk before it was the old one at its index, so the stream
//!   before it, the header of a file it starts inside of included, is the old stream;
//! - its runs are compared only when all their files are inodes a COPY linked from the
//!   snapshot of the very layer (the same diff_id) whose blob and table the [`ChunkReuse`]
//!   holds ([`ChunkReuse::trusting_links`]), each at the path it has there;
//! - a snapshot's content is never written after commit, and is the content of that
//!   layer's tar.
//!
//! So a file's bytes under an old header are the old tar's bytes under it, and a chunk
//! whose identity is the old one's is the old chunk. A chunk holding any other file has no
//! identity worth comparing and is read. Nothing is looked up by identity across layers, or
//! at another index of the same one.

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::digest::typenum::Unsigned;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Version of the chunking and compression rules; part of every chunk key and of every
/// build's cache keys (the solver's layer format). Changing the rules changes gzip layer
/// digests: bump it.
pub const CHUNK_FORMAT: u32 = 3;

/// Where a gzip stream is cut.
pub(crate) struct CutRule;

impl CutRule {
    /// A chunk is cut at a name cut point only once it holds this much.
    pub(crate) const MIN: usize = 256 << 10;
    /// A chunk never holds more than this. Small enough that a file of a few megabytes
    /// (a static binary) is compressed on several workers at once.
    pub(crate) const MAX: usize = 1 << 20;
    /// One entry name in this many is a cut point.
    const NAME_CUT_ONE_IN: u64 = 64;

    /// Whether the chunk holding `held` bytes ends before the entry `name` of `size` bytes
    /// (its content; headers are small beside [`Self::MAX`]).
    pub(crate) fn cut_before(held: usize, name: &[u8], size: u64) -> bool {
        if held == 0 {
            return false;
        }
        if held >= Self::MIN && name_hash(name).is_multiple_of(Self::NAME_CUT_ONE_IN) {
            return true;
        }
        (held as u64).saturating_add(size).saturating_add(1024) > Self::MAX as u64
    }
}

/// A stable 64-bit hash of an entry name (the first 8 bytes of its sha256): the same name
/// is a cut point in every build, on every machine.
fn name_hash(name: &[u8]) -> u64 {
    let d = Sha256::digest(name);
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// What a chunk's compressed bytes are a function of.
pub(crate) type ChunkKey = [u8; 32];

/// The key of a chunk with input `data` primed with `dict`, ending the stream when `last`.
/// BLAKE3: collision-resistant like sha256 (a key names bytes copied into a layer) and
/// several times faster, which matters because every byte of a layer is keyed besides
/// being hashed for its diff_id.
pub(crate) fn chunk_key(level: u32, dict: &[u8], data: &[u8], last: bool) -> ChunkKey {
    let mut h = blake3::Hasher::new();
    h.update(b"kiln gzip chunk\0");
    h.update(&CHUNK_FORMAT.to_le_bytes());
    h.update(&level.to_le_bytes());
    h.update(&[u8::from(last)]);
    h.update(&(dict.len() as u64).to_le_bytes());
    h.update(dict);
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data);
    *h.finalize().as_bytes()
}

/// What a chunk's bytes are, short of its bytes: see the module doc and [`IdentHasher`].
/// [`NO_IDENT`] for a chunk holding file content of unknown inodes.
pub(crate) type ChunkIdent = [u8; 32];

/// The identity of a chunk that has none.
pub(crate) const NO_IDENT: ChunkIdent = [0; 32];

/// (device, inode) of a file.
pub(crate) type Inode = (u64, u64);

/// The identity of one chunk in the making: the bytes the tar writer wrote, and a record
/// for each run of a file's content read into the chunk. The records are fixed-size and
/// each says how many written bytes came before it, so no two different chunks hash alike.
/// What it covers is gathered and hashed at once when the chunk ends: BLAKE3 hashes a
/// long input many blocks at a time, and a header at a time one block after another.
pub(crate) struct IdentHasher {
    input: Vec<u8>,
    /// Bytes written since the last record.
    run: u64,
    /// False once a file of unknown inode gave bytes.
    known: bool,
}

impl IdentHasher {
    pub(crate) fn new() -> IdentHasher {
        IdentHasher {
            input: Vec::new(),
            run: 0,
            known: true,
        }
    }

    /// Bytes the tar writer made (or content that came as bytes).
    pub(crate) fn bytes(&mut self, data: &[u8]) {
        if self.known {
            self.input.extend_from_slice(data);
        }
        self.run += data.len() as u64;
    }

    /// `len` bytes of the file `inode` from `offset`, read into the chunk (or not).
    pub(crate) fn file(&mut self, inode: Option<Inode>, offset: u64, len: u64) {
        let Some((dev, ino)) = inode else {
            self.known = false;
            self.input.clear();
            return;
        };
        self.input.extend_from_slice(b"\xfffile");
        for n in [self.run, dev, ino, offset, len] {
            self.input.extend_from_slice(&n.to_le_bytes());
        }
        self.run = 0;
    }

    /// The identity of the chunk, `last` when it ends the stream, compressed at `level`;
    /// starts the next chunk's.
    pub(crate) fn finish(&mut self, level: u32, last: bool) -> ChunkIdent {
        let known = std::mem::replace(&mut self.known, true);
        let run = std::mem::take(&mut self.run);
        if !known {
            self.input.clear();
            return NO_IDENT;
        }
        let mut hash = blake3::Hasher::new();
        hash.update(&self.input);
        self.input.clear();
        hash.update(b"\xffend kiln chunk identity");
        hash.update(&CHUNK_FORMAT.to_le_bytes());
        hash.update(&level.to_le_bytes());
        hash.update(&[u8::from(last)]);
        hash.update(&run.to_le_bytes());
        *hash.finalize().as_bytes()
    }
}

/// One chunk of a written blob: its key, where its compressed bytes are in the blob, and
/// the hashes of both streams up to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub(crate) key: ChunkKey,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    /// Uncompressed (tar) bytes up to the end of this chunk.
    pub(crate) tar_end: u64,
    /// The CRC-32 of the chunk's input (a function of its key, like its bytes): a chunk
    /// copied from the blob need not be run through the CRC again for the gzip trailer.
    pub(crate) crc: u32,
    /// The chunk's identity (see the module doc).
    pub(crate) ident: ChunkIdent,
    /// The tar's SHA-256 state after this chunk.
    pub(crate) tar_state: Midstate,
    /// The blob's SHA-256 state after this chunk (the gzip header included).
    pub(crate) blob_state: Midstate,
}

/// A SHA-256 state in the middle of a stream: sha2's own serialization of [`Sha256`]
/// (the eight state words, the count of 64-byte blocks hashed, and the partial block),
/// so resuming from it gives exactly the digest of hashing the stream from its start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Midstate([u8; MIDSTATE_BYTES]);

/// Bytes of a serialized [`Sha256`] state.
const MIDSTATE_BYTES: usize =
    <<Sha256 as SerializableState>::SerializedStateSize as Unsigned>::USIZE;

impl std::fmt::Debug for Midstate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Midstate")
    }
}

impl Midstate {
    /// A placeholder, filled in before a table is used (it resumes nothing: its block
    /// buffer is not a state sha2 reads back).
    pub(crate) const EMPTY: Midstate = Midstate([0xff; MIDSTATE_BYTES]);

    /// The state of `hasher`.
    pub(crate) fn of(hasher: &Sha256) -> Midstate {
        let mut out = [0; MIDSTATE_BYTES];
        out.copy_from_slice(&hasher.serialize());
        Midstate(out)
    }

    /// The hasher this state is of, when it has hashed exactly `len` bytes; `None` for a
    /// state that does not say so or does not parse (it is then simply not used).
    pub(crate) fn resume(&self, len: u64) -> Option<Sha256> {
        // sha2 0.11 lays a Sha256 state out as: 32 bytes of state words, the block count
        // (u64 LE), then the block buffer's fill and its bytes.
        let blocks = u64::from_le_bytes(self.0.get(32..40)?.try_into().ok()?);
        let partial = u64::from(*self.0.get(40)?);
        if blocks.checked_mul(64)?.checked_add(partial)? != len {
            return None;
        }
        let state = SerializedState::<Sha256>::try_from(&self.0[..]).ok()?;
        Sha256::deserialize(&state).ok()
    }
}

/// The chunks of one gzip blob, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkTable {
    pub(crate) chunks: Vec<ChunkEntry>,
}

/// Bytes of one serialized entry: key, offset, length, tar end, CRC, identity, the two
/// states.
const ENTRY_BYTES: usize = 32 + 8 + 8 + 8 + 4 + 32 + 2 * MIDSTATE_BYTES;
/// Serialized tables start with this (and the format version).
const MAGIC: &[u8; 12] = b"kiln-chunks5";
/// The most chunks a table read back may hold: a 64 GiB layer at the smallest chunk size.
const MAX_CHUNKS: usize = 1 << 18;

impl ChunkTable {
    /// The number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The table without its chunks' identities, which name the inodes it was written
    /// from: what two writes of the same bytes from different files have in common.
    pub fn without_identities(mut self) -> ChunkTable {
        for c in &mut self.chunks {
            c.ident = NO_IDENT;
        }
        self
    }

    /// The table as stored beside its blob, ending with the sha256 of what precedes it (the
    /// store writes side records without fsync: a table a crash cut short reads as none).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.chunks.len() * ENTRY_BYTES + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CHUNK_FORMAT.to_le_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&c.key);
            out.extend_from_slice(&c.offset.to_le_bytes());
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.tar_end.to_le_bytes());
            out.extend_from_slice(&c.crc.to_le_bytes());
            out.extend_from_slice(&c.ident);
            out.extend_from_slice(&c.tar_state.0);
            out.extend_from_slice(&c.blob_state.0);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Reads a stored table; `None` for anything not written whole by this format (a table
    /// is a hint: without one, every chunk is compressed).
    pub fn from_bytes(bytes: &[u8]) -> Option<ChunkTable> {
        let (body, sum) = bytes.split_last_chunk::<32>()?;
        if Sha256::digest(body).as_slice() != sum {
            return None;
        }
        let rest = body.strip_prefix(MAGIC.as_slice())?;
        let (version, rest) = rest.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != CHUNK_FORMAT
            || rest.len() % ENTRY_BYTES != 0
            || rest.len() / ENTRY_BYTES > MAX_CHUNKS
        {
            return None;
        }
        let chunks = rest
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                let (key, rest) = e.split_first_chunk::<32>()?;
                let (offset, rest) = rest.split_first_chunk::<8>()?;
                let (len, rest) = rest.split_first_chunk::<8>()?;
                let (tar_end, rest) = rest.split_first_chunk::<8>()?;
                let (crc, rest) = rest.split_first_chunk::<4>()?;
                let (ident, rest) = rest.split_first_chunk::<32>()?;
                let (tar_state, blob_state) = rest.split_first_chunk::<MIDSTATE_BYTES>()?;
                Some(ChunkEntry {
                    key: *key,
                    offset: u64::from_le_bytes(*offset),
                    len: u64::from_le_bytes(*len),
                    tar_end: u64::from_le_bytes(*tar_end),
                    crc: u32::from_le_bytes(*crc),
                    ident: *ident,
                    tar_state: Midstate(*tar_state),
                    blob_state: Midstate(blob_state.try_into().ok()?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ChunkTable { chunks })
    }
}

/// The chunks of an earlier blob a new one may copy: its table, and the blob to copy from.
#[derive(Debug)]
pub struct ChunkReuse {
    /// Offset, length and input CRC of each chunk, by key.
    by_key: HashMap<ChunkKey, (u64, u64, u32)>,
    /// The table in stream order, for the hash states at a chunk's end.
    chunks: Vec<ChunkEntry>,
    blob: File,
    blob_size: u64,
    /// The inodes a COPY linked from the snapshot of the layer this blob is of: the
    /// identities of chunks holding only those are trusted (see the module doc).
    linked: Option<Arc<HashSet<Inode>>>,
    /// The caller has this blob stored: while the new stream is its start, nothing is
    /// written, and a stream that is all of it writes nothing at all
    /// ([`ChunkReuse::withholding`]). Only for a blob that starts as the gzip writer's do.
    withhold: bool,
}

/// A withholding stream ([`ChunkReuse::withholding`]) could not read the stored blob it
/// needed after all: its start, or a chunk it had not read. The caller, which has the
/// layer's files, writes the blob again without withholding.
#[derive(Debug, thiserror::Error)]
#[error("reading the stored blob: {0}")]
pub struct StoredBlobUnreadable(io::Error);

impl StoredBlobUnreadable {
    fn wrap(e: io::Error) -> io::Error {
        io::Error::new(e.kind(), StoredBlobUnreadable(e))
    }

    /// Whether `e` is one.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<StoredBlobUnreadable>())
    }
}

/// An old chunk the new stream takes without reading its input: the old entry and both
/// hashes after it.
pub(crate) struct Vouched {
    pub(crate) old: ChunkEntry,
    pub(crate) tar_hash: Sha256,
    pub(crate) blob_hash: Sha256,
}

/// Where the new stream is after a chunk: its index, key, and the bytes of both streams so far.
pub(crate) struct StreamPoint<'a> {
    pub(crate) index: usize,
    pub(crate) key: &'a ChunkKey,
    pub(crate) tar_len: u64,
    pub(crate) blob_len: u64,
}

impl ChunkReuse {
    /// Reuse from `blob` (opened from the store), whose chunks `table` lists. Entries that
    /// do not lie inside the blob are dropped.
    pub fn new(table: &ChunkTable, blob: File) -> io::Result<ChunkReuse> {
        let blob_size = blob.metadata()?.len();
        let by_key = table
            .chunks
            .iter()
            .filter(|c| {
                c.len <= 2 * CutRule::MAX as u64
                    && c.offset
                        .checked_add(c.len)
                        .is_some_and(|end| end <= blob_size)
            })
            .map(|c| (c.key, (c.offset, c.len, c.crc)))
            .collect();
        Ok(ChunkReuse {
            by_key,
            chunks: table.chunks.clone(),
            blob,
            blob_size,
            linked: None,
            withhold: false,
        })
    }

    /// This reuse's blob is stored and the caller expects the new stream to be that very
    /// blob (a step run again that gives its recorded layer): the stream then writes
    /// nothing, and says so ([`crate::LayerDigests::reused_blob`]), so the check costs a
    /// key per chunk, not a hash of every byte and a second copy of the blob. The bytes
    /// withheld are the old blob's start: a stream that turns out to be another one
    /// writes them (read from the old blob) before its first new chunk, and is then the
    /// stream written without this.
    ///
    /// Only for a blob the table describes to its end (contiguous chunks, then the 8-byte
    /// trailer): the withheld start is copied from the blob, so a blob cut short would
    /// fail the stream instead of only costing compression.
    pub fn withholding(mut self) -> ChunkReuse {
        let mut end = self.chunks.first().map(|c| c.offset);
        for c in &self.chunks {
            end = end
                .filter(|&e| e == c.offset)
                .and_then(|e| e.checked_add(c.len));
        }
        self.withhold = end.and_then(|e| e.checked_add(8)) == Some(self.blob_size)
            && self.starts_with(&super::pgzip::HEADER);
        self
    }

    /// Whether output is to be withheld ([`ChunkReuse::withholding`]).
    pub(crate) fn withholds(&self) -> bool {
        self.withhold
    }

    /// Whether the old blob starts with `bytes`.
    fn starts_with(&self, bytes: &[u8]) -> bool {
        let mut start = vec![0; bytes.len()];
        self.blob.read_exact_at(&mut start, 0).is_ok() && start == bytes
    }

    /// Whether a stream of `chunks` chunks, each the old one at its place, then `trailer`,
    /// `len` bytes in all, is the whole old blob: the table's chunks and the blob's own
    /// trailer.
    pub(crate) fn is_whole_blob(&self, chunks: usize, trailer: &[u8], len: u64) -> bool {
        let mut old = vec![0; trailer.len()];
        chunks == self.chunks.len()
            && len == self.blob_size
            && self
                .blob
                .read_exact_at(&mut old, len.saturating_sub(trailer.len() as u64))
                .is_ok()
            && old == trailer
    }

    /// The key and input CRC-32 of the old chunk at `index`.
    pub(crate) fn key_at(&self, index: usize) -> Option<(&ChunkKey, u32)> {
        self.chunks.get(index).map(|c| (&c.key, c.crc))
    }

    /// The compressed length of the old chunk at `index`.
    pub(crate) fn len_at(&self, index: usize) -> io::Result<u64> {
        self.chunks
            .get(index)
            .map(|c| c.len)
            .ok_or_else(|| io::Error::other("a chunk taken unread is not in the table"))
    }

    /// Writes the old blob's first `len` bytes to `out`. A failed read of the blob is a
    /// [`StoredBlobUnreadable`] error.
    pub(crate) fn copy_start(&self, len: u64, out: &mut impl io::Write) -> io::Result<()> {
        let mut buf = vec![0; CutRule::MAX.min(usize::try_from(len).unwrap_or(usize::MAX))];
        let mut at = 0;
        while at < len {
            let n = buf
                .len()
                .min(usize::try_from(len - at).unwrap_or(usize::MAX));
            self.blob
                .read_exact_at(&mut buf[..n], at)
                .map_err(StoredBlobUnreadable::wrap)?;
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// The compressed bytes of the old chunk `key`, for a stream that needs them after
    /// all; a [`StoredBlobUnreadable`] error when they cannot be read.
    pub(crate) fn bytes_of(&self, key: &ChunkKey) -> io::Result<Vec<u8>> {
        self.get(key).map(|(bytes, _)| bytes).ok_or_else(|| {
            StoredBlobUnreadable::wrap(io::Error::other("a chunk of the table is not in it"))
        })
    }

    /// This reuse trusts the identities of chunks whose files are all in `linked`: the
    /// inodes a COPY linked from the snapshot of the very layer whose blob and table this
    /// reuse holds, each from the path it has in the new layer, and nothing else (see the
    /// module doc: a file from anywhere else breaks what makes an identity name its bytes).
    pub fn trusting_links(mut self, linked: Arc<HashSet<Inode>>) -> ChunkReuse {
        self.linked = Some(linked);
        self
    }

    /// Whether chunks may be taken by identity at all.
    pub(crate) fn trusts_links(&self) -> bool {
        self.linked.is_some()
    }

    /// Whether the content of the file `inode` is vouched for by its identity.
    pub(crate) fn is_linked(&self, inode: Inode) -> bool {
        self.linked.as_ref().is_some_and(|l| l.contains(&inode))
    }

    /// The old chunk at `index`, when the new stream is the old one before it (the caller
    /// asks only while every earlier chunk was the old one at its own index), the new chunk
    /// has the identity `ident` the old one has, whose files are all linked inodes (the
    /// caller asks only then), starts where the old one did in the blob (`blob_start`) and
    /// ends where it did in the tar (`tar_end`): the new chunk's bytes are the old chunk's.
    pub(crate) fn vouch(
        &self,
        index: usize,
        ident: &ChunkIdent,
        tar_end: u64,
        blob_start: u64,
    ) -> Option<Vouched> {
        let old = self.chunks.get(index)?;
        if !self.trusts_links()
            || *ident == NO_IDENT
            || old.ident != *ident
            || old.tar_end != tar_end
            || old.offset != blob_start
            || old.len > 2 * CutRule::MAX as u64
            || old.offset.checked_add(old.len)? > self.blob_size
        {
            return None;
        }
        let end = old.offset + old.len;
        Some(Vouched {
            old: *old,
            tar_hash: old.tar_state.resume(tar_end)?,
            blob_hash: old.blob_state.resume(end)?,
        })
    }

    /// The compressed bytes of `old` (an entry [`ChunkReuse::vouch`] gave), read into
    /// `buf` (which only grows: its bytes are overwritten, not zeroed first).
    pub(crate) fn read_into<'b>(
        &self,
        old: &ChunkEntry,
        buf: &'b mut Vec<u8>,
    ) -> io::Result<&'b [u8]> {
        let len = usize::try_from(old.len).map_err(io::Error::other)?;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let bytes = &mut buf[..len];
        self.blob.read_exact_at(bytes, old.offset)?;
        Ok(bytes)
    }

    /// The tar and blob hashers after the chunk at `at`, from the old table, when the new
    /// stream is the old one up to there: the caller asks only while every earlier chunk
    /// had the old key at its own index (so the bytes before this chunk are the old ones),
    /// and this chunk must have the old key at its index too, end both streams where the
    /// old one did, and come with states that say they hashed exactly those bytes.
    pub(crate) fn resume_after(&self, at: &StreamPoint<'_>) -> Option<(Sha256, Sha256)> {
        let old = self.chunks.get(at.index)?;
        if old.key != *at.key
            || old.tar_end != at.tar_len
            || old.offset.checked_add(old.len)? != at.blob_len
        {
            return None;
        }
        Some((
            old.tar_state.resume(at.tar_len)?,
            old.blob_state.resume(at.blob_len)?,
        ))
    }

    /// The compressed bytes of the chunk `key` and the CRC-32 of its input, when the old
    /// blob has it and can be read.
    pub(crate) fn get(&self, key: &ChunkKey) -> Option<(Vec<u8>, u32)> {
        // Every entry lies inside the blob: `new` kept no other.
        let &(offset, len, crc) = self.by_key.get(key)?;
        let mut buf = vec![0; usize::try_from(len).ok()?];
        self.blob.read_exact_at(&mut buf, offset).ok()?;
        Some((buf, crc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ChunkEntry {
        ChunkEntry {
            key: [0; 32],
            offset: 0,
            len: 0,
            tar_end: 0,
            crc: 0,
            ident: NO_IDENT,
            tar_state: Midstate::of(&Sha256::new()),
            blob_state: Midstate::of(&Sha256::new()),
        }
    }

    #[test]
    fn a_table_round_trips_and_garbage_reads_as_none() {
        let table = ChunkTable {
            chunks: vec![
                ChunkEntry {
                    key: [7; 32],
                    offset: 10,
                    len: 99,
                    ..entry()
                },
                ChunkEntry {
                    key: [9; 32],
                    offset: 109,
                    len: 5,
                    crc: 0xdead_beef,
                    ident: [3; 32],
                    ..entry()
                },
            ],
        };
        let bytes = table.to_bytes();
        assert_eq!(ChunkTable::from_bytes(&bytes), Some(table));
        assert_eq!(ChunkTable::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(ChunkTable::from_bytes(b"not a table"), None);
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(ChunkTable::from_bytes(&flipped), None);
        let other_version = ChunkTable::default().to_bytes();
        let mut body = other_version[..other_version.len() - 32].to_vec();
        body[12] ^= 1;
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        assert_eq!(ChunkTable::from_bytes(&body), None);
    }

    #[test]
    fn a_resumed_midstate_gives_the_digest_of_hashing_from_the_start() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = Sha256::digest(&data);
        // At a block boundary and in the middle of a block.
        for cut in [0, 512, 1000, 4096, 4999] {
            let mut h = Sha256::new();
            h.update(&data[..cut]);
            let state = Midstate::of(&h);
            let mut resumed = state.resume(cut as u64).unwrap();
            resumed.update(&data[cut..]);
            assert_eq!(resumed.finalize(), whole, "cut at {cut}");
            // A state is only taken for the length it hashed.
            assert!(state.resume(cut as u64 + 1).is_none());
            assert!(state.resume((cut as u64).wrapping_sub(64)).is_none());
        }
        // A damaged state does not parse: a buffer fill past a block, or bytes past the fill.
        let mut h = Sha256::new();
        h.update(&data[..100]);
        let good = Midstate::of(&h);
        let mut past = good;
        past.0[40] = 65;
        assert!(past.resume(100).is_none());
        let mut tail = good;
        tail.0[MIDSTATE_BYTES - 1] ^= 1;
        assert!(tail.resume(100).is_none());
    }

    #[test]
    fn cuts_depend_on_the_entry_not_on_what_came_before_it() {
        // Nothing is cut off an empty chunk; a big entry is cut off anything.
        assert!(!CutRule::cut_before(0, b"a", u64::MAX));
        assert!(CutRule::cut_before(1, b"a", CutRule::MAX as u64));
        // Below MIN only size cuts; at MIN some names cut, the same names every time.
        let names: Vec<Vec<u8>> = (0..2000).map(|i| format!("f{i}").into_bytes()).collect();
        let small = names
            .iter()
            .filter(|n| CutRule::cut_before(CutRule::MIN - 1, n, 10))
            .count();
        let cutting: Vec<_> = names
            .iter()
            .filter(|n| CutRule::cut_before(CutRule::MIN, n, 10))
            .collect();
        assert_eq!(small, 0);
        assert!((10..70).contains(&cutting.len()), "{}", cutting.len());
        assert!(
            cutting
                .iter()
                .all(|n| CutRule::cut_before(CutRule::MAX / 2, n, 10))
        );
    }

    #[test]
    fn reuse_drops_entries_outside_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"0123456789").unwrap();
        let table = ChunkTable {
            chunks: vec![
                ChunkEntry {
                    key: [1; 32],
                    offset: 2,
                    len: 3,
                    ..entry()
                },
                ChunkEntry {
                    key: [2; 32],
                    offset: 8,
                    len: 3,
                    ..entry()
                },
                ChunkEntry {
                    key: [3; 32],
                    offset: u64::MAX,
                    len: 2,
                    ..entry()
                },
            ],
        };
        let reuse = ChunkReuse::new(&table, File::open(&path).unwrap()).unwrap();
        assert_eq!(
            reuse.get(&[1; 32]).map(|(bytes, _)| bytes).as_deref(),
            Some(&b"234"[..])
        );
        assert_eq!(reuse.get(&[2; 32]), None);
        assert_eq!(reuse.get(&[3; 32]), None);
        assert_eq!(reuse.get(&[4; 32]), None);
    }
}
