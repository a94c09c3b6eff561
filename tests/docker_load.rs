//! `kiln save` archives against a real Docker daemon: `docker load` accepts them with
//! kiln's image ID, and `docker run` runs the image (Debian's docker.io, started here as a
//! private daemon with its own data root and socket; needs root, as `.ci/run` gives).

mod common;

use common::Kiln;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (the daemon's own version), not whatever else is on PATH.
const DOCKER: &str = "/usr/bin/docker";

/// A private dockerd, stopped (and its data removed) on drop.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        assert!(
            Path::new(DOCKERD).exists() && Path::new(DOCKER).exists(),
            "docker.io must be installed (apt-get install docker.io; .ci/run does)"
        );
        // Short paths: containerd's sockets live under the exec root.
        let dir = tempfile::Builder::new()
            .prefix("kd")
            .tempdir_in("/tmp")
            .unwrap();
        let p = |name: &str| dir.path().join(name);
        let log = fs::File::create(p("log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--iptables=false")
            .arg("--ip6tables=false")
            .arg("--bridge=none")
            .arg(format!("--data-root={}", p("root").display()))
            .arg(format!("--exec-root={}", p("exec").display()))
            .arg(format!("--pidfile={}", p("pid").display()))
            .arg("-H")
            .arg(format!("unix://{}", p("sock").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let mut daemon = Daemon { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !daemon.docker(&["info"]).status.success() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("dockerd exited ({status}): {}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("config"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd and unmount its overlays.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
