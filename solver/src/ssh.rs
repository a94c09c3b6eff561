//! `RUN --mount=type=ssh`: an SSH agent the user gives with `--ssh`, reachable from the
//! sandbox as a socket, as BuildKit forwards the client's agent.
//!
//! The sandbox never sees the user's socket itself: each mount gets a socket of kiln's own
//! in the build's scratch directory ([`AgentForward`]), owned by the mount's uid/gid with
//! its mode, and kiln relays every connection to the real agent. So the socket's owner
//! and mode are what the Dockerfile asked for (an agent's socket is usually 0600 in a 0700
//! directory of the user, which a real-root build's unprivileged sandbox could not open),
//! nothing of the host's path shows inside, and the relay ends with the RUN.
//!
//! `--ssh id=KEYFILE[,KEYFILE]` holds keys, not a socket: kiln starts `ssh-agent` (OpenSSH)
//! once per build for them ([`KeyAgent`]) and forwards that agent. The agent is tied to
//! kiln by a pipe: its command is `cat` reading a pipe only kiln writes to, so when kiln
//! ends, however it ends (`kill -9` included), `cat` sees end-of-file and exits and the
//! agent, whose command ended, exits too (it checks every few seconds). Keys are in that
//! agent's memory only, never in a file kiln writes; a normal end also deletes them from
//! the agent first (`ssh-add -D`).
//!
//! Socket paths are limited to 108 bytes and a store may be deep: sockets are bound and
//! reached as `/proc/self/fd/<dir>/<name>` through an open directory.
//!
//! Git over ssh (`ADD git@host:repo.git`, a git build context over ssh) authenticates with
//! the agent of id `default`, as BuildKit's git source does: [`GitAgent`] is that agent's
//! socket as the `ssh` that git runs must be given it (`SSH_AUTH_SOCK`, a plain path: a
//! deep one is relayed through a socket of kiln's in the temporary directory).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What `--ssh ID=...` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's socket (`--ssh default` is `$SSH_AUTH_SOCK`).
    Socket(PathBuf),
    /// Private key files, served by an agent kiln starts for the build.
    Keys(Vec<PathBuf>),
}

impl SshSource {
    /// The agent this source names: the socket given, or the agent `key_agent` gives
    /// for the key files (started, or one already started for them).
    pub(crate) fn agent(
        &self,
        key_agent: impl FnOnce(&[PathBuf]) -> Result<Arc<KeyAgent>, SshError>,
    ) -> Result<AgentSocket, SshError> {
        match self {
            SshSource::Socket(path) => Ok(AgentSocket {
                path: path.clone(),
                agent: None,
            }),
            SshSource::Keys(keys) => {
                let agent = key_agent(keys)?;
                Ok(AgentSocket {
                    path: agent.socket().to_path_buf(),
                    agent: Some(agent),
                })
            }
        }
    }
}

/// Why an SSH agent could not be given to a RUN.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("making the agent socket: {0}")]
    Listen(#[source] std::io::Error),
    #[error("starting ssh-agent for the key files (is OpenSSH's client installed?): {0}")]
    StartAgent(#[source] std::io::Error),
    #[error("ssh-agent did not make its socket within {0:?}")]
    AgentTimeout(Duration),
    #[error(
        "ssh-add could not load {keys}: {reason} (a key with a passphrase must be loaded \
         into an ssh-agent by hand and given as --ssh ID=$SSH_AUTH_SOCK)"
    )]
    AddKeys { keys: String, reason: String },
}

/// Where the agent of an id listens, and the agent kiln started for it (kept alive by
/// whoever holds this).
pub(crate) struct AgentSocket {
    pub(crate) path: PathBuf,
    pub(crate) agent: Option<std::sync::Arc<KeyAgent>>,
}

/// The agent git over ssh uses: `--ssh default`'s, at a path short enough for `ssh` to
/// connect to; the agent kiln started for key files, and any relay, live as long as it.
pub struct GitAgent {
    path: PathBuf,
    _agent: Option<Arc<KeyAgent>>,
    _forward: Option<AgentForward>,
}

impl std::fmt::Debug for GitAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAgent")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The ssh id git over ssh takes its agent from.
pub const GIT_SSH_ID: &str = "default";

impl GitAgent {
    /// The `default` agent of `sources` (the build's `--ssh`), starting an agent for key
    /// files in `scratch`; `None` when there is no `--ssh default`. For a caller without
    /// a build session (a git build context, checked out before the build starts).
    pub fn of(
        sources: &[(String, SshSource)],
        scratch: &Path,
    ) -> Result<Option<GitAgent>, SshError> {
        let Some((_, source)) = sources.iter().find(|(id, _)| id == GIT_SSH_ID) else {
            return Ok(None);
        };
        let socket = source.agent(|keys| Ok(Arc::new(KeyAgent::start(scratch, keys)?)))?;
        GitAgent::new(socket).map(Some)
    }

    /// `socket` as ssh can reach it: as it is when its path fits a socket address, else
    /// through a relay of kiln's in a new private directory under the temporary directory
    /// (the store, where a key agent's socket is, may be deep).
    pub(crate) fn new(socket: AgentSocket) -> Result<GitAgent, SshError> {
        if socket.path.as_os_str().len() < MAX_SOCKET_PATH {
            return Ok(GitAgent {
                path: socket.path,
                _agent: socket.agent,
                _forward: None,
            });
        }
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let forward = AgentForward::start(&std::env::temp_dir(), &socket.path, uid, gid, 0o600)?;
        Ok(GitAgent {
            path: forward.socket().to_path_buf(),
            _agent: socket.agent,
            _forward: Some(forward),
        })
    }

    /// The socket, for `SSH_AUTH_SOCK`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The longest socket path handed to another program (a socket address holds 108 bytes
/// with the terminating NUL; a little is kept back).
const MAX_SOCKET_PATH: usize = 100;

/// A directory and a name in it, reached through an open descriptor of the directory so
/// the path given to `bind`/`connect` stays short.
#[derive(Debug)]
struct ShortPath {
    dir: OwnedFd,
    name: std::ffi::OsString,
}

impl ShortPath {
    fn open(dir: &Path, name: impl Into<std::ffi::OsString>) -> std::io::Result<ShortPath> {
        let dir = rustix::fs::open(
            dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(ShortPath {
            dir,
            name: name.into(),
        })
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(&self.name)
    }
}

/// Connects to the socket at `path`, however long the path.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if path.as_os_str().len() >= MAX_SOCKET_PATH => {
            UnixStream::connect(ShortPath::open(dir, name)?.path())
        }
        _ => UnixStream::connect(path),
    }
}

/// A socket of kiln's own that relays each connection to an agent, for one RUN's mount.
/// Dropping it stops the relay and removes the socket.
pub(crate) struct AgentForward {
    /// The socket's host path (what the sandbox mounts).
    socket: PathBuf,
    /// Removed, with the socket, when the forward is dropped.
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    wake: ShortPath,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AgentForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentForward")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl AgentForward {
    /// A relay to the agent at `upstream`, listening in a new directory under `scratch`,
    /// its socket owned by `uid:gid` with `mode`.
    pub(crate) fn start(
        scratch: &Path,
        upstream: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<AgentForward, SshError> {
        let dir = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(scratch)
            .map_err(SshError::Listen)?;
        let at = ShortPath::open(dir.path(), "agent").map_err(SshError::Listen)?;
        let listener = UnixListener::bind(at.path()).map_err(SshError::Listen)?;
        let socket = dir.path().join("agent");
        rustix::fs::chown(
            &socket,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| SshError::Listen(e.into()))?;
        rustix::fs::chmod(&socket, rustix::fs::Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| SshError::Listen(e.into()))?;
        let upstream = upstream.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kiln-ssh-forward".into())
                .spawn(move || accept_loop(listener, &upstream, &stop))
                .map_err(SshError::Listen)?
        };
        Ok(AgentForward {
            socket,
            wake: at,
            _dir: dir,
            stop,
            accept: Some(accept),
        })
    }

    /// The socket's host path, for the sandbox to mount.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for AgentForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it to see the flag.
        let _ = UnixStream::connect(self.wake.path());
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Accepts until told to stop; each connection is relayed on threads of its own (an agent
/// conversation is a few small messages, and a RUN opens few).
fn accept_loop(listener: UnixListener, upstream: &Path, stop: &AtomicBool) {
    let live = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(inside) = conn else { continue };
        // The RUN is untrusted: it may open connections without end, and each costs kiln
        // two threads and one of the agent's. Past the bound a new one is closed at once.
        if live.load(Ordering::SeqCst) >= MAX_RELAYS {
            continue;
        }
        let Ok(agent) = connect(upstream) else {
            // The RUN's client sees the connection close, as with a dead agent.
            continue;
        };
        live.fetch_add(1, Ordering::SeqCst);
        let done = live.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-ssh-relay".into())
            .spawn(move || {
                relay(inside, agent);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Connections one mount relays at once (ssh and git open one or two).
const MAX_RELAYS: usize = 32;

/// Copies both ways until either side closes.
fn relay(inside: UnixStream, agent: UnixStream) {
    let (Ok(inside2), Ok(agent2)) = (inside.try_clone(), agent.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .name("kiln-ssh-relay".into())
        .spawn(move || copy_then_close(inside2, agent2));
    copy_then_close(agent, inside);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

fn copy_then_close(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
}

/// How long ssh-agent may take to make its socket.
const AGENT_START: Duration = Duration::from_secs(10);

/// An `ssh-agent` holding the keys of one `--ssh ID=KEYFILE,...`, for the build.
pub(crate) struct KeyAgent {
    dir: tempfile::TempDir,
    /// The agent's command (`cat`, reading [`KeyAgent::lifeline`]'s pipe).
    child: Child,
    socket: PathBuf,
}

impl std::fmt::Debug for KeyAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAgent")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl KeyAgent {
    /// Starts an agent in a new directory under `scratch` and loads `keys` into it.
    pub(crate) fn start(scratch: &Path, keys: &[PathBuf]) -> Result<KeyAgent, SshError> {
        let dir = tempfile::Builder::new()
            .prefix("ssh-keys-")
            .tempdir_in(scratch)
            .map_err(SshError::StartAgent)?;
        // A relative socket path (the agent's working directory is `dir`): short always.
        let child = Command::new("ssh-agent")
            .args(["-a", "agent", "cat"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(SshError::StartAgent)?;
        let mut agent = KeyAgent {
            socket: dir.path().join("agent"),
            dir,
            child,
        };
        let started = Instant::now();
        // The socket file exists from bind(); connections succeed once it listens.
        while connect(&agent.socket).is_err() {
            if started.elapsed() > AGENT_START {
                return Err(SshError::AgentTimeout(AGENT_START));
            }
            if let Ok(Some(_)) = agent.child.try_wait() {
                return Err(SshError::StartAgent(std::io::Error::other(
                    "ssh-agent exited at once",
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        agent.add(keys)?;
        Ok(agent)
    }

    /// `ssh-add KEY...` against this agent, never asking for a passphrase.
    fn add(&mut self, keys: &[PathBuf]) -> Result<(), SshError> {
        let names = || {
            keys.iter()
                .map(|k| k.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let out = self
            .ssh_add()
            .arg("-q")
            .args(keys)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SshError::AddKeys {
                keys: names(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            // ssh-add's own words name the file and the cause, never the key's bytes.
            let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(SshError::AddKeys {
                keys: names(),
                reason,
            });
        }
        Ok(())
    }

    fn ssh_add(&self) -> Command {
        let mut c = Command::new("ssh-add");
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("SSH_AUTH_SOCK", "agent")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// The agent's socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        // Forget the keys now rather than when the agent notices its command ended.
        let _ = self.ssh_add().arg("-D").stdin(Stdio::null()).output();
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent protocol's "list identities" request; the answer's type byte is 12.
    fn list_identities(socket: &Path) -> std::io::Result<(u8, u32)> {
        let mut s = UnixStream::connect(socket)?;
        s.write_all(&[0, 0, 0, 1, 11])?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body)?;
        let count = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        Ok((body[0], count))
    }

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    #[test]
    fn keys_are_served_through_a_forward_and_gone_after_drop() {
        if !have("ssh-agent") || !have("ssh-keygen") {
            eprintln!("skipped: OpenSSH's client is not installed");
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let key = scratch.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let agent = KeyAgent::start(scratch.path(), std::slice::from_ref(&key)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let forward = AgentForward::start(scratch.path(), agent.socket(), me, gid, 0o600).unwrap();
        let mode = std::fs::metadata(forward.socket()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert_eq!(list_identities(forward.socket()).unwrap(), (12, 1));
        let socket = forward.socket().to_path_buf();
        drop(forward);
        assert!(!socket.exists(), "the forward's socket outlived it");
        drop(agent);
        let left: Vec<_> = std::fs::read_dir(scratch.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("ssh-"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn connections_past_the_bound_are_closed_and_the_relay_goes_on() {
        if !have("ssh-agent") || !have("ssh-keygen") {
            eprintln!("skipped: OpenSSH's client is not installed");
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let key = scratch.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let agent = KeyAgent::start(scratch.path(), std::slice::from_ref(&key)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let forward = AgentForward::start(scratch.path(), agent.socket(), me, gid, 0o600).unwrap();
        // Held open and idle: each keeps its relay busy.
        let held: Vec<_> = (0..MAX_RELAYS + 8)
            .map(|_| UnixStream::connect(forward.socket()).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut past = UnixStream::connect(forward.socket()).unwrap();
        past.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            past.read(&mut byte).unwrap(),
            0,
            "a connection past the bound is closed"
        );
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(list_identities(forward.socket()).unwrap(), (12, 1));
    }

    #[test]
    fn git_gets_the_default_agent_at_a_path_ssh_can_connect_to() {
        if !have("ssh-agent") || !have("ssh-keygen") {
            eprintln!("skipped: OpenSSH's client is not installed");
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        assert!(GitAgent::of(&[], scratch.path()).unwrap().is_none());
        let other = [("deploy".to_string(), SshSource::Socket("/x".into()))];
        assert!(GitAgent::of(&other, scratch.path()).unwrap().is_none());
        // A store deep enough that its agent socket's path cannot be a socket address.
        let deep = scratch.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let key = scratch.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let sources = [(GIT_SSH_ID.to_string(), SshSource::Keys(vec![key]))];
        let agent = GitAgent::of(&sources, &deep).unwrap().unwrap();
        assert!(
            agent.path().as_os_str().len() < MAX_SOCKET_PATH,
            "{agent:?}"
        );
        assert!(!agent.path().starts_with(&deep), "{agent:?}");
        // A plain connect, as ssh makes it.
        assert_eq!(list_identities(agent.path()).unwrap(), (12, 1));
        let relay = agent.path().to_path_buf();
        drop(agent);
        assert!(!relay.exists(), "the relay outlived the agent");
    }

    #[test]
    fn a_key_that_does_not_parse_is_a_clear_error() {
        if !have("ssh-agent") {
            eprintln!("skipped: OpenSSH's client is not installed");
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let bad = scratch.path().join("not-a-key");
        std::fs::write(&bad, "hello\n").unwrap();
        let err = KeyAgent::start(scratch.path(), std::slice::from_ref(&bad)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not-a-key"), "{text}");
        assert!(!text.contains("hello"), "{text}");
    }
}
