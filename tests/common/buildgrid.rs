//! BuildGrid (PyPI `buildgrid`, in a venv `testdata/reapi/make-buildgrid.sh` makes once)
//! on a free loopback port, serving a REAPI CAS, ByteStream and Action Cache from memory:
//! the remote cache of the REAPI tests. Stopped on drop; [`BuildGrid::kill`] kills it
//! mid-test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The venv with `bgd`, made (or found cached) by the testdata script.
pub fn venv() -> PathBuf {
    let out = Command::new(super::testdata("reapi/make-buildgrid.sh"))
        .output()
        .expect("running testdata/reapi/make-buildgrid.sh");
    assert!(
        out.status.success(),
        "make-buildgrid.sh failed (it needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

const CONFIG: &str = r#"server:
  - !channel
    address: "127.0.0.1:PORT"
CHANNEL
authorization:
  method: none
monitoring:
  enabled: false
storages:
  - !lru-storage &cas-storage
    size: 512M
caches:
  - !lru-action-cache &ac
    storage: *cas-storage
    max-cached-refs: 10000
    allow-updates: true
    cache-failed-actions: true
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas-storage
      - !bytestream
        storage: *cas-storage
thread-pool-size: 10
# Without this gRPC sets SO_REUSEPORT, and a second server on a taken port starts "fine".
grpc-server-options:
  grpc.so_reuseport: 0
"#;

/// A running BuildGrid.
pub struct BuildGrid {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

/// TLS for a server: its key and certificate, and the CAs it takes client certificates
/// from (it then requires one).
pub struct Tls<'a> {
    pub key: &'a std::path::Path,
    pub cert: &'a std::path::Path,
    pub client_cas: &'a std::path::Path,
}

impl BuildGrid {
    /// A plaintext server.
    pub fn start() -> BuildGrid {
        BuildGrid::start_with("    insecure-mode: true".into())
    }

    /// A TLS server that requires a client certificate.
    pub fn start_tls(tls: &Tls) -> BuildGrid {
        BuildGrid::start_with(format!(
            "    insecure-mode: false\n    credentials:\n      tls-server-key: {}\n      tls-server-cert: {}\n      tls-client-certs: {}",
            tls.key.display(),
            tls.cert.display(),
            tls.client_cas.display()
        ))
    }

    fn start_with(channel: String) -> BuildGrid {
        let bgd = venv().join("bin/bgd");
        // A port race (another process took the free port first) makes bgd exit: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("config.yml");
            let yaml = CONFIG
                .replace("CHANNEL", &channel)
                .replace("PORT", &port.to_string());
            std::fs::write(&config, yaml).unwrap();
            let pid_file = dir.path().join("pid");
            let log = std::fs::File::create(dir.path().join("log")).unwrap();
            let child = Command::new(&bgd)
                .args(["server", "start", "--pid-file"])
                .arg(&pid_file)
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting bgd");
            let mut server = BuildGrid { dir, port, child };
            // The pid file is written once the server listens.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if pid_file.exists() {
                    return server;
                }
                if server.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "BuildGrid did not start: {}",
                    server.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("BuildGrid exited at start, retrying: {}", server.log());
        }
        panic!("BuildGrid did not start three times");
    }

    /// `grpcs://127.0.0.1:PORT`.
    pub fn tls_endpoint(&self) -> String {
        format!("grpcs://127.0.0.1:{}", self.port)
    }

    /// `grpc://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.kill();
        }
    }
}
