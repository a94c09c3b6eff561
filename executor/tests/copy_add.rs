//! ADD on disk: archives detected by content in every compression and extracted (owners,
//! modes, symlinks, hardlinks kept), `--unpack=false`, COPY never extracting, and hostile
//! archives refused before anything leaves the destination.

mod copy_support;

use std::io::Write;

use copy_support::*;
use kiln_executor::copy::CopyRequest;
use kiln_executor::layered::LayeredFs;

/// One tar entry; names and link names are written raw so hostile ones can be built.
enum T<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a str, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn raw_header(name: &str, kind: tar::EntryType, mode: u32, size: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name.fill(0);
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname.fill(0);
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(1);
    h.set_gid(2);
    h.set_mtime(1_500_000_000);
    h.set_cksum();
    h
}

fn tar_of(entries: &[T<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            T::Dir(n, m) => (raw_header(n, tar::EntryType::Directory, *m, 0, ""), b""),
            T::File(n, c, m) => (
                raw_header(n, tar::EntryType::Regular, *m, c.len() as u64, ""),
                c.as_bytes(),
            ),
            T::Symlink(n, t) => (raw_header(n, tar::EntryType::Symlink, 0o777, 0, t), b""),
            T::Hardlink(n, t) => (raw_header(n, tar::EntryType::Link, 0o644, 0, t), b""),
        };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(d: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(d).unwrap();
    e.finish().unwrap()
}
fn bzip(d: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(d).unwrap();
    e.finish().unwrap()
}
fn xz(d: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(d).unwrap();
    e.finish().unwrap()
}
fn zst(d: &[u8]) -> Vec<u8> {
    zstd::encode_all(d, 3).unwrap()
}

fn sample() -> Vec<u8> {
    tar_of(&[
        T::Dir("dir/", 0o750),
        T::File("dir/f", "hello", 0o640),
        T::Symlink("lnk", "dir/f"),
        T::Hardlink("hard", "dir/f"),
    ])
}

fn add_req(fx: &Fixture, src: &str, dest: &str, target: LayeredFs) -> CopyRequest {
    let mut r = req(fx, &[src], dest, target);
    r.add = true;
    r
}

fn put(fx: &Fixture, name: &str, bytes: &[u8]) {
    std::fs::write(fx.ctx().join(name), bytes).unwrap();
}

const SAMPLE_TREE: [&str; 5] = [
    "d /opt 0755 0:0",
    "d /opt/dir 0750 1:2",
    "f /opt/dir/f 0640 1:2 hello",
    "h /opt/hard = /opt/dir/f",
    "l /opt/lnk 1:2 -> dir/f",
];

#[test]
fn add_extracts_archives_detected_by_content_in_every_compression() {
    let fx = Fixture::new();
    let plain = sample();
    for (name, bytes) in [
        ("plain.bin", plain.clone()),
        ("gz.data", gzip(&plain)),
        ("bz2.txt", bzip(&plain)),
        ("noext", xz(&plain)),
        ("z.zip", zst(&plain)),
    ] {
        put(&fx, name, &bytes);
        let t = run_ok(&fx, &add_req(&fx, name, "/opt/", LayeredFs::new(vec![])));
        assert_eq!(t, lines(&SAMPLE_TREE), "archive {name}");
        // Without a trailing slash the destination is still a directory to extract into.
        let t = run_ok(&fx, &add_req(&fx, name, "/opt", LayeredFs::new(vec![])));
        assert_eq!(t, lines(&SAMPLE_TREE), "archive {name} (no slash)");
    }
}

#[test]
fn add_extracted_mtimes_come_from_the_archive() {
    let fx = Fixture::new();
    put(&fx, "a.tar", &sample());
    let (out, r) = run(&fx, &add_req(&fx, "a.tar", "/opt/", LayeredFs::new(vec![])));
    r.unwrap();
    use std::os::unix::fs::MetadataExt;
    for p in ["opt/dir", "opt/dir/f"] {
        assert_eq!(
            std::fs::symlink_metadata(out.join(p)).unwrap().mtime(),
            1_500_000_000,
            "{p}"
        );
    }
}

#[test]
fn add_with_chown_owns_every_extracted_entry() {
    let fx = Fixture::new();
    put(&fx, "a.tgz", &gzip(&sample()));
    let mut r = add_req(&fx, "a.tgz", "/opt/", LayeredFs::new(vec![]));
    r.chown = Some("7:9".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /opt 0755 7:9",
            "d /opt/dir 0750 7:9",
            "f /opt/dir/f 0640 7:9 hello",
            "h /opt/hard = /opt/dir/f",
            "l /opt/lnk 7:9 -> dir/f",
        ])
    );
}

#[test]
fn unpack_false_and_copy_keep_the_archive_as_a_file() {
    let fx = Fixture::new();
    let gz = gzip(&tar_of(&[T::File("x", "1", 0o644)]));
    put(&fx, "a.tgz", &gz);
    let mut r = add_req(&fx, "a.tgz", "/d/", LayeredFs::new(vec![]));
    r.unpack = Some(false);
    let (out, res) = run(&fx, &r);
    res.unwrap();
    assert_eq!(std::fs::read(out.join("d/a.tgz")).unwrap(), gz);
    let (out, res) = run(&fx, &req(&fx, &["a.tgz"], "/d/", LayeredFs::new(vec![])));
    res.unwrap();
    assert_eq!(std::fs::read(out.join("d/a.tgz")).unwrap(), gz);
}

#[test]
fn add_of_a_non_archive_copies_it() {
    let fx = Fixture::new();
    put(&fx, "notes.tar.gz", &gzip(b"just text, not a tar"));
    put(&fx, "plain.tar", b"hello");
    let (out, res) = run(
        &fx,
        &add_req(&fx, "plain.tar", "/d/", LayeredFs::new(vec![])),
    );
    res.unwrap();
    assert_eq!(std::fs::read(out.join("d/plain.tar")).unwrap(), b"hello");
    let (out, res) = run(
        &fx,
        &add_req(&fx, "notes.tar.gz", "/d/", LayeredFs::new(vec![])),
    );
    res.unwrap();
    assert!(out.join("d/notes.tar.gz").is_file());
}

#[test]
fn extraction_merges_over_lower_layers() {
    let fx = Fixture::new();
    let l = fx.layer("base");
    write(&l, "opt/keep", "lower", 0o644);
    mkdir(&l, "opt/dir", 0o700);
    put(&fx, "a.tar", &tar_of(&[T::File("dir/new", "n", 0o600)]));
    assert_eq!(
        run_ok(&fx, &add_req(&fx, "a.tar", "/opt", LayeredFs::new(vec![l]))),
        lines(&[
            "d /opt 0755 0:0",
            "d /opt/dir 0700 0:0",
            "f /opt/dir/new 0600 1:2 n"
        ])
    );
}

fn hostile(entries: &[T<'_>], want: &str) {
    let fx = Fixture::new();
    put(&fx, "evil.tar", &tar_of(entries));
    let err = run_err(
        &fx,
        &add_req(&fx, "evil.tar", "/opt/", LayeredFs::new(vec![])),
    );
    assert!(err.starts_with("refusing to extract archive "), "{err}");
    assert!(err.ends_with(want), "{err}\nwanted suffix: {want}");
    // Nothing was written next to the fixture's directories.
    let mut names: Vec<_> = std::fs::read_dir(fx.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(
        names
            .iter()
            .all(|n| n == "ctx" || n.to_str().unwrap().starts_with("out")),
        "{names:?}"
    );
}

#[test]
fn hostile_archive_with_dotdot_is_refused() {
    hostile(
        &[T::File("../../x", "pwn", 0o644)],
        "entry \"../../x\" has a '..' component that could leave the destination",
    );
    hostile(
        &[T::File("a/../../x", "pwn", 0o644)],
        "entry \"a/../../x\" has a '..' component that could leave the destination",
    );
}

#[test]
fn hostile_archive_with_absolute_name_is_refused() {
    hostile(
        &[T::File("/etc/x", "pwn", 0o644)],
        "entry \"/etc/x\" has an absolute path",
    );
}

#[test]
fn hostile_archive_writing_through_its_own_symlink_is_refused() {
    hostile(
        &[T::Symlink("l", "/"), T::File("l/x", "pwn", 0o644)],
        "entry \"l/x\" would be written through the symlink /opt/l it created",
    );
    hostile(
        &[T::Symlink("l", "../../../.."), T::File("l/x", "pwn", 0o644)],
        "entry \"l/x\" would be written through the symlink /opt/l it created",
    );
}

#[test]
fn hostile_archive_with_hardlink_outside_is_refused() {
    hostile(
        &[T::Hardlink("h", "/etc/passwd")],
        "entry \"h\" is a hardlink to \"/etc/passwd\", outside the destination",
    );
    hostile(
        &[T::Hardlink("h", "../x")],
        "entry \"h\" is a hardlink to \"../x\", outside the destination",
    );
    hostile(
        &[T::Hardlink("h", "elsewhere")],
        "entry \"h\" is a hardlink to \"elsewhere\", which is not a file extracted earlier from this archive",
    );
}

#[test]
fn add_mixes_archives_and_plain_files_and_reports_bytes() {
    // Parents an archive implies without listing them are made 0755 root, like `tar -x`.
    let fx = Fixture::new();
    put(
        &fx,
        "a.tar.zst",
        &zst(&tar_of(&[T::File("x/in.txt", "inside", 0o644)])),
    );
    write(&fx.ctx(), "plain.txt", "plain", 0o600);
    let (out, res) = run(&fx, &{
        let mut r = req(
            &fx,
            &["a.tar.zst", "plain.txt"],
            "/m/",
            LayeredFs::new(vec![]),
        );
        r.add = true;
        r
    });
    let rep = res.unwrap();
    assert_eq!(
        tree(&out),
        lines(&[
            "d /m 0755 0:0",
            "d /m/x 0755 0:0",
            "f /m/x/in.txt 0644 1:2 inside",
            "f /m/plain.txt 0600 0:0 plain"
        ])
    );
    assert_eq!(rep.bytes, ("inside".len() + "plain".len()) as u64);
}
