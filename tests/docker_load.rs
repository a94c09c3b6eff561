//! `kiln save` archives against a real Docker daemon: `docker load` accepts them with
//! kiln's image ID, and `docker run` runs the image (Debian's docker.io, started here as a
//! private daemon with its own data root and socket; needs root, as `.ci/run` gives).

mod common;

use common::Kiln;
use common::dockerd::Daemon;
use std::fs;

#[test]
fn docker_loads_kiln_archives_with_kiln_image_id_and_runs_them() {
    let ctx = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    fs::write(ctx.path().join("msg.txt"), "hello from kiln\n").unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\nCOPY msg.txt /srv/msg.txt\nRUN echo built > /srv/built\nWORKDIR /srv\nCMD [\"cat\", \"msg.txt\", \"built\"]\n",
    )
    .unwrap();
    let kiln = Kiln::new();
    let iid = kiln.root.path().join("iid");
    kiln.build_ok(&[
        "--iidfile",
        iid.to_str().unwrap(),
        "-t",
        "kiln-docker/app:1",
        ctx.path().to_str().unwrap(),
    ]);
    let id = fs::read_to_string(&iid).unwrap();
    let archive = kiln.root.path().join("app.tar");
    let out = kiln.run(&["save", "-o", archive.to_str().unwrap(), "kiln-docker/app:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = Daemon::start();
    let loaded = daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: kiln-docker/app:1"),
        "{loaded}"
    );
    let docker_id = daemon.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "kiln-docker/app:1",
    ]);
    assert_eq!(docker_id.trim(), id.trim(), "docker sees kiln's image ID");
    let ran = daemon.docker_ok(&["run", "--rm", "--network", "none", "kiln-docker/app:1"]);
    assert_eq!(ran, "hello from kiln\nbuilt\n");
    let wd = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "kiln-docker/app:1",
        "pwd",
    ]);
    assert_eq!(wd, "/srv\n");
}
