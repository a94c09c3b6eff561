//! Git over ssh against a real `sshd` on loopback started here ([`common::sshd`]), serving
//! a bare repository the test makes, with the client key held by a real `ssh-agent` of
//! the identity running kiln. Each case runs as root and as the unprivileged test user.
//!
//! Covered: `ADD ssh://user@host:port/path#ref[:subdir]` (with a submodule fetched over
//! ssh too), the scp form `user@host:path`
//! (end to end where port 22 of a loopback address is free; its recognition always), a
//! named build context and the build context itself over ssh; the agent given as a socket
//! (`--ssh default=SOCKET`) and as a key file (`--ssh default=KEYFILE`, kiln's own agent);
//! a rebuild at the same commit all CACHED, a new commit re-running the ADDs; no key
//! material anywhere in the store or in kiln's output; no `--ssh default` and a key the
//! server does not take failing at their Dockerfile line with nothing tagged.

mod common;

use common::gitserve::{Repo, git};
use common::identity::{World, assert_ok, assert_refused, both, identities, image_id, steps};
use common::sshd::{Agent, Sshd, make_key};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A bare repository served over ssh, and the work repository the test commits in and
/// pushes from.
struct BareRepo {
    /// The directory holding both, when this repository owns it.
    _dir: Option<tempfile::TempDir>,
    work: Repo,
    bare: PathBuf,
}

impl BareRepo {
    fn new() -> BareRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = BareRepo::in_dir(dir.path(), "app");
        BareRepo {
            _dir: Some(dir),
            ..repo
        }
    }

    /// `name.git` (bare) and `name.work` in `dir`, which the caller keeps.
    fn in_dir(dir: &Path, name: &str) -> BareRepo {
        let bare = dir.join(format!("{name}.git"));
        let work = dir.join(format!("{name}.work"));
        for d in [&bare, &work] {
            std::fs::create_dir(d).expect("mkdir");
        }
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        BareRepo {
            _dir: None,
            work: Repo { dir: work },
            bare,
        }
    }

    /// Records `commit` as the submodule `path` whose URL is `url` (relative ones are taken
    /// against the remote), and pushes; the commit id.
    fn add_submodule(&self, path: &str, url: &str, commit: &str) -> String {
        let dir = &self.work.dir;
        std::fs::write(
            dir.join(".gitmodules"),
            format!("[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"),
        )
        .expect("write .gitmodules");
        // An empty directory: the gitlink stays in the index through later `add -A`s.
        std::fs::create_dir_all(dir.join(path)).expect("mkdir");
        git(dir, &["add", ".gitmodules"]);
        let info = format!("160000,{commit},{path}");
        git(dir, &["update-index", "--add", "--cacheinfo", &info]);
        let commit = self.work.commit_index("a submodule");
        git(
            dir,
            &["push", "-q", self.bare.to_str().expect("utf-8"), "main"],
        );
        commit
    }

    /// Commits `files` and pushes `main`; the commit id.
    fn commit(&self, files: &[(&str, &str, u32)], message: &str) -> String {
        let commit = self.work.commit(files, message);
        let bare = self.bare.to_str().expect("utf-8");
        git(&self.work.dir, &["push", "-q", bare, "main"]);
        commit
    }
}

/// A loopback address whose port 22 is free (this process runs as root), for the scp
/// form, which cannot name a port; `None` when every one tried is taken.
fn scp_host() -> Option<String> {
    let base = 2 + std::process::id() % 200;
    (0..20)
        .map(|i| format!("127.0.0.{}", 2 + (base + i) % 250))
        .find(|host| std::net::TcpListener::bind((host.as_str(), 22)).is_ok())
}

/// The base64 lines of a private key file, each of which must appear nowhere.
fn key_body(key: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(key).expect("read key");
    let body: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect();
    assert!(!body.is_empty(), "no key body in {}", key.display());
    body
}

/// Every regular file under `dir` (the store) whose bytes hold any of `needles`.
fn files_holding(dir: &Path, needles: &[String]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                let hit = needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()));
                if hit {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

fn output_holds(out: &Output, needles: &[String]) -> bool {
    let text = both(out);
    needles.iter().any(|n| text.contains(n.as_str()))
}

#[test]
fn add_over_ssh_with_the_default_agent_as_root_and_rootless() {
    let scp = scp_host();
    if scp.is_none() {
        eprintln!(
            "note: port 22 of every loopback address tried is taken: the scp form is only \
             checked for recognition (add_over_ssh_needs_an_agent_and_an_authorized_key)"
        );
    }
    let sshd = Sshd::start(scp.as_deref());
    let repo = BareRepo::new();
    // A submodule beside it, by a relative URL: fetched over ssh too.
    let lib = BareRepo::in_dir(repo.bare.parent().expect("parent"), "lib");
    let lib_commit = lib.commit(&[("lib.txt", "lib\n", 0o644)], "lib");
    repo.add_submodule("vendor/lib", "../lib.git", &lib_commit);
    repo.commit(
        &[
            ("bin/run", "#!/bin/sh\necho run\n", 0o775),
            ("sub/x.txt", "x1\n", 0o600),
            ("ctx/Dockerfile", "FROM scratch\nCOPY . /c/\n", 0o644),
            ("ctx/c.txt", "c1\n", 0o644),
        ],
        "first",
    );
    let url = sshd.url(&repo.bare);

    for id in identities() {
        let w = World::new(id);
        // Each identity's builds start at a commit of their own.
        let one = format!("{id:?} one\n");
        let first = repo.commit(&[("README", &one, 0o664)], "first");
        let key = make_key(&w, "keys", "kiln-git-ssh-test");
        sshd.authorize(&key);
        let agent = Agent::start(&w, "agent", &key);
        let socket = format!("default={}", agent.socket.display());
        let keyfile = format!("default={}", key.display());
        let body = key_body(&key);

        let mut dockerfile = format!(
            "FROM scratch\n\
             ADD {url}#main /src\n\
             ADD {url}?ref=main&subdir=sub /sub/\n\
             COPY --from=named x.txt /named/\n"
        );
        if let Some(host) = &scp {
            dockerfile += &format!("ADD root@{host}:{}#main:ctx /scp/\n", repo.bare.display());
        }
        let ctx = w.context("ctx", &dockerfile);
        let named = format!("named={url}#main:sub");
        let logins = sshd.logins();
        let out = w.build(
            &ctx,
            &["--ssh", &socket, "--build-context", &named, "-t", "gs:1"],
        );
        assert_ok(&out);
        assert!(
            sshd.logins() > logins,
            "{id:?}: no login by key on the sshd"
        );
        let img = w.image("gs:1");
        assert_eq!(img.text("src/README"), one, "{id:?}");
        assert_eq!(img.file("src/README").mode & 0o7777, 0o644, "{id:?}");
        assert_eq!(img.file("src/bin/run").mode & 0o7777, 0o755, "{id:?}");
        assert!(!img.files.contains_key("src/.git"), "{id:?}");
        assert_eq!(img.text("src/vendor/lib/lib.txt"), "lib\n", "{id:?}");
        assert_eq!(img.text("sub/x.txt"), "x1\n", "{id:?}");
        assert!(!img.files.contains_key("sub/README"), "{id:?}");
        assert_eq!(img.text("named/x.txt"), "x1\n", "{id:?}");
        if scp.is_some() {
            assert_eq!(img.text("scp/c.txt"), "c1\n", "{id:?}");
        }
        let id1 = image_id(&out);

        // The same commit again, the agent now from the key file (kiln starts its own):
        // every step CACHED and the same image. Which agent served is not in any key.
        let again = w.build(
            &ctx,
            &["--ssh", &keyfile, "--build-context", &named, "-t", "gs:1"],
        );
        assert_ok(&again);
        let st = steps(&again);
        assert!(!st.is_empty(), "{}", both(&again));
        assert!(
            st.iter().all(|(_, c)| *c),
            "{id:?}: not all CACHED: {st:?}\n{}",
            both(&again)
        );
        assert_eq!(image_id(&again), id1, "{id:?}");

        // A new commit on main: the ADDs of it run again, and see it.
        let two = format!("{id:?} two\n");
        let second = repo.commit(&[("README", &two, 0o644)], "second");
        assert_ne!(first, second);
        let third = w.build(
            &ctx,
            &["--ssh", &socket, "--build-context", &named, "-t", "gs:2"],
        );
        assert_ok(&third);
        let st = steps(&third);
        let add_src = st
            .iter()
            .find(|(t, _)| t.contains("/src"))
            .unwrap_or_else(|| panic!("no ADD /src step: {st:?}"));
        assert!(
            !add_src.1,
            "{id:?}: the ADD of the new commit was CACHED: {st:?}"
        );
        assert_eq!(w.image("gs:2").text("src/README"), two, "{id:?}");

        // The build context itself over ssh (a subdir with its Dockerfile).
        let ctx_url = format!("{url}#main:ctx");
        let out = w.kiln(&[
            "build",
            "--progress",
            "plain",
            "--ssh",
            &socket,
            "-t",
            "gctx:1",
            &ctx_url,
        ]);
        assert_ok(&out);
        assert_eq!(w.image("gctx:1").text("c/c.txt"), "c1\n", "{id:?}");

        // No key material anywhere in the store (layers, cache records, the explain log,
        // the git cache) or in what kiln printed.
        let holding = files_holding(&w.store(), &body);
        assert!(holding.is_empty(), "{id:?}: key material in {holding:?}");
        for o in [&out, &again, &third] {
            assert!(!output_holds(o, &body), "{id:?}: key material printed");
        }
        // kiln's key agent and its sockets are gone with the build.
        let scratch = w.store().join("tmp");
        let left = files_named(&scratch, "ssh-");
        assert!(left.is_empty(), "{id:?}: left in the store: {left:?}");
    }
}

fn files_named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                out.push(name);
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    out
}

#[test]
fn add_over_ssh_needs_an_agent_and_an_authorized_key() {
    let sshd = Sshd::start(None);
    let repo = BareRepo::new();
    repo.commit(&[("a", "a\n", 0o644)], "one");
    let url = sshd.url(&repo.bare);
    for id in identities() {
        let w = World::new(id);
        // No --ssh at all: refused at the ADD's line before any connection, for the URL
        // form and the scp form alike.
        for (i, (add, remote)) in [
            (format!("ADD {url}#main /x"), url.clone()),
            (
                "ADD git@git.example.invalid:org/repo.git#main /x".to_string(),
                "git@git.example.invalid:org/repo.git".to_string(),
            ),
        ]
        .iter()
        .enumerate()
        {
            let ctx = w.context(
                &format!("nossh{i}"),
                &format!("FROM scratch\nCOPY busybox /b\n{add}\n"),
            );
            let logins = sshd.log().matches("Connection from").count();
            let out = w.build(&ctx, &["-t", "bad:1"]);
            assert_refused(&out);
            let text = both(&out);
            assert!(
                text.contains(&format!(
                    "{remote}: git over ssh needs --ssh default (an ssh agent)"
                )),
                "{id:?}: {text}"
            );
            assert!(text.contains("Dockerfile:3"), "{id:?}: {text}");
            assert!(
                !w.kiln(&["inspect", "bad:1"]).status.success(),
                "{id:?}: tagged"
            );
            assert_eq!(
                sshd.log().matches("Connection from").count(),
                logins,
                "{id:?}: connected without an agent"
            );
        }

        // An agent whose key the server does not take.
        let key = make_key(&w, "stranger", "kiln-git-ssh-stranger");
        let agent = Agent::start(&w, "agent", &key);
        let ctx = w.context(
            "wrongkey",
            &format!("FROM scratch\nCOPY busybox /b\nADD {url}#main /x\n"),
        );
        let socket = format!("default={}", agent.socket.display());
        let connections = sshd.log().matches("Connection from").count();
        let out = w.build(&ctx, &["--ssh", &socket, "-t", "bad:2"]);
        assert_refused(&out);
        // It did connect (so the count above would have seen a connection).
        assert!(
            sshd.log().matches("Connection from").count() > connections,
            "{id:?}: {}",
            sshd.log()
        );
        let text = both(&out);
        assert!(
            text.contains("Permission denied (publickey)"),
            "{id:?}: {text}"
        );
        assert!(text.contains("Dockerfile:3"), "{id:?}: {text}");
        assert!(text.contains(&url), "{id:?}: {text}");
        assert!(!output_holds(&out, &key_body(&key)), "{id:?}: key printed");
        assert!(
            !w.kiln(&["inspect", "bad:2"]).status.success(),
            "{id:?}: tagged"
        );
    }
}
