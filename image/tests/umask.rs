//! The umask of the user running kiln never reaches layer bytes. In its own
//! test binary because the umask is process-wide.

use kiln_image::layer::{Compression, LayerOptions, UnpackOptions, unpack_layer, write_layer};

fn raw_tar(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_mode(if *kind == b'5' { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(1000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn relayer(umask: u32) -> String {
    let t = tempfile::tempdir().unwrap();
    // No entries for `a/` or `a/b/`: the unpacker makes those parents itself.
    let tar_bytes = raw_tar(&[
        ("a/b/c", b'0', b"c"),
        ("d/", b'5', b""),
        ("d/e", b'0', b"e"),
    ]);
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
    unpack_layer(&tar_bytes[..], t.path(), &UnpackOptions::default()).unwrap();
    rustix::process::umask(old);
    let opts = LayerOptions {
        compression: Compression::Gzip,
        source_date_epoch: Some(0),
        level: None,
        reuse: None,
        xattr_free: None,
    };
    write_layer(t.path(), std::io::sink(), &opts)
        .unwrap()
        .digest
}

#[test]
fn unpacking_under_a_strict_umask_gives_the_same_layer() {
    assert_eq!(relayer(0o077), relayer(0o022));
    assert_eq!(relayer(0o027), relayer(0o000));
}
