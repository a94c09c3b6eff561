//! The context stat cache: (relative path, size, mtime, ctime, inode, mode) → a file's
//! content sha256 (with its xattrs folded in) or a directory's xattrs' digest, so a
//! rebuild with nothing changed reads no file contents and lists no xattrs.
//!
//! Stored as one binary file: a magic line, the entries sorted by path, and a trailing
//! sha256 of everything before it. A file that fails any check (truncated, corrupt, older
//! format) is ignored and the cache starts empty; the worst case is re-hashing.
//!
//! Racy entries (like git's "racily clean" index entries): a file modified within
//! [`RACY_WINDOW`] of being read is not cached, because a second write in the same
//! timestamp tick would leave size and mtime unchanged (and ctime, for an xattr set).
//!
//! A context loads its cache on a thread of its own ([`StatCacheCell`]) while it walks:
//! only hashing needs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Version 2: a file's digest folds in its xattrs (`checksum::xattrs`), and directories
/// have entries; a cache of version 1 is dropped, as one of its files with xattrs has the
/// digest of its content alone.
const MAGIC: &[u8] = b"KILNSTAT\x02\n";

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

/// A [`StatCache`] loaded on a thread of its own while the context is walked: the walk
/// does not need it, and reading and checking a 20,000-entry cache was 4 ms of a 50 ms
/// no-op rebuild. The first [`StatCacheCell::lock`] waits for the load.
#[derive(Debug, Default)]
pub(crate) struct StatCacheCell {
    loading: Mutex<Option<JoinHandle<StatCache>>>,
    cache: Mutex<StatCache>,
}

impl StatCacheCell {
    /// Starts loading `path` (`None`: an empty cache). A thread that cannot be started
    /// loads it here.
    pub(crate) fn load(path: Option<PathBuf>) -> StatCacheCell {
        let Some(path) = path else {
            return StatCacheCell::default();
        };
        let spawned = std::thread::Builder::new()
            .name("kiln-statcache".into())
            .spawn({
                let path = path.clone();
                move || StatCache::load(&path)
            });
        match spawned {
            Ok(handle) => StatCacheCell {
                loading: Mutex::new(Some(handle)),
                cache: Mutex::default(),
            },
            Err(_) => StatCacheCell {
                loading: Mutex::default(),
                cache: Mutex::new(StatCache::load(&path)),
            },
        }
    }

    /// The cache, once loaded. A panicked load (or a poisoned lock) is an empty cache or
    /// the cache as it was: the worst case is hashing files again.
    pub(crate) fn lock(&self) -> MutexGuard<'_, StatCache> {
        // Held while joining, so a second caller waits for the loaded cache rather than
        // taking the empty one.
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = loading.take() {
            let loaded = handle.join().unwrap_or_default();
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
        }
        drop(loading);
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Entries loaded from disk live in one string arena plus a vector sorted by path
/// (binary-searched), so loading 20,000 entries costs two allocations rather than 20,000
/// and no hashing; entries added during this run go to a small map on top.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    arena: String,
    loaded: Vec<Loaded>,
    updates: HashMap<String, (StatKey, [u8; 32])>,
    dirty: bool,
}

#[derive(Debug, Clone, Copy)]
struct Loaded {
    start: u32,
    len: u32,
    key: StatKey,
    sha: [u8; 32],
}

impl StatCache {
    fn path_of(&self, l: &Loaded) -> &str {
        &self.arena[l.start as usize..(l.start + l.len) as usize]
    }

    fn lookup(&self, rel: &str) -> Option<(StatKey, [u8; 32])> {
        if let Some(v) = self.updates.get(rel) {
            return Some(*v);
        }
        self.loaded
            .binary_search_by(|l| self.path_of(l).cmp(rel))
            .ok()
            .map(|i| (self.loaded[i].key, self.loaded[i].sha))
    }

    /// Like [`StatCache::get`] for lookups made in (nearly) sorted order: `hint` is the
    /// index just after the previous hit and is tried before a binary search, which turns
    /// most lookups of a walk into one string comparison.
    pub(crate) fn get_hinted(
        &self,
        rel: &str,
        key: &StatKey,
        hint: &mut usize,
    ) -> Option<[u8; 32]> {
        if self.updates.is_empty()
            && let Some(l) = self.loaded.get(*hint)
            && self.path_of(l) == rel
        {
            *hint += 1;
            return (l.key == *key).then_some(l.sha);
        }
        if let Some(v) = self.updates.get(rel) {
            return (v.0 == *key).then_some(v.1);
        }
        match self.loaded.binary_search_by(|l| self.path_of(l).cmp(rel)) {
            Ok(i) => {
                *hint = i + 1;
                let l = &self.loaded[i];
                (l.key == *key).then_some(l.sha)
            }
            Err(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, rel: &str, key: &StatKey) -> Option<[u8; 32]> {
        match self.lookup(rel) {
            Some((k, sha)) if k == *key => Some(sha),
            _ => None,
        }
    }

    pub(crate) fn insert(&mut self, rel: String, key: StatKey, sha: [u8; 32]) {
        if self.lookup(&rel) != Some((key, sha)) {
            self.updates.insert(rel, (key, sha));
            self.dirty = true;
        }
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn mark_clean(&mut self) {
        self.dirty = false;
    }

    /// All entries (loaded, overridden by updates), sorted by path.
    fn merged(&self) -> Vec<(&str, StatKey, [u8; 32])> {
        let mut all: Vec<(&str, StatKey, [u8; 32])> = self
            .loaded
            .iter()
            .map(|l| (self.path_of(l), l.key, l.sha))
            .filter(|(p, _, _)| !self.updates.contains_key(*p))
            .chain(self.updates.iter().map(|(p, (k, s))| (p.as_str(), *k, *s)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.merged().len()
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
        let mut arena = String::with_capacity(body.len().min(u32::MAX as usize));
        let mut loaded = Vec::with_capacity(count.min(1 << 22) as usize);
        for _ in 0..count {
            let len = r.u32()? as usize;
            let path = std::str::from_utf8(r.take(len)?).ok()?;
            let start = u32::try_from(arena.len()).ok()?;
            arena.push_str(path);
            let key = StatKey {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
                ino: r.u64()?,
                mode: r.u32()?,
            };
            let sha: [u8; 32] = r.take(32)?.try_into().ok()?;
            loaded.push(Loaded {
                start,
                len: len as u32,
                key,
                sha,
            });
        }
        if !r.buf.is_empty() {
            return None;
        }
        let mut cache = StatCache {
            arena,
            loaded,
            updates: HashMap::new(),
            dirty: false,
        };
        // Written sorted; checked (one pass, cheaper than a sort) so binary search holds
        // for any valid file.
        let mut loaded = std::mem::take(&mut cache.loaded);
        if !loaded.is_sorted_by(|a, b| cache.path_of(a) <= cache.path_of(b)) {
            loaded.sort_by(|a, b| cache.path_of(a).cmp(cache.path_of(b)));
        }
        cache.loaded = loaded;
        Some(cache)
    }

    /// Serializes the cache, entries sorted by path so the bytes are deterministic.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let all = self.merged();
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + all.len() * 120 + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(all.len() as u64).to_le_bytes());
        for (path, key, sha) in all {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&key.size.to_le_bytes());
            out.extend_from_slice(&(key.mtime_ns as u64).to_le_bytes());
            out.extend_from_slice(&(key.ctime_ns as u64).to_le_bytes());
            out.extend_from_slice(&key.ino.to_le_bytes());
            out.extend_from_slice(&key.mode.to_le_bytes());
            out.extend_from_slice(&sha);
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
        // An update on top of loaded entries wins and is written back.
        let mut d = d;
        d.insert("c".into(), key, [3; 32]);
        assert!(d.is_dirty());
        assert_eq!(d.len(), 2);
        let e = StatCache::decode(&d.encode()).unwrap();
        assert_eq!(e.get("c", &key), Some([3; 32]));
        assert_eq!(e.get("a/b", &key), Some([1; 32]));
        let mut bad = bytes.clone();
        bad[MAGIC.len() + 10] ^= 1;
        assert!(StatCache::decode(&bad).is_none());
        assert!(StatCache::decode(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn a_cell_loading_in_the_background_gives_every_caller_the_loaded_cache() {
        let dir = std::env::temp_dir().join(format!("kiln-statcell-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cache");
        let key = StatKey {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            mode: 0o100644,
        };
        let mut c = StatCache::default();
        c.insert("x".into(), key, [7; 32]);
        std::fs::write(&path, c.encode()).unwrap();
        let cell = StatCacheCell::load(Some(path));
        // Two callers at once: neither may see the empty cache the cell starts with.
        std::thread::scope(|s| {
            let a = s.spawn(|| cell.lock().get("x", &key));
            let b = s.spawn(|| cell.lock().get("x", &key));
            assert_eq!(a.join().unwrap(), Some([7; 32]));
            assert_eq!(b.join().unwrap(), Some([7; 32]));
        });
        assert!(!cell.lock().is_dirty());
        // No path, or a missing file: an empty cache.
        assert_eq!(StatCacheCell::load(None).lock().len(), 0);
        assert_eq!(
            StatCacheCell::load(Some(dir.join("missing"))).lock().len(),
            0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
