//! `resolve_in_root`: whatever the path and whatever symlinks the tree holds, the result
//! stays inside the root (property test), plus BuildKit's specific rules.

use std::os::unix::fs::symlink;
use std::path::Path;

use kiln_context::resolve::{resolve_in_root_nofollow, resolve_rel};
use kiln_context::resolve_in_root;
use proptest::prelude::*;

/// A tree with hostile symlinks: to `/`, to `..` chains, absolute, loops, to missing.
fn hostile_tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("a/b")).unwrap();
    std::fs::write(r.join("a/b/f"), "f").unwrap();
    symlink("/", r.join("root")).unwrap();
    symlink("../../../../..", r.join("a/up")).unwrap();
    symlink("/etc/passwd", r.join("a/abs")).unwrap();
    symlink("b/../../a", r.join("a/rel")).unwrap();
    symlink("loop2", r.join("loop1")).unwrap();
    symlink("loop1", r.join("loop2")).unwrap();
    symlink("missing/x", r.join("dangling")).unwrap();
    d
}

fn component() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "..", ".", "", "a", "b", "f", "root", "up", "abs", "rel", "loop1", "dangling", "x", "etc",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn resolution_never_leaves_the_root(parts in prop::collection::vec(component(), 0..8), lead in any::<bool>()) {
        let d = hostile_tree();
        let path = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
        if let Ok(rel) = resolve_rel(d.path(), &path, true) {
            prop_assert!(!rel.split('/').any(|c| c == ".."), "{path} -> {rel}");
            prop_assert!(!rel.starts_with('/'), "{path} -> {rel}");
            let abs = resolve_in_root(d.path(), &path).unwrap();
            prop_assert!(abs.starts_with(d.path()));
        }
        if let Ok(abs) = resolve_in_root_nofollow(d.path(), &path) {
            prop_assert!(abs.starts_with(d.path()));
        }
    }
}

#[test]
fn buildkit_rules_for_symlinks_and_dotdot() {
    let d = hostile_tree();
    let r = d.path();
    let check = |p: &str, want: &str| {
        assert_eq!(resolve_in_root(r, p).unwrap(), r.join(want), "{p}");
    };
    check("root/a/b/f", "a/b/f");
    check("a/up/a/b/f", "a/b/f");
    check("a/abs", "etc/passwd");
    check("a/rel/b", "a/b");
    check("../../a/./b//f", "a/b/f");
    check("dangling", "missing/x");
    check("", "");
    check("/", "");
    // The last component is kept as a link when not following.
    assert_eq!(
        resolve_in_root_nofollow(r, "a/abs").unwrap(),
        r.join("a/abs")
    );
    assert_eq!(
        resolve_in_root_nofollow(r, "root/a/abs").unwrap(),
        r.join("a/abs")
    );
    let err = resolve_in_root(r, "loop1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "too many levels of symbolic links resolving \"loop1\""
    );
    assert!(!Path::new(&resolve_rel(r, "a/up/up/up", true).unwrap()).is_absolute());
}
