//! `.dockerignore` semantics, table-driven from moby/patternmatcher's tests.

use kiln_context::{IgnoreMatcher, load_for};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    Fail,
    Exact,
    Inexact,
}
use Want::*;

/// moby/patternmatcher `TestMatches` (the non-Windows table).
const MATCHES: &[(&str, &str, Want)] = &[
    ("**", "file", Exact),
    ("**", "file/", Exact),
    ("**/", "file", Exact),
    ("**/", "file/", Exact),
    ("**", "/", Exact),
    ("**/", "/", Exact),
    ("**", "dir/file", Exact),
    ("**/", "dir/file", Exact),
    ("**", "dir/file/", Exact),
    ("**/", "dir/file/", Exact),
    ("**/**", "dir/file", Exact),
    ("**/**", "dir/file/", Exact),
    ("dir/**", "dir/file", Exact),
    ("dir/**", "dir/file/", Exact),
    ("dir/**", "dir/dir2/file", Exact),
    ("dir/**", "dir/dir2/file/", Exact),
    ("**/dir", "dir", Exact),
    ("**/dir", "dir/file", Inexact),
    ("**/dir2/*", "dir/dir2/file", Exact),
    ("**/dir2/*", "dir/dir2/file/", Inexact),
    ("**/dir2/**", "dir/dir2/dir3/file", Exact),
    ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
    ("**file", "file", Exact),
    ("**file", "dir/file", Exact),
    ("**/file", "dir/file", Exact),
    ("**file", "dir/dir/file", Exact),
    ("**/file", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file.txt", Exact),
    ("**/file*txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt*", "dir/dir/file.txt", Exact),
    ("**/**/*.txt", "dir/dir/file.txt", Exact),
    ("**/**/*.txt2", "dir/dir/file.txt", Fail),
    ("**/*.txt", "file.txt", Exact),
    ("**/**/*.txt", "file.txt", Exact),
    ("a**/*.txt", "a/file.txt", Exact),
    ("a**/*.txt", "a/dir/file.txt", Exact),
    ("a**/*.txt", "a/dir/dir/file.txt", Exact),
    ("a/*.txt", "a/dir/file.txt", Fail),
    ("a/*.txt", "a/file.txt", Exact),
    ("a/*.txt**", "a/file.txt", Exact),
    ("a[b-d]e", "ae", Fail),
    ("a[b-d]e", "ace", Exact),
    ("a[b-d]e", "aae", Fail),
    ("a[^b-d]e", "aze", Exact),
    (".*", ".foo", Exact),
    (".*", "foo", Fail),
    ("abc.def", "abcdef", Fail),
    ("abc.def", "abc.def", Exact),
    ("abc.def", "abcZdef", Fail),
    ("abc?def", "abcZdef", Exact),
    ("abc?def", "abcdef", Fail),
    ("**/foo/bar", "foo/bar", Exact),
    ("**/foo/bar", "dir/foo/bar", Exact),
    ("**/foo/bar", "dir/dir2/foo/bar", Exact),
    ("abc/**", "abc", Fail),
    ("abc/**", "abc/def", Exact),
    ("abc/**", "abc/def/ghi", Exact),
    ("**/.foo", ".foo", Exact),
    ("**/.foo", "bar.foo", Fail),
    ("a(b)c/def", "a(b)c/def", Exact),
    ("a(b)c/def", "a(b)c/xyz", Fail),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    ("a\\\\", "a\\", Exact),
    ("a\\*b", "a*b", Exact),
];

const MULTI: &[(&[&str], &str, Want)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", Fail),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        Exact,
    ),
    (
        &[
            "**",
            "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        ],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Fail,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Fail,
    ),
];

#[test]
fn moby_table_matches_exact() {
    for &(pattern, text, want) in MATCHES {
        let pm = IgnoreMatcher::from_patterns(&[pattern]).unwrap();
        assert_eq!(
            pm.matches_exact(text),
            want == Exact,
            "pattern={pattern:?} text={text:?}"
        );
    }
}

#[test]
fn moby_table_matches_or_parent_matches() {
    for &(pattern, text, want) in MATCHES {
        let pm = IgnoreMatcher::from_patterns(&[pattern]).unwrap();
        assert_eq!(
            pm.matches_or_parent_matches(text),
            want != Fail,
            "pattern={pattern:?} text={text:?}"
        );
    }
    for &(patterns, text, want) in MULTI {
        let pm = IgnoreMatcher::from_patterns(patterns).unwrap();
        assert_eq!(
            pm.matches_or_parent_matches(text),
            want != Fail,
            "patterns={patterns:?} text={text:?}"
        );
    }
}

/// Walk-style matching (parent results passed down) agrees with the table.
#[test]
fn moby_table_matches_using_parent_results() {
    use kiln_context::ignore::MatchInfo;
    let check = |pm: &IgnoreMatcher, text: &str, want: bool, desc: String| {
        let parent = kiln_base::gopath::dir(text);
        let mut info = MatchInfo::default();
        if parent != "." {
            let dirs: Vec<&str> = parent.split('/').collect();
            for i in 0..dirs.len() {
                info = pm.matches_with_parent(&dirs[..=i].join("/"), &info).1;
            }
        }
        assert_eq!(pm.matches_with_parent(text, &info).0, want, "{desc}");
        // Without parent information it falls back to checking parents itself.
        assert_eq!(
            pm.matches_with_parent(text, &MatchInfo::default()).0,
            want,
            "no context {desc}"
        );
    };
    for &(pattern, text, want) in MATCHES {
        let pm = IgnoreMatcher::from_patterns(&[pattern]).unwrap();
        check(
            &pm,
            text,
            want != Fail,
            format!("pattern={pattern:?} text={text:?}"),
        );
    }
    for &(patterns, text, want) in MULTI {
        let pm = IgnoreMatcher::from_patterns(patterns).unwrap();
        check(
            &pm,
            text,
            want != Fail,
            format!("patterns={patterns:?} text={text:?}"),
        );
    }
}

#[test]
fn moby_single_pattern_cases() {
    let m = |file: &str, patterns: &[&str]| {
        IgnoreMatcher::from_patterns(patterns)
            .unwrap()
            .matches(file)
    };
    assert!(m("fileutils.go", &["*"]));
    assert!(m("fileutils.go", &["*.go"]));
    assert!(m("fileutils.go", &["!fileutils.go", "*.go"]));
    assert!(!m("fileutils.go", &["*.go", "!fileutils.go"]));
    // A folder pattern followed by an exception for a file inside it.
    assert!(!m("docs/README.md", &["docs", "!docs/README.md"]));
    assert!(!m("docs/README.md", &["docs/", "!docs/README.md"]));
    assert!(!m("docs/README.md", &["docs/*", "!docs/README.md"]));
    // The context root itself is never excluded.
    assert!(!m(".", &["*.go"]));
    assert!(!m(".", &["**"]));
    assert!(!m("/any/path/there", &[]));
    // A pattern that matches a directory excludes what is below it.
    assert!(m("node_modules/a/b.js", &["node_modules"]));
    assert!(m("a/b/c.txt", &["a/b"]));
}

#[test]
fn malformed_and_illegal_patterns_are_errors_with_text() {
    let err = IgnoreMatcher::from_patterns(&["!"]).unwrap_err();
    assert_eq!(err.to_string(), "illegal exclusion pattern: \"!\"");
    let err = IgnoreMatcher::from_patterns(&["["]).unwrap_err();
    assert_eq!(err.to_string(), "syntax error in pattern \"[\"");
    assert!(IgnoreMatcher::parse("ok\n[-x]\n").is_err());
    assert!(IgnoreMatcher::parse("!\n").is_err());
}

#[test]
fn pattern_cleanup_trims_spaces_and_counts_exceptions() {
    let pm = IgnoreMatcher::from_patterns(&["docs", "config", ""]).unwrap();
    assert!(!pm.has_exclusions());
    let pm = IgnoreMatcher::from_patterns(&["docs", "  !docs/README.md  "]).unwrap();
    assert!(pm.has_exclusions());
    assert!(!pm.matches("docs/README.md"));
    assert!(pm.matches("docs/other.md"));
}

#[test]
fn ignore_file_rules_bom_comments_leading_slash_and_clean() {
    let text = "\u{feff}# a comment\n  # not a comment: matches a file named '# not a comment'\n\n/build/\n./tmp/../cache//\n*.log\r\n!keep.log\n  \n";
    let pm = IgnoreMatcher::parse(text).unwrap();
    assert!(pm.matches("build/out.o"));
    assert!(pm.matches("build"));
    assert!(pm.matches("cache/x"));
    assert!(pm.matches("app.log"));
    assert!(!pm.matches("keep.log"));
    assert!(!pm.matches("src/app.log"), "* does not cross /");
    assert!(!pm.matches("a comment"));
    assert!(!pm.matches("tmp"));
    // A BOM on the first line only; the comment on line 1 is still a comment.
    assert!(!pm.matches("\u{feff}# a comment"));
}

#[test]
fn double_star_spans_directories_and_last_match_wins() {
    let pm = IgnoreMatcher::parse("**/*.md\n!docs/**/keep.md\ndocs/private\n").unwrap();
    assert!(pm.matches("README.md"));
    assert!(pm.matches("a/b/c.md"));
    assert!(!pm.matches("docs/x/y/keep.md"));
    assert!(
        pm.matches("docs/private/keep.md"),
        "a later pattern re-excludes"
    );
    assert!(!pm.matches("src/main.rs"));
}

#[test]
fn dockerfile_specific_ignore_file_wins_over_context_one() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join(".dockerignore"), "*.txt\n").unwrap();
    let df_dir = tempfile::tempdir().unwrap();
    let df = df_dir.path().join("app.Dockerfile");
    std::fs::write(&df, "FROM scratch\n").unwrap();
    // No app.Dockerfile.dockerignore yet: the context's file applies.
    let pm = load_for(ctx.path(), &df).unwrap();
    assert!(pm.matches("a.txt"));
    std::fs::write(df_dir.path().join("app.Dockerfile.dockerignore"), "*.md\n").unwrap();
    let pm = load_for(ctx.path(), &df).unwrap();
    assert!(!pm.matches("a.txt"));
    assert!(pm.matches("a.md"));
    // Neither file: nothing ignored.
    let empty = tempfile::tempdir().unwrap();
    let pm = load_for(empty.path(), &empty.path().join("Dockerfile")).unwrap();
    assert!(pm.is_empty());
}

#[test]
fn bad_ignore_file_error_names_the_file() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join(".dockerignore"), "ok\n[\n").unwrap();
    let err = load_for(ctx.path(), &ctx.path().join("Dockerfile")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("in ") && text.ends_with(".dockerignore: syntax error in pattern \"[\""),
        "{text}"
    );
}

/// The `COPY --exclude` expectations the copier's own matcher was tested with, kept now
/// that `--exclude` uses this matcher.
#[test]
fn exclude_patterns_follow_dockerignore_rules() {
    let pm = IgnoreMatcher::from_patterns(&["*.log", "!keep.log", "build", "**/tmp"]).unwrap();
    assert!(pm.matches("a.log"));
    assert!(!pm.matches("keep.log"));
    assert!(!pm.matches("sub/a.log"));
    assert!(pm.matches("build/x/y"));
    assert!(pm.matches("tmp"));
    assert!(pm.matches("a/b/tmp/c"));
    assert!(!pm.matches("src/main.rs"));
    let pm = IgnoreMatcher::from_patterns(&["**/*.go"]).unwrap();
    assert!(pm.matches("x.go") && pm.matches("a/b/x.go"));
    let pm = IgnoreMatcher::from_patterns(&["dir/**"]).unwrap();
    assert!(pm.matches("dir/a/b"));
}

#[test]
fn dockerignore_symlinked_out_of_the_context_is_not_read() {
    // A pattern that would fail to parse: reading it would put it in the error.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"[HOST-SECRET\n").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        ctx.path().join(".dockerignore"),
    )
    .unwrap();
    let df = ctx.path().join("Dockerfile");
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        ctx.path().join("Dockerfile.dockerignore"),
    )
    .unwrap();
    let pm = load_for(ctx.path(), &df).unwrap();
    assert!(pm.is_empty(), "the host file was read as ignore rules");
}
