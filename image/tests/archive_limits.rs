//! `read_archive` (what `kiln load` runs) on hostile archives: too many small JSON
//! entries, too many JSON bytes in total, an oversized `manifest.json`, a manifest blob
//! or config over its cap. Each is refused with a typed error naming what was too big,
//! before anything is stored.

mod common;

use common::DirStore;
use kiln_image::ArchiveError;
use kiln_image::archive::read_archive;
use kiln_image::limits::{
    MAX_ARCHIVE_ENTRIES, MAX_ARCHIVE_JSON_ENTRIES, MAX_ARCHIVE_JSON_TOTAL, MAX_CONFIG_SIZE,
    MAX_JSON_SIZE,
};
use kiln_image::oci::{Descriptor, Index, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, Manifest};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

/// A tar file at `path` with `(name, size, first byte)` entries; the rest of each entry
/// is spaces, streamed so a big test archive never sits in the test's memory.
fn write_tar(path: &Path, entries: impl IntoIterator<Item = (String, u64, u8)>) {
    let mut b = tar::Builder::new(BufWriter::new(File::create(path).unwrap()));
    for (name, size, first) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        let body = io::Cursor::new([first]).chain(io::repeat(b' ')).take(size);
        b.append_data(&mut h, &name, body).unwrap();
    }
    b.into_inner().unwrap();
}

fn load(path: &Path) -> (ArchiveError, DirStore, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let sink = DirStore::new(out.path());
    let err = read_archive(path, &sink).expect_err("the archive must be refused");
    (err, sink, out)
}

fn assert_too_large(err: &ArchiveError, what: &str, limit: u64) {
    match err {
        ArchiveError::TooLarge(e) => {
            assert!(e.what.contains(what), "{err}");
            assert_eq!(e.limit, limit, "{err}");
        }
        other => panic!("expected TooLarge naming {what:?}, got {other:?}: {other}"),
    }
}

#[test]
fn an_archive_of_too_many_small_json_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("many.tar");
    let n = MAX_ARCHIVE_JSON_ENTRIES + 1;
    write_tar(&tar, (0..n).map(|i| (format!("j/{i}.json"), 2, b'{')));
    let (err, sink, _out) = load(&tar);
    assert!(
        matches!(err, ArchiveError::TooManyDocuments { limit } if limit == MAX_ARCHIVE_JSON_ENTRIES),
        "{err:?}"
    );
    assert!(err.to_string().contains("JSON documents"), "{err}");
    assert_eq!(sink.count(), 0, "nothing was stored");
}

#[test]
fn a_gzip_of_too_many_empty_files_is_refused() {
    // Empty entries are one header each: gzip makes a quarter million of them a few MB.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("many.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(&tar).unwrap()),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    for i in 0..=MAX_ARCHIVE_ENTRIES {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("f/{i}"), io::empty())
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
    let (err, sink, _out) = load(&tar);
    assert!(
        matches!(err, ArchiveError::TooManyEntries { limit } if limit == MAX_ARCHIVE_ENTRIES),
        "{err:?}"
    );
    assert_eq!(sink.count(), 0);
}

#[test]
fn json_files_over_the_archive_total_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("big.tar");
    // Each under the per-document cap, together over the total.
    let each = MAX_JSON_SIZE - 1;
    let n = MAX_ARCHIVE_JSON_TOTAL / each + 1;
    write_tar(&tar, (0..n).map(|i| (format!("j/{i}.json"), each, b'[')));
    let (err, sink, _out) = load(&tar);
    assert_too_large(&err, "the archive's JSON", MAX_ARCHIVE_JSON_TOTAL);
    assert_eq!(sink.count(), 0);
}

#[test]
fn a_huge_manifest_json_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("huge.tar");
    write_tar(
        &tar,
        [("manifest.json".to_string(), MAX_JSON_SIZE + 1, b'[')],
    );
    let (err, _sink, _out) = load(&tar);
    assert_too_large(&err, "manifest.json", MAX_JSON_SIZE);
    assert!(err.to_string().contains("too large"), "{err}");
}

/// An OCI layout directory whose index names `manifest` (written as a blob).
fn layout_with(dir: &Path, manifest: &[u8], declared_size: u64) -> PathBuf {
    let root = dir.join("layout");
    let blobs = root.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let digest = kiln_image::sha256_digest(manifest);
    fs::write(blobs.join(digest.trim_start_matches("sha256:")), manifest).unwrap();
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = Index::new(vec![Descriptor::new(
        MEDIA_TYPE_MANIFEST,
        &digest,
        declared_size,
    )]);
    fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    root
}

#[test]
fn a_manifest_blob_over_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = b"{".to_vec();
    manifest.resize(MAX_JSON_SIZE as usize + 1, b' ');
    let root = layout_with(dir.path(), &manifest, manifest.len() as u64);
    let (err, sink, _out) = load(&root);
    assert_too_large(&err, "manifest sha256:", MAX_JSON_SIZE);
    assert_eq!(sink.count(), 0);
}

#[test]
fn a_config_over_the_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = Descriptor::new(
        MEDIA_TYPE_CONFIG,
        &format!("sha256:{}", "c".repeat(64)),
        MAX_CONFIG_SIZE + 1,
    );
    let manifest = serde_json::to_vec(&Manifest::new(config, vec![])).unwrap();
    let root = layout_with(dir.path(), &manifest, manifest.len() as u64);
    let (err, sink, _out) = load(&root);
    assert_too_large(&err, "config sha256:cccc", MAX_CONFIG_SIZE);
    assert_eq!(sink.count(), 0);
}
