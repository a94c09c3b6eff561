//! Git sources against real servers on loopback, started here: `git daemon` (git://) and
//! `git http-backend` behind the test's own HTTP server ([`common::gitserve`]), serving
//! repositories the test makes. Each case runs as root and as the unprivileged test user.
//!
//! Covered: a ref by branch, tag (annotated) and commit, `#ref:subdir` and the query form,
//! `--keep-git-dir`, `--checksum` matching and not, an unknown ref and an unreachable host
//! (errors naming the Dockerfile line, nothing tagged), file modes and symlinks of the
//! repository kept as they are, a rebuild at the same commit all CACHED, a new commit
//! re-running only what depends on it, two `--no-cache` builds giving one image ID, and a
//! git URL as the build context.

mod common;

use common::gitserve::GitServers;
use common::identity::{
    Identity, World, assert_ok, assert_refused, both, identities, image_id, steps,
};

#[test]
fn git_sources_by_branch_tag_commit_and_query_as_root_and_rootless() {
    let servers = GitServers::start();
    let repo = servers.repo("app");
    let first = repo.commit(
        &[
            ("README", "hello\n", 0o664),
            ("bin/run.sh", "#!/bin/sh\necho run\n", 0o775),
            ("sub/x.txt", "x1\n", 0o600),
        ],
        "first",
    );
    repo.symlink("escape", "../../../../../../etc/passwd");
    repo.symlink("sub/up", "../../..");
    repo.tag("v1");
    let tagged = repo.head();
    let (http, gitd) = (servers.http_url("app"), servers.git_url("app"));
    let prefix = &tagged[..12];

    for id in identities() {
        let main_head = repo.head();
        let w = World::new(id);
        let dockerfile = format!(
            "FROM scratch AS pinned\n\
             ADD {gitd}#{first} /pinned\n\
             FROM scratch\n\
             ADD {gitd}#v1:sub /tag/\n\
             ADD --checksum={prefix} {http}?tag=v1 /sum\n\
             ADD {http}#main /http/\n\
             ADD --keep-git-dir {gitd}?branch=main&subdir=sub /kept\n\
             ADD {http}?ref=main&keep-git-dir=true /full\n\
             COPY --from=pinned /pinned /pinned\n"
        );
        let ctx = w.context("ctx", &dockerfile);
        let out = w.build(&ctx, &["-t", "app:1"]);
        assert_ok(&out);
        let img = w.image("app:1");
        // Modes as BuildKit's git source gives them: 0644, 0755 for executables.
        assert_eq!(img.text("http/README"), "hello\n");
        assert_eq!(img.file("http/README").mode & 0o7777, 0o644);
        assert_eq!(img.file("http/bin/run.sh").mode & 0o7777, 0o755);
        assert_eq!(img.file("http/sub/x.txt").mode & 0o7777, 0o644);
        assert_eq!(img.file("http/bin").mode & 0o7777, 0o755);
        assert_eq!(img.file("http/README").uid, 0);
        // The repository's symlinks are copied as symlinks, never followed out.
        let escape = img.file("http/escape");
        assert_eq!(
            (escape.kind, escape.link.as_str()),
            ('l', "../../../../../../etc/passwd")
        );
        assert_eq!(img.file("http/sub/up").kind, 'l');
        assert!(
            !img.files.contains_key("http/.git"),
            "{:?}",
            img.files.keys()
        );
        // A subdir, by tag (annotated: its commit), and the query form.
        assert_eq!(img.text("tag/x.txt"), "x1\n");
        assert!(!img.files.contains_key("tag/README"));
        assert_eq!(img.text("sum/README"), "hello\n");
        assert_eq!(img.text("kept/x.txt"), "x1\n");
        assert!(
            img.files.contains_key("full/.git/HEAD"),
            "{:?}",
            img.files.keys()
        );
        assert_eq!(img.text("full/.git/HEAD").trim(), main_head);
        assert!(img.text("full/.git/config").contains(&http));
        assert_eq!(img.text("pinned/README"), "hello\n");
        assert!(
            !img.files.contains_key("pinned/escape"),
            "the pinned commit has no link"
        );

        assert!(servers.take_http_fetches() > 0, "the first build fetched");

        // The same commits again: every step CACHED, the refs listed and nothing fetched.
        let started = std::time::Instant::now();
        let again = w.build(&ctx, &["-t", "app:1"]);
        let took = started.elapsed();
        assert_ok(&again);
        let st = steps(&again);
        assert!(
            st.iter().all(|(_, c)| *c),
            "not all CACHED: {st:?}\n{}",
            both(&again)
        );
        assert_eq!(servers.take_http_fetches(), 0, "a cached rebuild fetched");
        eprintln!(
            "{id:?}: cached rebuild of {} git steps took {took:?}",
            st.len()
        );

        // A new commit on main: the tag and the pinned commit stay CACHED; the branch's
        // steps and what follows them run again.
        repo.commit(&[("README", "hello again\n", 0o644)], "second");
        let moved = w.build(&ctx, &["-t", "app:2"]);
        assert_ok(&moved);
        // Two steps read main over HTTP; its new commit is fetched once and checked out
        // for both (the second finds it in the cache repository).
        assert_eq!(servers.take_http_fetches(), 1, "{}", both(&moved));
        let st = steps(&moved);
        let cached = |needle: &str| {
            st.iter()
                .find(|(t, _)| t.contains(needle))
                .unwrap_or_else(|| panic!("no step {needle} in {st:?}"))
                .1
        };
        assert!(cached(&format!("{gitd}#{first}")), "{st:?}");
        assert!(cached("#v1:sub"), "{st:?}");
        assert!(cached("?tag=v1"), "{st:?}");
        assert!(!cached("#main"), "{st:?}");
        assert!(!cached("COPY --from=pinned"), "{st:?}");
        assert_eq!(w.image("app:2").text("http/README"), "hello again\n");
        // Put main back where it was for the next identity.
        repo.commit(&[("README", "hello\n", 0o664)], "third");
        if id == Identity::Root {
            // Same content, a new commit: keyed by the commit, so it runs again.
            let back = w.build(&ctx, &["-t", "app:3"]);
            assert!(
                !steps(&back)
                    .iter()
                    .find(|(t, _)| t.contains("#main"))
                    .unwrap()
                    .1
            );
        }
    }
}

#[test]
fn two_no_cache_builds_give_one_image_id() {
    let servers = GitServers::start();
    let repo = servers.repo("repro");
    repo.commit(
        &[("a", "a\n", 0o644), ("x/run", "#!/bin/sh\n", 0o755)],
        "one",
    );
    let url = servers.http_url("repro");
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("FROM scratch\nADD {url}#main:x /x\nADD {url} /all\n"),
        );
        let one = w.build(&ctx, &["--no-cache", "-t", "r:1"]);
        assert_ok(&one);
        let two = w.build(&ctx, &["--no-cache", "-t", "r:2"]);
        assert_ok(&two);
        assert_eq!(
            image_id(&one),
            image_id(&two),
            "{}\n{}",
            both(&one),
            both(&two)
        );
        // The cache repository is reused: the second build fetched nothing new, and a
        // prune --all drops it.
        let prune = w.kiln(&["prune", "--all"]);
        assert_ok(&prune);
        assert!(
            String::from_utf8_lossy(&prune.stdout).contains("1 git repositories"),
            "{}",
            both(&prune)
        );
    }
}

#[test]
fn unknown_ref_bad_checksum_and_unreachable_host_fail_at_their_line() {
    let servers = GitServers::start();
    let repo = servers.repo("errs");
    let commit = repo.commit(&[("a", "a\n", 0o644)], "one");
    let (http, gitd) = (servers.http_url("errs"), servers.git_url("errs"));
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cases = [
        (
            format!("ADD {gitd}#no-such-branch /x"),
            "repository does not contain ref \"no-such-branch\"".to_string(),
        ),
        (
            format!("ADD --checksum=0000000 {http}#main /x"),
            format!("expected checksum to match 0000000, got commit {commit}"),
        ),
        (
            format!("ADD --checksum={} {http}?checksum=0000 /x", &commit[..8]),
            format!("checksum mismatch \"{}\" != \"0000\"", &commit[..8]),
        ),
        (
            format!("ADD http://127.0.0.1:{closed}/gone.git /x"),
            "Failed to connect".to_string(),
        ),
    ];
    for id in identities() {
        let w = World::new(id);
        for (i, (add, expected)) in cases.iter().enumerate() {
            let ctx = w.context(
                &format!("ctx{i}"),
                &format!("FROM scratch\nCOPY busybox /b\n{add}\n"),
            );
            let out = w.build(&ctx, &["-t", "bad:1"]);
            assert_refused(&out);
            let text = both(&out);
            assert!(text.contains(expected.as_str()), "{id:?} {add}: {text}");
            assert!(text.contains("Dockerfile:3"), "{id:?} {add}: {text}");
            let inspect = w.kiln(&["inspect", "bad:1"]);
            assert!(!inspect.status.success(), "{add}: bad:1 was tagged");
        }
    }
}

#[test]
fn a_git_url_is_a_build_context() {
    let servers = GitServers::start();
    let repo = servers.repo("ctx");
    repo.commit(
        &[
            ("app/Dockerfile", "FROM scratch\nCOPY . /app/\n", 0o644),
            ("app/.dockerignore", "secret\n", 0o644),
            ("app/main.txt", "main\n", 0o644),
            ("app/secret", "no\n", 0o644),
            (
                "app/alt.Dockerfile",
                "FROM scratch\nCOPY main.txt /alt\n",
                0o644,
            ),
            ("other/x", "x\n", 0o644),
        ],
        "one",
    );
    let url = format!("{}#main:app", servers.http_url("ctx"));
    for id in identities() {
        let w = World::new(id);
        let ctx = std::path::Path::new(&url);
        let out = w.build(ctx, &["-t", "c:1"]);
        assert_ok(&out);
        let img = w.image("c:1");
        assert_eq!(img.text("app/main.txt"), "main\n");
        assert!(
            !img.files.contains_key("app/secret"),
            "{:?}",
            img.files.keys()
        );
        assert!(!img.files.contains_key("app/.git"));
        let again = w.build(ctx, &["-t", "c:1"]);
        assert_ok(&again);
        assert!(steps(&again).iter().all(|(_, c)| *c), "{}", both(&again));
        assert_eq!(image_id(&out), image_id(&again));
        // -f is taken inside the context.
        let alt = w.build(ctx, &["-f", "alt.Dockerfile", "-t", "c:2"]);
        assert_ok(&alt);
        assert_eq!(w.image("c:2").text("alt"), "main\n");
        let url_bad = format!("{}#nope", servers.git_url("ctx"));
        let bad = w.build(std::path::Path::new(&url_bad), &["-t", "c:3"]);
        assert_refused(&bad);
        assert!(
            both(&bad).contains("repository does not contain ref \"nope\""),
            "{}",
            both(&bad)
        );
    }
}

#[test]
fn submodules_are_checked_out_unless_asked_not_to() {
    let servers = GitServers::start();
    let lib = servers.repo("lib");
    let lib_commit = lib.commit(&[("lib.txt", "lib\n", 0o644)], "lib");
    let app = servers.repo("withsub");
    let add_gitlink = |repo: &common::gitserve::Repo, path: &str, url: &str, commit: &str| {
        std::fs::write(
            repo.dir.join(".gitmodules"),
            format!("[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"),
        )
        .expect("write .gitmodules");
        std::fs::write(repo.dir.join("app.txt"), "app\n").expect("write");
        common::gitserve::git(&repo.dir, &["add", ".gitmodules", "app.txt"]);
        common::gitserve::git(
            &repo.dir,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{commit},{path}"),
            ],
        );
        repo.commit_index("with a submodule")
    };
    add_gitlink(&app, "vendor/lib", "../lib.git", &lib_commit);
    let evil = servers.repo("evil");
    add_gitlink(&evil, "vendor/etc", "file:///etc", &lib_commit);
    let (http, gitd) = (servers.http_url("withsub"), servers.git_url("withsub"));
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!(
                "FROM scratch\nADD {http} /http/\nADD {gitd} /gitd/\nADD {http}?submodules=false /none/\n"
            ),
        );
        let out = w.build(&ctx, &["-t", "s:1"]);
        assert_ok(&out);
        let img = w.image("s:1");
        assert_eq!(img.text("http/app.txt"), "app\n");
        assert_eq!(img.text("http/vendor/lib/lib.txt"), "lib\n");
        assert_eq!(img.text("gitd/vendor/lib/lib.txt"), "lib\n");
        assert_eq!(img.file("none/vendor/lib").kind, 'd');
        assert!(!img.files.contains_key("none/vendor/lib/lib.txt"));
        // A submodule cannot make git read local paths.
        let evil_ctx = w.context(
            "evil",
            &format!("FROM scratch\nADD {} /e/\n", servers.http_url("evil")),
        );
        let bad = w.build(&evil_ctx, &["-t", "s:2"]);
        assert_refused(&bad);
        assert!(
            both(&bad).contains(
                "file:///etc: only https://, http://, git:// and ssh remotes are fetched"
            ),
            "{}",
            both(&bad)
        );
    }
}
