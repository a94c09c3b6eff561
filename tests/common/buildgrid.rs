//! BuildGrid (PyPI `buildgrid`, in a venv `testdata/reapi/make-buildgrid.sh` makes once)
//! on a free loopback port, serving a REAPI CAS, ByteStream and Action Cache from memory:
//! the remote cache of the REAPI tests. Stopped on drop; [`BuildGrid::kill`] kills it
//! mid-test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The venv with `bgd`, made (or found cached) by the testdata script; it needs
/// python3-venv and PyPI.
pub fn venv() -> PathBuf {
    super::made_by("reapi/make-buildgrid.sh", &[])
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

/// A running BuildGrid (with the PostgreSQL its scheduler needs, when it has one).
pub struct BuildGrid {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    postgres: Option<Postgres>,
}

/// The scheduler part of a farm's config: Execution and the Bots service on PostgreSQL,
/// matching Actions to bots by the `kiln-step` property.
const FARM: &str = r#"connections:
  - !sql-connection &sql
    connection-string: postgresql+psycopg2://bgd@127.0.0.1:PGPORT/bgd
    pool-size: 5
    pool-timeout: 30
    max-overflow: 10
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas-storage
    action-cache: *ac
    property-set: !dynamic-property-set
      match-property-keys:
        - kiln-step
    bot-session-keepalive-timeout: 30
    max-execution-timeout: 600
    poll-interval: 0.2
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.2
"#;

/// A throwaway PostgreSQL on a free loopback port (Debian's `postgresql` binaries), run
/// as `postgres` when the test is root (initdb refuses root). Stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL must be installed (apt-get install postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("no /usr/lib/postgresql/*/bin/initdb");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = rustix::process::geteuid().is_root();
        if root {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let pg = Postgres { dir, bin, port };
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "bgd",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        pg.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "bgd",
                "bgd",
            ],
        );
        pg
    }

    /// `program` of PostgreSQL's, as `postgres` when the test is root (initdb refuses root).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if rustix::process::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

    /// A plaintext farm: the cache services plus Execution and Bots, its scheduler on a
    /// PostgreSQL of its own, for `kiln worker`s to serve.
    pub fn start_farm() -> BuildGrid {
        let postgres = Postgres::start();
        let url = format!("postgresql+psycopg2://bgd@127.0.0.1:{}/bgd", postgres.port);
        let out = Command::new(venv().join("bin/bgd"))
            .args(["migrate", "apply", &url])
            .output()
            .expect("bgd migrate");
        assert!(
            out.status.success(),
            "bgd migrate apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = BuildGrid::start_config(
            "    insecure-mode: true".into(),
            Some(FARM.replace("PGPORT", &postgres.port.to_string())),
        );
        server.postgres = Some(postgres);
        server
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
        BuildGrid::start_config(channel, None)
    }

    fn start_config(channel: String, farm: Option<String>) -> BuildGrid {
        let bgd = venv().join("bin/bgd");
        // A port race (another process took the free port first) makes bgd exit: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = dir.path().join("config.yml");
            let mut yaml = CONFIG
                .replace("CHANNEL", &channel)
                .replace("PORT", &port.to_string());
            if let Some(farm) = &farm {
                yaml = yaml.replace("instances:\n", &format!("{farm}instances:\n"));
                yaml = yaml.replace(
                    "      - !cas\n",
                    "      - !execution\n        scheduler: *scheduler\n        operation-stream-keepalive-timeout: 5\n      - !cas\n",
                );
            }
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
            let mut server = BuildGrid {
                dir,
                port,
                child,
                postgres: None,
            };
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
