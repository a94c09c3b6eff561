//! End-to-end builds of FROM-scratch Dockerfiles (COPY, ADD, metadata, stages) with the real
//! binary: file trees, config, cache behaviour, reproducibility and error reports.

mod common;

use common::{Kiln, copy_dir, stderr, testdata};
use std::fs;
use std::path::Path;

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn iid(kiln: &Kiln, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let iidfile = dir.path().join("iid");
    let mut all = vec!["--iidfile", iidfile.to_str().unwrap()];
    all.extend_from_slice(args);
    kiln.build_ok(&all);
    fs::read_to_string(iidfile).unwrap()
}

#[test]
fn hello_example_builds_the_expected_files_and_config() {
    let kiln = Kiln::new();
    let ctx = testdata("hello");
    kiln.build_ok(&["-t", "hello:1", ctx.to_str().unwrap()]);
    let image = kiln.image("hello:1");

    assert_eq!(image.text("srv/www/greeting.txt"), "hello from kiln\n");
    assert!(image.text("srv/www/index.html").contains("Built by kiln"));
    let serve = image.file("usr/local/bin/serve");
    assert_eq!(serve.mode, 0o755);
    assert_eq!((serve.uid, serve.gid), (0, 0));
    assert_eq!(image.file("srv/www").kind, 'd');
    // .dockerignore keeps NOTES.md and the Dockerfile out of COPY sources.
    assert!(!image.files.keys().any(|k| k.ends_with("NOTES.md")));

    let c = &image.config["config"];
    assert_eq!(c["WorkingDir"], "/srv/www");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/serve"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--port", "8080"]));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "kiln hello");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP_HOME=/srv/www"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert_eq!(image.config["created"], "1970-01-01T00:00:00Z");
    // WORKDIR, COPY --from and COPY each made a layer.
    assert_eq!(image.layer_count, 3);
    let history = image.config["history"].as_array().unwrap();
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] != true).count(),
        3
    );
}

#[test]
fn rebuild_with_nothing_changed_is_all_cached_and_one_file_change_reruns_its_steps() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "a.txt", "a\n");
    write(ctx.path(), "b.txt", "b\n");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\nENV X=1\n",
    );
    let c = ctx.path().to_str().unwrap();
    let first = iid(&kiln, &["-t", "t:1", c]);
    let out = kiln.build_ok(&["-t", "t:1", c]);
    let log = stderr(&out);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");

    write(ctx.path(), "b.txt", "B\n");
    let out = kiln.build_ok(&["--explain-cache", "-t", "t:1", c]);
    let log = stderr(&out);
    assert_eq!(log.matches("CACHED").count(), 1, "{log}");
    assert!(log.contains("file changed: b.txt"), "{log}");
    assert_ne!(first, iid(&kiln, &[c]));
}

#[test]
fn touching_files_does_not_bust_the_cache_but_a_mode_change_does() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "f", "x");
    write(ctx.path(), "Dockerfile", "FROM scratch\nCOPY f /f\n");
    let c = ctx.path().to_str().unwrap();
    kiln.build_ok(&[c]);
    let later = filetime::FileTime::from_unix_time(2_000_000_000, 0);
    filetime::set_file_mtime(ctx.path().join("f"), later).unwrap();
    assert!(stderr(&kiln.build_ok(&[c])).contains("CACHED"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ctx.path().join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!stderr(&kiln.build_ok(&[c])).contains("CACHED"));
}

#[test]
fn no_cache_builds_in_different_stores_give_the_same_image_id() {
    let ctx_a = tempfile::tempdir().unwrap();
    copy_dir(&testdata("hello"), ctx_a.path());
    let ctx_b = tempfile::tempdir().unwrap();
    copy_dir(&testdata("hello"), ctx_b.path());
    // Different mtimes in the second context.
    let later = filetime::FileTime::from_unix_time(1_900_000_000, 0);
    filetime::set_file_mtime(ctx_b.path().join("site/index.html"), later).unwrap();
    let a = iid(
        &Kiln::new(),
        &["--no-cache", ctx_a.path().to_str().unwrap()],
    );
    let b = iid(
        &Kiln::new(),
        &["--no-cache", ctx_b.path().to_str().unwrap()],
    );
    assert!(a.starts_with("sha256:"), "{a}");
    assert_eq!(a, b);
    for compression in ["zstd", "none"] {
        let a = iid(
            &Kiln::new(),
            &["--compression", compression, ctx_a.path().to_str().unwrap()],
        );
        let b = iid(
            &Kiln::new(),
            &["--compression", compression, ctx_b.path().to_str().unwrap()],
        );
        assert_eq!(a, b, "{compression}");
    }
}

#[test]
fn a_missing_source_fails_with_the_dockerfile_line_and_tags_nothing() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nENV A=1\nCOPY nothere.txt /x\n",
    );
    let out = kiln.run(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "bad:1",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("nothere.txt"), "{err}");
    assert!(err.contains(">>> COPY nothere.txt /x"), "{err}");
    let images = kiln.run(&["images"]);
    assert!(!common::stdout(&images).contains("bad"));
}

#[test]
fn a_parse_error_names_file_line_and_cause() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", "FROM scratch\nFROB x\n");
    let out = kiln.run(&["build", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.to_lowercase().contains("unknown instruction"), "{err}");
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "a", "a");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch AS one\nCOPY a /one\n\nFROM scratch AS broken\nCOPY missing /x\n\nFROM one AS two\nCOPY a /two\n",
    );
    let c = ctx.path().to_str().unwrap();
    kiln.build_ok(&["--target", "two", "-t", "two", c]);
    let image = kiln.image("two");
    assert_eq!(image.text("one"), "a");
    assert_eq!(image.text("two"), "a");
}

#[test]
fn copy_from_stage_chown_and_chmod_apply() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "src/x.sh", "echo x\n");
    write(ctx.path(), "src/sub/y", "y\n");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch AS build\nCOPY src/ /out/\n\nFROM scratch\nCOPY --from=build --chown=7:8 --chmod=0750 /out/ /app/\nCOPY --from=0 /out/x.sh /bin/\n",
    );
    kiln.build_ok(&["-t", "c", ctx.path().to_str().unwrap()]);
    let image = kiln.image("c");
    let x = image.file("app/x.sh");
    assert_eq!((x.uid, x.gid, x.mode), (7, 8, 0o750));
    assert_eq!(image.text("app/sub/y"), "y\n");
    assert_eq!(image.text("bin/x.sh"), "echo x\n");
}

#[test]
fn save_formats_are_accepted_by_skopeo() {
    let kiln = Kiln::new();
    kiln.build_ok(&["-t", "hello:1", testdata("hello").to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    for (format, transport) in [("docker", "docker-archive"), ("oci", "oci-archive")] {
        let file = dir.path().join(format!("{format}.tar"));
        let out = kiln.run(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            "hello:1",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let inspect = std::process::Command::new("skopeo")
            .args(["inspect", &format!("{transport}:{}", file.display())])
            .output()
            .expect("skopeo must be installed (apt-get install skopeo)");
        assert!(
            inspect.status.success(),
            "skopeo inspect {transport}: {}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
        let copy_dest = dir.path().join(format!("copy-{format}"));
        let copy = std::process::Command::new("skopeo")
            .args([
                "copy",
                &format!("{transport}:{}", file.display()),
                &format!("oci:{}", copy_dest.display()),
            ])
            .output()
            .unwrap();
        assert!(
            copy.status.success(),
            "skopeo copy {transport}: {}",
            String::from_utf8_lossy(&copy.stderr)
        );
    }
}

#[test]
fn load_round_trips_a_saved_image() {
    let a = Kiln::new();
    a.build_ok(&["-t", "hello:1", testdata("hello").to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("img.tar");
    assert!(
        a.run(&["save", "-o", file.to_str().unwrap(), "hello:1"])
            .status
            .success()
    );
    let b = Kiln::new();
    let out = b.run(&["load", "-i", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let image = b.image("hello:1");
    assert_eq!(image.text("srv/www/greeting.txt"), "hello from kiln\n");
}

#[test]
fn build_outputs_write_oci_layouts_and_docker_archives() {
    let kiln = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let oci_tar = dir.path().join("img-oci.tar");
    let docker_tar = dir.path().join("img-docker.tar");
    kiln.build_ok(&[
        "-t",
        "out:1",
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        "-o",
        &format!("type=oci,dest={}", oci_tar.display()),
        "-o",
        &format!("type=docker,dest={}", docker_tar.display()),
        testdata("hello").to_str().unwrap(),
    ]);
    assert!(layout.join("oci-layout").is_file());
    assert!(layout.join("index.json").is_file());
    for source in [
        format!("oci:{}", layout.display()),
        format!("oci-archive:{}", oci_tar.display()),
        format!("docker-archive:{}", docker_tar.display()),
    ] {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", &source])
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "{source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let image = common::Image::from_docker_archive(&docker_tar);
    assert_eq!(image.text("srv/www/greeting.txt"), "hello from kiln\n");
}

#[test]
fn image_commands_tag_inspect_history_rmi_and_prune() {
    let kiln = Kiln::new();
    let id = iid(&kiln, &["-t", "one:1", testdata("hello").to_str().unwrap()]);
    assert!(kiln.run(&["tag", "one:1", "two:2"]).status.success());
    let images = common::stdout(&kiln.run(&["images"]));
    assert!(
        images.contains("one:1") && images.contains("two:2"),
        "{images}"
    );

    let inspect = kiln.run(&["inspect", "two:2"]);
    assert!(inspect.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(doc["Id"], id.as_str());
    assert_eq!(doc["Config"]["config"]["User"], "1000:1000");

    let history = common::stdout(&kiln.run(&["history", "one:1"]));
    assert!(history.contains("WORKDIR /srv/www"), "{history}");
    assert!(
        history.contains("COPY /srv/www/ ./ # buildkit"),
        "{history}"
    );

    let out = kiln.run(&["rmi", "nothere:1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"));
    assert!(kiln.run(&["rmi", "one:1", "two:2"]).status.success());
    let blobs = |k: &Kiln| {
        fs::read_dir(k.root.path().join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs(&kiln);
    let out = kiln.run(&["prune", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(blobs(&kiln) < before, "prune freed nothing");
    assert!(!kiln.run(&["inspect", "one:1"]).status.success());
}

#[test]
fn concurrent_builds_on_one_store_keep_both_tags() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "f", "x");
    write(ctx.path(), "Dockerfile", "FROM scratch\nCOPY f /f\n");
    let c = ctx.path().to_str().unwrap().to_string();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let mut cmd = kiln.cmd();
            cmd.args([
                "build",
                "--progress",
                "quiet",
                "-t",
                &format!("par:{i}"),
                &c,
            ]);
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let images = common::stdout(&kiln.run(&["images"]));
    for i in 0..4 {
        assert!(images.contains(&format!("par:{i}")), "{images}");
    }
}

#[test]
fn a_local_cache_export_makes_a_fresh_store_build_everything_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = testdata("hello");
    let a = Kiln::new();
    let first = iid(
        &a,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(cache.join("kiln-cache.json").is_file());
    let b = Kiln::new();
    let iidfile = dir.path().join("iid");
    let out = b.build_ok(&[
        "--cache-from",
        &format!("type=local,src={}", cache.display()),
        "--iidfile",
        iidfile.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let log = stderr(&out);
    // Every layer step of both stages: 2 in `site`, 3 in the final stage.
    assert_eq!(log.matches("CACHED").count(), 5, "{log}");
    assert_eq!(fs::read_to_string(iidfile).unwrap(), first);
}

#[test]
fn another_platform_gives_its_image_and_bad_platform_values_are_clear_errors() {
    let kiln = Kiln::new();
    let hello = testdata("hello");
    let hello = hello.to_str().unwrap();
    // No RUN, so no emulator is needed: the image is simply the other platform's.
    kiln.build_ok(&["--platform", "linux/s390x", "-t", "s390x:1", hello]);
    assert_eq!(kiln.image("s390x:1").config["architecture"], "s390x");
    for (value, says) in [
        ("linux/amd64,linux", "invalid platform \"linux\""),
        ("linux", "invalid platform \"linux\""),
    ] {
        let out = kiln.run(&["build", "--platform", value, hello]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains(&format!("--platform {value}: ")),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}

#[test]
fn each_stage_is_built_for_its_own_platform_the_build_platforms_natively() {
    let kiln = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    fs::write(ctx.join("f"), "x").unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let c = ctx.to_str().unwrap();
    // A constant platform: the stage (and so the image) is that platform's.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=linux/s390x scratch\nCOPY f /f\n",
    )
    .unwrap();
    kiln.build_ok(&["-t", "s:1", c]);
    assert_eq!(kiln.image("s:1").config["architecture"], "s390x");
    // One that names no platform is an error at its line.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=linux scratch\nCOPY f /f\n",
    )
    .unwrap();
    let out = kiln.run(&["build", "-t", "s:2", c]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Dockerfile:1: FROM --platform: invalid platform \"linux\""),
        "{}",
        stderr(&out)
    );
    // The cross-compiling pattern: the build platform's stage runs natively (its RUN sees
    // this machine), the target's stage makes the target's image.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM scratch AS tools\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox uname -m > /m\"]\n\
         FROM --platform=$TARGETPLATFORM scratch\nCOPY --from=tools /m /m\n",
    )
    .unwrap();
    kiln.build_ok(&["--platform", "linux/riscv64", "-t", "x:1", c]);
    let image = kiln.image("x:1");
    assert_eq!(image.config["architecture"], "riscv64");
    assert_eq!(image.text("m"), format!("{}\n", std::env::consts::ARCH));
}

#[test]
fn json_progress_is_one_event_per_line_ending_with_the_image() {
    let kiln = Kiln::new();
    let out = kiln.run(&[
        "build",
        "--progress",
        "json",
        "-t",
        "j:1",
        testdata("hello").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(lines.iter().any(|e| e["event"] == "started"));
    assert!(lines.iter().any(|e| e["event"] == "done"));
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "image");
    assert!(last["id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(last["tags"], serde_json::json!(["j:1"]));
}

#[test]
fn the_syntax_directive_names_a_frontend_kiln_does_not_run() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "hi\n").unwrap();
    let dockerfile = |syntax: &str| {
        fs::write(
            ctx.path().join("Dockerfile"),
            format!("# syntax={syntax}\nFROM scratch\nCOPY f /f\n"),
        )
        .unwrap();
    };
    // docker/dockerfile:1 in all its spellings is kiln's own frontend: nothing to say.
    for own in [
        "docker/dockerfile:1",
        "docker.io/docker/dockerfile:1.7-labs",
    ] {
        dockerfile(own);
        let out = kiln.build_ok(&["-t", "syn:1", ctx.path().to_str().unwrap()]);
        assert!(!stderr(&out).contains("warning"), "{own}: {}", stderr(&out));
    }
    // Another frontend: the file parses, so it is built, with a warning naming the line.
    dockerfile("example.com/my/frontend:3");
    let out = kiln.build_ok(&["-t", "syn:2", ctx.path().to_str().unwrap()]);
    assert!(
        stderr(&out).contains(
            "warning: Dockerfile:1: `# syntax=example.com/my/frontend:3` asks for another \
             Dockerfile frontend; kiln runs only its built-in one (docker/dockerfile:1) and \
             builds with that"
        ),
        "{}",
        stderr(&out)
    );
    // Same image as without the directive.
    let a = kiln.image("syn:1");
    let b = kiln.image("syn:2");
    assert_eq!(a.config["rootfs"], b.config["rootfs"]);
}

#[test]
fn metadata_file_has_buildx_keys_for_the_built_image() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "hi\n").unwrap();
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let (iid, meta) = (out_dir.path().join("iid"), out_dir.path().join("meta.json"));
    kiln.build_ok(&[
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
        "-t",
        "meta:1",
        "-t",
        "meta:2",
        ctx.path().to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        doc["containerimage.config.digest"],
        fs::read_to_string(&iid).unwrap().as_str()
    );
    assert_eq!(
        doc["image.name"],
        "docker.io/library/meta:1,docker.io/library/meta:2"
    );
    let digest = doc["containerimage.digest"].as_str().unwrap();
    let descriptor = &doc["containerimage.descriptor"];
    assert_eq!(descriptor["digest"], digest);
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // The digest and size are those of the manifest blob the store holds.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = fs::read(kiln.root.path().join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(kiln_base::digest::sha256_digest(&blob), digest);
    assert_eq!(descriptor["size"], blob.len());
}
