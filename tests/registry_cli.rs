//! The registry side of `kiln build` through the real binary, against Debian's
//! `docker-registry` on 127.0.0.1: --push, FROM a pulled base, pull/push commands, and a
//! build cache shared through the registry (mode=max) that makes a fresh store hit on
//! every step.

mod common;

use common::registry::Registry;
use common::{Kiln, stderr, testdata};

fn read_iid(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn push_then_build_from_the_pulled_base_in_a_fresh_store() {
    let reg = Registry::start();
    let base = format!("{}/kiln/hello:1", reg.host());
    let a = Kiln::new();
    a.build_ok(&["--push", "-t", &base, testdata("hello").to_str().unwrap()]);

    // A fresh store pulls the base for FROM, builds on it and pushes the result.
    let b = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("extra.txt"), "extra\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY extra.txt /srv/www/extra.txt\n"),
    )
    .unwrap();
    let child = format!("{}/kiln/child:1", reg.host());
    b.build_ok(&["--push", "-t", &child, ctx.path().to_str().unwrap()]);
    let image = b.image(&child);
    assert_eq!(image.text("srv/www/greeting.txt"), "hello from kiln\n");
    assert_eq!(image.text("srv/www/extra.txt"), "extra\n");
    // The base's config is inherited.
    assert_eq!(image.config["config"]["WorkingDir"], "/srv/www");

    // `kiln pull` into a third store gives the same image ID.
    let c = Kiln::new();
    let out = c.run(&["pull", &child]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids = |k: &Kiln| {
        let out = k.run(&["inspect", &child]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["Id"].as_str().unwrap().to_string()
    };
    assert_eq!(ids(&b), ids(&c));
}

#[test]
fn a_registry_cache_makes_a_wiped_store_build_every_step_cached() {
    let reg = Registry::start();
    let cache = format!("{}/kiln/cache:main", reg.host());
    let ctx = testdata("hello");
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.iid");
    let a = Kiln::new();
    a.build_ok(&[
        "--cache-to",
        &format!("type=registry,ref={cache},mode=max"),
        "--iidfile",
        first.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let b = Kiln::new();
    let second = dir.path().join("second.iid");
    let out = b.build_ok(&[
        "--cache-from",
        &format!("type=registry,ref={cache}"),
        "--iidfile",
        second.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let log = stderr(&out);
    assert_eq!(log.matches("CACHED").count(), 5, "{log}");
    assert_eq!(read_iid(&first), read_iid(&second));
}

#[test]
fn an_unknown_base_image_fails_with_the_from_line_and_tags_nothing() {
    let reg = Registry::start();
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/nothing/here:1\nENV A=1\n", reg.host()),
    )
    .unwrap();
    let out = kiln.run(&["build", "-t", "x:1", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:1"), "{err}");
    assert!(err.contains("nothing/here"), "{err}");
    assert!(!common::stdout(&kiln.run(&["images"])).contains("x:1"));
}

#[test]
fn copy_from_and_mount_from_pull_a_missing_image_like_from() {
    let reg = Registry::start();
    let src = format!("{}/kiln/hello:1", reg.host());
    Kiln::new().build_ok(&["--push", "-t", &src, testdata("hello").to_str().unwrap()]);

    // COPY --from=<image> in a store that has never seen it.
    let b = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY --from={src} /srv/www/greeting.txt /copied.txt\n"),
    )
    .unwrap();
    b.build_ok(&["-t", "copied:1", ctx.path().to_str().unwrap()]);
    assert_eq!(b.image("copied:1").text("copied.txt"), "hello from kiln\n");

    // RUN --mount=from=<image>, likewise (on a busybox base FROM scratch).
    let c = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=from={src},target=/m [\"/bin/busybox\", \"cp\", \"/m/srv/www/greeting.txt\", \"/mounted.txt\"]\n"
        ),
    )
    .unwrap();
    c.build_ok(&["-t", "mounted:1", ctx.path().to_str().unwrap()]);
    assert_eq!(
        c.image("mounted:1").text("mounted.txt"),
        "hello from kiln\n"
    );
}
