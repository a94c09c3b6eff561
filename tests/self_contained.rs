//! A fresh clone stands alone: no test, bench, script or README names a path outside the
//! repository (the team's `shared/` folder beside the checkout is not in a user's clone).
//!
//! The check is textual: every path a test reads is built from `CARGO_MANIFEST_DIR` or a
//! temp dir, so a literal that climbs out of the repository, or names the shared folder by an
//! absolute path, is the only way one escapes.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Text files of the repository that tests, benches and CI read (target/ and .git excluded).
fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                // The vendored corpus is data, not code: it may mention any path.
                if !matches!(name.as_ref(), "target" | ".git" | "conformance") {
                    stack.push(e.path());
                }
            } else if ft.is_file()
                && (name.ends_with(".rs")
                    || name.ends_with(".sh")
                    || name.ends_with(".md")
                    || name.ends_with(".toml")
                    || dir.file_name().is_some_and(|d| d == ".ci"))
            {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn nothing_reads_outside_the_repository() {
    // Built from pieces so that this file does not match itself.
    let shared = ["..", "/shared"].concat();
    let beside = ["/shared", "/conformance"].concat();
    let mut hits = Vec::new();
    let files = files();
    assert!(files.len() > 50, "walked only {} files", files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if line.contains(&shared) || line.contains(&beside) {
                let rel = f.strip_prefix(repo()).unwrap_or(Path::new(""));
                hits.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "paths outside the repository:\n{}",
        hits.join("\n")
    );
}

#[test]
fn vendored_test_data_carries_its_sources_and_licenses() {
    let c = repo().join("testdata/conformance");
    for f in [
        "buildkit/LICENSE",
        "buildkit/README.md",
        "realworld/README.md",
        "realworld/SOURCES.md",
    ] {
        assert!(c.join(f).is_file(), "missing {f}");
    }
    let corpus = std::fs::read_dir(c.join("realworld/files"))
        .expect("corpus")
        .count();
    assert_eq!(corpus, 539);
}
