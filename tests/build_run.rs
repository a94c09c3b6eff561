//! End-to-end builds with RUN on a busybox base made FROM scratch: output, failures,
//! layers, RUN --mount kinds, networks and the cache rules for RUN.

mod common;

use common::{Kiln, stderr};
use std::fs;
use std::path::Path;

const BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

/// A context with busybox-static and the given Dockerfile (appended to [`BASE`]).
fn context(dockerfile_tail: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    fs::write(
        dir.path().join("Dockerfile"),
        format!("{BASE}{dockerfile_tail}"),
    )
    .unwrap();
    dir
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn run_output_is_streamed_and_files_land_in_the_layer() {
    let kiln = Kiln::new();
    let ctx = context(
        "RUN echo hello-from-run && mkdir -p /opt/app && echo data > /opt/app/f && ln -s f /opt/app/l\nRUN rm /opt/app/f && echo new > /opt/app/g\n",
    );
    let out = kiln.build_ok(&["-t", "run:1", path(ctx.path())]);
    assert!(stderr(&out).contains("hello-from-run"), "{}", stderr(&out));
    let image = kiln.image("run:1");
    assert!(!image.files.contains_key("opt/app/f"));
    assert_eq!(image.text("opt/app/g"), "new\n");
    assert_eq!(image.file("opt/app/l").kind, 'l');
    assert_eq!(image.file("opt/app/l").link, "f");
    // Mount points and files the sandbox provides are not committed.
    assert!(!image.files.contains_key("etc/hosts"));
    assert!(!image.files.contains_key("etc/resolv.conf"));
    assert!(!image.files.keys().any(|k| k.starts_with("proc/")));
    assert!(!image.files.keys().any(|k| k.starts_with("dev/")));
}

#[test]
fn a_failing_run_reports_exit_code_output_and_line_and_tags_nothing() {
    let kiln = Kiln::new();
    let ctx = context("RUN echo before-failing && exit 3\n");
    let out = kiln.run(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "fail:1",
        path(ctx.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:5"), "{err}");
    assert!(
        err.contains(">>> RUN echo before-failing && exit 3"),
        "{err}"
    );
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("before-failing"), "{err}");
    assert!(!common::stdout(&kiln.run(&["images"])).contains("fail"));
}

#[test]
fn run_is_cached_by_its_command_and_args_in_scope() {
    let kiln = Kiln::new();
    let ctx = context("ARG V=1\nRUN echo v > /v\nRUN echo w > /w\n");
    let c = path(ctx.path());
    kiln.build_ok(&[c]);
    let again = stderr(&kiln.build_ok(&[c]));
    assert_eq!(again.matches("CACHED").count(), 4, "{again}");
    // A changed ARG value re-runs every RUN after the ARG, not the ones before.
    let changed = stderr(&kiln.build_ok(&["--build-arg", "V=2", "--explain-cache", c]));
    assert_eq!(changed.matches("CACHED").count(), 2, "{changed}");
    assert!(
        changed.contains("V=2") || changed.contains("env"),
        "{changed}"
    );
}

#[test]
fn cache_mounts_persist_and_never_reach_a_layer() {
    let kiln = Kiln::new();
    let ctx = context(
        "RUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log > /count\n",
    );
    let c = path(ctx.path());
    kiln.build_ok(&["-t", "cm:1", c]);
    kiln.build_ok(&["--no-cache", "-t", "cm:1", c]);
    let image = kiln.image("cm:1");
    assert_eq!(image.text("count").trim(), "2");
    assert!(!image.files.keys().any(|k| k.starts_with("cache/")));
}

#[test]
fn secrets_are_visible_to_run_and_nowhere_else() {
    let kiln = Kiln::new();
    let ctx = context(
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok > /seen-len && wc -c < /run/secrets/tok > /len\nRUN --mount=type=secret,id=tok,env=TOKEN echo ${#TOKEN} > /envlen\n",
    );
    let secret = tempfile::NamedTempFile::new().unwrap();
    fs::write(secret.path(), "s3cr3t-value").unwrap();
    let spec = format!("id=tok,src={}", secret.path().display());
    kiln.build_ok(&["--secret", &spec, "-t", "sec:1", path(ctx.path())]);
    let image = kiln.image("sec:1");
    assert_eq!(image.text("len").trim(), "12");
    assert_eq!(image.text("envlen").trim(), "12");
    assert!(!image.files.keys().any(|k| k.starts_with("run/secrets")));
    let config = serde_json::to_string(&image.config).unwrap();
    assert!(!config.contains("s3cr3t"), "{config}");
    // An optional secret that is not given is absent: the RUN reading it fails.
    let out = kiln.run(&["build", "--no-cache", path(ctx.path())]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/run/secrets/tok"),
        "{}",
        stderr(&out)
    );
    // A required one is a clear error before anything runs.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BASE}RUN --mount=type=secret,id=tok,required=true true\n"),
    )
    .unwrap();
    let out = kiln.run(&["build", "--no-cache", path(ctx.path())]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret tok: not provided"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bind_and_tmpfs_mounts_are_not_committed() {
    let kiln = Kiln::new();
    let ctx = context(
        "RUN --mount=type=bind,source=Dockerfile,target=/df cp /df /copied-df\nRUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && test -f /scratch/t\n",
    );
    kiln.build_ok(&["-t", "bind:1", path(ctx.path())]);
    let image = kiln.image("bind:1");
    assert!(image.text("copied-df").starts_with("FROM scratch"));
    assert!(!image.files.keys().any(|k| k.starts_with("scratch/")));
    assert!(!image.files.contains_key("df"));
}

#[test]
fn network_none_leaves_only_loopback() {
    let kiln = Kiln::new();
    let ctx =
        context("RUN --network=none ls /sys/class/net > /ifaces || cat /proc/net/dev > /ifaces\n");
    kiln.build_ok(&["-t", "net:1", path(ctx.path())]);
    let image = kiln.image("net:1");
    let ifaces = image.text("ifaces");
    assert!(ifaces.contains("lo"), "{ifaces}");
    assert!(!ifaces.contains("eth0"), "{ifaces}");
}

#[test]
fn heredoc_run_scripts_run() {
    let kiln = Kiln::new();
    let ctx = context(
        "RUN <<EOF\necho one > /one\necho two > /two\nEOF\nRUN <<'EOT' sh\necho \"$0\" > /shell-arg\nEOT\n",
    );
    kiln.build_ok(&["-t", "hd:1", path(ctx.path())]);
    let image = kiln.image("hd:1");
    assert_eq!(image.text("one"), "one\n");
    assert_eq!(image.text("two"), "two\n");
}

#[test]
fn copy_snapshotter_gives_the_same_image_as_overlay() {
    let ctx =
        context("RUN mkdir -p /a/b && echo x > /a/b/c && rm -rf /bin/ls\nRUN echo y >> /a/b/c\n");
    let ids: Vec<String> = ["overlay", "copy"]
        .iter()
        .map(|snapshotter| {
            let kiln = Kiln::new();
            let dir = tempfile::tempdir().unwrap();
            let iid = dir.path().join("iid");
            kiln.build_ok(&[
                "--snapshotter",
                snapshotter,
                "--iidfile",
                iid.to_str().unwrap(),
                path(ctx.path()),
            ]);
            fs::read_to_string(iid).unwrap()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn cache_mounts_can_be_seeded_from_a_stage_and_shared_privately() {
    let kiln = Kiln::new();
    let ctx = context(
        "RUN mkdir -p /seed && echo seeded > /seed/f\n\nFROM base AS seed\nRUN true\n\nFROM base\nRUN --mount=type=cache,target=/c,id=seeded,from=seed,source=/seed,uid=7,mode=0700 cat /c/f > /got && stat -c '%u %a' /c > /owner\nRUN --mount=type=cache,target=/p,sharing=private echo x > /p/x && test -f /p/x\nRUN --mount=type=cache,target=/l,sharing=locked echo y > /l/y\n",
    );
    kiln.build_ok(&["-t", "seeded:1", path(ctx.path())]);
    let image = kiln.image("seeded:1");
    assert_eq!(image.text("got"), "seeded\n");
    assert_eq!(image.text("owner").trim(), "7 700");
    assert!(
        !image
            .files
            .keys()
            .any(|k| k.starts_with("p/") || k.starts_with("l/"))
    );
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn sigkill_in_the_middle_of_a_run_leaves_nothing_behind_and_the_next_build_works() {
    let kiln = Kiln::new();
    let marker = format!("kiln-kill-test-{}", std::process::id());
    let ctx = context(&format!("RUN sleep 1000 && echo {marker}\n"));
    let mut child = kiln
        .cmd()
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "killed:1",
            path(ctx.path()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the RUN's shell is up inside the sandbox.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while processes_with(&marker)
        .iter()
        .all(|p| !p.contains("sleep 1000"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the RUN never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left running: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let store = kiln.root.path().to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&store), "mounts left: {mounts}");
    assert!(!common::stdout(&kiln.run(&["images"])).contains("killed"));

    // The store still works: the next build (same base, cached) succeeds.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BASE}RUN echo after > /after\n"),
    )
    .unwrap();
    let out = kiln.build_ok(&["-t", "after:1", path(ctx.path())]);
    assert!(stderr(&out).contains("CACHED"), "{}", stderr(&out));
    assert_eq!(kiln.image("after:1").text("after"), "after\n");
}

/// A context directory that is a mount point of its own (a CI workspace often is): a RUN
/// bind mount of the context sees its files, not the empty directory below the mount.
#[test]
fn a_context_that_is_a_mount_point_is_seen_by_a_bind_mount() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: mounting a context needs root");
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let ctx = outer.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &ctx,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"mode=755",
    )
    .expect("mount a tmpfs on the context");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(&ctx);
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    fs::write(ctx.join("data.txt"), "from the mounted context\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("{BASE}RUN --mount=type=bind,target=/ctx cat /ctx/data.txt > /seen\n"),
    )
    .unwrap();
    let kiln = Kiln::new();
    kiln.build_ok(&["-t", "mounted:1", path(&ctx)]);
    assert_eq!(
        kiln.image("mounted:1").text("seen"),
        "from the mounted context\n"
    );
}

#[test]
fn proxy_build_args_reach_run_without_arg_but_not_the_key_or_history() {
    let kiln = Kiln::new();
    let ctx = context("RUN echo \"proxy=$HTTP_PROXY no=$no_proxy other=$OTHER\" > /seen\n");
    let build = |proxy: &str, tag: &str| {
        let iid = kiln.root.path().join(format!("{tag}.iid"));
        let out = kiln.build_ok(&[
            "--build-arg",
            &format!("HTTP_PROXY={proxy}"),
            "--build-arg",
            "no_proxy=localhost",
            "--build-arg",
            "OTHER=x",
            "--iidfile",
            iid.to_str().unwrap(),
            "-t",
            tag,
            path(ctx.path()),
        ]);
        (fs::read_to_string(iid).unwrap(), stderr(&out))
    };
    let (first, _) = build("http://proxy-a.example:3128", "px:1");
    let image = kiln.image("px:1");
    // Undeclared OTHER is not set; the proxy args are, without an ARG.
    assert_eq!(
        image.text("seen"),
        "proxy=http://proxy-a.example:3128 no=localhost other=\n"
    );
    let history = image.config["history"].to_string();
    assert!(!history.contains("proxy-a"), "{history}");
    assert!(!history.contains("HTTP_PROXY="), "{history}");
    // Another proxy is another way to the network, not another step: all cached.
    let (second, log) = build("http://proxy-b.example:3128", "px:2");
    assert_eq!(first, second);
    assert!(log.contains("CACHED"), "{log}");

    // Declared with ARG, the proxy is an ordinary build arg: in history and key.
    let declared = context("ARG HTTP_PROXY\nRUN echo \"proxy=$HTTP_PROXY\" > /seen\n");
    kiln.build_ok(&[
        "--build-arg",
        "HTTP_PROXY=http://proxy-a.example:3128",
        "-t",
        "px:3",
        path(declared.path()),
    ]);
    let image = kiln.image("px:3");
    assert_eq!(image.text("seen"), "proxy=http://proxy-a.example:3128\n");
    assert!(
        image.config["history"]
            .to_string()
            .contains("HTTP_PROXY=http://proxy-a.example:3128")
    );
}

#[test]
fn a_run_mounting_an_image_misses_the_cache_when_the_tag_moves() {
    let kiln = Kiln::new();
    let img = tempfile::tempdir().unwrap();
    let c_img = path(img.path());
    fs::write(img.path().join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    fs::write(img.path().join("f"), "one\n").unwrap();
    kiln.build_ok(&["-t", "mounted:1", c_img]);
    let ctx = context("RUN --mount=type=bind,from=mounted:1,target=/m cat /m/f > /out\n");
    let c = path(ctx.path());
    kiln.build_ok(&["-t", "reader:1", c]);
    assert_eq!(kiln.image("reader:1").text("out"), "one\n");
    // The same name, another image: the RUN reads it again.
    fs::write(img.path().join("f"), "two\n").unwrap();
    kiln.build_ok(&["-t", "mounted:1", c_img]);
    let again = stderr(&kiln.build_ok(&["-t", "reader:2", c]));
    assert_eq!(kiln.image("reader:2").text("out"), "two\n", "{again}");
    // Unchanged, it is a cache hit.
    let third = stderr(&kiln.build_ok(&["-t", "reader:3", c]));
    assert_eq!(third.matches("CACHED").count(), 3, "{third}");
}
