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

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::digest::typenum::Unsigned;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

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

/// Bytes of one serialized entry: key, offset, length, tar end, CRC, the two states.
const ENTRY_BYTES: usize = 32 + 8 + 8 + 8 + 4 + 2 * MIDSTATE_BYTES;
/// Serialized tables start with this (and the format version).
const MAGIC: &[u8; 12] = b"kiln-chunks4";
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
                let (tar_state, blob_state) = rest.split_first_chunk::<MIDSTATE_BYTES>()?;
                Some(ChunkEntry {
                    key: *key,
                    offset: u64::from_le_bytes(*offset),
                    len: u64::from_le_bytes(*len),
                    tar_end: u64::from_le_bytes(*tar_end),
                    crc: u32::from_le_bytes(*crc),
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
        })
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
