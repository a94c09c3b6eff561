//! A private Docker daemon for the tests that hand kiln's images to real Docker
//! (`docker load`, `docker run`): Debian's docker.io with its own data root and socket,
//! no iptables and no bridge (containers run with `--network none`). Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (the daemon's own version), not whatever else is on PATH.
const DOCKER: &str = "/usr/bin/docker";

/// A private dockerd, stopped (and its data removed) on drop.
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start() -> Daemon {
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

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("config"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
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
