//! Side records: small files other crates keep in the store by name (`--explain-cache`
//! inputs, where a blob came from), each kind in a directory the store names
//! ([`SideRecordKind`]) and prunes by that kind's rule.
//!
//! Records are hints: a missing or unreadable one reads as absent. Writes are atomic, so a
//! reader sees the old record or the new one; they are not fsynced (a record lost or
//! emptied by a power cut reads as absent), which spares a RUN step four disk flushes; a
//! build's are flushed at its end with its cache records ([`Store::sync_records`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Result, StoreError};
use crate::fsutil::{ensure_dir, read_if_exists};
use crate::layout::SideRecordKind;
use crate::store::Store;

/// One kind of side record, handed out by [`Store::side_records`].
#[derive(Debug, Clone)]
pub struct SideRecords {
    dir: PathBuf,
    /// The store's: a write leaves it for [`Store::sync_records`].
    unsynced: Arc<AtomicBool>,
}

impl Store {
    /// The side records of `kind`.
    pub fn side_records(&self, kind: SideRecordKind) -> SideRecords {
        SideRecords {
            dir: self.side_records_dir(kind),
            unsynced: self.unsynced.clone(),
        }
    }
}

/// A record name is one plain file name: no separator, not `.`/`..`, and not starting
/// with `.` (the temp files of atomic writes do).
fn path_of(records: &SideRecords, name: &str) -> Result<PathBuf> {
    let ok =
        !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0');
    if ok {
        Ok(records.dir.join(name))
    } else {
        Err(StoreError::InvalidRecordName {
            name: name.to_string(),
        })
    }
}

impl SideRecords {
    /// The record `name`, or `None` when it is missing, unreadable or the name is invalid.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        read_if_exists(&path_of(self, name).ok()?).ok().flatten()
    }

    /// Replaces the record `name` with `bytes` atomically, creating the directory first.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = path_of(self, name)?;
        ensure_dir(&self.dir)?;
        self.unsynced.store(true, Ordering::SeqCst);
        kiln_base::atomic::write_hint(&path, bytes).map_err(|source| StoreError::Io {
            op: "atomically write",
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_name_is_one_plain_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let records = store.side_records(SideRecordKind::Explain);
        assert_eq!(records.read("a"), None);
        records.write("a", b"1").unwrap();
        records.write("a.key", b"2").unwrap();
        assert_eq!(records.read("a").as_deref(), Some(&b"1"[..]));
        assert_eq!(records.read("a.key").as_deref(), Some(&b"2"[..]));
        for bad in ["", ".", "..", "../refs", "a/b", ".x.tmp"] {
            assert!(records.write(bad, b"x").is_err(), "{bad:?}");
            assert_eq!(records.read(bad), None, "{bad:?}");
        }
    }
}
