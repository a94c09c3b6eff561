//! What a power cut may lose, and how the store finds out after one.
//!
//! A new layer's parts (blob, index entry, snapshot) must not appear under their final
//! names with data a power cut could still lose: a complete-looking snapshot of empty
//! files would be used as it is. [`Store::commit_new_layer`] used to make that true with a
//! syncfs per layer. A syncfs waits for every dirty page of the filesystem, whoever wrote
//! it: beside a compiler, or right after another builder, a build of 13 small RUN layers
//! spent over 100 ms there.
//!
//! Instead the store keeps a marker, `unsynced`, naming the boot (the kernel's `boot_id`)
//! during which layers may have been published before their data was synced, and since
//! when. It is written and fsynced once per boot, before the first such layer; each layer
//! is then published unsynced, and the build's one syncfs at its end
//! ([`Store::sync_records`]) makes them durable, noting in `synced` up to when.
//!
//! A power cut can only be followed by another boot. The first store open in a boot that
//! finds the marker of another one ([`Store::recover_unsynced`]) removes the snapshots
//! published after the last noted sync (they are unpacked again from their blobs when
//! needed), checks the blobs published then against their digests, removing any that do
//! not match, and removes the records written then (cache records, blob index entries,
//! stat caches, side records such as chunk tables): on a disk without a journal a file a
//! power cut caught may read another file's old blocks, and a lost record is only a miss.
//! Records written before that name a removed blob read as a miss already. A clean
//! reboot after synced builds finds nothing to do.
//!
//! Without a boot id (no procfs) every layer is synced before it is published, as before.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use crate::error::{Result, StoreError};
use crate::fsutil::{io_err, remove_any};
use crate::layout::SideRecordKind;
use crate::store::Store;

/// How far before the noted times recovery looks: file times come from a coarse clock,
/// and a sync's start is taken just before it.
const SLACK: Duration = Duration::from_secs(2);

/// Per store handle (shared by its clones): whether this process may publish layers
/// unsynced, decided once.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    deferring: OnceLock<bool>,
}

/// A boot and an instant in it (nanoseconds since the Unix epoch), as `unsynced` and
/// `synced` hold them: `boot <id>\nat <ns>\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    boot: String,
    at: u128,
}

impl Stamp {
    fn now(boot: String) -> Stamp {
        Stamp {
            boot,
            at: nanos(SystemTime::now()),
        }
    }

    fn encode(&self) -> String {
        format!("boot {}\nat {}\n", self.boot, self.at)
    }

    /// A missing, unreadable or garbled file reads as none.
    fn read(path: &Path) -> Option<Stamp> {
        let mut text = String::new();
        fs::File::open(path)
            .ok()?
            .take(4096)
            .read_to_string(&mut text)
            .ok()?;
        let mut lines = text.lines();
        let boot = lines.next()?.strip_prefix("boot ")?.to_string();
        let at = lines.next()?.strip_prefix("at ")?.parse().ok()?;
        (!boot.is_empty()).then_some(Stamp { boot, at })
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// This boot's id, if the kernel tells it.
fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && id.len() <= 64).then(|| id.to_string())
}

/// The lock held while the marker is read and written (a plain flock on its own file).
struct MarkerLock {
    _file: fs::File,
}

impl Store {
    fn lock_marker(&self) -> Result<MarkerLock> {
        let path = self.unsynced_lock_file();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", path.clone()))?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(MarkerLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(StoreError::Lock {
                        path,
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Whether a new layer may be published before its data is synced: true once the
    /// marker for this boot is on the disk (written here the first time in a boot).
    pub(crate) fn defer_sync(&self) -> bool {
        *self
            .durability
            .deferring
            .get_or_init(|| self.mark_unsynced().unwrap_or(false))
    }

    fn mark_unsynced(&self) -> Result<bool> {
        let Some(boot) = boot_id() else {
            return Ok(false);
        };
        let _lock = self.lock_marker()?;
        match Stamp::read(&self.unsynced_file()) {
            Some(marker) if marker.boot == boot => Ok(true),
            // Another boot's marker is recovery's to clear (at open); until then, sync.
            Some(_) => Ok(false),
            None => {
                // Durable before any layer relies on it: atomic::write fsyncs the file
                // and its directory.
                kiln_base::atomic::write(
                    &self.unsynced_file(),
                    Stamp::now(boot).encode().as_bytes(),
                )
                .map_err(io_err("write", self.unsynced_file()))?;
                Ok(true)
            }
        }
    }

    /// Notes that everything written before `started` is on the disk (a syncfs that began
    /// then has returned). A lost note only makes recovery look at more.
    pub(crate) fn note_synced(&self, started: SystemTime) {
        if self.durability.deferring.get() != Some(&true) {
            return;
        }
        let Some(boot) = boot_id() else { return };
        let stamp = Stamp {
            boot,
            at: nanos(started),
        };
        let _ = kiln_base::atomic::write_hint(&self.synced_file(), stamp.encode().as_bytes());
    }

    /// At open: if the marker names another boot, removes what a power cut in it may have
    /// left half written (see the module docs). Waits for the store's exclusive lock.
    pub(crate) fn recover_unsynced(&self) -> Result<()> {
        let marker_path = self.unsynced_file();
        let Some(marker) = Stamp::read(&marker_path) else {
            return Ok(());
        };
        let boot = boot_id();
        if boot.as_deref() == Some(marker.boot.as_str()) || boot.is_none() {
            return Ok(());
        }
        let _store = self.lock_exclusive()?;
        let _lock = self.lock_marker()?;
        // Someone recovered while we waited.
        let Some(marker) = Stamp::read(&marker_path) else {
            return Ok(());
        };
        let mut from = marker.at;
        if let Some(synced) = Stamp::read(&self.synced_file())
            && synced.boot == marker.boot
        {
            from = from.max(synced.at);
        }
        let from = from.saturating_sub(SLACK.as_nanos());
        self.drop_unsynced_snapshots(from)?;
        self.drop_corrupt_blobs(from)?;
        self.drop_unsynced_records(from)?;
        for path in [self.synced_file(), marker_path] {
            remove_any(&path).map_err(io_err("remove", path.clone()))?;
        }
        Ok(())
    }

    fn drop_unsynced_snapshots(&self, from: u128) -> Result<()> {
        for_each_changed(&self.snapshots_dir(), from, |path, _| remove_any(path))
    }

    fn drop_corrupt_blobs(&self, from: u128) -> Result<()> {
        for_each_changed(&self.blobs_dir(), from, |path, meta| {
            let intact = meta.is_file()
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|hex| hashes_to(path, hex).unwrap_or(false));
            if intact { Ok(()) } else { remove_any(path) }
        })
    }

    /// Removes the records written since `from`: cache records, blob index entries, stat
    /// caches and side records (chunk tables, explanations, registry sources). They are
    /// renamed into place unsynced and read as a miss when gone; but on a filesystem
    /// without a journal (ext4 without one, here) a file a power cut caught between its
    /// inode and its data may read another file's old blocks, a whole other record.
    fn drop_unsynced_records(&self, from: u128) -> Result<()> {
        let side = SideRecordKind::ALL.map(|kind| self.side_records_dir(kind));
        let dirs = [self.cache_dir(), self.layers_dir(), self.stat_cache_dir()];
        for dir in dirs.into_iter().chain(side) {
            for_each_changed(&dir, from, |path, meta| {
                if meta.is_file() {
                    remove_any(path)
                } else {
                    Ok(())
                }
            })?;
        }
        Ok(())
    }
}

/// Calls `act` with each entry of `dir` (not following symlinks) whose inode changed at
/// or after `from`; a missing directory has none.
fn for_each_changed(
    dir: &Path,
    from: u128,
    mut act: impl FnMut(&Path, &fs::Metadata) -> io::Result<()>,
) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read directory", dir.to_path_buf())(e)),
    };
    for entry in entries {
        let path = entry
            .map_err(io_err("read directory", dir.to_path_buf()))?
            .path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if changed_at(&meta) >= from {
            act(&path, &meta).map_err(io_err("remove", path.clone()))?;
        }
    }
    Ok(())
}

/// When `meta`'s inode last changed (a rename into place changes it), in nanoseconds.
fn changed_at(meta: &fs::Metadata) -> u128 {
    let secs = u128::try_from(meta.ctime()).unwrap_or(0);
    let ns = u128::try_from(meta.ctime_nsec()).unwrap_or(0);
    secs * 1_000_000_000 + ns
}

/// Whether the file at `path` hashes to the sha256 `hex`.
fn hashes_to(path: &Path, hex: &str) -> io::Result<bool> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(kiln_base::digest::Digest::from_hasher(h).hex() == hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_stamp(path: &Path, boot: &str, at: u128) {
        let stamp = Stamp {
            boot: boot.to_string(),
            at,
        };
        fs::write(path, stamp.encode()).unwrap();
    }

    /// A snapshot with one file, and a blob named by `named_for`'s digest holding `bytes`.
    fn publish(store: &Store, snapshot: &str, named_for: &[u8], bytes: &[u8]) -> String {
        let dir = store.snapshots_dir().join(snapshot);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), b"x").unwrap();
        let digest = crate::digest::sha256_digest(named_for);
        fs::write(store.blob_path(&digest).unwrap(), bytes).unwrap();
        digest
    }

    #[test]
    fn the_first_deferred_layer_of_a_boot_leaves_a_marker_for_it() {
        let Some(boot) = boot_id() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(Stamp::read(&store.unsynced_file()), None);
        assert!(store.defer_sync());
        let marker = Stamp::read(&store.unsynced_file()).unwrap();
        assert_eq!(marker.boot, boot);
        // Another handle in the same boot keeps it as it is; reopening recovers nothing.
        let again = Store::open(tmp.path()).unwrap();
        assert!(again.defer_sync());
        assert_eq!(Stamp::read(&again.unsynced_file()), Some(marker));
        // A sync is noted once deferring.
        let started = SystemTime::now();
        again.note_synced(started);
        assert_eq!(
            Stamp::read(&again.synced_file()).map(|s| s.at),
            Some(nanos(started))
        );
    }

    #[test]
    fn an_image_blob_put_unsynced_is_whole_at_once_and_left_to_the_builds_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let info = store.put_blob_bytes_unsynced(b"{\"config\":1}").unwrap();
        assert_eq!(info.digest, crate::digest::sha256_digest(b"{\"config\":1}"));
        assert_eq!(
            fs::read(store.blob_path(&info.digest).unwrap()).unwrap(),
            b"{\"config\":1}"
        );
        // Deferred where the kernel tells the boot: the build's sync_records has work.
        let deferred = boot_id().is_some();
        assert_eq!(
            store.unsynced.load(std::sync::atomic::Ordering::SeqCst),
            deferred
        );
        assert_eq!(Stamp::read(&store.unsynced_file()).is_some(), deferred);
        store.sync_records();
        assert!(!store.unsynced.load(std::sync::atomic::Ordering::SeqCst));
        // Stored again: nothing new to write or sync.
        let again = store.put_blob_bytes_unsynced(b"{\"config\":1}").unwrap();
        assert_eq!(again, info);
        assert!(!store.unsynced.load(std::sync::atomic::Ordering::SeqCst));
        let tmp_left = fs::read_dir(store.scratch_dir().unwrap()).unwrap().count();
        assert_eq!(tmp_left, 0, "no temp file is left behind");
    }

    #[test]
    fn after_another_boot_what_was_published_since_the_last_sync_is_checked() {
        if boot_id().is_none() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        // Published and synced before the cut.
        let old_blob = publish(&store, &"a".repeat(64), b"old", b"old");
        let old_record = store.cache_dir().join(format!("{}.json", "f".repeat(64)));
        fs::write(&old_record, b"{}").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let synced_upto = nanos(SystemTime::now()) + SLACK.as_nanos();
        std::thread::sleep(Duration::from_millis(50));
        // Published after the last sync: a whole blob, a blob whose data the cut lost, a
        // snapshot that may hold empty files.
        let whole = publish(&store, &"b".repeat(64), b"new", b"new");
        // Records written after the sync (one from before it is made above).
        let record = store.cache_dir().join(format!("{}.json", "d".repeat(64)));
        fs::write(&record, b"{}").unwrap();
        let table = store.side_records_dir(SideRecordKind::GzipChunks);
        fs::create_dir_all(&table).unwrap();
        fs::write(table.join("e".repeat(64)), b"table").unwrap();
        let lost = crate::digest::sha256_digest(b"lost");
        fs::write(store.blob_path(&lost).unwrap(), b"").unwrap();
        write_stamp(&store.unsynced_file(), "another-boot", 1);
        write_stamp(&store.synced_file(), "another-boot", synced_upto);

        let store = Store::open(tmp.path()).unwrap();
        assert!(store.has_snapshot(&"a".repeat(64)));
        assert!(store.has_blob(&old_blob));
        assert!(!store.has_snapshot(&"b".repeat(64)));
        assert!(store.has_blob(&whole));
        assert!(!store.has_blob(&lost));
        assert!(old_record.exists(), "a record synced before the cut stays");
        assert!(
            !record.exists(),
            "a record written after the last sync goes"
        );
        assert!(!table.join("e".repeat(64)).exists());
        assert_eq!(Stamp::read(&store.unsynced_file()), None);
        assert_eq!(Stamp::read(&store.synced_file()), None);
    }

    #[test]
    fn a_marker_of_this_boot_or_a_sync_note_of_another_changes_nothing_at_open() {
        let Some(boot) = boot_id() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let blob = publish(&store, &"c".repeat(64), b"other", b"x");
        write_stamp(&store.unsynced_file(), &boot, 1);
        let store = Store::open(tmp.path()).unwrap();
        assert!(store.has_snapshot(&"c".repeat(64)));
        assert!(
            store.has_blob(&blob),
            "a wrong blob is not looked at within its boot"
        );
        assert!(Stamp::read(&store.unsynced_file()).is_some());

        // Another boot's marker with a note of a sync from yet another boot: the note
        // does not count, everything since the marker is checked.
        write_stamp(&store.unsynced_file(), "another-boot", 1);
        write_stamp(&store.synced_file(), "a-third-boot", u128::MAX / 2);
        let store = Store::open(tmp.path()).unwrap();
        assert!(!store.has_snapshot(&"c".repeat(64)));
        assert!(!store.has_blob(&blob));
    }
}
