//! Context checksums: what counts (content, mode, symlink target, names), what does not
//! (mtime), .dockerignore, clamping, wildcards, the stat cache and error texts.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use filetime::FileTime;
use kiln_context::{
    ChecksumOptions, Context, ContextError, ContextFileType, IgnoreMatcher, diff_entries,
    resolve_in_root,
};

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
}

/// Sets mtime well in the past so the stat cache treats the file as settled.
fn age(root: &Path, rel: &str, secs: i64) {
    filetime::set_symlink_file_times(
        root.join(rel),
        FileTime::from_unix_time(secs, 0),
        FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

/// Waits out the stat cache's racy window: a file is cached once its mtime and ctime are
/// older than that (`age` sets the mtime, which makes the ctime now).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

fn ctx(root: &Path) -> Context {
    Context::open(root, IgnoreMatcher::empty(), None).unwrap()
}

fn copy_opts() -> ChecksumOptions {
    ChecksumOptions {
        follow_links: true,
        wildcard: true,
        excludes: vec![],
    }
}

fn digest(c: &Context, pattern: &str) -> String {
    c.checksum(pattern, &copy_opts()).unwrap().digest
}

/// [`sample`] with its files aged and out of the racy window: the stat cache keeps them.
fn settled_sample() -> tempfile::TempDir {
    let d = sample();
    for f in ["src/main.rs", "src/lib/util.rs", "README.md"] {
        age(d.path(), f, 1_000_000);
    }
    settle();
    d
}

fn sample() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "src/main.rs", "fn main() {}\n");
    write(d.path(), "src/lib/util.rs", "pub fn f() {}\n");
    write(d.path(), "README.md", "# hi\n");
    d
}

#[test]
fn checksum_ignores_mtime_and_atime() {
    let d = sample();
    let c = ctx(d.path());
    let before = digest(&c, "src");
    age(d.path(), "src/main.rs", 1_000_000);
    age(d.path(), "src/lib", 2_000_000);
    assert_eq!(digest(&c, "src"), before);
    assert_eq!(digest(&ctx(d.path()), "src"), before);
}

#[test]
fn checksum_changes_with_content_mode_and_symlink_target() {
    let d = sample();
    symlink("main.rs", d.path().join("src/link")).unwrap();
    let c = ctx(d.path());
    let base = digest(&c, "src");

    write(d.path(), "src/main.rs", "fn main() { }\n");
    let content = digest(&c, "src");
    assert_ne!(content, base);

    fs::set_permissions(
        d.path().join("src/main.rs"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mode = digest(&c, "src");
    assert_ne!(mode, content);

    fs::remove_file(d.path().join("src/link")).unwrap();
    symlink("lib/util.rs", d.path().join("src/link")).unwrap();
    assert_ne!(digest(&c, "src"), mode);
}

#[test]
fn checksum_changes_when_a_file_is_renamed_added_or_removed() {
    let d = sample();
    let c = ctx(d.path());
    let base = digest(&c, "src");
    fs::rename(d.path().join("src/main.rs"), d.path().join("src/main2.rs")).unwrap();
    let renamed = digest(&c, "src");
    assert_ne!(renamed, base);
    write(d.path(), "src/new.rs", "");
    let added = digest(&c, "src");
    assert_ne!(added, renamed);
    fs::remove_file(d.path().join("src/new.rs")).unwrap();
    assert_eq!(digest(&c, "src"), renamed);
}

#[test]
fn entries_record_path_kind_mode_target_and_sha() {
    let d = sample();
    symlink("../README.md", d.path().join("src/readme")).unwrap();
    fs::set_permissions(
        d.path().join("src/main.rs"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let sum = ctx(d.path()).checksum("src/", &copy_opts()).unwrap();
    let paths: Vec<&str> = sum.files.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "src",
            "src/lib",
            "src/lib/util.rs",
            "src/main.rs",
            "src/readme"
        ]
    );
    let main = &sum.files[3];
    assert_eq!(main.kind, ContextFileType::File);
    assert_eq!(main.mode, 0o640);
    assert_eq!(main.size, 13);
    assert_eq!(
        main.sha256.as_deref(),
        Some(kiln_base::digest::sha256_hex(b"fn main() {}\n").as_str())
    );
    let link = &sum.files[4];
    assert_eq!(link.kind, ContextFileType::Symlink);
    assert_eq!(link.link_target.as_deref(), Some("../README.md"));
    assert_eq!(link.sha256, None);
    assert_eq!(sum.sources, ["src"]);
}

#[test]
fn missing_source_error_names_the_pattern() {
    let d = sample();
    let err = ctx(d.path())
        .checksum("nope.txt", &copy_opts())
        .unwrap_err();
    assert!(matches!(err, ContextError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "file not found in build context or excluded by .dockerignore: stat nope.txt: file does not exist"
    );
}

#[test]
fn dockerignore_excludes_files_and_makes_them_not_found() {
    let d = sample();
    write(d.path(), "src/debug.log", "noise");
    write(d.path(), "src/lib/keep.log", "kept");
    let pm = IgnoreMatcher::parse("**/*.log\n!src/lib/keep.log\nREADME.md\n").unwrap();
    let c = Context::open(d.path(), pm, None).unwrap();
    let sum = c.checksum(".", &copy_opts()).unwrap();
    let paths: Vec<&str> = sum.files.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".",
            "src",
            "src/lib",
            "src/lib/keep.log",
            "src/lib/util.rs",
            "src/main.rs"
        ]
    );
    // Changing an ignored file changes nothing.
    write(d.path(), "src/debug.log", "other noise");
    assert_eq!(c.checksum(".", &copy_opts()).unwrap().digest, sum.digest);
    let err = c.checksum("README.md", &copy_opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file not found in build context or excluded by .dockerignore: stat README.md: file does not exist"
    );
    // A wildcard silently skips excluded matches.
    let sum = c.checksum("*.md", &copy_opts()).unwrap();
    assert!(sum.files.is_empty());
}

#[test]
fn excluded_directory_with_reincluded_file_keeps_only_that_file() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "docs/a.md", "a");
    write(d.path(), "docs/README.md", "r");
    write(d.path(), "docs/sub/b.md", "b");
    let pm = IgnoreMatcher::parse("docs\n!docs/README.md\n").unwrap();
    let c = Context::open(d.path(), pm, None).unwrap();
    let sum = c.checksum("docs", &copy_opts()).unwrap();
    let paths: Vec<&str> = sum.files.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(paths, ["docs", "docs/README.md"]);
    // Excluded directory with nothing re-included: skipped in a walk.
    let pm = IgnoreMatcher::parse("docs\n").unwrap();
    let c = Context::open(d.path(), pm, None).unwrap();
    let sum = c.checksum(".", &copy_opts()).unwrap();
    assert_eq!(sum.files.len(), 1);
    assert!(matches!(
        c.checksum("docs/a.md", &copy_opts()),
        Err(ContextError::NotFound { .. })
    ));
}

#[test]
fn sources_are_clamped_to_the_context() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("ctx");
    write(&root, "x", "inside x");
    write(outer.path(), "x", "outside x");
    write(&root, "etc/passwd", "fake passwd");
    let c = ctx(&root);
    let inside = digest(&c, "x");
    assert_eq!(digest(&c, "../x"), inside);
    assert_eq!(digest(&c, "../../../x"), inside);
    assert_eq!(digest(&c, "/x"), inside);
    let sum = c.checksum("/etc/passwd", &copy_opts()).unwrap();
    assert_eq!(
        sum.files[0].sha256.as_deref(),
        Some(kiln_base::digest::sha256_hex(b"fake passwd").as_str())
    );
    fs::remove_dir_all(root.join("etc")).unwrap();
    assert!(matches!(
        c.checksum("/etc/passwd", &copy_opts()),
        Err(ContextError::NotFound { .. })
    ));
}

#[test]
fn symlinks_resolve_with_the_context_as_root() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("ctx");
    write(&root, "file", "inside");
    write(outer.path(), "file", "outside");
    symlink("/", root.join("rootlink")).unwrap();
    symlink("../../..", root.join("up")).unwrap();
    symlink("/file", root.join("abs")).unwrap();
    let c = ctx(&root);
    let inside = kiln_base::digest::sha256_hex(b"inside");
    for p in [
        "rootlink/file",
        "up/file",
        "abs",
        "rootlink/rootlink/up/file",
    ] {
        let sum = c.checksum(p, &copy_opts()).unwrap();
        assert_eq!(sum.files[0].sha256.as_deref(), Some(inside.as_str()), "{p}");
        assert_eq!(sum.sources, ["file"], "{p}");
    }
    assert_eq!(
        resolve_in_root(&root, "rootlink/etc/passwd").unwrap(),
        root.join("etc/passwd")
    );
    assert_eq!(
        resolve_in_root(&root, "../../etc").unwrap(),
        root.join("etc")
    );
    // Without following, a symlink source is hashed as a link.
    let sum = c
        .checksum(
            "abs",
            &ChecksumOptions {
                follow_links: false,
                ..copy_opts()
            },
        )
        .unwrap();
    assert_eq!(sum.files[0].kind, ContextFileType::Symlink);
    assert_eq!(sum.files[0].link_target.as_deref(), Some("/file"));
}

#[test]
fn symlink_loops_are_an_error() {
    let d = tempfile::tempdir().unwrap();
    symlink("b", d.path().join("a")).unwrap();
    symlink("a", d.path().join("b")).unwrap();
    let err = ctx(d.path()).checksum("a", &copy_opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "too many levels of symbolic links resolving \"a\""
    );
}

#[test]
fn wildcards_match_per_component_and_may_match_nothing() {
    let d = sample();
    write(d.path(), "a.txt", "a");
    write(d.path(), "b.txt", "b");
    write(d.path(), "dir/c.txt", "c");
    let c = ctx(d.path());
    let sum = c.checksum("*.txt", &copy_opts()).unwrap();
    assert_eq!(sum.sources, ["a.txt", "b.txt"]);
    let sum = c.checksum("*/*.txt", &copy_opts()).unwrap();
    assert_eq!(sum.sources, ["dir/c.txt"]);
    let sum = c.checksum("src/[lm]*", &copy_opts()).unwrap();
    assert_eq!(sum.sources, ["src/lib", "src/main.rs"]);
    let sum = c.checksum("*.nothing", &copy_opts()).unwrap();
    assert!(sum.sources.is_empty() && sum.files.is_empty());
    // With wildcards off the pattern is a literal name.
    let err = c
        .checksum(
            "*.txt",
            &ChecksumOptions {
                wildcard: false,
                ..copy_opts()
            },
        )
        .unwrap_err();
    assert!(matches!(err, ContextError::NotFound { .. }));
    let err = c.checksum("[", &copy_opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid source pattern \"[\": syntax error in pattern \"[\""
    );
}

#[test]
fn only_selected_files_are_read() {
    let d = sample();
    for i in 0..10 {
        write(d.path(), &format!("other/{i}"), "x");
    }
    let sum = ctx(d.path()).checksum("src/main.rs", &copy_opts()).unwrap();
    assert_eq!(sum.stats.files_hashed, 1);
    let sum = ctx(d.path()).checksum("src", &copy_opts()).unwrap();
    assert_eq!(sum.stats.files_hashed, 2);
}

#[test]
fn exclude_option_filters_relative_to_the_source() {
    let d = sample();
    write(d.path(), "src/notes.md", "n");
    let c = ctx(d.path());
    let opts = ChecksumOptions {
        excludes: vec!["*.md".into()],
        ..copy_opts()
    };
    let with = c.checksum("src", &opts).unwrap();
    assert!(with.files.iter().all(|e| e.rel_path != "src/notes.md"));
    assert_eq!(with.files.len(), 4);
    let sum = c.checksum("*", &opts).unwrap();
    assert!(sum.files.iter().all(|e| !e.rel_path.ends_with(".md")));
    assert!(matches!(
        c.checksum(
            "x",
            &ChecksumOptions {
                excludes: vec!["!".into()],
                ..copy_opts()
            }
        ),
        Err(ContextError::Exclude(_))
    ));
}

#[test]
fn stat_cache_hit_avoids_rereading_and_survives_reopen() {
    let d = settled_sample();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_path = cache_dir.path().join("statcache/ctx");
    let c = Context::open(d.path(), IgnoreMatcher::empty(), Some(cache_path.clone())).unwrap();
    let cold = c.checksum(".", &copy_opts()).unwrap();
    assert_eq!(cold.stats.files_hashed, 3);
    assert_eq!(cold.stats.cache_hits, 0);
    let warm = c.checksum(".", &copy_opts()).unwrap();
    assert_eq!((warm.stats.files_hashed, warm.stats.cache_hits), (0, 3));
    assert_eq!(warm.digest, cold.digest);
    assert!(c.save_stat_cache().unwrap());
    assert!(!c.save_stat_cache().unwrap(), "nothing new to write");

    let c2 = Context::open(d.path(), IgnoreMatcher::empty(), Some(cache_path.clone())).unwrap();
    let reopened = c2.checksum(".", &copy_opts()).unwrap();
    assert_eq!(
        (reopened.stats.files_hashed, reopened.stats.cache_hits),
        (0, 3)
    );
    assert_eq!(reopened.digest, cold.digest);

    // Same size, mtime put back: the ctime still differs, so the file is re-read.
    write(d.path(), "src/main.rs", "fn main() {1}\n");
    assert_eq!(
        fs::metadata(d.path().join("src/main.rs")).unwrap().len(),
        14
    );
    age(d.path(), "src/main.rs", 1_000_000);
    let changed = c2.checksum(".", &copy_opts()).unwrap();
    assert_eq!(
        (changed.stats.files_hashed, changed.stats.cache_hits),
        (1, 2)
    );
    assert_ne!(changed.digest, cold.digest);
}

fn set_xattr(root: &Path, rel: &str, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(root.join(rel), name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// BuildKit's content hash covers a file's xattrs (not `security.*` but the capability,
/// not ACLs): a COPY must run again when one is set, changed or removed, stat cache or not.
#[test]
fn checksum_changes_with_xattrs_of_files_and_directories_through_the_stat_cache() {
    let d = settled_sample();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_path = cache_dir.path().join("statcache/ctx");
    let open =
        || Context::open(d.path(), IgnoreMatcher::empty(), Some(cache_path.clone())).unwrap();
    let c = open();
    let plain = c.checksum("src", &copy_opts()).unwrap();
    let main_sha = |sum: &kiln_context::Checksum| {
        sum.files
            .iter()
            .find(|e| e.rel_path == "src/main.rs")
            .and_then(|e| e.sha256.clone())
            .unwrap()
    };
    // Without xattrs, a file's digest is its content's.
    let content: String = <sha2::Sha256 as sha2::Digest>::digest(b"fn main() {}\n")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(main_sha(&plain), content);
    assert!(c.save_stat_cache().unwrap());

    let mut seen = vec![plain.digest.clone()];
    let mut check = |what: &str, sum: kiln_context::Checksum| {
        assert!(
            !seen.contains(&sum.digest),
            "{what}: the checksum did not change"
        );
        seen.push(sum.digest);
    };
    set_xattr(d.path(), "src/main.rs", "user.kiln.test", b"1");
    let c = open();
    let with_one = c.checksum("src", &copy_opts()).unwrap();
    assert_eq!(
        with_one.stats.files_hashed, 1,
        "the stat cache was used for the changed file"
    );
    assert_ne!(main_sha(&with_one), main_sha(&plain));
    // Set just now, within the racy window of its ctime: not cached.
    assert!(!c.save_stat_cache().unwrap());
    check("a file's xattr set", with_one);
    set_xattr(d.path(), "src/main.rs", "user.kiln.test", b"2");
    check(
        "a file's xattr changed",
        open().checksum("src", &copy_opts()).unwrap(),
    );
    set_xattr(d.path(), "src/lib", "user.kiln.test", b"1");
    check(
        "a directory's xattr set",
        open().checksum("src", &copy_opts()).unwrap(),
    );
    rustix::fs::lremovexattr(d.path().join("src/lib"), "user.kiln.test").unwrap();
    rustix::fs::lremovexattr(d.path().join("src/main.rs"), "user.kiln.test").unwrap();
    let removed = open().checksum("src", &copy_opts()).unwrap();
    assert_eq!(removed.digest, plain.digest, "every xattr removed");
}

/// A COPY makes the names it copies of one inode hard links again, so two names of one
/// file and two files alike are different sources; a name whose other names are not
/// selected is a file like any other.
#[test]
fn checksum_changes_when_files_become_hard_links() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "src/a.txt", "same\n");
    write(d.path(), "src/b.txt", "same\n");
    write(d.path(), "other/c.txt", "same\n");
    let c = ctx(d.path());
    let apart = digest(&c, "src");
    fs::remove_file(d.path().join("src/b.txt")).unwrap();
    fs::hard_link(d.path().join("src/a.txt"), d.path().join("src/b.txt")).unwrap();
    let linked = digest(&c, "src");
    assert_ne!(linked, apart, "two names of one file");
    // A third name outside the selection changes nothing.
    fs::remove_file(d.path().join("other/c.txt")).unwrap();
    fs::hard_link(d.path().join("src/a.txt"), d.path().join("other/c.txt")).unwrap();
    assert_eq!(digest(&c, "src"), linked);
    // Only one name selected: a file.
    let alone = digest(&c, "src/a.txt");
    fs::remove_file(d.path().join("src/b.txt")).unwrap();
    fs::remove_file(d.path().join("other/c.txt")).unwrap();
    write(d.path(), "src/b.txt", "same\n");
    assert_eq!(digest(&c, "src"), apart);
    assert_eq!(digest(&c, "src/a.txt"), alone);
}

#[test]
fn same_size_rewrite_with_restored_mtime_is_detected() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "f", "aaaa");
    age(d.path(), "f", 1_000_000);
    let c = ctx(d.path());
    let a = digest(&c, "f");
    write(d.path(), "f", "bbbb");
    age(d.path(), "f", 1_000_000);
    assert_ne!(digest(&c, "f"), a);
}

#[test]
fn freshly_modified_files_are_not_cached() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "f", "new");
    let c = ctx(d.path());
    c.checksum("f", &copy_opts()).unwrap();
    let again = c.checksum("f", &copy_opts()).unwrap();
    assert_eq!(again.stats.files_hashed, 1, "mtime within the racy window");
}

#[test]
fn corrupt_stat_cache_is_ignored() {
    let d = sample();
    age(d.path(), "README.md", 1_000_000);
    settle();
    let cache_dir = tempfile::tempdir().unwrap();
    let path = cache_dir.path().join("sc");
    fs::write(&path, b"KILNSTAT\x01\ngarbage that is not a cache").unwrap();
    let c = Context::open(d.path(), IgnoreMatcher::empty(), Some(path.clone())).unwrap();
    let sum = c.checksum("README.md", &copy_opts()).unwrap();
    assert_eq!(sum.stats.files_hashed, 1);
    assert!(c.save_stat_cache().unwrap());
    let c = Context::open(d.path(), IgnoreMatcher::empty(), Some(path)).unwrap();
    assert_eq!(
        c.checksum("README.md", &copy_opts())
            .unwrap()
            .stats
            .cache_hits,
        1
    );
}

#[test]
fn diff_entries_names_what_changed() {
    let d = sample();
    symlink("main.rs", d.path().join("src/link")).unwrap();
    let c = ctx(d.path());
    let old = c.checksum("src", &copy_opts()).unwrap().files;
    write(d.path(), "src/main.rs", "changed");
    fs::remove_file(d.path().join("src/lib/util.rs")).unwrap();
    write(d.path(), "src/added.rs", "");
    fs::set_permissions(d.path().join("src/lib"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(d.path().join("src/link")).unwrap();
    symlink("added.rs", d.path().join("src/link")).unwrap();
    let new = c.checksum("src", &copy_opts()).unwrap().files;
    assert_eq!(
        diff_entries(&old, &new),
        [
            "added: src/added.rs",
            "changed: src/lib (mode 0755 -> 0700)",
            "removed: src/lib/util.rs",
            "changed: src/link (symlink target main.rs -> added.rs)",
            "changed: src/main.rs",
        ]
    );
    assert!(diff_entries(&new, &new).is_empty());
}

#[test]
fn context_open_requires_a_directory() {
    let d = sample();
    let err = Context::open(&d.path().join("README.md"), IgnoreMatcher::empty(), None).unwrap_err();
    assert!(err.to_string().starts_with("build context "), "{err}");
    let err = Context::open(&d.path().join("missing"), IgnoreMatcher::empty(), None).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

/// BuildKit's reading of a source with `\`: without an unescaped wildcard it is a name as
/// written (the copy reads the file `a\b` too); after a wildcard `\` escapes. The checksum
/// used to glob `a\b` (matching `ab`), a key over other bytes than the ones copied.
#[test]
fn backslash_is_a_name_without_wildcards_and_an_escape_after_one() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a\\b", "backslash\n");
    write(d.path(), "ab", "plain\n");
    write(d.path(), "d/ab", "under d\n");
    let c = ctx(d.path());
    let sum = c.checksum("a\\b", &copy_opts()).unwrap();
    let names: Vec<&str> = sum.files.iter().map(|f| f.rel_path.as_str()).collect();
    assert_eq!(names, ["a\\b"]);
    assert_eq!(
        sum.files[0].sha256.as_deref(),
        Some(kiln_base::digest::sha256_hex(b"backslash\n").as_str())
    );
    let sum = c.checksum("*/a\\b", &copy_opts()).unwrap();
    let names: Vec<&str> = sum.files.iter().map(|f| f.rel_path.as_str()).collect();
    assert_eq!(names, ["d/ab"]);
}

#[test]
fn a_deep_context_is_walked_in_order_past_the_kept_directory_fds() {
    // 120 levels: past the parallel levels and the directory fds one walker keeps, so the
    // deepest directories are opened again from the context root.
    let d = tempfile::tempdir().unwrap();
    let mut rel = String::from("top");
    for i in 0..120 {
        write(d.path(), &format!("{rel}/f"), &format!("{i}"));
        rel.push_str("/d");
    }
    // A symlink deep down is an entry, never followed.
    fs::create_dir(d.path().join(&rel)).unwrap();
    symlink("/", d.path().join(format!("{rel}/up"))).unwrap();
    let sum = ctx(d.path()).checksum("top", &copy_opts()).unwrap();
    // Sorted by name: `d` before `f` at each level, the deepest directory holds `up`.
    let mut ordered = Vec::new();
    let mut dir = String::from("top");
    ordered.push(dir.clone());
    let mut tails = Vec::new();
    for _ in 0..120 {
        ordered.push(format!("{dir}/d"));
        tails.push(format!("{dir}/f"));
        dir.push_str("/d");
    }
    ordered.push(format!("{dir}/up"));
    ordered.extend(tails.into_iter().rev());
    let paths: Vec<&str> = sum.files.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(paths, ordered);
    let deepest = sum
        .files
        .iter()
        .find(|e| e.rel_path.ends_with("/up"))
        .unwrap();
    assert_eq!(deepest.kind, ContextFileType::Symlink);
    assert_eq!(deepest.link_target.as_deref(), Some("/"));
    let f0 = sum.files.iter().find(|e| e.rel_path == "top/f").unwrap();
    assert_eq!(
        f0.sha256.as_deref(),
        Some(kiln_base::digest::sha256_hex(b"0").as_str())
    );
}

#[test]
fn a_prefetched_checksum_is_the_one_a_step_computes_and_is_taken_once() {
    let d = sample();
    let direct = ctx(d.path()).checksum("src", &copy_opts()).unwrap();
    let c = std::sync::Arc::new(ctx(d.path()));
    c.prefetch(vec![
        ("src".to_string(), copy_opts()),
        ("README.md".to_string(), copy_opts()),
    ]);
    let prefetched = c.checksum("src", &copy_opts()).unwrap();
    assert_eq!(prefetched, direct);
    // Taken: a second ask computes it again, and sees a change made meanwhile.
    write(d.path(), "src/main.rs", "fn main() { changed() }\n");
    let again = c.checksum("src", &copy_opts()).unwrap();
    assert_ne!(again.digest, direct.digest);
    assert_eq!(again.files.len(), direct.files.len());
    // Other options are another request: computed, not given the prefetched result.
    let excluded = ChecksumOptions {
        excludes: vec!["*.md".into()],
        ..copy_opts()
    };
    let readme = c.checksum("README.md", &excluded);
    assert!(readme.is_ok_and(|s| s.files.is_empty()));
    assert_eq!(
        c.checksum("README.md", &copy_opts()).unwrap().files.len(),
        1
    );
}

#[test]
fn a_failed_prefetch_gives_the_step_the_error_it_always_got() {
    let d = sample();
    let c = std::sync::Arc::new(ctx(d.path()));
    c.prefetch(vec![("missing".to_string(), copy_opts())]);
    let err = c.checksum("missing", &copy_opts()).unwrap_err();
    assert!(matches!(err, ContextError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "file not found in build context or excluded by .dockerignore: stat missing: file does not exist"
    );
}
