//! Unpacking hostile tars (nothing escapes the destination, with clear
//! errors) and applying layers onto a flat rootfs.

mod common;

use common::*;
use kiln_image::layer::{
    Compression, LayerOptions, UnpackOptions, apply_layer, unpack_layer, write_layer,
};
use std::fs;
use std::path::Path;

fn unpack_err(tar_bytes: &[u8], dest: &Path) -> String {
    unpack_layer(tar_bytes, dest, &UnpackOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn dotdot_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let tar_bytes = raw_tar(&[("../evil", b'0', "", b"x")]);
    assert_eq!(
        unpack_err(&tar_bytes, &dest),
        "refusing tar entry \"../evil\": name contains a `..` component"
    );
    assert!(!t.path().join("evil").exists());
    let tar_bytes = raw_tar(&[("a/../../evil2", b'0', "", b"x")]);
    assert!(unpack_err(&tar_bytes, &dest).contains("`..` component"));
    assert!(!t.path().join("evil2").exists());
}

#[test]
fn absolute_names_are_made_relative() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let tar_bytes = raw_tar(&[("/abs/file", b'0', "", b"inside")]);
    unpack_layer(&tar_bytes[..], &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(fs::read(dest.join("abs/file")).unwrap(), b"inside");
}

#[test]
fn writing_through_a_symlinked_parent_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let dest = t.path().join("dest");
    let out = outside.to_str().unwrap();
    let tar_bytes = raw_tar(&[("link", b'2', out, b""), ("link/pwned", b'0', "", b"x")]);
    assert_eq!(
        unpack_err(&tar_bytes, &dest),
        "refusing tar entry \"link/pwned\": parent \"link\" is a symlink or not a directory"
    );
    assert!(!outside.join("pwned").exists());
    // A relative symlink climbing out, then a file through it.
    let dest2 = t.path().join("dest2");
    let tar_bytes = raw_tar(&[
        ("up", b'2', "../outside", b""),
        ("up/pwned2", b'0', "", b"x"),
    ]);
    assert!(unpack_err(&tar_bytes, &dest2).contains("is a symlink or not a directory"));
    assert!(!outside.join("pwned2").exists());
    // A directory symlink deeper down.
    let dest3 = t.path().join("dest3");
    let tar_bytes = raw_tar(&[
        ("d/", b'5', "", b""),
        ("d/s", b'2', "/", b""),
        ("d/s/etc/x", b'0', "", b"x"),
    ]);
    assert_eq!(
        unpack_err(&tar_bytes, &dest3),
        "refusing tar entry \"d/s/etc/x\": parent \"d/s\" is a symlink or not a directory"
    );
}

#[test]
fn hardlinks_outside_missing_or_through_symlinks_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let secret = t.path().join("secret");
    fs::write(&secret, b"s3cret").unwrap();
    let dest = t.path().join("d1");
    let tar_bytes = raw_tar(&[("hl", b'1', "../secret", b"")]);
    assert_eq!(
        unpack_err(&tar_bytes, &dest),
        "refusing hard link \"hl\" -> \"../secret\": target leaves the layer"
    );
    let dest = t.path().join("d2");
    let tar_bytes = raw_tar(&[("hl", b'1', "nothing", b"")]);
    assert_eq!(
        unpack_err(&tar_bytes, &dest),
        "refusing hard link \"hl\" -> \"nothing\": target does not exist"
    );
    let dest = t.path().join("d3");
    let up = t.path().to_str().unwrap();
    let tar_bytes = raw_tar(&[("s", b'2', up, b""), ("hl", b'1', "s/secret", b"")]);
    assert_eq!(
        unpack_err(&tar_bytes, &dest),
        "refusing hard link \"hl\" -> \"s/secret\": target's parent is a symlink"
    );
    // Absolute hard link targets are inside the layer, like names.
    let dest = t.path().join("d4");
    let tar_bytes = raw_tar(&[("f", b'0', "", b"ok"), ("hl", b'1', "/f", b"")]);
    unpack_layer(&tar_bytes[..], &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(fs::read(dest.join("hl")).unwrap(), b"ok");
}

#[test]
fn a_symlink_replacing_a_file_is_not_followed_by_a_later_entry() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("victim");
    fs::write(&outside, b"original").unwrap();
    let dest = t.path().join("dest");
    // `f` becomes a symlink to the victim, then a regular `f` comes again:
    // the symlink is replaced, never written through.
    let tar_bytes = raw_tar(&[
        ("f", b'2', outside.to_str().unwrap(), b""),
        ("f", b'0', "", b"new"),
    ]);
    unpack_layer(&tar_bytes[..], &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"original");
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"new");
    assert!(
        !fs::symlink_metadata(dest.join("f"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn unsupported_entry_types_are_named() {
    let t = tempfile::tempdir().unwrap();
    let tar_bytes = raw_tar(&[("vol", b'V', "", b"")]);
    assert_eq!(
        unpack_err(&tar_bytes, &t.path().join("d")),
        "tar entry \"vol\" has unsupported type 'V'"
    );
}

#[test]
fn garbage_input_is_a_stream_error() {
    let t = tempfile::tempdir().unwrap();
    let mut gz = vec![0x1f, 0x8b];
    gz.extend_from_slice(b"not really gzip at all");
    let err = unpack_err(&gz, &t.path().join("d"));
    assert!(err.starts_with("reading the layer stream:"), "{err}");
}

#[test]
fn apply_layer_deletes_whiteouts_and_empties_opaque_dirs() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = t.path().join("rootfs");
    fs::create_dir_all(rootfs.join("keep")).unwrap();
    fs::create_dir_all(rootfs.join("opq/sub")).unwrap();
    fs::write(rootfs.join("opq/old"), b"old").unwrap();
    fs::write(rootfs.join("opq/sub/deep"), b"old").unwrap();
    fs::write(rootfs.join("gone"), b"bye").unwrap();
    fs::create_dir_all(rootfs.join("gonedir/x")).unwrap();
    fs::write(rootfs.join("keep/file"), b"stays").unwrap();
    // The layer: whiteouts for gone and gonedir, opq opaque with one new file.
    let layer = t.path().join("layer");
    make_layer_dir(&layer);
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression: Compression::Zstd,
        source_date_epoch: Some(0),
        level: None,
        reuse: None,
        xattr_free: None,
    };
    let d = write_layer(&layer, &mut blob, &opts).unwrap();
    let info = apply_layer(&blob[..], &rootfs, &UnpackOptions::default()).unwrap();
    assert_eq!(info.diff_id, d.diff_id);
    let mut names: Vec<String> = walk(&rootfs)
        .iter()
        .map(|p| {
            p.strip_prefix(&rootfs)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["keep", "keep/file", "opq", "opq/new"]);
    assert_eq!(fs::read(rootfs.join("opq/new")).unwrap(), b"fresh");
}

fn make_layer_dir(layer: &Path) {
    fs::create_dir_all(layer.join("opq")).unwrap();
    fs::write(layer.join("opq/new"), b"fresh").unwrap();
    xattr::set(layer.join("opq"), "user.overlay.opaque", b"y").unwrap();
    for name in ["gone", "gonedir"] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            layer.join(name),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
    }
}

#[test]
fn unpack_accepts_trusted_opaque_on_write_and_docker_style_opaque_tars() {
    // A tar whose opaque marker comes after the dir's children still marks it.
    let t = tempfile::tempdir().unwrap();
    let tar_bytes = raw_tar(&[
        ("d/", b'5', "", b""),
        ("d/a", b'0', "", b"a"),
        ("d/.wh..wh..opq", b'0', "", b""),
        ("d/.wh.b", b'0', "", b""),
    ]);
    let dest = t.path().join("dest");
    unpack_layer(&tar_bytes[..], &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(
        xattr::get(dest.join("d"), "user.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(dest.join("d/a")).unwrap(), b"a");
    let md = fs::symlink_metadata(dest.join("d/b")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));
    // trusted.overlay.opaque (root, overlay without userxattr) is read too.
    if is_root() {
        let src = t.path().join("src");
        fs::create_dir_all(src.join("o")).unwrap();
        if xattr::set(src.join("o"), "trusted.overlay.opaque", b"y").is_ok() {
            let mut out = Vec::new();
            let opts = LayerOptions {
                compression: Compression::None,
                source_date_epoch: Some(0),
                level: None,
                reuse: None,
                xattr_free: None,
            };
            write_layer(&src, &mut out, &opts).unwrap();
            let mut a = tar::Archive::new(&out[..]);
            let names: Vec<String> = a
                .entries()
                .unwrap()
                .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
                .collect();
            assert_eq!(names, vec!["o/", "o/.wh..wh..opq"]);
        }
    }
}

#[test]
fn apply_layer_opaque_marker_after_the_layers_own_entries_still_hides_lower_content() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = t.path().join("rootfs");
    fs::create_dir_all(rootfs.join("opq/sub")).unwrap();
    fs::write(rootfs.join("opq/sub/deep"), b"lower").unwrap();
    fs::write(rootfs.join("opq/old"), b"lower").unwrap();
    let tar_bytes = raw_tar(&[
        ("opq/", b'5', "", b""),
        ("opq/sub/", b'5', "", b""),
        ("opq/sub/new", b'0', "", b"upper"),
        ("opq/.wh..wh..opq", b'0', "", b""),
    ]);
    apply_layer(&tar_bytes[..], &rootfs, &UnpackOptions::default()).unwrap();
    let names: Vec<String> = walk(&rootfs)
        .iter()
        .map(|p| {
            p.strip_prefix(&rootfs)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, vec!["opq", "opq/sub", "opq/sub/new"]);
}

#[test]
fn pax_and_gnu_long_names_with_dotdot_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // PAX path record.
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/../../../escape", "a".repeat(120));
    b.append_pax_extensions([("path", long.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..4].copy_from_slice(b"safe");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let tar_bytes = b.into_inner().unwrap();
    let err = unpack_err(&tar_bytes, &t.path().join("d"));
    assert!(err.contains("name contains a `..` component"), "{err}");
    // GNU long name: a `././@LongLink` entry of type L carrying the name.
    let name = format!("{}/../../x", "b".repeat(120));
    let mut data = name.into_bytes();
    data.push(0);
    let tar_bytes = raw_tar(&[
        ("././@LongLink", b'L', "", &data),
        ("short", b'0', "", b"x"),
    ]);
    let err = unpack_err(&tar_bytes, &t.path().join("d2"));
    assert!(err.contains("name contains a `..` component"), "{err}");
    assert!(!t.path().join("escape").exists() && !t.path().join("x").exists());
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused_and_touch_nothing_outside() {
    for (name, what) in [(".wh...", "`..`"), ("a/.wh...", "`..`"), (".wh..", "`.`")] {
        let t = tempfile::tempdir().unwrap();
        // A sibling of the rootfs: `.wh...` on a flat rootfs meant "delete the parent".
        fs::write(t.path().join("SIBLING"), b"must survive").unwrap();
        let rootfs = t.path().join("rootfs");
        fs::create_dir_all(rootfs.join("a")).unwrap();
        fs::write(rootfs.join("a/file"), b"x").unwrap();
        let tar_bytes = raw_tar(&[(name, b'0', "", b"")]);
        let err = apply_layer(&tar_bytes[..], &rootfs, &UnpackOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("whiteout of `.` or `..`"),
            "{name} ({what}): {err}"
        );
        assert_eq!(fs::read(t.path().join("SIBLING")).unwrap(), b"must survive");
        assert_eq!(fs::read(rootfs.join("a/file")).unwrap(), b"x", "{name}");
        let dest = t.path().join("layerdir");
        assert!(
            unpack_err(&tar_bytes, &dest).contains("whiteout of"),
            "{name}"
        );
    }
}
