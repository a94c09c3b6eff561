//! The layered view (`LayeredFs`) on real layer directories: whiteouts, opaque directories,
//! merged sorted listings, top-most host paths, symlink resolution confined to the view,
//! loops, file reads, user/group lookup and materialize.

mod copy_support;

use std::os::unix::fs::MetadataExt;

use copy_support::*;
use kiln_executor::copy::{lookup_group, lookup_user};
use kiln_executor::layered::{FileKind, LayeredError, LayeredFs};

fn whiteout(dir: &std::path::Path, rel: &str) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join(rel),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
}

fn stack(fx: &Fixture) -> LayeredFs {
    let l0 = fx.layer("0");
    write(
        &l0,
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n",
        0o644,
    );
    write(&l0, "etc/group", "root:x:0:\nwww:x:34:\n", 0o644);
    write(&l0, "a/one", "1", 0o644);
    write(&l0, "a/two", "2", 0o644);
    write(&l0, "opq/old", "old", 0o644);
    write(&l0, "b/x", "lower x", 0o644);
    let l1 = fx.layer("1");
    write(&l1, "a/three", "3", 0o644);
    whiteout(&l1, "a/one");
    mkdir(&l1, "opq", 0o755);
    xattr::set(l1.join("opq"), "user.overlay.opaque", b"y").unwrap();
    write(&l1, "opq/new", "new", 0o644);
    write(&l1, "b/x", "upper x", 0o600);
    symlink(&l1, "abs", "/a");
    symlink(&l1, "esc", "../../../../a/two");
    symlink(&l1, "loop1", "loop2");
    symlink(&l1, "loop2", "loop1");
    LayeredFs::new(vec![l0, l1])
}

fn names(fs: &LayeredFs, p: &str) -> Vec<String> {
    fs.read_dir(p)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect()
}

#[test]
fn whiteouts_hide_lower_files_and_listings_merge_sorted() {
    let fx = Fixture::new();
    let fs = stack(&fx);
    assert!(fs.metadata("/a/one").unwrap().is_none());
    assert_eq!(names(&fs, "/a"), ["three", "two"]);
    assert_eq!(
        names(&fs, "/"),
        ["a", "abs", "b", "esc", "etc", "loop1", "loop2", "opq"]
    );
}

#[test]
fn opaque_directories_hide_everything_below() {
    let fx = Fixture::new();
    let fs = stack(&fx);
    assert_eq!(names(&fs, "/opq"), ["new"]);
    assert!(fs.metadata("/opq/old").unwrap().is_none());
}

#[test]
fn metadata_reports_the_top_most_copy() {
    let fx = Fixture::new();
    let fs = stack(&fx);
    let e = fs.metadata("/b/x").unwrap().unwrap();
    assert_eq!((e.layer, e.kind, e.mode()), (1, FileKind::File, 0o600));
    assert_eq!(e.host_path, fx.path("layers/1/b/x"));
    assert_eq!(fs.read_file("/b/x").unwrap(), b"upper x");
    // lstat semantics: the symlink itself; stat follows it.
    assert_eq!(
        fs.metadata("/abs").unwrap().unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(fs.stat("/abs").unwrap().unwrap().kind, FileKind::Dir);
}

#[test]
fn symlinks_resolve_inside_the_view_and_loops_are_errors() {
    let fx = Fixture::new();
    let fs = stack(&fx);
    assert_eq!(fs.resolve("/abs/two", true).unwrap(), "/a/two");
    assert_eq!(fs.resolve("/esc", true).unwrap(), "/a/two");
    assert_eq!(fs.resolve("/esc", false).unwrap(), "/esc");
    assert_eq!(fs.resolve("../../abs/../b/./x", true).unwrap(), "/b/x");
    assert_eq!(fs.resolve("/missing/dir", true).unwrap(), "/missing/dir");
    assert_eq!(fs.read_file("/esc").unwrap(), b"2");
    let err = fs.resolve("/loop1", true).unwrap_err();
    assert!(matches!(err, LayeredError::SymlinkLoop { .. }));
    assert_eq!(
        err.to_string(),
        "resolving /loop1: too many levels of symbolic links"
    );
    assert_eq!(
        fs.read_file("/nope").unwrap_err().to_string(),
        "/nope: no such file or directory"
    );
}

#[test]
fn users_and_groups_are_read_from_the_view() {
    let fx = Fixture::new();
    let fs = stack(&fx);
    assert_eq!(lookup_user(&fs, "web").unwrap(), Some((33, 34)));
    assert_eq!(lookup_user(&fs, "nobody").unwrap(), None);
    assert_eq!(lookup_group(&fs, "www").unwrap(), Some(34));
    assert_eq!(lookup_group(&LayeredFs::new(vec![]), "www").unwrap(), None);
}

#[test]
fn materialize_flattens_the_view() {
    let fx = Fixture::new();
    let fs = stack(&fx);
    let l2 = fx.layer("2");
    write(&l2, "h/a", "hl", 0o640);
    chown(&l2, "h/a", 5, 6);
    std::fs::hard_link(l2.join("h/a"), l2.join("h/b")).unwrap();
    let fs = fs.with_top(l2);
    let dest = fx.path("flat");
    fs.materialize(&dest).unwrap();
    let t = tree(&dest);
    let want = [
        "d /a 0755 0:0",
        "f /a/three 0644 0:0 3",
        "f /a/two 0644 0:0 2",
        "l /abs 0:0 -> /a",
        "d /b 0755 0:0",
        "f /b/x 0600 0:0 upper x",
        "l /esc 0:0 -> ../../../../a/two",
        "d /etc 0755 0:0",
        "f /etc/group 0644 0:0 root:x:0:\nwww:x:34:\n",
        "f /etc/passwd 0644 0:0 root:x:0:0::/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n",
        "d /h 0755 0:0",
        "f /h/a 0640 5:6 hl",
        "h /h/b = /h/a",
        "l /loop1 0:0 -> loop2",
        "l /loop2 0:0 -> loop1",
        "d /opq 0755 0:0",
        "f /opq/new 0644 0:0 new",
    ];
    assert_eq!(t, lines(&want));
    // Overlay markers are not file content.
    assert_eq!(
        xattr::get(dest.join("opq"), "user.overlay.opaque").unwrap(),
        None
    );
    let m = std::fs::metadata(fx.path("layers/1/b/x")).unwrap();
    assert_eq!(
        std::fs::metadata(dest.join("b/x")).unwrap().mtime(),
        m.mtime()
    );
}

#[test]
fn copy_dot_to_root_merges_into_the_image_root() {
    let fx = Fixture::new();
    write(&fx.ctx(), "app/main", "m", 0o755);
    let l = fx.layer("base");
    mkdir(&l, "app", 0o700);
    write(&l, "app/old", "o", 0o644);
    let t = run_ok(&fx, &req(&fx, &["."], "/", LayeredFs::new(vec![l])));
    assert_eq!(t, lines(&["d /app 0755 0:0", "f /app/main 0755 0:0 m"]));
}
