//! Hostile input files: a Dockerfile (or `.dockerignore`) in the context that is a symlink
//! to a host file, and Dockerfiles whose expansion nests or grows without bound.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{BUSYBOX, World, assert_ok, assert_refused, both, identities};

/// A host file the identity can read, with a marker that must never appear in kiln's output.
const SECRET: &str = "KILN-HOST-SECRET-7f3a";

fn host_secret(world: &World, text: &str) -> PathBuf {
    let path = world.tmp.path().join("host-secret");
    std::fs::write(&path, text).expect("write host file");
    // Readable by the rootless identity too: only kiln's care keeps it out.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

fn assert_not_echoed(out: &Output) {
    let text = both(out);
    assert!(!text.contains(SECRET), "kiln echoed the host file: {text}");
}

/// Replaces `ctx/name` with a symlink to `target`.
fn plant_link(ctx: &Path, name: &str, target: &Path) {
    let link = ctx.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

#[test]
fn dockerfile_symlinked_to_a_host_file_is_not_read() {
    for id in identities() {
        let world = World::new(id);
        // Not a Dockerfile: read, it fails to parse and the parse error quotes its line.
        let secret = host_secret(&world, &format!("{SECRET}\n"));
        let ctx = world.context("ctx", BUSYBOX);
        plant_link(&ctx, "Dockerfile", &secret);
        let out = world.build(&ctx, &[]);
        assert_refused(&out);
        assert_not_echoed(&out);
        // Relative, climbing with `..`, and through `-f` naming a file in the context.
        let depth = secret.components().count();
        let rel = format!("{}{}", "../".repeat(depth), secret.display());
        std::fs::create_dir_all(ctx.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(&rel, ctx.join("sub/Dockerfile.dev")).expect("symlink");
        let f = ctx.join("sub/Dockerfile.dev");
        let out = world.build(&ctx, &["-f", f.to_str().expect("utf-8")]);
        assert_refused(&out);
        assert_not_echoed(&out);
    }
}

#[test]
fn dockerfile_symlinked_inside_the_context_still_builds() {
    for id in identities() {
        let world = World::new(id);
        let ctx = world.context("ctx", "");
        std::fs::create_dir_all(ctx.join("build")).expect("mkdir");
        std::fs::write(ctx.join("build/Dockerfile"), format!("{BUSYBOX}RUN true\n"))
            .expect("write");
        // Absolute targets are taken with the context as `/`, like every context path.
        plant_link(&ctx, "Dockerfile", Path::new("/build/Dockerfile"));
        crate::common::open_up(&ctx);
        assert_ok(&world.build(&ctx, &[]));
    }
}

#[test]
fn dockerfile_outside_the_context_named_with_f_is_the_users_choice() {
    for id in identities() {
        let world = World::new(id);
        let ctx = world.context("ctx", "FROM scratch\n");
        let elsewhere = world.tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        let df = elsewhere.join("Dockerfile");
        std::fs::write(&df, format!("{BUSYBOX}RUN true\n")).expect("write");
        crate::common::open_up(&elsewhere);
        assert_ok(&world.build(&ctx, &["-f", df.to_str().expect("utf-8")]));
    }
}

#[test]
fn dockerignore_symlinked_to_a_host_file_is_not_read() {
    for id in identities() {
        let world = World::new(id);
        // An unclosed bracket: read as ignore rules, the syntax error quotes the pattern.
        let secret = host_secret(&world, &format!("[{SECRET}\n"));
        let ctx = world.context("ctx", &format!("{BUSYBOX}RUN true\n"));
        plant_link(&ctx, ".dockerignore", &secret);
        plant_link(&ctx, "Dockerfile.dockerignore", &secret);
        let out = world.build(&ctx, &[]);
        assert_not_echoed(&out);
        assert_ok(&out);
    }
}

/// Runs `dockerfile` and checks kiln refused it with `message` on `line`, quickly and
/// without printing the hostile line whole.
fn assert_refused_on_line(world: &World, dockerfile: &str, line: usize, message: &str) {
    let ctx = world.context("ctx", dockerfile);
    let started = std::time::Instant::now();
    let out = world.build(&ctx, &[]);
    assert_refused(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Dockerfile:{line}")) && stderr.contains(message),
        "expected {message:?} on line {line}: {:.2000}",
        stderr
    );
    assert!(
        stderr.len() < 20_000,
        "the error is {} bytes: the hostile line was echoed whole",
        stderr.len()
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn nested_substitutions_are_refused_with_the_line() {
    for id in identities() {
        let world = World::new(id);
        let n = 50_000;
        let word = format!("{}x{}", "${X:-".repeat(n), "}".repeat(n));
        let dockerfile = format!("{BUSYBOX}ARG X\nENV A={word}\n");
        assert_refused_on_line(&world, &dockerfile, 6, "nested ${...} substitutions");
    }
}

#[test]
fn doubling_args_are_refused_with_the_line() {
    for id in identities() {
        let world = World::new(id);
        let mut dockerfile = format!("{BUSYBOX}ARG A0=xxxxxxxx\n");
        for i in 1..=24 {
            dockerfile.push_str(&format!("ARG A{i}=${{A{p}}}${{A{p}}}\n", p = i - 1));
        }
        dockerfile.push_str("RUN true\n");
        // BUSYBOX is 4 lines, A0 line 5, so A18 (the first over 1 MiB) is line 23.
        assert_refused_on_line(&world, &dockerfile, 23, "expansion exceeds");
    }
}
