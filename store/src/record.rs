//! The cache index: cache key (sha256 hex computed by the solver) → [`CacheRecord`].
//!
//! One canonical-JSON file per key, `cache/<key>.json`, written atomically, so concurrent
//! builds never corrupt each other's records (the last writer of a key wins, and both
//! describe the same result).

use std::fs;
use std::io;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::digest::{canonical_json, is_sha256_hex};
use crate::error::{Result, StoreError};
use crate::fsutil::{io_err, read_if_exists};
use crate::store::Store;

/// The layer a cached step produced. Fields are declared in sorted order so the derived
/// serialization is already canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:<hex>` of the uncompressed tar; its hex names the snapshot.
    pub diff_id: String,
    /// `sha256:<hex>` of the stored (compressed) blob.
    pub digest: String,
    pub media_type: String,
    /// Size of the stored blob in bytes.
    pub size: u64,
}

/// What a cache key resolved to. `layer` is `None` for steps that produce no layer
/// (metadata-only steps that the solver still wants to remember).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Unix seconds when the record was written; prune with `keep_storage` drops the
    /// oldest first.
    pub created: i64,
    pub layer: Option<LayerRef>,
}

fn validate_key(key: &str) -> Result<()> {
    if is_sha256_hex(key) {
        Ok(())
    } else {
        Err(StoreError::InvalidCacheKey {
            key: key.to_string(),
        })
    }
}

impl Store {
    /// Looks up `key`. A record whose layer blob is missing (pruned, or never finished) is
    /// a miss, as is an unreadable record (a miss only costs a rebuild).
    pub fn get_record(&self, key: &str) -> Result<Option<CacheRecord>> {
        let _phase = kiln_base::phase::start("read cache record");
        validate_key(key)?;
        let path = self.cache_dir().join(format!("{key}.json"));
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            return Ok(None);
        };
        if let Some(layer) = &record.layer
            && !self.has_blob(&layer.digest)
        {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Stores `record` under `key`, replacing any previous one.
    pub fn put_record(&self, key: &str, record: &CacheRecord) -> Result<()> {
        validate_key(key)?;
        let bytes = canonical_json(record).map_err(|source| StoreError::Encode {
            what: "cache record",
            source,
        })?;
        // Renamed into place without fsync: a record is whole or absent to a reader and
        // after a kill. A record a power cut loses or empties, or one naming a part whose
        // rename or data the cut lost (`durability` drops such parts at the next boot),
        // reads as a miss. [`Store::sync_records`] flushes a build's records and layers at
        // its end, in one call.
        let path = self.cache_dir().join(format!("{key}.json"));
        // The boot's marker first, so that a power cut before the build's sync has the
        // next boot's first open drop this record (`durability`) even when no layer was
        // published unsynced.
        self.defer_sync();
        self.unsynced.store(true, Ordering::SeqCst);
        kiln_base::atomic::write_hint(&path, &bytes).map_err(|source| StoreError::Io {
            op: "atomically write",
            path,
            source,
        })
    }

    /// Makes the records and layers written so far durable (one syncfs of the store's
    /// filesystem), and notes up to when for `durability`.
    /// Best effort: a record that does not reach the disk only costs a rerun of its step.
    ///
    /// A build that wrote no record and no side record (a no-op rebuild) syncs nothing: a
    /// syncfs waits for every dirty page of the filesystem, whoever wrote it, and a no-op
    /// rebuild right after a big build (or beside a compiler) waited tens of milliseconds
    /// for other writers' data.
    pub fn sync_records(&self) {
        if self.unsynced.swap(false, Ordering::SeqCst) {
            let started = std::time::SystemTime::now();
            if crate::snapshot::sync_filesystem(&self.cache_dir()).is_ok() {
                self.note_synced(started);
            }
        }
    }

    /// Removes the record for `key`; true if there was one.
    pub fn remove_record(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let path = self.cache_dir().join(format!("{key}.json"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }

    /// All readable records, sorted by key (unreadable ones are skipped).
    pub fn list_records(&self) -> Result<Vec<(String, CacheRecord)>> {
        let dir = self.cache_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", dir.clone()))? {
            let entry = entry.map_err(io_err("read directory", dir.clone()))?;
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_sha256_hex(key) {
                continue;
            }
            if let Ok(bytes) = fs::read(entry.path())
                && let Ok(rec) = serde_json::from_slice::<CacheRecord>(&bytes)
            {
                out.push((key.to_string(), rec));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::SideRecordKind;

    #[test]
    fn only_a_build_that_wrote_records_has_something_to_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let unsynced = || store.unsynced.load(Ordering::SeqCst);
        assert!(!unsynced());
        // Reads leave nothing to sync.
        assert_eq!(store.get_record(&"a".repeat(64)).unwrap(), None);
        assert!(!unsynced());
        let record = CacheRecord {
            created: 1,
            layer: None,
        };
        // A clone (as a build session holds) shares what is left to sync.
        store.clone().put_record(&"a".repeat(64), &record).unwrap();
        assert!(unsynced());
        store.sync_records();
        assert!(!unsynced());
        store
            .side_records(SideRecordKind::Explain)
            .write("k", b"x")
            .unwrap();
        assert!(unsynced());
        store.sync_records();
        assert!(!unsynced());
        assert_eq!(store.get_record(&"a".repeat(64)).unwrap(), Some(record));
    }
}
