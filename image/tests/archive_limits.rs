//! `read_archive` (what `kiln load` runs) on hostile archives: too many small JSON
//! entries, too many JSON bytes in total, an oversized `manifest.json`, a manifest blob
//! or config over its cap, indexes whose entries repeat one nested index (quadratic work
//! if each were walked again), symlink targets past PATH_MAX, too many bytes of names and
//! link targets. Each is refused with a typed error naming what was too big, before
//! anything is stored (or, for what no manifest can refer to, passed over).

mod common;

use common::DirStore;
use kiln_image::ArchiveError;
use kiln_image::archive::read_archive;
use kiln_image::limits::{
    MAX_ARCHIVE_DESCRIPTORS, MAX_ARCHIVE_ENTRIES, MAX_ARCHIVE_JSON_ENTRIES, MAX_ARCHIVE_JSON_TOTAL,
    MAX_ARCHIVE_NAME, MAX_ARCHIVE_NAMES_TOTAL, MAX_CONFIG_SIZE, MAX_JSON_SIZE,
};
use kiln_image::oci::{
    Descriptor, ImageConfig, Index, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
    Manifest,
};
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

/// A gzip tar at `path` holding `files` (name, bytes) and `links` (name, target) symlinks,
/// written as it goes: the hostile archives below are large inflated, small on disk.
fn write_tar_gz(
    path: &Path,
    files: impl IntoIterator<Item = (String, Vec<u8>)>,
    links: impl IntoIterator<Item = (String, String)>,
) {
    let gz = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(path).unwrap()),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        // Long names and targets go out as GNU `L`/`K` entries.
        b.append_link(&mut h, &name, &target).unwrap();
    }
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &name, &bytes[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// An OCI archive whose `index.json` lists `n` times one index, which lists `n` times
/// one manifest (of one small layer): a few hundred KB of gzip, `2n` descriptors.
fn repeated_index_archive(path: &Path, n: usize) {
    let layer = b"not a real layer".to_vec();
    let layer_digest = kiln_image::sha256_digest(&layer);
    let mut config = ImageConfig::default();
    config.rootfs.diff_ids = vec![layer_digest.clone()];
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = kiln_image::sha256_digest(&config);
    let manifest = serde_json::to_vec(&Manifest::new(
        Descriptor::new(MEDIA_TYPE_CONFIG, &config_digest, config.len() as u64),
        vec![Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar",
            &layer_digest,
            layer.len() as u64,
        )],
    ))
    .unwrap();
    let manifest_digest = kiln_image::sha256_digest(&manifest);
    let m = Descriptor::new(MEDIA_TYPE_MANIFEST, &manifest_digest, manifest.len() as u64);
    let inner = serde_json::to_vec(&Index::new(vec![m; n])).unwrap();
    let inner_digest = kiln_image::sha256_digest(&inner);
    let i = Descriptor::new(MEDIA_TYPE_INDEX, &inner_digest, inner.len() as u64);
    let top = serde_json::to_vec(&Index::new(vec![i; n])).unwrap();
    write_tar_gz(
        path,
        [
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), top),
            (blob_name(&inner_digest), inner),
            (blob_name(&manifest_digest), manifest),
            (blob_name(&config_digest), config),
            (blob_name(&layer_digest), layer),
        ],
        [],
    );
}

#[test]
fn an_index_repeating_one_nested_index_is_walked_once() {
    // 30,000 × 30,000 entries: walking each repeat again (hashing and parsing a 4 MB
    // index each time) took hours. Each digest is walked once, so this loads at once,
    // under the cap on descriptors (60,000 of them).
    let n = 30_000;
    assert!(2 * n <= MAX_ARCHIVE_DESCRIPTORS);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("repeat.tar.gz");
    repeated_index_archive(&tar, n);
    let out = tempfile::tempdir().unwrap();
    let sink = DirStore::new(out.path());
    let images = read_archive(&tar, &sink).expect("the archive loads");
    assert_eq!(images.len(), n, "one per index.json entry");
    assert_eq!(
        sink.count(),
        4,
        "index, manifest, config and layer, once each"
    );
}

#[test]
fn an_index_of_more_descriptors_than_the_cap_is_refused() {
    // 100,000 × 100,000: days of work before; now refused once the count passes the cap.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("bomb.tar.gz");
    repeated_index_archive(&tar, 100_000);
    let (err, sink, _out) = load(&tar);
    assert!(
        matches!(err, ArchiveError::TooManyDescriptors { limit } if limit == MAX_ARCHIVE_DESCRIPTORS),
        "{err:?}"
    );
    assert!(err.to_string().contains("manifests and indexes"), "{err}");
    assert_eq!(sink.count(), 0);
}

/// A docker-archive whose one layer is `link.tar`, a symlink to `target`, next to the
/// real `layer.tar`.
fn docker_archive_via_link(path: &Path, target: &str) {
    let layer = b"not a real layer".to_vec();
    let mut config = ImageConfig::default();
    config.rootfs.diff_ids = vec![kiln_image::sha256_digest(&layer)];
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = br#"[{"Config":"config.json","RepoTags":["x:1"],"Layers":["link.tar"]}]"#;
    write_tar_gz(
        path,
        [
            ("manifest.json".to_string(), manifest.to_vec()),
            ("config.json".to_string(), config),
            ("layer.tar".to_string(), layer),
        ],
        [("link.tar".to_string(), target.to_string())],
    );
}

#[test]
fn a_symlink_target_past_path_max_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    // The same target, short and padded past PATH_MAX with `x/../` (it normalizes to
    // `layer.tar` either way): only the short one is kept and followed.
    let short = dir.path().join("short.tar.gz");
    docker_archive_via_link(&short, "layer.tar");
    let out = tempfile::tempdir().unwrap();
    let images = read_archive(&short, &DirStore::new(out.path())).expect("loads");
    assert_eq!(images[0].ref_names, ["x:1"]);

    let long_target = format!("{}layer.tar", "x/../".repeat(MAX_ARCHIVE_NAME / 5 + 1));
    assert!(long_target.len() > MAX_ARCHIVE_NAME);
    let long = dir.path().join("long.tar.gz");
    docker_archive_via_link(&long, &long_target);
    let (err, sink, _out) = load(&long);
    assert!(
        matches!(&err, ArchiveError::Missing { what, .. } if what == "layer link.tar"),
        "{err:?}"
    );
    assert_eq!(sink.count(), 0);
}

#[test]
fn names_and_link_targets_past_the_total_are_refused() {
    // Each name and target just under PATH_MAX, together past the total long before
    // the cap on entries: a few hundred KB of gzip that would be held as 2 GiB.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("names.tar.gz");
    let pad = "n".repeat(MAX_ARCHIVE_NAME - 16);
    let each = 2 * (MAX_ARCHIVE_NAME - 16) as u64;
    let n = MAX_ARCHIVE_NAMES_TOTAL / each + 2;
    assert!((n as usize) < MAX_ARCHIVE_ENTRIES);
    write_tar_gz(
        &tar,
        [],
        (0..n).map(|i| (format!("{pad}{i:08}"), format!("{pad}{i:08}"))),
    );
    let (err, sink, _out) = load(&tar);
    assert_too_large(
        &err,
        "entry names and link targets",
        MAX_ARCHIVE_NAMES_TOTAL,
    );
    assert_eq!(sink.count(), 0);
}
