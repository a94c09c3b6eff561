//! Everyday Dockerfiles on a real Debian bookworm base, as a new user would write them:
//! `apt-get install` (plain, and with cache mounts on apt's directories), `pip install` into
//! a venv, `npm install`, `useradd` + `COPY --chown` + `USER`, and a compiled binary copied
//! into `FROM scratch` (the cases are `testdata/realworld/*/`).
//!
//! The bases are made by `mmdebstrap` (`testdata/realworld/make-base.sh`, cached between
//! runs; its tar has device nodes in `/dev`, as debootstrap and `docker export` tars do) and
//! imported. Every case builds as root and as the unprivileged test user with a subordinate
//! ID range and its image runs (`kiln run`) with the expected output; the root-built images
//! also go through `docker load` and `docker run` on a private dockerd. The compiled binary
//! passes `--verify-reproducible` (as root) with its local base and has the same image ID
//! whoever built it; two `--no-cache` builds of an apt stage differ only in apt's and dpkg's logs and caches.
//!
//! Needs root, mmdebstrap, Debian's package mirror, PyPI and the npm registry (CI has them).
//! Without root or mmdebstrap the suite says SKIP, except under `CI=true`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use common::identity::{Identity, World, assert_ok, both, is_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The minimal base (`FROM debian:bookworm`) and the one with node, python and gcc.
const MIN_TAG: &str = "debian:bookworm-local";
const DEV_TAG: &str = "debian:bookworm-dev-local";

/// One everyday Dockerfile and what its image prints when run.
struct Case {
    name: &'static str,
    output: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "apt",
        output: "Hello, world!\n",
    },
    Case {
        name: "aptcache",
        output: "jq-1.6\n",
    },
    Case {
        name: "pip",
        output: "six 1.16.0\n",
    },
    Case {
        name: "npm",
        output: "is-number true\n",
    },
    Case {
        name: "users",
        output: "app\napp:app 644\nhello-from-context\n",
    },
    Case {
        name: "gcc",
        output: "hello from gcc\n",
    },
];

/// The cached base tarballs (min, dev), or `None` (with a note) where they cannot be made.
fn bases() -> Option<&'static (PathBuf, PathBuf)> {
    static BASES: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    BASES
        .get_or_init(|| {
            let why = if !is_root() {
                Some("making a Debian base needs root".to_string())
            } else if Command::new("mmdebstrap")
                .arg("--version")
                .output()
                .is_err()
            {
                Some("mmdebstrap is not installed (apt-get install mmdebstrap)".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "the real-base suite must run in CI: {why}"
                );
                eprintln!("SKIP: {why}");
                return None;
            }
            let make = |variant: &str| {
                let out = Command::new("sh")
                    .arg(common::testdata("realworld/make-base.sh"))
                    .arg(variant)
                    .output()
                    .expect("running make-base.sh");
                assert!(
                    out.status.success(),
                    "make-base.sh {variant} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            };
            Some((make("min"), make("dev")))
        })
        .as_ref()
}

/// Which bases a test imports (an import of the dev base takes a while).
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Min,
    Dev,
    Both,
}

/// A world for `id` with the bases it `needs` imported under their tags.
fn world_with_bases(id: Identity, needs: Needs) -> Option<World> {
    let (min, dev) = bases()?;
    let world = World::new(id);
    for (tar, tag, wanted) in [(min, MIN_TAG, Needs::Min), (dev, DEV_TAG, Needs::Dev)] {
        if needs == wanted || needs == Needs::Both {
            assert_ok(&world.kiln(&["import", path(tar), tag]));
        }
    }
    Some(world)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The case's context, readable by every identity.
fn context(world: &World, case: &str) -> PathBuf {
    let ctx = world.tmp.path().join("ctx").join(case);
    common::copy_dir(&common::testdata(&format!("realworld/{case}")), &ctx);
    common::open_up(&world.tmp.path().join("ctx"));
    ctx
}

/// Builds `case` as `tag`; returns the image ID and the build's output.
fn build(world: &World, case: &str, tag: &str, extra: &[&str]) -> (String, String) {
    let ctx = context(world, case);
    let iid = world.user_dir("iid").join(tag.replace([':', '/'], "_"));
    let mut args = vec!["--iidfile", path(&iid), "-t", tag];
    args.extend_from_slice(extra);
    let out = world.build(&ctx, &args);
    assert!(
        out.status.success(),
        "{:?}: building {case} failed: {}",
        world.id,
        both(&out)
    );
    let id = std::fs::read_to_string(&iid).expect("iidfile");
    (id.trim().to_string(), both(&out))
}

/// What `kiln run --rm TAG` prints.
fn run_output(world: &World, tag: &str) -> String {
    let out = world.kiln(&["run", "--rm", tag]);
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every case builds and its image runs, for one identity; the root-built images also run
/// under docker.
fn every_case_builds_and_runs(id: Identity) {
    let Some(world) = world_with_bases(id, Needs::Both) else {
        return;
    };
    let mut images = Vec::new();
    for case in CASES {
        let tag = format!("rw-{}:1", case.name);
        build(&world, case.name, &tag, &[]);
        assert_eq!(
            run_output(&world, &tag),
            case.output,
            "{id:?}: {} printed something else",
            case.name
        );
        images.push((case, tag));
    }
    let users = image(&world, "rw-users:1");
    let greeting = users.file("home/app/greeting.txt");
    assert_eq!(
        (greeting.uid, greeting.gid),
        (1001, 1001),
        "COPY --chown=app:app"
    );
    // The cache mounts held apt's downloads; the image did not get them.
    let aptcache = image(&world, "rw-aptcache:1");
    assert!(
        !aptcache
            .files
            .keys()
            .any(|p| p.starts_with("var/cache/apt/archives/") && p.ends_with(".deb")),
        "a .deb from the cache mount reached the image"
    );
    let gcc = image(&world, "rw-gcc:1");
    assert_eq!(
        gcc.files.keys().collect::<Vec<_>>(),
        vec!["hello"],
        "the scratch stage holds only the binary"
    );
    if id == Identity::Root {
        run_under_docker(&world, &images);
    }
}

/// `kiln save` of `tag`, read back.
fn image(world: &World, tag: &str) -> common::Image {
    common::Image::from_docker_archive(&save(world, tag))
}

/// `kiln save` of `tag` as a docker-archive; returns the file.
fn save(world: &World, tag: &str) -> PathBuf {
    let file = world
        .user_dir("saved")
        .join(format!("{}.tar", tag.replace(':', "_")));
    assert_ok(&world.kiln(&["save", "-o", path(&file), tag]));
    file
}

/// `docker load` every image and `docker run` it: the output is what `kiln run` printed.
fn run_under_docker(world: &World, images: &[(&Case, String)]) {
    let daemon = common::dockerd::Daemon::start();
    for (case, tag) in images {
        daemon.docker_ok(&["load", "-i", path(&save(world, tag))]);
        let ran = daemon.docker_ok(&["run", "--rm", "--network", "none", tag]);
        assert_eq!(ran, case.output, "docker run {tag}");
    }
}

#[test]
fn everyday_dockerfiles_build_as_root_and_run_under_docker() {
    every_case_builds_and_runs(Identity::Root);
}

#[test]
fn everyday_dockerfiles_build_rootless() {
    every_case_builds_and_runs(Identity::Rootless);
}

/// `--verify-reproducible` as root (its two scratch builds are the slow part, so once); the
/// rootless build must give the very same image.
#[test]
fn the_compiled_binary_is_reproducible_and_the_same_whoever_builds_it() {
    let mut ids = Vec::new();
    for id in [Identity::Root, Identity::Rootless] {
        let Some(world) = world_with_bases(id, Needs::Dev) else {
            return;
        };
        let verify: &[&str] = match id {
            Identity::Root => &["--verify-reproducible"],
            Identity::Rootless => &[],
        };
        let (image_id, log) = build(&world, "gcc", "rw-gcc:1", verify);
        if id == Identity::Root {
            assert!(
                log.contains("verify-reproducible: both builds gave the same manifest digest"),
                "--verify-reproducible said nothing: {log}"
            );
        }
        ids.push(image_id);
    }
    assert_eq!(
        ids[0], ids[1],
        "root and rootless builds of the binary differ"
    );
}

#[test]
fn two_no_cache_apt_builds_differ_only_in_apt_and_dpkg_records() {
    let Some(world) = world_with_bases(Identity::Root, Needs::Min) else {
        return;
    };
    let (a, _) = build(&world, "apt", "rw-apt:a", &["--no-cache"]);
    let (b, _) = build(&world, "apt", "rw-apt:b", &["--no-cache"]);
    assert_ne!(a, b, "apt's logs carry the time, so the two images differ");
    let out = world.kiln(&["diff", "rw-apt:a", "rw-apt:b"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff exits 1 on a difference: {}",
        both(&out)
    );
    let named: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.to_string())
        .collect();
    // What apt and dpkg write with the time in it, and nothing else: the packages' own
    // files, the config and the history are the same.
    let allowed = [
        "/var/log/dpkg.log",
        "/var/log/apt/history.log",
        "/var/log/apt/term.log",
        "/var/log/apt/eipp.log.xz",
        "/var/cache/apt/pkgcache.bin",
        "/var/cache/apt/srcpkgcache.bin",
        "/var/cache/ldconfig/aux-cache",
        "/var/cache/debconf/templates.dat",
        "/var/cache/debconf/templates.dat-old",
    ];
    for line in &named {
        assert!(
            allowed.iter().any(|p| line == &format!("~ {p} (content)")),
            "kiln diff names more than apt's and dpkg's records: {line:?} in {named:?}"
        );
    }
    assert!(
        named.contains("~ /var/log/dpkg.log (content)"),
        "dpkg.log drifts and kiln diff must say so: {named:?}"
    );
}
