//! OpenSSH on loopback for the ssh tests: keys made with `ssh-keygen` and a real
//! `ssh-agent` owned by the test's identity ([`make_key`], [`Agent`]), and an `sshd` the
//! test starts (as root: sshd needs its privilege separation) on a free loopback port,
//! with a host key of its own and an `AuthorizedKeysFile` in its temporary directory
//! ([`Sshd`]). Nothing of this machine's `~/.ssh` or `/etc/ssh` is read or written.

use super::identity::{Identity, USER, World, both};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server is: Debian's openssh-server.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Runs `program` as the world's identity.
pub fn as_identity(w: &World, program: &str) -> Command {
    match w.id {
        Identity::Rootless if w.uid.is_some() => {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--", program]);
            c
        }
        _ => Command::new(program),
    }
}

/// A private key (ed25519, no passphrase, `comment`) owned by the identity, in its own
/// directory `name` of the world.
pub fn make_key(w: &World, name: &str, comment: &str) -> PathBuf {
    let dir = w.user_dir(name);
    let key = dir.join("id_ed25519");
    let status = as_identity(w, "ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(status.success());
    key
}

/// An ssh-agent of the identity's holding `key`, listening in the world's directory
/// `name`; killed on drop (with `runuser` above it, as the test user).
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start(w: &World, name: &str, key: &Path) -> Agent {
        let socket = w.user_dir(name).join("sock");
        // A group of its own: as the test user the child is `runuser`, and the agent
        // under it must go too when the test ends.
        let child = as_identity(w, "ssh-agent")
            .process_group(0)
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (apt-get install openssh-client)");
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed().as_secs() < 10, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let added = as_identity(w, "ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .expect("ssh-add");
        assert!(added.status.success(), "{}", both(&added));
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `sshd` on `127.0.0.1:port` (and, when given, on `scp_host:22` too, for URLs that
/// cannot name a port), letting in whoever holds a key [`Sshd::authorize`]d; stopped
/// when dropped. Logins are as root.
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    pub scp_host: Option<String>,
}

impl Sshd {
    /// Starts the server; fails the test when sshd is not installed or does not listen.
    pub fn start(scp_host: Option<&str>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: the git-over-ssh tests need openssh-server (apt-get install \
             openssh-server)"
        );
        assert!(
            super::identity::is_root(),
            "sshd needs root for its privilege separation: run the tests as root"
        );
        // sshd's privilege separation directory, which its package makes at boot.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("host_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .expect("ssh-keygen");
        assert!(made.success());
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, "").expect("authorized_keys");
        let port = free_port();
        let mut listen = format!("ListenAddress 127.0.0.1:{port}\n");
        if let Some(host) = scp_host {
            listen += &format!("ListenAddress {host}:22\n");
        }
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "{listen}HostKey {}\nAuthorizedKeysFile {}\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AllowAgentForwarding no\nAllowTcpForwarding no\nX11Forwarding no\n\
                 PidFile none\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .expect("sshd_config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd");
        let mut sshd = Sshd {
            dir,
            child,
            port,
            scp_host: scp_host.map(str::to_string),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut addrs = vec![("127.0.0.1".to_string(), port)];
        if let Some(host) = scp_host {
            addrs.push((host.to_string(), 22));
        }
        for (host, port) in addrs {
            while std::net::TcpStream::connect((host.as_str(), port)).is_err() {
                if let Ok(Some(status)) = sshd.child.try_wait() {
                    panic!("sshd exited ({status}): {}", sshd.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd did not listen on {host}:{port}: {}",
                    sshd.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        sshd
    }

    /// Lets the holder of `key`'s private half in.
    pub fn authorize(&self, key: &Path) {
        let public = std::fs::read(key.with_extension("pub")).expect("public key");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("authorized_keys");
        file.write_all(&public).expect("authorize");
    }

    /// `ssh://root@127.0.0.1:PORT/ABSOLUTE-PATH`.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// How many logins by key the server accepted so far.
    pub fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
