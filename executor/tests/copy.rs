//! COPY rules on disk: destination forms, wildcards, directories, owners, modes, symlinks
//! (in sources and in the image), hardlinks, inline sources, filters. Each test compares the
//! whole layer tree (`kind path mode uid:gid payload`). Ownership needs root (CI runs as root).

mod copy_support;

use copy_support::*;
use kiln_executor::copy::{CopyRequest, SourceRoot, SourceSpec};
use kiln_executor::layered::LayeredFs;
use std::os::unix::fs::MetadataExt;

fn scratch() -> LayeredFs {
    LayeredFs::new(Vec::new())
}

#[test]
fn file_into_dir_dest_with_trailing_slash_creates_parents_0755_root() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "hello", 0o644);
    let t = run_ok(&fx, &req(&fx, &["a.txt"], "/app/sub/", scratch()));
    assert_eq!(
        t,
        lines(&[
            "d /app 0755 0:0",
            "d /app/sub 0755 0:0",
            "f /app/sub/a.txt 0644 0:0 hello"
        ])
    );
}

#[test]
fn file_to_new_path_without_slash_is_named_by_dest() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "hello", 0o640);
    let t = run_ok(&fx, &req(&fx, &["a.txt"], "/app/b.txt", scratch()));
    assert_eq!(
        t,
        lines(&["d /app 0755 0:0", "f /app/b.txt 0640 0:0 hello"])
    );
    let t = run_ok(&fx, &req(&fx, &["a.txt"], "/app", scratch()));
    assert_eq!(t, lines(&["f /app 0640 0:0 hello"]));
}

#[test]
fn file_onto_existing_lower_dir_goes_inside_and_keeps_dir_metadata() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "hello", 0o644);
    let l = fx.layer("base");
    mkdir(&l, "etc", 0o750);
    chown(&l, "etc", 7, 8);
    let t = run_ok(&fx, &req(&fx, &["a.txt"], "/etc", LayeredFs::new(vec![l])));
    assert_eq!(
        t,
        lines(&["d /etc 0750 7:8", "f /etc/a.txt 0644 0:0 hello"])
    );
}

#[test]
fn directory_source_copies_its_contents() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "src/x", "X", 0o600);
    mkdir(&c, "src/sub", 0o700);
    write(&c, "src/sub/y", "Y", 0o755);
    let t = run_ok(&fx, &req(&fx, &["src"], "/dst", scratch()));
    assert_eq!(
        t,
        lines(&[
            "d /dst 0755 0:0",
            "f /dst/x 0600 0:0 X",
            "d /dst/sub 0700 0:0",
            "f /dst/sub/y 0755 0:0 Y"
        ])
    );
    // Trailing slash on the source changes nothing.
    let t2 = run_ok(&fx, &req(&fx, &["src/"], "/dst", scratch()));
    assert_eq!(t, t2);
}

#[test]
fn copy_dot_into_workdir_relative_dest() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a", "1", 0o644);
    write(&fx.ctx(), "d/b", "2", 0o644);
    let mut r = req(&fx, &["."], ".", scratch());
    r.workdir = "/work".into();
    let t = run_ok(&fx, &r);
    assert_eq!(
        t,
        lines(&[
            "d /work 0755 0:0",
            "f /work/a 0644 0:0 1",
            "d /work/d 0755 0:0",
            "f /work/d/b 0644 0:0 2"
        ])
    );
    let mut r = req(&fx, &["a"], "rel/", scratch());
    r.workdir = "/w".into();
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /w 0755 0:0",
            "d /w/rel 0755 0:0",
            "f /w/rel/a 0644 0:0 1"
        ])
    );
}

#[test]
fn wildcards_match_per_component_and_empty_match_is_allowed() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "a.txt", "a", 0o644);
    write(&c, "b.txt", "b", 0o644);
    write(&c, "c.md", "c", 0o644);
    write(&c, "sub/d.txt", "d", 0o644);
    let t = run_ok(&fx, &req(&fx, &["*.txt"], "/d/", scratch()));
    assert_eq!(
        t,
        lines(&[
            "d /d 0755 0:0",
            "f /d/a.txt 0644 0:0 a",
            "f /d/b.txt 0644 0:0 b"
        ])
    );
    let t = run_ok(&fx, &req(&fx, &["s?b/[d-e].txt"], "/d/", scratch()));
    assert_eq!(t, lines(&["d /d 0755 0:0", "f /d/d.txt 0644 0:0 d"]));
    let t = run_ok(&fx, &req(&fx, &["nothing*"], "/d/", scratch()));
    assert_eq!(t, Vec::<String>::new());
}

#[test]
fn several_sources_need_a_slash_dest() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "a", 0o644);
    write(&fx.ctx(), "b.txt", "b", 0o644);
    let want = "When using COPY with more than one source file, the destination must be a directory and end with a /";
    assert_eq!(
        run_err(&fx, &req(&fx, &["a.txt", "b.txt"], "/d", scratch())),
        want
    );
    assert_eq!(run_err(&fx, &req(&fx, &["*.txt"], "/d", scratch())), want);
    let mut r = req(&fx, &["a.txt", "b.txt"], "/d", scratch());
    r.add = true;
    assert_eq!(
        run_err(&fx, &r),
        "When using ADD with more than one source file, the destination must be a directory and end with a /"
    );
    // A single wildcard match is fine.
    assert_eq!(
        run_ok(&fx, &req(&fx, &["a*"], "/d", scratch())),
        lines(&["f /d 0644 0:0 a"])
    );
}

#[test]
fn missing_source_is_an_error_naming_it() {
    let fx = Fixture::new();
    fx.ctx();
    assert_eq!(
        run_err(&fx, &req(&fx, &["nope.txt"], "/d/", scratch())),
        "\"/nope.txt\": not found"
    );
    // `..` is clamped to the context root.
    assert_eq!(
        run_err(&fx, &req(&fx, &["../../x"], "/d/", scratch())),
        "\"/x\": not found"
    );
}

#[test]
fn context_owners_become_root_and_mtimes_are_kept() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "a", "1", 0o644);
    chown(&c, "a", 1234, 4321);
    filetime::set_file_mtime(
        c.join("a"),
        filetime::FileTime::from_unix_time(1_000_000, 0),
    )
    .unwrap();
    let (out, r) = run(&fx, &req(&fx, &["a"], "/a", scratch()));
    r.unwrap();
    let m = std::fs::symlink_metadata(out.join("a")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mtime()), (0, 0, 1_000_000));
}

#[test]
fn directory_mtimes_come_from_the_source_even_for_an_existing_dest() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "src/sub/f", "1", 0o644);
    let t = |s| filetime::FileTime::from_unix_time(s, 0);
    filetime::set_file_mtime(c.join("src/sub"), t(2_000_000)).unwrap();
    filetime::set_file_mtime(c.join("src"), t(3_000_000)).unwrap();
    let l = fx.layer("base");
    mkdir(&l, "app", 0o700);
    filetime::set_file_mtime(l.join("app"), t(9)).unwrap();
    let (out, r) = run(&fx, &req(&fx, &["src"], "/app", LayeredFs::new(vec![l])));
    r.unwrap();
    let mtime = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap().mtime();
    assert_eq!((mtime("app"), mtime("app/sub")), (3_000_000, 2_000_000));
    // Owner and mode of the existing destination stay the lower layer's.
    assert_eq!(
        std::fs::symlink_metadata(out.join("app")).unwrap().mode() & 0o7777,
        0o700
    );
}

#[test]
fn chown_numeric_applies_to_files_and_created_parents() {
    let fx = Fixture::new();
    write(&fx.ctx(), "src/f", "1", 0o644);
    let mut r = req(&fx, &["src"], "/a/b/", scratch());
    r.chown = Some("1000".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /a 0755 1000:1000",
            "d /a/b 0755 1000:1000",
            "f /a/b/f 0644 1000:1000 1"
        ])
    );
    r.chown = Some("1000:2000".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /a 0755 1000:2000",
            "d /a/b 0755 1000:2000",
            "f /a/b/f 0644 1000:2000 1"
        ])
    );
}

fn image_with_users(fx: &Fixture) -> LayeredFs {
    let base = fx.layer("users");
    write(
        &base,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
        0o644,
    );
    write(&base, "etc/group", "root:x:0:\nstaff:x:50:app\n", 0o644);
    LayeredFs::new(vec![base])
}

#[test]
fn chown_names_come_from_the_target_image() {
    let fx = Fixture::new();
    write(&fx.ctx(), "f", "1", 0o644);
    let target = image_with_users(&fx);
    let mut r = req(&fx, &["f"], "/f", target.clone());
    r.chown = Some("app".into());
    assert_eq!(run_ok(&fx, &r), lines(&["f /f 0644 1001:1002 1"]));
    r.chown = Some("app:staff".into());
    assert_eq!(run_ok(&fx, &r), lines(&["f /f 0644 1001:50 1"]));
    r.chown = Some("5:staff".into());
    assert_eq!(run_ok(&fx, &r), lines(&["f /f 0644 5:50 1"]));
    r.chown = Some("ghost".into());
    assert_eq!(
        run_err(&fx, &r),
        "unable to find user ghost: no matching entries in passwd file"
    );
    r.chown = Some("app:ghosts".into());
    assert_eq!(
        run_err(&fx, &r),
        "unable to find group ghosts: no matching entries in group file"
    );
    // On scratch there is no passwd file: names cannot resolve.
    let mut r = req(&fx, &["f"], "/f", scratch());
    r.chown = Some("app".into());
    assert_eq!(
        run_err(&fx, &r),
        "unable to find user app: no matching entries in passwd file"
    );
}

#[test]
fn chmod_octal_and_symbolic_apply_to_copied_entries() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "src/f", "1", 0o664);
    mkdir(&c, "src/d", 0o775);
    write(&c, "src/d/g", "2", 0o600);
    let mut r = req(&fx, &["src"], "/o", scratch());
    r.chmod = Some("0700".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /o 0755 0:0",
            "d /o/d 0700 0:0",
            "f /o/d/g 0700 0:0 2",
            "f /o/f 0700 0:0 1"
        ])
    );
    r.chmod = Some("u+x,g-w".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /o 0755 0:0",
            "d /o/d 0755 0:0",
            "f /o/d/g 0700 0:0 2",
            "f /o/f 0744 0:0 1"
        ])
    );
    r.chmod = Some("a=r".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /o 0755 0:0",
            "d /o/d 0444 0:0",
            "f /o/d/g 0444 0:0 2",
            "f /o/f 0444 0:0 1"
        ])
    );
    r.chmod = Some("8755".into());
    assert_eq!(
        run_err(&fx, &r),
        "invalid chmod parameter: '8755'. it should be octal string and between 0 and 07777"
    );
}

#[test]
fn named_symlink_source_is_followed_but_nested_symlinks_are_copied() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "real.txt", "R", 0o644);
    symlink(&c, "link", "real.txt");
    symlink(&c, "dir/l2", "../real.txt");
    symlink(&c, "dir/abs", "/etc/passwd");
    assert_eq!(
        run_ok(&fx, &req(&fx, &["link"], "/a", scratch())),
        lines(&["f /a 0644 0:0 R"])
    );
    assert_eq!(
        run_ok(&fx, &req(&fx, &["link"], "/d/", scratch())),
        lines(&["d /d 0755 0:0", "f /d/link 0644 0:0 R"])
    );
    assert_eq!(
        run_ok(&fx, &req(&fx, &["dir"], "/x/", scratch())),
        lines(&[
            "d /x 0755 0:0",
            "l /x/abs 0:0 -> /etc/passwd",
            "l /x/l2 0:0 -> ../real.txt"
        ])
    );
}

#[test]
fn symlink_source_pointing_outside_context_stays_inside() {
    let fx = Fixture::new();
    let c = fx.ctx();
    // An absolute symlink in the context resolves against the context root, never the host.
    write(&c, "etc/passwd", "context passwd", 0o644);
    symlink(&c, "evil", "/etc/passwd");
    symlink(&c, "up", "../../../../etc/passwd");
    assert_eq!(
        run_ok(&fx, &req(&fx, &["evil"], "/p", scratch())),
        lines(&["f /p 0644 0:0 context passwd"])
    );
    assert_eq!(
        run_ok(&fx, &req(&fx, &["up"], "/p", scratch())),
        lines(&["f /p 0644 0:0 context passwd"])
    );
}

#[test]
fn hardlinks_inside_a_source_stay_hardlinked() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "h/a", "same", 0o644);
    std::fs::hard_link(c.join("h/a"), c.join("h/b")).unwrap();
    assert_eq!(
        run_ok(&fx, &req(&fx, &["h"], "/h/", scratch())),
        lines(&["d /h 0755 0:0", "f /h/a 0644 0:0 same", "h /h/b = /h/a"])
    );
}

#[test]
fn dest_symlink_in_image_resolves_inside_the_layer() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "A", 0o644);
    let l = fx.layer("base");
    mkdir(&l, "srv/app", 0o755);
    mkdir(&l, "etc", 0o755);
    symlink(&l, "app", "/srv/app");
    symlink(&l, "conf", "/etc");
    symlink(&l, "up", "../../../../../etc");
    let t = LayeredFs::new(vec![l]);
    assert_eq!(
        run_ok(&fx, &req(&fx, &["a.txt"], "/app/", t.clone())),
        lines(&[
            "d /srv 0755 0:0",
            "d /srv/app 0755 0:0",
            "f /srv/app/a.txt 0644 0:0 A"
        ])
    );
    // Never the host's /etc: the image's.
    assert_eq!(
        run_ok(&fx, &req(&fx, &["a.txt"], "/conf/x", t.clone())),
        lines(&["d /etc 0755 0:0", "f /etc/x 0644 0:0 A"])
    );
    assert_eq!(
        run_ok(&fx, &req(&fx, &["a.txt"], "/up/y", t.clone())),
        lines(&["d /etc 0755 0:0", "f /etc/y 0644 0:0 A"])
    );
    // A dest that is itself a symlink to a directory puts the file inside the target.
    assert_eq!(
        run_ok(&fx, &req(&fx, &["a.txt"], "/app", t)),
        lines(&[
            "d /srv 0755 0:0",
            "d /srv/app 0755 0:0",
            "f /srv/app/a.txt 0644 0:0 A"
        ])
    );
}

#[test]
fn link_does_not_follow_lower_symlinks() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "A", 0o644);
    let l = fx.layer("base");
    mkdir(&l, "srv/app", 0o755);
    symlink(&l, "app", "/srv/app");
    let mut r = req(&fx, &["a.txt"], "/app/", LayeredFs::new(vec![l]));
    r.link = true;
    assert_eq!(
        run_ok(&fx, &r),
        lines(&["d /app 0755 0:0", "f /app/a.txt 0644 0:0 A"])
    );
}

#[test]
fn link_with_chmod_is_a_plain_copy_like_buildkit() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "A", 0o644);
    let l = fx.layer("base");
    mkdir(&l, "srv/app", 0o755);
    symlink(&l, "app", "/srv/app");
    let mut r = req(&fx, &["a.txt"], "/app/", LayeredFs::new(vec![l]));
    r.link = true;
    r.chmod = Some("600".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /srv 0755 0:0",
            "d /srv/app 0755 0:0",
            "f /srv/app/a.txt 0600 0:0 A"
        ])
    );
}

#[test]
fn existing_dirs_below_keep_or_take_metadata_like_buildkit() {
    let fx = Fixture::new();
    let c = fx.ctx();
    mkdir(&c, "src/sub", 0o750);
    write(&c, "src/sub/f", "1", 0o644);
    let l = fx.layer("base");
    mkdir(&l, "app/sub", 0o700);
    chown(&l, "app", 5, 5);
    chown(&l, "app/sub", 6, 6);
    write(&l, "app/keep", "lower", 0o644);
    // Top-level dest dir that exists keeps its metadata; a nested one takes the source's.
    let t = run_ok(&fx, &req(&fx, &["src"], "/app", LayeredFs::new(vec![l])));
    assert_eq!(
        t,
        lines(&[
            "d /app 0755 5:5",
            "d /app/sub 0750 0:0",
            "f /app/sub/f 0644 0:0 1"
        ])
    );
}

#[test]
fn file_never_replaces_a_directory_and_dir_never_replaces_a_file() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "src/conf", "file", 0o644);
    mkdir(&c, "d", 0o755);
    write(&c, "d/x", "x", 0o644);
    let l = fx.layer("base");
    mkdir(&l, "dst/conf", 0o755);
    write(&l, "file", "f", 0o644);
    let t = LayeredFs::new(vec![l]);
    assert_eq!(
        run_err(&fx, &req(&fx, &["src"], "/dst", t.clone())),
        "cannot replace to directory /dst/conf with file"
    );
    assert_eq!(
        run_err(&fx, &req(&fx, &["d"], "/file", t)),
        "cannot copy to non-directory: /file"
    );
}

#[test]
fn inline_sources_are_0644_files() {
    let fx = Fixture::new();
    fx.ctx();
    let mut r = CopyRequest::new(
        vec![SourceSpec::Inline {
            name: "EOF".into(),
            content: b"echo hi\n".to_vec(),
        }],
        fx.ctx_root(),
        "/run.sh",
        scratch(),
    );
    assert_eq!(run_ok(&fx, &r), lines(&["f /run.sh 0644 0:0 echo hi\n"]));
    r.dest = "/bin/".into();
    r.chown = Some("3:4".into());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&["d /bin 0755 3:4", "f /bin/EOF 0644 3:4 echo hi\n"])
    );
}

#[test]
fn from_stage_keeps_owners_and_honours_whiteouts() {
    let fx = Fixture::new();
    let l1 = fx.layer("s1");
    write(&l1, "out/bin", "B", 0o750);
    chown(&l1, "out/bin", 1000, 1000);
    write(&l1, "out/gone", "G", 0o644);
    let l2 = fx.layer("s2");
    mkdir(&l2, "out", 0o755);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        l2.join("out/gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    let stage = LayeredFs::new(vec![l1, l2]);
    let r = CopyRequest::new(
        vec![SourceSpec::Path("/out".into())],
        SourceRoot::Layers(stage),
        "/app/",
        scratch(),
    );
    assert_eq!(
        run_ok(&fx, &r),
        lines(&["d /app 0755 0:0", "f /app/bin 0750 1000:1000 B"])
    );
}

#[test]
fn dockerignore_filter_hides_sources() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a.txt", "a", 0o644);
    write(&fx.ctx(), "secret.txt", "s", 0o600);
    let root = fx.ctx_filtered(|p| p != "secret.txt");
    let r = CopyRequest::new(paths(&["."]), root.clone(), "/app/", scratch());
    assert_eq!(
        run_ok(&fx, &r),
        lines(&["d /app 0755 0:0", "f /app/a.txt 0644 0:0 a"])
    );
    let r = CopyRequest::new(paths(&["secret.txt"]), root, "/app/", scratch());
    assert_eq!(run_err(&fx, &r), "\"/secret.txt\": not found");
}

#[test]
fn exclude_patterns_filter_what_is_copied() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "a.txt", "a", 0o644);
    write(&c, "b.md", "b", 0o644);
    write(&c, "sub/c.md", "c", 0o644);
    write(&c, "sub/d.txt", "d", 0o644);
    let mut r = req(&fx, &["."], "/app/", scratch());
    r.excludes = vec!["**/*.md".into()];
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /app 0755 0:0",
            "f /app/a.txt 0644 0:0 a",
            "d /app/sub 0755 0:0",
            "f /app/sub/d.txt 0644 0:0 d"
        ])
    );
    let mut r = req(&fx, &["*"], "/app/", scratch());
    r.excludes = vec!["*.md".into(), "sub".into()];
    assert_eq!(
        run_ok(&fx, &r),
        lines(&["d /app 0755 0:0", "f /app/a.txt 0644 0:0 a"])
    );
}

#[test]
fn exclude_exceptions_reinclude_below_an_excluded_dir() {
    let fx = Fixture::new();
    let c = fx.ctx();
    write(&c, "src/sub/keep", "k", 0o644);
    write(&c, "src/sub/drop", "d", 0o644);
    write(&c, "src/top", "t", 0o644);
    let mut r = req(&fx, &["src"], "/app/", scratch());
    r.excludes = vec!["sub".into(), "!sub/keep".into()];
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /app 0755 0:0",
            "d /app/sub 0755 0:0",
            "f /app/sub/keep 0644 0:0 k",
            "f /app/top 0644 0:0 t"
        ])
    );
    // Patterns are relative to the named source, which itself is never excluded.
    r.excludes = vec!["src".into(), "top".into()];
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /app 0755 0:0",
            "d /app/sub 0755 0:0",
            "f /app/sub/drop 0644 0:0 d",
            "f /app/sub/keep 0644 0:0 k"
        ])
    );
}

#[test]
fn parents_keep_the_source_path_below_the_root_or_pivot() {
    let fx = Fixture::new();
    let c = fx.ctx();
    mkdir(&c, "a", 0o750);
    write(&c, "a/b/c.txt", "c", 0o644);
    write(&c, "a/d.txt", "d", 0o644);
    write(&c, "x/y.txt", "y", 0o644);
    let mut r = req(&fx, &["a/b/c.txt", "x/y.txt"], "/out/", scratch());
    r.parents = true;
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /out 0755 0:0",
            "d /out/a 0750 0:0",
            "d /out/a/b 0755 0:0",
            "f /out/a/b/c.txt 0644 0:0 c",
            "d /out/x 0755 0:0",
            "f /out/x/y.txt 0644 0:0 y",
        ])
    );
    let mut r = req(&fx, &["a/./b/c.txt"], "/out/", scratch());
    r.parents = true;
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /out 0755 0:0",
            "d /out/b 0755 0:0",
            "f /out/b/c.txt 0644 0:0 c"
        ])
    );
    let mut r = req(&fx, &["a/**/*.txt"], "/o/", scratch());
    r.parents = true;
    assert_eq!(
        run_ok(&fx, &r),
        lines(&[
            "d /o 0755 0:0",
            "d /o/a 0750 0:0",
            "d /o/a/b 0755 0:0",
            "f /o/a/b/c.txt 0644 0:0 c",
            "f /o/a/d.txt 0644 0:0 d"
        ])
    );
    let mut r = req(&fx, &["a/nope.txt"], "/o/", scratch());
    r.parents = true;
    assert_eq!(run_err(&fx, &r), "\"/a/nope.txt\": not found");
}

#[test]
fn several_sources_merge_into_one_layer() {
    let fx = Fixture::new();
    write(&fx.ctx(), "d1/x", "1", 0o644);
    write(&fx.ctx(), "d2/y", "2", 0o644);
    write(&fx.ctx(), "f", "3", 0o644);
    let rep_req = req(&fx, &["d1", "d2", "f"], "/m/", scratch());
    let (out, rep) = run(&fx, &rep_req);
    let rep = rep.unwrap();
    assert_eq!(
        tree(&out),
        lines(&[
            "d /m 0755 0:0",
            "f /m/x 0644 0:0 1",
            "f /m/y 0644 0:0 2",
            "f /m/f 0644 0:0 3"
        ])
    );
    assert!(rep.written.contains(&"/m/f".to_string()));
}
