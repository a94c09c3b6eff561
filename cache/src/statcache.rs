//! The context stat cache: (relative path, size, mtime, ctime, inode, mode) → content
//! sha256, so a rebuild with nothing changed reads no file contents.
//!
//! Stored as one binary file: a magic line, the entries sorted by path, and a trailing
//! sha256 of everything before it. A file that fails any check (truncated, corrupt, older
//! format) is ignored and the cache starts empty; the worst case is re-hashing.
//!
//! Racy entries (like git's "racily clean" index entries): a file modified within
//! [`RACY_WINDOW`] of being read is not cached, because a second write in the same
//! timestamp tick would leave size and mtime unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

const MAGIC: &[u8] = b"KILNSTAT\x01\n";

/// Files whose mtime is this close to (or after) the moment they were read are not cached.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(1);

/// The stat fields that must all match for a cached digest to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
}

impl StatKey {
    pub(crate) fn from_meta(m: &std::fs::Metadata) -> StatKey {
        use std::os::unix::fs::MetadataExt;
        StatKey {
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            ino: m.ino(),
            mode: m.mode(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatCache {
    entries: HashMap<String, (StatKey, [u8; 32])>,
    dirty: bool,
}

impl StatCache {
    pub(crate) fn get(&self, rel: &str, key: &StatKey) -> Option<[u8; 32]> {
        match self.entries.get(rel) {
            Some((k, sha)) if k == key => Some(*sha),
            _ => None,
        }
    }

    pub(crate) fn insert(&mut self, rel: String, key: StatKey, sha: [u8; 32]) {
        if self.entries.get(&rel) != Some(&(key, sha)) {
            self.entries.insert(rel, (key, sha));
            self.dirty = true;
        }
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn mark_clean(&mut self) {
        self.dirty = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Loads `path`; any problem yields an empty cache.
    pub(crate) fn load(path: &Path) -> StatCache {
        std::fs::read(path)
            .ok()
            .and_then(|b| Self::decode(&b))
            .unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<StatCache> {
        if bytes.len() < MAGIC.len() + 8 + 32 || !bytes.starts_with(MAGIC) {
            return None;
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != trailer {
            return None;
        }
        let mut r = Reader {
            buf: &body[MAGIC.len()..],
        };
        let count = r.u64()?;
        let mut entries = HashMap::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let len = r.u32()? as usize;
            let path = std::str::from_utf8(r.take(len)?).ok()?.to_string();
            let key = StatKey {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
                ino: r.u64()?,
                mode: r.u32()?,
            };
            let sha: [u8; 32] = r.take(32)?.try_into().ok()?;
            entries.insert(path, (key, sha));
        }
        if !r.buf.is_empty() {
            return None;
        }
        Some(StatCache {
            entries,
            dirty: false,
        })
    }

    /// Serializes the cache, entries sorted by path so the bytes are deterministic.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + keys.len() * 120 + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for k in keys {
            let (key, sha) = &self.entries[k];
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&key.size.to_le_bytes());
            out.extend_from_slice(&(key.mtime_ns as u64).to_le_bytes());
            out.extend_from_slice(&(key.ctime_ns as u64).to_le_bytes());
            out.extend_from_slice(&key.ino.to_le_bytes());
            out.extend_from_slice(&key.mode.to_le_bytes());
            out.extend_from_slice(sha);
        }
        let trailer = Sha256::digest(&out);
        out.extend_from_slice(&trailer);
        out
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_corruption_is_ignored() {
        let mut c = StatCache::default();
        let key = StatKey {
            size: 3,
            mtime_ns: -5,
            ctime_ns: 7,
            ino: 9,
            mode: 0o100644,
        };
        c.insert("a/b".into(), key, [1; 32]);
        c.insert("c".into(), key, [2; 32]);
        let bytes = c.encode();
        let d = StatCache::decode(&bytes).unwrap();
        assert_eq!(d.get("a/b", &key), Some([1; 32]));
        assert_eq!(d.get("c", &key), Some([2; 32]));
        let mut bad = bytes.clone();
        bad[MAGIC.len() + 10] ^= 1;
        assert!(StatCache::decode(&bad).is_none());
        assert!(StatCache::decode(&bytes[..bytes.len() - 1]).is_none());
    }
}
