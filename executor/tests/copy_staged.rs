//! COPY staged as a metadata tree (`stage_contents`): placeholders instead of bytes, the
//! layer written from the sources, and `staged::materialize` giving back exactly the tree a
//! plain copy writes.

mod copy_support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use copy_support::*;
use kiln_executor::copy::{CopyRequest, SourceSpec, copy_into_layer};
use kiln_executor::layered::LayeredFs;
use kiln_executor::staged;
use kiln_image::{LayerOptions, write_layer, write_layer_with};

fn context(fx: &Fixture) {
    let ctx = fx.ctx();
    write(&ctx, "app/main.sh", "#!/bin/sh\necho hi\n", 0o755);
    write(&ctx, "app/conf/a.conf", "a=1\n", 0o600);
    write(&ctx, "app/conf/b.conf", "b=2\n", 0o644);
    write(&ctx, "app/empty", "", 0o644);
    mkdir(&ctx, "app/var/cache", 0o750);
    symlink(&ctx, "app/link", "conf/a.conf");
    fs::hard_link(ctx.join("app/conf/b.conf"), ctx.join("app/b-again")).unwrap();
    xattr::set(ctx.join("app/main.sh"), "user.kiln.test", b"v").unwrap();
}

fn plain() -> LayerOptions {
    LayerOptions {
        compression: kiln_image::Compression::None,
        source_date_epoch: None,
        level: None,
        reuse: None,
        xattr_free: None,
    }
}

#[test]
fn staged_copy_writes_placeholders_and_the_same_layer() {
    let fx = Fixture::new();
    context(&fx);
    let mut req = req(&fx, &["app"], "/srv/", LayeredFs::new(Vec::new()));
    req.chown = Some("7:8".into());

    let real = fx.out();
    copy_into_layer(&req, &real).unwrap();
    req.stage_contents = true;
    let tree_dir = fx.out();
    let report = copy_into_layer(&req, &tree_dir).unwrap();

    // Every regular file is an empty placeholder; hardlinked names share one entry.
    let main = fs::symlink_metadata(tree_dir.join("srv/main.sh")).unwrap();
    assert_eq!(main.len(), 0);
    assert_eq!(
        (main.uid(), main.gid(), main.mode() & 0o7777),
        (7, 8, 0o755)
    );
    assert_eq!(
        report.content.len(),
        4,
        "main.sh, a.conf, b.conf (twice linked), empty"
    );
    assert_eq!(
        report.bytes,
        ("#!/bin/sh\necho hi\n".len() + "a=1\n".len() + "b=2\n".len()) as u64
    );

    let want = write_layer(&real, std::io::sink(), &plain()).unwrap();
    let got = write_layer_with(&tree_dir, std::io::sink(), &plain(), &report.content).unwrap();
    assert_eq!(got.diff_id, want.diff_id);

    let snapshot = fx.out();
    let n = staged::materialize(&tree_dir, &report.content, &snapshot).unwrap();
    assert_eq!(n, report.bytes);
    assert_eq!(tree(&snapshot), tree(&real));
    let again = write_layer(&snapshot, std::io::sink(), &plain()).unwrap();
    assert_eq!(
        again.diff_id, want.diff_id,
        "mtimes, xattrs and links survive"
    );
    assert_eq!(
        xattr::get(snapshot.join("srv/main.sh"), "user.kiln.test").unwrap(),
        Some(b"v".to_vec())
    );
}

#[test]
fn a_real_file_replacing_a_placeholder_keeps_its_own_bytes() {
    let fx = Fixture::new();
    let ctx = fx.ctx();
    write(&ctx, "x", "from the context\n", 0o644);
    let mut req = CopyRequest::new(
        vec![
            SourceSpec::Path("x".into()),
            SourceSpec::Inline {
                name: "x".into(),
                content: b"from the heredoc\n".to_vec(),
            },
        ],
        fx.ctx_root(),
        "/d/",
        LayeredFs::new(Vec::new()),
    );
    req.stage_contents = true;
    let tree_dir = fx.out();
    let report = copy_into_layer(&req, &tree_dir).unwrap();
    let snapshot = fx.out();
    staged::materialize(&tree_dir, &report.content, &snapshot).unwrap();
    assert_eq!(
        fs::read_to_string(snapshot.join("d/x")).unwrap(),
        "from the heredoc\n"
    );
    let real = fx.out();
    req.stage_contents = false;
    copy_into_layer(&req, &real).unwrap();
    // The heredoc file and /d/ are made at copy time: the two copies may straddle a second.
    let clamped = LayerOptions {
        source_date_epoch: Some(0),
        ..plain()
    };
    let want = write_layer(&real, std::io::sink(), &clamped).unwrap();
    let got = write_layer_with(&tree_dir, std::io::sink(), &clamped, &report.content).unwrap();
    assert_eq!(got.diff_id, want.diff_id);
}

#[test]
fn a_source_edited_after_staging_fails_the_layer_and_the_snapshot() {
    let fx = Fixture::new();
    context(&fx);
    let mut req = req(&fx, &["app"], "/srv/", LayeredFs::new(Vec::new()));
    req.stage_contents = true;
    let tree_dir = fx.out();
    let report = copy_into_layer(&req, &tree_dir).unwrap();
    // Same size, new bytes: only the change time tells.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(fx.ctx().join("app/conf/a.conf"), "a=9\n").unwrap();

    let err = write_layer_with(&tree_dir, std::io::sink(), &plain(), &report.content)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.conf") && err.contains("changed during the build"),
        "{err}"
    );
    let err = staged::materialize(&tree_dir, &report.content, &fx.out())
        .unwrap_err()
        .to_string();
    assert!(err.contains("changed during the build"), "{err}");
}

#[test]
fn add_never_stages() {
    let fx = Fixture::new();
    context(&fx);
    let mut req = req(&fx, &["app/conf"], "/c/", LayeredFs::new(Vec::new()));
    req.add = true;
    req.stage_contents = true;
    let out = fx.out();
    let report = copy_into_layer(&req, &out).unwrap();
    assert!(report.content.is_empty());
    assert_eq!(fs::read_to_string(out.join("c/a.conf")).unwrap(), "a=1\n");
}

#[test]
fn materialize_keeps_the_destination_root_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    context(&fx);
    let mut req = req(&fx, &["app"], "/srv/", LayeredFs::new(Vec::new()));
    req.stage_contents = true;
    let tree_dir = fx.out();
    fs::set_permissions(&tree_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let report = copy_into_layer(&req, &tree_dir).unwrap();
    let snapshot = fx.out();
    fs::set_permissions(&snapshot, fs::Permissions::from_mode(0o755)).unwrap();
    staged::materialize(&tree_dir, &report.content, &snapshot).unwrap();
    let mode = fs::metadata(&snapshot).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);
}
