//! Content digests of walked files: stat-cache hits first, then the misses read and
//! hashed in parallel; a file modified within the racy window is not cached. A file's
//! digest folds in its xattrs (module `xattrs`), so the cache keeps them too: setting one
//! changes the file's ctime, which is in the stat key. A directory's digest is that of its
//! xattrs, cached the same way (none: [`NO_XATTRS`]); symlinks and devices have no cache
//! entry and their xattrs are read on every walk (they are few).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::walk::{Item, io_err};
use super::{ChecksumStats, Context, ContextError, ContextFileType, xattrs};
use crate::statcache::{RACY_WINDOW, StatCache};

/// Items per parallel slice of stat cache lookups.
const LOOKUP_SLICE: usize = 2048;

impl Context {
    /// Fills in content digests: stat-cache hits first, then the misses in parallel.
    pub(super) fn hash_items(&self, items: &mut [Item]) -> Result<ChecksumStats, ContextError> {
        let mut stats = ChecksumStats::default();
        let mut misses = Vec::new();
        {
            let phase = kiln_base::phase::start("wait for the stat cache");
            let cache = self.cache.lock();
            phase.end();
            let cache: &StatCache = &cache;
            // Looked up in parallel slices (each with its own hint, as each is in walk
            // order): on a no-op rebuild this loop and the hex of every digest were the
            // largest single-threaded part after the walk.
            let slices: Vec<(Vec<usize>, u64)> = items
                .par_chunks_mut(LOOKUP_SLICE)
                .enumerate()
                .map(|(n, slice)| {
                    let (mut misses, mut hits) = (Vec::new(), 0);
                    let mut hint = 0;
                    for (i, it) in slice.iter_mut().enumerate() {
                        let Some(key) = it.stat else { continue };
                        match cache.get_hinted(&it.entry.rel_path, &key, &mut hint) {
                            Some(sha) => {
                                set_digest(it, sha);
                                hits += u64::from(it.entry.kind == ContextFileType::File);
                            }
                            None => misses.push(n * LOOKUP_SLICE + i),
                        }
                    }
                    (misses, hits)
                })
                .collect();
            for (m, hits) in slices {
                misses.extend(m);
                stats.cache_hits += hits;
            }
        }
        let root = &self.root;
        let results: Vec<(usize, [u8; 32], bool)> = misses
            .par_iter()
            .map(|&i| {
                let it = &items[i];
                let abs = root.join(OsStr::from_bytes(it.raw_path()));
                let started = SystemTime::now();
                let x = xattrs::digest(&abs).map_err(io_err(&abs))?;
                let sha = if it.entry.kind == ContextFileType::File {
                    xattrs::with_content(hash_file(&abs).map_err(io_err(&abs))?, x)
                } else {
                    x.unwrap_or(NO_XATTRS)
                };
                // Not while its mtime or ctime (an xattr set changes only the ctime) may
                // still change within the same tick.
                let cacheable = it
                    .stat
                    .is_some_and(|k| not_racy(k.mtime_ns.max(k.ctime_ns), started));
                Ok((i, sha, cacheable))
            })
            .collect::<Result<_, ContextError>>()?;
        // Symlinks and devices, not in the cache: their xattrs are their digest.
        let others: Vec<(usize, [u8; 32])> = items
            .par_iter()
            .enumerate()
            .filter(|(_, it)| it.stat.is_none())
            .map(|(i, it)| {
                let abs = root.join(OsStr::from_bytes(it.raw_path()));
                Ok(xattrs::digest(&abs).map_err(io_err(&abs))?.map(|x| (i, x)))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, ContextError>>()?;
        for (i, x) in others {
            set_digest(&mut items[i], x);
        }
        let mut cache = self.cache.lock();
        for (i, sha, cacheable) in results {
            let it = &mut items[i];
            set_digest(it, sha);
            if it.entry.kind == ContextFileType::File {
                stats.files_hashed += 1;
                stats.bytes_hashed += it.entry.size;
            }
            if cacheable && let Some(key) = it.stat {
                cache.insert(it.entry.rel_path.clone(), key, sha);
            }
        }
        Ok(stats)
    }
}

/// What the stat cache holds for a directory without xattrs: its entry has no digest.
const NO_XATTRS: [u8; 32] = [0; 32];

/// Gives `it` the digest `sha` (a file's, or a directory's [`NO_XATTRS`]: none).
fn set_digest(it: &mut Item, sha: [u8; 32]) {
    if it.entry.kind != ContextFileType::File && sha == NO_XATTRS {
        it.sha = None;
        it.entry.sha256 = None;
    } else {
        it.sha = Some(sha);
        it.entry.sha256 = Some(fast_hex(&sha));
    }
}

/// True when `mtime_ns` is older than `read_start` by more than the racy window.
fn not_racy(mtime_ns: i64, read_start: SystemTime) -> bool {
    let Ok(now) = read_start.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let limit = now.saturating_sub(RACY_WINDOW).as_nanos() as i64;
    mtime_ns < limit
}

fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Lowercase hex of a digest; `hex::encode` goes through a char iterator and showed up in
/// profiles of no-op rebuilds (one call per file).
fn fast_hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(64);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 0xf) as usize]);
    }
    String::from_utf8(out).unwrap_or_default()
}
