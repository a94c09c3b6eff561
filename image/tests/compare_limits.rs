//! `kiln diff`'s engine (`kiln_image::compare`) on hostile images: layers of
//! megabyte PAX paths and link targets, a directory emptied by thousands of
//! opaque markers, layout blobs that are symlinks to `/dev/zero`, FIFOs, or
//! longer than their descriptors, archives that are not files. Each gives a
//! clear typed error naming the image and layer, or the correct tree, and
//! none hangs or takes the machine's memory.

use flate2::Compression as Gz;
use flate2::write::GzEncoder;
use kiln_image::compare::{
    CompareError, ImageLocation, OpenImage, TreeError, compare, open_location, open_oci_layout,
};
use kiln_image::compare::{DirBlobs, FileTree};
use kiln_image::layer::compress::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR};
use kiln_image::limits::MAX_ARCHIVE_NAME;
use kiln_image::oci::{
    Descriptor, ImageConfig, Index, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, Manifest, json_blob,
};
use kiln_image::{BlobSink, sha256_digest};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A tar being built in memory.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// One entry with a short ustar name.
    fn entry(&mut self, name: &str, kind: tar::EntryType, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_path(name).unwrap();
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    /// A PAX extended header with one record (`<len> key=value\n`, the length
    /// counting its own digits), applying to the next entry.
    fn pax(&mut self, key: &str, value: &[u8]) -> &mut Self {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + rest.to_string().len();
        while rest + len.to_string().len() != len {
            len = rest + len.to_string().len();
        }
        let mut rec = format!("{len} {key}=").into_bytes();
        rec.extend_from_slice(value);
        rec.push(b'\n');
        assert_eq!(rec.len(), len);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(rec.len() as u64);
        h.set_path("PaxHeaders/x").unwrap();
        h.set_cksum();
        self.0.append(&h, &rec[..]).unwrap();
        self
    }

    fn file(&mut self, name: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, b"")
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Gz::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn put(blobs: &DirBlobs, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    blobs.put_blob(&mut &bytes[..], &digest).unwrap();
    digest
}

/// Writes an OCI layout of one image with these layer blobs (gzip when they
/// start with gzip's magic) into `dir`; returns the layer digests.
fn layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let blobs = DirBlobs::new(dir.join("blobs"));
    let mut descs = Vec::new();
    for layer in layers {
        let media = if layer.starts_with(&[0x1f, 0x8b]) {
            MEDIA_TYPE_LAYER_GZIP
        } else {
            MEDIA_TYPE_LAYER_TAR
        };
        descs.push(Descriptor::new(
            media,
            &put(&blobs, layer),
            layer.len() as u64,
        ));
    }
    let digests = descs.iter().map(|d| d.digest.clone()).collect();
    let (config, config_digest, config_size) = json_blob(&ImageConfig::default());
    put(&blobs, &config);
    let manifest = Manifest::new(
        Descriptor::new(MEDIA_TYPE_CONFIG, &config_digest, config_size),
        descs,
    );
    let (bytes, manifest_digest, size) = json_blob(&manifest);
    put(&blobs, &bytes);
    let index = Index::new(vec![Descriptor::new(
        MEDIA_TYPE_MANIFEST,
        &manifest_digest,
        size,
    )]);
    fs::write(dir.join("index.json"), json_blob(&index).0).unwrap();
    digests
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn tree_of(tar: &[u8]) -> Result<FileTree, TreeError> {
    let mut t = FileTree::new();
    t.apply_layer(tar)?;
    Ok(t)
}

/// Runs `f` on another thread and fails the test if it has not returned in
/// 60 s: the inputs here used to hang, and a hung test says nothing.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("did not return within a minute (hung on the input?)")
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

#[test]
fn a_layer_of_megabyte_pax_paths_is_refused_naming_the_image_and_layer() {
    // The red team's archive: one gzip layer of entries whose PAX path is 1 MB
    // (it took 897 MB to diff), here as an oci-archive like theirs.
    let mut tar = Tar::new();
    for i in 0..3 {
        let mut name = vec![b'a'; 1_000_000];
        name.extend_from_slice(i.to_string().as_bytes());
        tar.pax("path", &name).file("x");
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let layer = layout(&dir, &[gzip(&tar.bytes())]).remove(0);
    let archive = work.path().join("bomb.tar");
    let mut b = tar::Builder::new(fs::File::create(&archive).unwrap());
    b.append_dir_all(".", &dir).unwrap();
    b.into_inner().unwrap();

    let loc = ImageLocation::parse(&format!("oci-archive:{}", archive.display()));
    let img = open_location(&loc, &work.path().join("scratch")).unwrap();
    let err = img.file_tree().unwrap_err();
    let message = err.to_string();
    match err {
        CompareError::Layer {
            name,
            digest,
            source: TreeError::TooLarge(e),
        } => {
            assert!(name.starts_with("oci-archive:"), "{name}");
            assert_eq!(digest, layer);
            assert_eq!(e.size, Some(1_000_001));
            assert_eq!(e.limit, MAX_ARCHIVE_NAME as u64);
        }
        other => panic!("expected a TooLarge layer error, got {other:?}"),
    }
    assert!(message.contains("oci-archive:"), "{message}");
    assert!(message.contains(&layer), "{message}");
    assert!(message.contains("a path in the layer"), "{message}");
    assert!(message.contains("kiln's limit is 4096 bytes"), "{message}");
    assert!(
        message.len() < 1000,
        "the message repeats the path: {message}"
    );
}

#[test]
fn a_path_of_path_max_is_kept_and_one_byte_more_is_refused() {
    // Many short components, as a deep real tree has.
    let name = |n: usize| {
        let mut s = "d/".repeat((n - 1) / 2);
        while s.len() < n {
            s.push('f');
        }
        s
    };
    for (len, ok) in [(MAX_ARCHIVE_NAME, true), (MAX_ARCHIVE_NAME + 1, false)] {
        let path = name(len);
        assert_eq!(path.len(), len);
        // Through a PAX path and through a GNU long name alike.
        let mut pax = Tar::new();
        pax.pax("path", path.as_bytes()).file("x");
        let mut gnu = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        gnu.append_data(&mut h, &path, &b""[..]).unwrap();
        for tar in [pax.bytes(), gnu.into_inner().unwrap()] {
            match tree_of(&tar) {
                Ok(t) if ok => {
                    let want = format!("/{path}");
                    assert!(t.entries.contains_key(&want), "{:?}", t.entries.keys());
                }
                Err(TreeError::TooLarge(e)) if !ok => {
                    assert_eq!(e.size, Some(len as u64));
                    assert!(e.to_string().contains("\"d/d/d/"), "{e}");
                }
                other => panic!("path of {len} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn a_megabyte_link_target_is_refused() {
    // Under the 1 MiB PAX header cap, so it is this check that refuses it.
    let target = vec![b't'; 1_000_000];
    for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
        let mut tar = Tar::new();
        tar.pax("linkpath", &target).entry("l", kind, b"");
        match tree_of(&tar.bytes()) {
            Err(TreeError::TooLarge(e)) => {
                assert_eq!(e.size, Some(target.len() as u64));
                assert!(e.to_string().contains("link target of /l"), "{e}");
            }
            other => panic!("{kind:?}: expected TooLarge, got {other:?}"),
        }
    }
}

#[test]
fn twenty_thousand_opaque_markers_on_a_big_directory_give_the_right_diff() {
    // Was N x N: every marker rescanned every file the layer had added.
    const N: usize = 20_000;
    let mut lower = Tar::new();
    for i in 0..N {
        lower.file(&format!("old{i:07}"));
    }
    let mut upper = Tar::new();
    let mut plain = Tar::new();
    for i in 0..N {
        upper.file(&format!("new{i:07}"));
        plain.file(&format!("new{i:07}"));
    }
    for _ in 0..N {
        upper.entry(".wh..wh..opq", tar::EntryType::Regular, b"");
    }
    let work = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (work.path().join("a"), work.path().join("b"));
    layout(&a_dir, &[lower.bytes(), upper.bytes()]);
    layout(&b_dir, &[plain.bytes()]);
    let a = open_oci_layout(&a_dir).unwrap();
    let b = open_oci_layout(&b_dir).unwrap();
    // The markers hid every lower file and none of the layer's own.
    let tree = a.file_tree().unwrap();
    assert_eq!(tree.entries.len(), N);
    assert!(tree.entries.keys().all(|k| k.starts_with("/new")));
    let cmp = compare(&a, &b).unwrap();
    assert_eq!(cmp.files, []);
    assert!(cmp.same_files_different_layering);
}

#[test]
fn a_layout_blob_linked_to_dev_zero_is_refused_not_read() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let mut t = Tar::new();
    t.file("hello");
    let layer = layout(&dir, &[t.bytes()]).remove(0);
    let path = blob_path(&dir, &layer);
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let d = dir.clone();
    let err = within_a_minute(move || {
        let img = open_oci_layout(&d).unwrap();
        img.file_tree().map(|_| ()).unwrap_err().to_string()
    });
    assert!(err.contains(&layer), "{err}");
    assert!(err.contains("symbolic link"), "{err}");

    // A manifest or config blob, and index.json, likewise.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mpath = blob_path(&dir, &manifest);
    fs::rename(&mpath, work.path().join("m")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &mpath).unwrap();
    let d = dir.clone();
    let err = within_a_minute(move || open_oci_layout(&d).unwrap_err().to_string());
    assert!(err.contains("symbolic link"), "{err}");
    fs::remove_file(dir.join("index.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("index.json")).unwrap();
    let err = within_a_minute(move || open_oci_layout(&dir).unwrap_err().to_string());
    assert!(err.contains("index.json"), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
}

#[test]
fn a_layout_blob_or_index_that_is_a_fifo_is_refused_without_waiting() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let mut t = Tar::new();
    t.file("hello");
    let layer = layout(&dir, &[t.bytes()]).remove(0);
    let path = blob_path(&dir, &layer);
    fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let d = dir.clone();
    let err = within_a_minute(move || {
        let img = open_oci_layout(&d).unwrap();
        img.file_tree().map(|_| ()).unwrap_err()
    });
    match &err {
        CompareError::Blob { digest, source } => {
            assert_eq!(digest, &layer);
            assert!(
                source.to_string().contains("not a regular file"),
                "{source}"
            );
        }
        other => panic!("expected a blob error, got {other:?}"),
    }
    fs::remove_file(dir.join("index.json")).unwrap();
    mkfifo(&dir.join("index.json"));
    let err = within_a_minute(move || open_oci_layout(&dir).unwrap_err().to_string());
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_layer_blob_longer_or_shorter_than_its_descriptor_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let mut t = Tar::new();
    t.entry("hello", tar::EntryType::Regular, b"hi");
    let bytes = t.bytes();
    let size = bytes.len() as u64;
    let layer = layout(&dir, std::slice::from_ref(&bytes)).remove(0);
    let path = blob_path(&dir, &layer);

    // Longer: what follows the declared size is never read (a regular file
    // as long as /dev/zero would not be read to its end either).
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, &longer).unwrap();
    let err = open_oci_layout(&dir).unwrap().file_tree().unwrap_err();
    match &err {
        CompareError::BlobSize {
            digest,
            declared,
            found: None,
        } => {
            assert_eq!(digest, &layer);
            assert_eq!(*declared, size);
        }
        other => panic!("expected BlobSize, got {other:?}"),
    }
    assert!(err.to_string().contains("more than"), "{err}");

    // Shorter.
    fs::write(&path, &bytes[..bytes.len() - 512]).unwrap();
    let err = open_oci_layout(&dir).unwrap().file_tree().unwrap_err();
    assert!(
        matches!(&err, CompareError::BlobSize { found: Some(n), .. } if *n == size - 512),
        "{err:?}"
    );

    // Exact: the tree.
    fs::write(&path, &bytes).unwrap();
    let tree = open_oci_layout(&dir).unwrap().file_tree().unwrap();
    assert_eq!(tree.entries["/hello"].size, 2);
}

#[test]
fn an_archive_that_is_a_fifo_or_a_device_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("fifo.tar");
    mkfifo(&fifo);
    let zero_link = work.path().join("zero.tar");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    for file in [fifo, PathBuf::from("/dev/zero"), zero_link] {
        for prefix in ["oci-archive", "docker-archive"] {
            let loc = ImageLocation::parse(&format!("{prefix}:{}", file.display()));
            let scratch = work.path().join("scratch");
            let err = within_a_minute(move || {
                open_location(&loc, &scratch)
                    .map(|_: OpenImage<'static>| ())
                    .unwrap_err()
            });
            match &err {
                CompareError::Invalid { name, reason } => {
                    assert!(name.starts_with(prefix), "{name}");
                    assert!(reason.contains("not a regular file"), "{reason}");
                }
                other => panic!("{prefix}:{}: {other:?}", file.display()),
            }
        }
    }
}
