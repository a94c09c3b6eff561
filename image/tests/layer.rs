//! Layer writing and unpacking: determinism, whiteouts, hard links, xattrs,
//! compression, and the layer-directory round trip.

mod common;

use common::*;
use kiln_image::layer::{Compression, LayerOptions, UnpackOptions, unpack_layer, write_layer};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn opts(compression: Compression, epoch: Option<i64>) -> LayerOptions {
    LayerOptions {
        compression,
        source_date_epoch: epoch,
        level: None,
        reuse: None,
        xattr_free: None,
    }
}

/// The layer of `dir` and its digests, its chunk table without the identities that name
/// `dir`'s inodes (see `ChunkTable::without_identities`).
fn layer_bytes(dir: &Path, o: &LayerOptions) -> (Vec<u8>, kiln_image::LayerDigests) {
    let mut out = Vec::new();
    let mut d = write_layer(dir, &mut out, o).unwrap();
    d.chunks = d.chunks.without_identities();
    (out, d)
}

/// (name, type, size, mode, uid, mtime, linkname) of each entry of a plain tar.
fn list(tar_bytes: &[u8]) -> Vec<(String, char, u64, u32, u64, u64, String)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.entry_type().as_byte() as char,
                e.size(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn same_tree_gives_same_digests_after_touch_and_under_another_umask() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    make_tree(&a, 0o022);
    make_tree(&b, 0o077);
    // umask changes creation modes; the builder's chmod-equivalent is the
    // mode on disk. Make modes equal where umask applied (as a COPY would).
    for p in walk(&b) {
        let rel = p.strip_prefix(&b).unwrap();
        let md = fs::symlink_metadata(a.join(rel)).unwrap();
        if !md.file_type().is_symlink() {
            rustix::fs::chmod(&p, rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777)).unwrap();
        }
    }
    touch_all(&b, 2_000_000_000);
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let o = opts(c, Some(1_000_000));
        let (ba, da) = layer_bytes(&a, &o);
        let (bb, db) = layer_bytes(&b, &o);
        assert_eq!(da, db, "{c:?}");
        assert_eq!(ba, bb);
        // And twice over the same tree.
        assert_eq!(layer_bytes(&a, &o).1, da);
    }
}

#[test]
fn epoch_clamps_mtimes_and_none_keeps_them() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path(), 0o022);
    touch_all(t.path(), 5_000);
    fs::write(t.path().join("old"), b"x").unwrap();
    rustix::fs::utimensat(
        rustix::fs::CWD,
        t.path().join("old"),
        &rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 10,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 10,
                tv_nsec: 0,
            },
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let (tar_bytes, _) = layer_bytes(t.path(), &opts(Compression::None, Some(100)));
    for e in list(&tar_bytes) {
        let expect = match e.0.as_str() {
            "old" => 10,
            // Whiteout markers always carry mtime 0.
            ".wh.gone" | "opq/.wh..wh..opq" => 0,
            _ => 100,
        };
        assert_eq!(e.5, expect, "{}", e.0);
    }
    let (kept, _) = layer_bytes(t.path(), &opts(Compression::None, None));
    let l = list(&kept);
    assert!(l.iter().any(|e| e.0 == "etc/app/config.toml" && e.5 > 100));
}

#[test]
fn tar_is_sorted_with_whiteouts_opaque_markers_and_hardlinks() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path(), 0o022);
    let (tar_bytes, d) = layer_bytes(t.path(), &opts(Compression::None, Some(0)));
    assert_eq!(d.diff_id, d.digest);
    let l = list(&tar_bytes);
    let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
    let long = format!("{}/", "d".repeat(120));
    let long_file = format!("{long}{}", "f".repeat(90));
    assert_eq!(
        names,
        vec![
            "a/",
            "a/b",
            "a.b",
            "bin",
            "dangling",
            &long,
            &long_file,
            "empty/",
            "etc/",
            "etc/app/",
            "etc/app/config.toml",
            "fifo",
            ".wh.gone",
            "hard",
            "link",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/new",
            "tmp/"
        ]
    );
    let get = |n: &str| l.iter().find(|e| e.0 == n).unwrap().clone();
    assert_eq!(get("hard").1, '1');
    assert_eq!(get("hard").6, "a.b");
    assert_eq!(get(".wh.gone").1, '0');
    assert_eq!(get(".wh.gone").2, 0);
    assert_eq!(
        (get(".wh.gone").3, get(".wh.gone").4, get(".wh.gone").5),
        (0, 0, 0)
    );
    assert_eq!(
        (get("opq/.wh..wh..opq").3, get("opq/.wh..wh..opq").5),
        (0, 0)
    );
    assert_eq!(get("opq/.wh..wh..opq").1, '0');
    assert_eq!(get("bin").3, 0o4755);
    assert_eq!(get("tmp/").3, 0o1777);
    assert_eq!(get("link").1, '2');
    assert_eq!(get("link").6, "etc/app/config.toml");
    assert_eq!(get("fifo").1, '6');
    // The xattr rides along as a PAX record, overlay xattrs never do.
    let mut a = tar::Archive::new(&tar_bytes[..]);
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                seen.push(format!(
                    "{name} {}={}",
                    x.key().unwrap(),
                    String::from_utf8_lossy(x.value_bytes())
                ));
            }
        }
    }
    assert!(
        seen.contains(&"etc/app/config.toml SCHILY.xattr.user.kiln.test=v1".to_string()),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.contains("overlay")), "{seen:?}");
    // No uname/gname in any header.
    let mut a = tar::Archive::new(&tar_bytes[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
    }
}

#[test]
fn write_then_unpack_round_trips_the_layer_directory() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 0o022);
    touch_all(&src, 777);
    // Whiteouts carry fixed metadata (mtime 0) in the tar, so set the source
    // device to match before comparing trees.
    rustix::fs::utimensat(
        rustix::fs::CWD,
        src.join("gone"),
        &rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let dst = t.path().join(format!("dst-{c:?}"));
        let (blob, d) = layer_bytes(&src, &opts(c, Some(1000)));
        let info = unpack_layer(&blob[..], &dst, &UnpackOptions::default()).unwrap();
        assert_eq!(info.diff_id, d.diff_id);
        assert_eq!(info.digest, d.digest);
        assert_eq!(info.size, d.size);
        assert_eq!(info.compression, c);
        assert_eq!(describe(&dst), describe(&src), "{c:?}");
        // The whiteout is a 0:0 char device and the opaque xattr is set.
        let gone = fs::symlink_metadata(dst.join("gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));
        assert_eq!(gone.rdev(), 0);
        assert_eq!(
            xattr::get(dst.join("opq"), "user.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        // Hard links are hard links again.
        assert_eq!(
            fs::metadata(dst.join("hard")).unwrap().ino(),
            fs::metadata(dst.join("a.b")).unwrap().ino()
        );
        // Writing the unpacked directory gives the very same layer.
        assert_eq!(layer_bytes(&dst, &opts(c, Some(1000))).1, d);
    }
}

#[test]
fn owners_survive_the_round_trip_when_root() {
    if !is_root() {
        eprintln!("note: owners_survive_the_round_trip_when_root skipped: not root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"x").unwrap();
    std::os::unix::fs::chown(src.join("d"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(src.join("d/f"), Some(3_000_000), Some(42)).unwrap();
    let (blob, _) = layer_bytes(&src, &opts(Compression::None, Some(0)));
    let l = list(&blob);
    assert_eq!(
        l.iter().find(|e| e.0 == "d/f").unwrap().4,
        3_000_000,
        "large uid via PAX"
    );
    let dst = t.path().join("dst");
    unpack_layer(&blob[..], &dst, &UnpackOptions::default()).unwrap();
    let md = fs::metadata(dst.join("d/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (3_000_000, 42));
    let md = fs::metadata(dst.join("d")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
}

#[test]
fn security_capability_is_kept_both_ways_when_root() {
    if !is_root() {
        eprintln!("note: security_capability_is_kept_both_ways_when_root skipped: not root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ping"), b"\x7fELF").unwrap();
    // VFS_CAP_REVISION_2 with cap_net_raw (bit 13) permitted+effective.
    let cap: [u8; 20] = [
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    if let Err(e) = xattr::set(src.join("ping"), "security.capability", &cap) {
        eprintln!("note: security.capability test skipped: cannot set it here ({e})");
        return;
    }
    let (blob, d) = layer_bytes(&src, &opts(Compression::Gzip, Some(0)));
    let dst = t.path().join("dst");
    let info = unpack_layer(&blob[..], &dst, &UnpackOptions::default()).unwrap();
    assert_eq!(info.diff_id, d.diff_id);
    assert_eq!(
        xattr::get(dst.join("ping"), "security.capability")
            .unwrap()
            .as_deref(),
        Some(&cap[..])
    );
}

#[test]
fn empty_directory_gives_the_empty_tar_like_buildkit() {
    let t = tempfile::tempdir().unwrap();
    let (blob, d) = layer_bytes(t.path(), &opts(Compression::None, Some(0)));
    assert_eq!(blob, vec![0u8; 1024]);
    assert_eq!(
        d.diff_id,
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    );
    let (gz, dg) = layer_bytes(t.path(), &opts(Compression::Gzip, Some(0)));
    assert_eq!(dg.diff_id, d.diff_id);
    assert_eq!(
        &gz[..10],
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff][..],
        "gzip header: no name, mtime 0"
    );
    assert_eq!(dg.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn gzip_and_zstd_blobs_decompress_to_the_diff_id() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path(), 0o022);
    let (plain, dp) = layer_bytes(t.path(), &opts(Compression::None, Some(0)));
    let (gz, dg) = layer_bytes(t.path(), &opts(Compression::Gzip, Some(0)));
    let (zs, dz) = layer_bytes(t.path(), &opts(Compression::Zstd, Some(0)));
    let mut un = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut un)
        .unwrap();
    assert_eq!(un, plain);
    assert_eq!(zstd::decode_all(&zs[..]).unwrap(), plain);
    assert_eq!(dg.diff_id, dp.diff_id);
    assert_eq!(dz.diff_id, dp.diff_id);
    assert_eq!(dz.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    assert_eq!(kiln_image::sha256_digest(&gz), dg.digest);
    assert_eq!(gz.len() as u64, dg.size);
}

#[test]
fn python_tarfile_reads_our_layer() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 0o022);
    let out = t.path().join("layer.tar.gz");
    let d = write_layer(
        &src,
        fs::File::create(&out).unwrap(),
        &opts(Compression::Gzip, Some(0)),
    )
    .unwrap();
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as t:
    for m in t.getmembers():
        x = m.pax_headers.get("SCHILY.xattr.user.kiln.test", "")
        print(m.name, m.type.decode(), oct(m.mode), m.uid, m.mtime, m.linkname, x)
"#;
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&out)
        .output()
        .expect("python3 must be installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("etc/app/config.toml 0 0o644 0 0  v1"),
        "{text}"
    );
    assert!(text.contains("hard 1 0o644 0 0 a.b"), "{text}");
    assert!(
        text.contains(&format!("{}/{} 0", "d".repeat(120), "f".repeat(90))),
        "{text}"
    );
    assert!(text.contains(".wh.gone 0"), "{text}");
    assert!(text.contains("opq/.wh..wh..opq 0"), "{text}");
    assert!(d.size > 0);
}

#[test]
fn layer_writer_builds_synthesized_layers_that_unpack() {
    use kiln_image::layer::{EntryMeta, LayerWriter, TarEntryKind};
    let meta = |mode| EntryMeta {
        mode,
        uid: 0,
        gid: 0,
        mtime: 5_000,
        xattrs: Default::default(),
    };
    let o = opts(Compression::Zstd, Some(100));
    let mut w = LayerWriter::new(Vec::new(), &o).unwrap();
    w.append(
        b"app",
        &TarEntryKind::Directory,
        &meta(0o755),
        std::io::empty(),
    )
    .unwrap();
    w.append_opaque(b"app").unwrap();
    w.append(
        b"app/run.sh",
        &TarEntryKind::File { size: 9 },
        &meta(0o755),
        &b"#!/bin/sh"[..],
    )
    .unwrap();
    w.append(
        b"app/sh",
        &TarEntryKind::Symlink {
            target: b"/bin/sh".to_vec(),
        },
        &meta(0o777),
        std::io::empty(),
    )
    .unwrap();
    w.append_whiteout(b"old").unwrap();
    let (d, blob) = w.finish_into_inner().unwrap();
    assert_eq!(kiln_image::sha256_digest(&blob), d.digest);
    let t = tempfile::tempdir().unwrap();
    unpack_layer(&blob[..], t.path(), &UnpackOptions::default()).unwrap();
    let tree = describe(t.path());
    let keys: Vec<&str> = tree.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, vec!["app", "app/run.sh", "app/sh", "old"]);
    assert!(
        tree["app/run.sh"].starts_with("mode=100755 uid=0 gid=0 mtime=100 "),
        "{}",
        tree["app/run.sh"]
    );
    assert!(tree["app"].contains("user.overlay.opaque=y"));
    assert!(
        tree["old"].starts_with("mode=20000 uid=0 gid=0 mtime=0 "),
        "{}",
        tree["old"]
    );
    // A file shorter than its declared size is an error, not a corrupt tar.
    let mut w = LayerWriter::new(Vec::new(), &o).unwrap();
    let err = w
        .append(
            b"short",
            &TarEntryKind::File { size: 10 },
            &meta(0o644),
            &b"abc"[..],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "file shrank while being archived (7 bytes missing)"
    );
}

#[test]
fn overlay_redirect_or_metacopy_entries_are_refused() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("moved")).unwrap();
    xattr::set(t.path().join("moved"), "user.overlay.redirect", b"/orig").unwrap();
    let err = write_layer(t.path(), std::io::sink(), &opts(Compression::None, Some(0)))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "reading {} for the layer: has the overlayfs xattr user.overlay.redirect: its content \
             is in a lower layer (mount overlayfs with redirect_dir=off,metacopy=off)",
            t.path().join("moved").display()
        )
    );
}

#[test]
fn many_files_over_nested_directories_come_in_order_with_their_bytes() {
    // More names per directory than the walk looks up ahead, and more files than it holds
    // open ahead over the directories it is in: order and bytes must not notice.
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let mut want = Vec::new();
    let mut dir = root.to_path_buf();
    let mut prefix = String::new();
    for depth in 0..6 {
        let sub = format!("d{depth}");
        for i in 0..70 {
            let name = format!("f{i:03}");
            let body = format!("{prefix}{name} {}", "x".repeat(i * 37 + depth));
            fs::write(dir.join(&name), &body).unwrap();
            want.push((format!("{prefix}{name}"), body));
        }
        // A directory sorting between files, so the walk leaves files looked up ahead.
        fs::create_dir(dir.join(&sub)).unwrap();
        want.push((format!("{prefix}{sub}/"), String::new()));
        dir = dir.join(&sub);
        prefix = format!("{prefix}{sub}/");
    }
    want.sort_by(|a, b| {
        // Depth first, each directory's names by bytes: compare path components.
        let ca: Vec<&str> = a.0.trim_end_matches('/').split('/').collect();
        let cb: Vec<&str> = b.0.trim_end_matches('/').split('/').collect();
        ca.cmp(&cb)
    });
    for compression in [Compression::None, Compression::Gzip] {
        let (blob, d) = layer_bytes(root, &opts(compression, None));
        let mut plain = Vec::new();
        match compression {
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            _ => plain = blob,
        }
        assert_eq!(
            d.diff_id,
            kiln_image::digest::sha256_digest(&plain),
            "{compression:?}"
        );
        let mut got = Vec::new();
        let mut a = tar::Archive::new(&plain[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            got.push((name, body));
        }
        assert_eq!(got, want, "{compression:?}");
    }
}
