//! Garbage collection: drops blobs, snapshots and cache records nothing live points at.
//!
//! Live set:
//! - every ref's (and untagged build result's) manifest blob, and what that manifest
//!   names (config and layers; an OCI index's manifests, recursively); the config's
//!   `rootfs.diff_ids` keep snapshots;
//! - every cache record's layer blob and snapshot (records are dropped first with
//!   `all`, or oldest first with `keep_storage`).
//!
//! Snapshots are named by the diff_id hex of the layer they hold, so a snapshot is live
//! when some live layer has that diff_id.
//!
//! Prune holds the store lock exclusively; builds hold it shared, so nothing a build is
//! using disappears under it.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, SystemTime};

use crate::digest::{is_sha256_hex, parse_digest};
use crate::error::Result;
use crate::fsutil::{io_err, remove_any, tree_size};
use crate::layout::SideRecordKind;
use crate::record::CacheRecord;
use crate::scratch::STALE_TMP_AGE;
use crate::store::Store;
use kiln_base::digest::Digest;

/// How much to prune.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Drop every cache record first (keeps only what refs use).
    pub all: bool,
    /// Drop the oldest cache records until blobs + snapshots fit in this many bytes.
    pub keep_storage: Option<u64>,
}

/// What prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
    pub records_removed: u64,
    /// `RUN --mount=type=cache` directories (only with `all`).
    pub cache_mounts_removed: u64,
    /// Git sources' cache repositories (only with `all`).
    pub git_repos_removed: u64,
    /// Scratch left in `tmp/` by dead processes (a build killed mid-RUN).
    pub scratch_removed: u64,
    pub bytes_freed: u64,
}

/// Blobs and snapshots (diff_id hex) reachable from some root.
#[derive(Default)]
struct Live {
    blobs: BTreeSet<String>,
    snapshots: BTreeSet<String>,
}

impl Live {
    fn add_record(&mut self, rec: &CacheRecord) {
        if let Some(layer) = &rec.layer {
            self.blobs.insert(layer.digest.clone());
            if let Ok(hex) = parse_digest(&layer.diff_id) {
                self.snapshots.insert(hex.to_string());
            }
        }
    }
}

impl Store {
    /// Marks everything reachable from `digest` (a manifest, index or config blob).
    /// Missing or unparsable blobs end the walk at that point.
    fn mark_manifest(&self, digest: &str, live: &mut Live, depth: u32) {
        if depth > 8 || parse_digest(digest).is_err() || !live.blobs.insert(digest.to_string()) {
            return;
        }
        let Ok(bytes) = self.read_blob(digest) else {
            return;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        if let Some(manifests) = json.get("manifests").and_then(|m| m.as_array()) {
            for m in manifests {
                if let Some(d) = m.get("digest").and_then(|d| d.as_str()) {
                    self.mark_manifest(d, live, depth + 1);
                }
            }
        }
        if let Some(config) = json
            .get("config")
            .and_then(|c| c.get("digest"))
            .and_then(|d| d.as_str())
        {
            live.blobs.insert(config.to_string());
            self.mark_config(config, live);
        }
        if let Some(layers) = json.get("layers").and_then(|l| l.as_array()) {
            for l in layers {
                if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                    live.blobs.insert(d.to_string());
                }
            }
        }
    }

    fn mark_config(&self, digest: &str, live: &mut Live) {
        let Ok(bytes) = self.read_blob(digest) else {
            return;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        if let Some(ids) = json
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(|d| d.as_array())
        {
            for id in ids.iter().filter_map(|d| d.as_str()) {
                if let Ok(hex) = parse_digest(id) {
                    live.snapshots.insert(hex.to_string());
                }
            }
        }
    }

    fn live_from_refs(&self) -> Result<Live> {
        let mut live = Live::default();
        let refs = self.list_refs()?.into_iter().map(|(_, r)| r);
        for r in refs.chain(self.list_untagged()?) {
            if let Some(index) = &r.index {
                self.mark_manifest(index, &mut live, 0);
            }
            self.mark_manifest(&r.manifest, &mut live, 0);
            live.blobs.insert(r.config.clone());
            self.mark_config(&r.config, &mut live);
        }
        Ok(live)
    }

    fn snapshot_size(&self, id: &str) -> u64 {
        self.snapshot_path(id).map(|p| tree_size(&p)).unwrap_or(0)
    }

    /// Removes unreferenced blobs, snapshots and (per `opts`) cache records, the scratch
    /// of dead processes (see [`Store::scratch_dir`]) and stale temp files. Blocks until no
    /// build holds the store lock.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        let _lock = self.lock_exclusive()?;
        let mut report = PruneReport::default();
        let mut records = self.list_records()?;
        let mut dropped: Vec<String> = Vec::new();

        if opts.all {
            dropped.extend(records.drain(..).map(|(k, _)| k));
            // Like `docker image prune -a`: unnamed images go too.
            self.forget_untagged()?;
        }

        let mut live = self.live_from_refs()?;

        if let Some(limit) = opts.keep_storage {
            // Keep the newest records while blobs + snapshots fit; dropping the oldest
            // first until the total fits gives the same kept set because the total only
            // grows with each kept record.
            let mut total: u64 = live
                .blobs
                .iter()
                .filter_map(|d| self.blob_size(d).ok())
                .sum::<u64>()
                + live
                    .snapshots
                    .iter()
                    .map(|s| self.snapshot_size(s))
                    .sum::<u64>();
            records.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(a.0.cmp(&b.0)));
            let mut kept = Vec::new();
            let mut over = total > limit;
            for (key, rec) in records.drain(..) {
                if over {
                    dropped.push(key);
                    continue;
                }
                let mut extra = 0;
                if let Some(layer) = &rec.layer {
                    if !live.blobs.contains(&layer.digest) {
                        extra += self.blob_size(&layer.digest).unwrap_or(0);
                    }
                    if let Ok(hex) = parse_digest(&layer.diff_id)
                        && !live.snapshots.contains(hex)
                    {
                        extra += self.snapshot_size(hex);
                    }
                }
                if total + extra > limit {
                    over = true;
                    dropped.push(key);
                    continue;
                }
                total += extra;
                live.add_record(&rec);
                kept.push((key, rec));
            }
            records = kept;
        }

        for (_, rec) in &records {
            live.add_record(rec);
        }
        for key in &dropped {
            if self.remove_record(key)? {
                report.records_removed += 1;
            }
        }

        // Blobs.
        let blobs_dir = self.blobs_dir();
        let mut stored: Vec<Digest> = fs::read_dir(&blobs_dir)
            .map_err(io_err("read directory", blobs_dir.clone()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
            })
            .collect();
        stored.sort();
        for digest in stored {
            if live.blobs.contains(digest.as_str()) {
                continue;
            }
            let path = blobs_dir.join(digest.hex());
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove", path.clone()))?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }

        // Snapshots.
        for id in self.list_snapshots()? {
            if live.snapshots.contains(&id) {
                continue;
            }
            let path = self.snapshot_path(&id)?;
            let size = tree_size(&path);
            remove_any(&path).map_err(io_err("remove", path.clone()))?;
            report.snapshots_removed += 1;
            report.bytes_freed += size;
        }

        self.prune_side_dirs(opts.all, &mut report)?;
        let reclaimed = self.reclaim_scratch()?;
        report.scratch_removed += reclaimed.entries;
        report.bytes_freed += reclaimed.bytes;
        self.clean_tmp_files(STALE_TMP_AGE)?;
        Ok(report)
    }

    /// The store's side directories ([`crate::layout`]), each by its rule:
    /// - `layers/<diff_id>.<kind>.json` (the blob index): dropped with the blob it names
    ///   (removed above or by an earlier prune);
    /// - `registry/sources/<hex>` ([`SideRecordKind::RegistrySources`]) and `chunks/<hex>`
    ///   ([`SideRecordKind::GzipChunks`]): dropped with the blob;
    /// - `explain/<place>` + `.key` ([`SideRecordKind::Explain`]): dropped with the cache
    ///   record of that key;
    /// - `cachemounts/<id>` + `.lock` (`RUN --mount=type=cache`): dropped with `all`, like
    ///   BuildKit's `prune --all` (no build runs: prune holds the store lock exclusively);
    /// - `git/<hex>` + `.lock` (git sources' fetch cache): dropped with `all` too.
    fn prune_side_dirs(&self, all: bool, report: &mut PruneReport) -> Result<()> {
        let read = |dir: &std::path::Path| -> Vec<fs::DirEntry> {
            fs::read_dir(dir)
                .map(|rd| rd.flatten().collect())
                .unwrap_or_default()
        };
        for entry in read(&self.layers_dir()) {
            let live = fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::record::LayerRef>(&b).ok())
                .is_some_and(|l| self.has_blob(&l.digest));
            if !live {
                // A stale entry is only a miss: failing to remove it fails nothing.
                let _ = fs::remove_file(entry.path());
            }
        }
        for kind in [SideRecordKind::RegistrySources, SideRecordKind::GzipChunks] {
            for entry in read(&self.side_records_dir(kind)) {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if Digest::from_hex(&name).is_ok_and(|d| !self.has_blob(d.as_str())) {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(io_err("remove", p.clone()))?;
                }
            }
        }
        let explain = self.side_records_dir(SideRecordKind::Explain);
        for entry in read(&explain) {
            let p = entry.path();
            if p.extension().is_none_or(|e| e != "key") {
                continue;
            }
            let key = fs::read_to_string(&p).unwrap_or_default();
            let live = is_sha256_hex(key.trim()) && self.get_record(key.trim())?.is_some();
            if !live {
                let inputs = p.with_extension("");
                for f in [&inputs, &p] {
                    match fs::remove_file(f) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("remove", f.to_path_buf())(e)),
                    }
                }
            }
        }
        if all {
            let mounts = self.cache_mounts_dir();
            for entry in read(&mounts) {
                let p = entry.path();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir {
                    report.bytes_freed += tree_size(&p);
                    report.cache_mounts_removed += 1;
                }
                remove_any(&p).map_err(io_err("remove", p.clone()))?;
            }
            for entry in read(&self.git_repos_dir()) {
                let p = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    report.bytes_freed += tree_size(&p);
                    report.git_repos_removed += 1;
                }
                remove_any(&p).map_err(io_err("remove", p.clone()))?;
            }
        }
        Ok(())
    }

    /// Removes stray `.*.tmp` files not modified for `age`, which [`crate::atomic_write`]
    /// leaves beside small files (refs, records, stat caches) when a process dies between
    /// write and rename. (Their writers hold no lock that would say they are dead.)
    pub(crate) fn clean_tmp_files(&self, age: Duration) -> Result<()> {
        let now = SystemTime::now();
        let is_old = |path: &std::path::Path| {
            path.symlink_metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|d| d >= age)
        };
        for dir in [
            self.root().to_path_buf(),
            self.cache_dir(),
            self.stat_cache_dir(),
        ] {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for entry in rd.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let p = entry.path();
                if name.starts_with('.') && name.ends_with(".tmp") && is_old(&p) {
                    fs::remove_file(&p).map_err(io_err("remove", p.clone()))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cachemount::{CacheMountDir, CacheSharing};
    use crate::layout::TOP_LEVEL;
    use crate::record::LayerRef;
    use std::path::Path;

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every kind of entry the store makes, all dead, beside entries the store did not
    /// make: `prune --all` removes exactly the first and leaves the second as they were.
    #[test]
    fn prune_removes_what_the_store_made_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let root = store.root().to_path_buf();

        // Made by the store, referenced by nothing.
        let blob = store.put_blob_bytes(b"orphan").unwrap().digest;
        let staging = store.snapshot_staging().unwrap();
        fs::write(staging.path().join("f"), b"x").unwrap();
        let snapshot_id = "a".repeat(64);
        store.commit_snapshot(staging, &snapshot_id).unwrap();
        let gone = format!("sha256:{}", "b".repeat(64));
        let layer = LayerRef {
            diff_id: format!("sha256:{snapshot_id}"),
            digest: gone.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            size: 1,
        };
        store.put_layer_blob(&layer).unwrap();
        let key = "c".repeat(64);
        let record = CacheRecord {
            created: 1,
            layer: Some(LayerRef {
                digest: blob.clone(),
                ..layer.clone()
            }),
        };
        store.put_record(&key, &record).unwrap();
        let sources = store.side_records(SideRecordKind::RegistrySources);
        sources
            .write(&"b".repeat(64), b"docker.io/library/x\n")
            .unwrap();
        let chunks = store.side_records(SideRecordKind::GzipChunks);
        chunks.write(&"b".repeat(64), b"a table").unwrap();
        let explain = store.side_records(SideRecordKind::Explain);
        explain.write("place", b"{}").unwrap();
        explain.write("place.key", key.as_bytes()).unwrap();
        let CacheMountDir::New(new) = store.cache_mount("id", CacheSharing::Locked).unwrap() else {
            panic!("a new cache mount")
        };
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        drop(new.publish(0o755, uid, gid).unwrap());
        let repo = store.git_repo("https://example.invalid/r.git").unwrap();
        fs::create_dir_all(repo.path().join("objects")).unwrap();
        drop(repo);

        // Not made by the store: beside its directories and inside them.
        let foreign = [
            root.join("notes"),
            root.join("mine/file"),
            root.join("registry/other/file"),
            root.join("snapshots/NOT-A-SNAPSHOT/file"),
            root.join("blobs/sha256/not-a-digest"),
            root.join("blobs/md5/x"),
        ];
        for f in &foreign {
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, b"keep").unwrap();
        }

        let report = store
            .prune(PruneOptions {
                all: true,
                keep_storage: None,
            })
            .unwrap();
        assert_eq!(report.blobs_removed, 1);
        assert_eq!(report.snapshots_removed, 1);
        assert_eq!(report.records_removed, 1);
        assert_eq!(report.cache_mounts_removed, 1);
        assert_eq!(report.git_repos_removed, 1);

        for f in &foreign {
            assert_eq!(fs::read(f).unwrap(), b"keep", "{}", f.display());
        }
        assert!(!store.has_blob(&blob));
        assert!(!store.has_snapshot(&snapshot_id));
        assert!(store.get_record(&key).unwrap().is_none());
        assert!(names(&store.layers_dir()).is_empty());
        assert!(names(&store.git_repos_dir()).is_empty());
        assert!(names(&store.side_records_dir(SideRecordKind::RegistrySources)).is_empty());
        assert!(names(&store.side_records_dir(SideRecordKind::GzipChunks)).is_empty());
        assert!(names(&store.side_records_dir(SideRecordKind::Explain)).is_empty());
        assert!(names(&store.cache_mounts_dir()).is_empty());
        // Besides the foreign names, the root holds only names the layout lists.
        let unknown: Vec<String> = names(&root)
            .into_iter()
            .filter(|n| !TOP_LEVEL.contains(&n.as_str()))
            .collect();
        assert_eq!(unknown, ["mine", "notes"]);
    }
}
