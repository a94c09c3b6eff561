//! Reproducible by default: two `--no-cache` builds of the same inputs give the same image
//! ID and manifest digest whatever varies between runs (store, context mtimes, umask,
//! compression); SOURCE_DATE_EPOCH sets and clamps every time; `--timestamp keep` opts
//! out; and when a RUN step is not deterministic, `kiln diff` and
//! `kiln build --verify-reproducible` name exactly what differs.
//!
//! RUN steps use busybox-static (`/bin/busybox`) on a base made FROM scratch, and need the
//! sandbox (CI runs as root).

mod common;

use common::{Image, Kiln, copy_dir, stderr, stdout};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

/// Deterministic steps of every kind that writes a layer.
const STEPS: &str = "WORKDIR /app\nCOPY conf/ /etc/app/\nRUN mkdir -p /var/lib/app && echo built > /var/lib/app/state && ln -s /etc/app/a.conf /app/conf && chmod 640 /var/lib/app/state\nRUN echo more >> /etc/app/a.conf && rm /etc/app/b.conf\nCOPY --chmod=755 tool.sh /usr/local/bin/tool\nCMD [\"/usr/local/bin/tool\"]\n";

/// A context with busybox-static, a few files and `BASE` + `tail` as Dockerfile.
fn context(tail: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    fs::create_dir(dir.path().join("conf")).unwrap();
    fs::write(dir.path().join("conf/a.conf"), "a=1\n").unwrap();
    fs::write(dir.path().join("conf/b.conf"), "b=2\n").unwrap();
    fs::write(dir.path().join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    fs::write(dir.path().join("Dockerfile"), format!("{BASE}{tail}")).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The image ID and manifest digest of `tag` (`kiln inspect`).
fn ids(kiln: &Kiln, tag: &str) -> (String, String) {
    let out = kiln.run(&["inspect", tag]);
    assert!(out.status.success(), "inspect: {}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        doc["Id"].as_str().unwrap().to_string(),
        doc["ManifestDigest"].as_str().unwrap().to_string(),
    )
}

fn inspect(kiln: &Kiln, tag: &str) -> serde_json::Value {
    let out = kiln.run(&["inspect", tag]);
    assert!(out.status.success(), "inspect: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sets every file's and directory's mtime under `dir` (symlinks themselves untouched).
fn touch_all(dir: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 123);
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            touch_all(&e.path(), secs);
        }
        if !ft.is_symlink() {
            filetime::set_file_times(e.path(), t, t).unwrap();
        }
    }
    filetime::set_file_times(dir, t, t).unwrap();
}

/// `kiln --root ROOT build --no-cache ...` run by `sh` under umask 077.
fn build_with_umask_077(root: &Path, args: &[&str]) -> Output {
    let mut line = format!(
        "umask 077 && exec {} --root {} build --progress plain --no-cache",
        common::kiln_bin().display(),
        root.display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    Command::new("sh")
        .args(["-c", &line])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// Builds the same inputs twice, changing everything that must not matter in between,
/// and returns both (image ID, manifest digest) pairs.
fn two_builds(compression: &str) -> ((String, String), (String, String)) {
    let ctx = context(STEPS);
    let first = Kiln::new();
    first.build_ok(&[
        "--no-cache",
        "--compression",
        compression,
        "-t",
        "repro:1",
        s(ctx.path()),
    ]);

    // Another store, another copy of the context with other mtimes, another umask.
    let second = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let ctx2 = tmp.path().join("elsewhere");
    copy_dir(ctx.path(), &ctx2);
    touch_all(&ctx2, 1_234_567_890);
    let out = build_with_umask_077(
        second.root.path(),
        &["--compression", compression, "-t", "repro:1", s(&ctx2)],
    );
    assert!(out.status.success(), "second build: {}", stderr(&out));
    (ids(&first, "repro:1"), ids(&second, "repro:1"))
}

#[test]
fn no_cache_builds_agree_across_stores_mtimes_and_umask_with_gzip() {
    let (a, b) = two_builds("gzip");
    assert_eq!(a, b, "image ID and manifest digest must match");
}

#[test]
fn no_cache_builds_agree_across_stores_mtimes_and_umask_with_zstd() {
    let (a, b) = two_builds("zstd");
    assert_eq!(a, b, "image ID and manifest digest must match");
    let (gzip, _) = two_builds("gzip");
    assert_eq!(a.0, gzip.0, "compression does not change the image ID");
    assert_ne!(a.1, gzip.1, "but it does change the manifest");
}

const EPOCH: u64 = 1_700_000_000;
const EPOCH_TEXT: &str = "2023-11-14T22:13:20Z";

#[test]
fn source_date_epoch_sets_created_and_clamps_every_mtime() {
    let ctx = context(STEPS);
    let kiln = Kiln::new();
    let out = kiln
        .cmd()
        .args(["build", "--progress", "plain", "-t", "sde:1", s(ctx.path())])
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = inspect(&kiln, "sde:1");
    assert_eq!(doc["Config"]["created"], EPOCH_TEXT);
    let history = doc["Config"]["history"].as_array().unwrap();
    assert!(!history.is_empty());
    for h in history {
        assert_eq!(h["created"], EPOCH_TEXT, "{h}");
    }
    let image = kiln.image("sde:1");
    assert!(image.layer_count >= 4);
    for (path, f) in &image.files {
        // Context files and RUN output are all newer than 2023: every time is clamped.
        assert_eq!(f.mtime, EPOCH, "{path} mtime");
    }
    // Same answer with --build-arg instead of the environment.
    let kiln2 = Kiln::new();
    kiln2.build_ok(&[
        "--build-arg",
        &format!("SOURCE_DATE_EPOCH={EPOCH}"),
        "-t",
        "sde:1",
        s(ctx.path()),
    ]);
    assert_eq!(ids(&kiln, "sde:1"), ids(&kiln2, "sde:1"));
}

#[test]
fn default_epoch_is_zero_and_older_context_times_are_kept() {
    let ctx = context(STEPS);
    // A context file older than the epoch keeps its own time (clamping only lowers).
    let old = filetime::FileTime::from_unix_time(1_000_000, 0);
    filetime::set_file_times(ctx.path().join("tool.sh"), old, old).unwrap();
    let kiln = Kiln::new();
    let out = kiln
        .cmd()
        .args(["build", "--progress", "plain", "-t", "old:1", s(ctx.path())])
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let image = kiln.image("old:1");
    assert_eq!(image.file("usr/local/bin/tool").mtime, 1_000_000);
    // a.conf was rewritten by RUN (now), so it is clamped to the epoch.
    assert_eq!(image.file("etc/app/a.conf").mtime, EPOCH);
    assert_eq!(image.file("var/lib/app/state").mtime, EPOCH);

    let plain = Kiln::new();
    plain.build_ok(&["-t", "zero:1", s(ctx.path())]);
    assert_eq!(
        inspect(&plain, "zero:1")["Config"]["created"],
        "1970-01-01T00:00:00Z"
    );
    let image = plain.image("zero:1");
    assert!(image.files.values().all(|f| f.mtime == 0));
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn timestamp_keep_keeps_real_times() {
    let ctx = context(STEPS);
    let before = now();
    let kiln = Kiln::new();
    kiln.build_ok(&["--timestamp", "keep", "-t", "keep:1", s(ctx.path())]);
    let after = now();
    let image = kiln.image("keep:1");
    let state = image.file("var/lib/app/state").mtime;
    assert!(
        (before.saturating_sub(2)..=after + 2).contains(&state),
        "RUN output keeps its real mtime: {state} not in {before}..{after}"
    );
    let doc = inspect(&kiln, "keep:1");
    assert_ne!(doc["Config"]["created"], "1970-01-01T00:00:00Z");
}

/// Not deterministic: the time, plus random bytes (busybox `date` has no nanoseconds,
/// and the two builds of `--verify-reproducible` run at the same second).
const STAMP: &str = "RUN (date +%s; od -An -N8 -tx8 /dev/urandom) > /stamp\n";

#[test]
fn a_nondeterministic_run_shows_as_exactly_one_content_change() {
    let ctx = context(&format!("{STEPS}{STAMP}"));
    let a = Kiln::new();
    let b = Kiln::new();
    a.build_ok(&["--no-cache", "-t", "stamp:1", s(ctx.path())]);
    b.build_ok(&["--no-cache", "-t", "stamp:1", s(ctx.path())]);
    assert_ne!(ids(&a, "stamp:1"), ids(&b, "stamp:1"));
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("b.tar");
    let out = b.run(&["save", "-o", s(&archive), "stamp:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.run(&[
        "diff",
        "stamp:1",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "~ /stamp (content)\n");
}

#[test]
fn verify_reproducible_tags_a_deterministic_build() {
    let ctx = context(STEPS);
    let kiln = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let iid = tmp.path().join("iid");
    let out = kiln.build_ok(&[
        "--verify-reproducible",
        "--iidfile",
        s(&iid),
        "-t",
        "ok:1",
        s(ctx.path()),
    ]);
    assert!(stderr(&out).contains("naming to"), "{}", stderr(&out));
    let (id, _) = ids(&kiln, "ok:1");
    assert_eq!(fs::read_to_string(&iid).unwrap(), id);
    // The tagged image is whole in the store: it saves and reads back.
    let image: Image = kiln.image("ok:1");
    assert_eq!(image.text("var/lib/app/state"), "built\n");
    // And it is the image a plain --no-cache build gives.
    let plain = Kiln::new();
    plain.build_ok(&["--no-cache", "-t", "ok:1", s(ctx.path())]);
    assert_eq!(ids(&plain, "ok:1"), ids(&kiln, "ok:1"));
}

#[test]
fn verify_reproducible_fails_on_a_nondeterministic_step_and_tags_nothing() {
    let ctx = context(&format!("{STEPS}{STAMP}"));
    let kiln = Kiln::new();
    let out = kiln.run(&[
        "build",
        "--progress",
        "plain",
        "--verify-reproducible",
        "-t",
        "bad:1",
        s(ctx.path()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "~ /stamp (content)\n");
    assert!(
        stderr(&out).contains("not reproducible"),
        "{}",
        stderr(&out)
    );
    let inspect = kiln.run(&["inspect", "bad:1"]);
    assert!(!inspect.status.success(), "nothing is tagged");
}

/// The test suite's one unprivileged account (as tests/rootless.rs and tests/hostile/).
const USER: &str = common::TEST_USER;

fn ensure_user() -> Option<u32> {
    common::ensure_test_user(USER, 300000)
}

#[test]
fn root_and_an_unprivileged_user_get_one_digest_with_run_steps() {
    let Some(uid) = ensure_user() else {
        eprintln!("SKIP: creating the test user needs root (CI runs as root)");
        return;
    };
    let ctx = context(STEPS);
    common::open_up(ctx.path());
    let root_kiln = Kiln::new();
    root_kiln.build_ok(&["--no-cache", "-t", "x:1", s(ctx.path())]);

    let tmp = tempfile::tempdir().unwrap();
    common::open_up(tmp.path());
    let home: PathBuf = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
    let store = home.join("store");
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c"])
        .arg(format!(
            "umask 077 && cd {home} && HOME={home} {kiln} --root {store} build --progress plain --no-cache -t x:1 {ctx} && {kiln} --root {store} inspect x:1",
            home = home.display(),
            kiln = common::kiln_bin().display(),
            store = store.display(),
            ctx = ctx.path().display(),
        ))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "unprivileged build failed:\n{}",
        stderr(&out)
    );
    let text = stdout(&out);
    let doc: serde_json::Value =
        serde_json::from_str(&text[text.find('{').unwrap()..]).expect("inspect json");
    let (id, manifest) = ids(&root_kiln, "x:1");
    assert_eq!(doc["Id"], id.as_str());
    assert_eq!(doc["ManifestDigest"], manifest.as_str());
}

#[test]
fn diff_applies_whiteouts_and_opaque_dirs_of_run_layers() {
    let kiln = Kiln::new();
    let ctx = context(
        "COPY conf/ /etc/app/\nRUN rm -rf /etc/app && mkdir -p /etc/app && echo n > /etc/app/n\n",
    );
    kiln.build_ok(&["-t", "w:a", s(ctx.path())]);
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BASE}COPY conf/ /etc/app/\nRUN rm /etc/app/b.conf\n"),
    )
    .unwrap();
    kiln.build_ok(&["-t", "w:b", s(ctx.path())]);
    let out = kiln.run(&["diff", "w:a", "w:b"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The opaque /etc/app of w:a hides a.conf and b.conf; w:b's whiteout hides b.conf.
    assert_eq!(
        stdout(&out),
        "+ /etc/app/a.conf\n- /etc/app/n\nhistory 4: created_by: \
         \"RUN /bin/sh -c rm -rf /etc/app && mkdir -p /etc/app && echo n > /etc/app/n # buildkit\" \
         -> \"RUN /bin/sh -c rm /etc/app/b.conf # buildkit\"\n"
    );
}

/// Base images are inputs, not part of the check: a base only the user's store has (made
/// with `kiln import`) serves both builds of `--verify-reproducible`. Nothing is pulled:
/// `kiln-verify-localbase` exists on no registry, so a build that looked for it anywhere
/// but the user's store would fail.
#[test]
fn verify_reproducible_builds_from_a_base_in_the_users_store() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs.tar");
    let mut tar = tar::Builder::new(fs::File::create(&rootfs).unwrap());
    let busybox = fs::read("/bin/busybox")
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    let mut dir = tar::Header::new_gnu();
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "bin/busybox", busybox.as_slice())
        .unwrap();
    tar.finish().unwrap();
    drop(tar);
    let kiln = Kiln::new();
    let out = kiln.run(&["import", s(&rootfs), "kiln-verify-localbase:1"]);
    assert!(out.status.success(), "import: {}", stderr(&out));

    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM kiln-verify-localbase:1\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo from-base > /made\"]\n",
    )
    .unwrap();
    let out = kiln.build_ok(&[
        "--network",
        "none",
        "--verify-reproducible",
        "-t",
        "on-local:1",
        s(ctx.path()),
    ]);
    assert!(
        stderr(&out).contains("both builds gave the same manifest digest"),
        "{}",
        stderr(&out)
    );
    let image = kiln.image("on-local:1");
    assert_eq!(image.text("made"), "from-base\n");
    assert!(
        image.files.contains_key("bin/busybox"),
        "the base's layer is in the image"
    );
}
