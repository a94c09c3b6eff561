//! The rootless RUN sandbox: runs one process in fresh namespaces over a layered rootfs and
//! turns what it changed into a layer directory.
//!
//! Entry point: [`run`]. The namespaces are made by a helper process (the kiln binary
//! re-exec'd with the hidden argument [`HELPER_ARG`]; `main` must call [`helper_main`]
//! first thing). The parent and the helper exchange typed JSON messages over a socket pair
//! (`protocol`); the helper enters the sandbox's user namespace (`idmap`: as real root an
//! unprivileged ID range over idmapped mounts), builds the filesystem view (`rootfs`, with
//! symlink-safe mount points from `mountpoint`) in its PID 1 (`pid1`), and the RUN process
//! resolves USER (`user`), confines itself (`seccomp`) and execs the command (`exec`).
//! `process` holds the fork, unshare and fd/signal resets of those single-threaded
//! processes, `step` the error every setup step reports.
//! Choosing a snapshotter ([`Snapshotter::detect`]) asks a helper to mount a test overlay.
//!
//! Layer directory contract: after a successful [`run`], `spec.upper` holds exactly what the
//! RUN added or changed — deletions as 0:0 character devices, replaced directories with
//! `user.overlay.opaque=y` — and nothing else (no mount points, no overlay-internal xattrs,
//! no copied-up entries that are identical to the lower layers). Both snapshotters give the
//! same tree.

mod exec;
mod helper;
mod idmap;
mod mountpoint;
mod pid1;
mod process;
mod protocol;
mod rootfs;
mod seccomp;
mod step;
mod terminal;
pub mod user;

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

pub use crate::snapshot::Snapshotter;
pub use exec::DEFAULT_PATH;
use protocol::{Event, HelperRun, Request, RootfsPlan, Stub};

/// argv[1] that makes the kiln binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox-helper";

/// Network mode of a RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (BuildKit's default for RUN).
    Host,
    /// A fresh network namespace with only `lo`, up.
    None,
}

/// One extra mount of a RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub target: String,
    pub kind: MountKind,
}

/// What is mounted at a [`MountSpec::target`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host file or directory. Writable binds write through to `host`.
    Bind { host: PathBuf, readonly: bool },
    /// A merged stack of layer directories (bottom first), e.g. another stage's rootfs.
    /// When writable, writes go to a throwaway tmpfs and are discarded.
    Layers {
        lowers: Vec<PathBuf>,
        readonly: bool,
    },
    /// A fresh tmpfs, optionally limited to `size` bytes.
    Tmpfs { size: Option<u64> },
    /// A persistent cache directory (prepared by the caller with its mode and owner).
    Cache { host: PathBuf },
    /// A secret file, copied into a private tmpfs and shown read-only with this mode/owner.
    Secret {
        host: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Everything one RUN needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The command; argv[0] is looked up in the container's PATH.
    pub argv: Vec<String>,
    /// Environment, in order; a later duplicate wins. PATH defaults to [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Working directory inside the container; must exist ("" = `/`).
    pub cwd: String,
    /// `""` (root), `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    /// Hostname inside the sandbox ("" keeps the host's).
    pub hostname: String,
    pub network: Network,
    /// Layer directories of the rootfs, bottom first.
    pub lowers: Vec<PathBuf>,
    /// An empty directory: becomes this RUN's layer directory.
    pub upper: PathBuf,
    /// An empty scratch directory on the same filesystem as `upper`; the caller removes it.
    pub work: PathBuf,
    pub mounts: Vec<MountSpec>,
    /// Files shown in the sandbox but never committed: (path, content, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub snapshotter: Snapshotter,
    /// `RUN --security=insecure` (entitled by `--allow security.insecure`): every
    /// capability, no seccomp filter, no masked paths. Still inside the build's own user
    /// namespace, so no more power over the host than a rootless build's.
    pub insecure: bool,
}

/// Where the process's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessIo {
    /// RUN: stdin is `/dev/null`, stdout and stderr come back line by line to the caller.
    #[default]
    Pipe,
    /// `kiln run`: stdout and stderr are the caller's own (a terminal, if it has one), so
    /// output arrives unchanged and unbuffered; stdin is the caller's with `stdin`, else
    /// `/dev/null`. The process still starts a session of its own, so an inherited
    /// terminal is never its controlling terminal (no TIOCSTI into the caller's shell).
    Inherit { stdin: bool },
    /// `kiln run -t`: a new pseudo-terminal is the process's stdin, stdout, stderr and
    /// controlling terminal; kiln relays its own stdout to it, and its stdin with `stdin`
    /// (module `terminal`).
    Terminal { stdin: bool },
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of the process's output, without its `\n` (a last line without one is still
/// delivered). Bytes, not text: output is not always UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub line: Vec<u8>,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// The exit status; 128+N when killed by signal N.
    pub exit_code: i32,
    pub signal: Option<i32>,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none()
    }
}

/// Why a RUN could not be carried out (a non-zero exit is not an error: see [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the sandbox helper {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("sandbox helper protocol: {0}")]
    Protocol(String),
    #[error("sandbox setup failed ({step}): {message}")]
    Setup { step: String, message: String },
    #[error("sandbox helper exited without a result ({0})")]
    HelperDied(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Diff(#[from] crate::layer_dir::LayerDirError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Call first thing in `main()`: when this process was started as the sandbox helper, runs
/// it and returns its exit code (the caller exits with it); otherwise returns `None`.
///
/// Also serves the user-namespace ID mapper ([`crate::userns::MAPPER_ARG`]).
pub fn helper_main() -> Option<i32> {
    if let Some(code) = crate::userns::mapper_main() {
        return Some(code);
    }
    let arg = std::env::args_os().nth(1)?;
    if arg != HELPER_ARG {
        return None;
    }
    Some(helper::helper_entry())
}

/// The program that is re-exec'd as the helper (the running kiln binary).
fn helper_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

type SpawnJob = (Command, std_mpsc::Sender<std::io::Result<Child>>);

/// Spawns helpers from one thread that lives as long as the process: PR_SET_PDEATHSIG
/// fires when the *thread* that forked the helper exits, so a tokio blocking thread (which
/// retires when idle) must not be the helper's parent.
fn spawn_helper(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("kiln-sandbox-spawner".into())
            .spawn(move || {
                // Before the first helper: they are all born in the build's cgroup.
                crate::cgroup::join_build_cgroup();
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok();
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std_mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// A running helper: killed (and with it the whole sandbox) when dropped early.
struct HelperProcess {
    child: Option<Child>,
}

impl HelperProcess {
    /// Wait for a helper that is expected to exit by itself.
    fn wait(mut self) -> std::io::Result<std::process::ExitStatus> {
        match self.child.take() {
            Some(mut c) => c.wait(),
            None => Err(std::io::Error::other("helper already reaped")),
        }
    }
}

impl Drop for HelperProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

enum Msg {
    Line(OutputLine),
    OutputClosed,
    Event(Event),
    ControlClosed(Option<String>),
}

/// Start the helper with `req`; stdout/stderr lines and events arrive on the returned channel.
fn start_helper(
    req: &Request,
    io: ProcessIo,
    tty: Option<&std::os::fd::OwnedFd>,
) -> Result<(HelperProcess, tokio::sync::mpsc::UnboundedReceiver<Msg>), SandboxError> {
    /// The longest piece of output delivered as one line: a longer line (a RUN can print
    /// a gigabyte without a newline) arrives as several, so nothing holds it whole.
    const MAX_CHUNK: usize = 64 << 10;
    /// Where to split a full chunk: before a UTF-8 sequence cut short at its end, so each
    /// piece of a text line is still text.
    fn utf8_cut(chunk: &[u8]) -> usize {
        let len = chunk.len();
        let Some(start) = (len.saturating_sub(3)..len)
            .rev()
            .find(|&i| chunk[i] & 0xC0 != 0x80)
        else {
            return len;
        };
        let needs = match chunk[start] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if start + needs > len { start } else { len }
    }
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| SandboxError::Protocol(format!("socketpair: {e}")))?;
    let exe = helper_exe();
    let mut cmd = Command::new(&exe);
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    match io {
        ProcessIo::Pipe => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        ProcessIo::Inherit { stdin } => {
            if stdin {
                cmd.arg(helper::STDIN_ARG);
            }
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        ProcessIo::Terminal { .. } => {
            let slave = |what: &str| {
                tty.ok_or_else(|| SandboxError::Protocol("no terminal to hand over".into()))?
                    .try_clone()
                    .map_err(|e| SandboxError::Protocol(format!("terminal for {what}: {e}")))
            };
            cmd.arg(helper::STDIN_ARG)
                .arg(helper::CTTY_ARG)
                .stdout(Stdio::from(slave("stdout")?))
                .stderr(Stdio::from(slave("stderr")?));
        }
    }
    let mut child = spawn_helper(cmd).map_err(|source| SandboxError::Spawn {
        exe: exe.display().to_string(),
        source,
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let helper = HelperProcess { child: Some(child) };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut writer = ours
        .try_clone()
        .map_err(|e| SandboxError::Protocol(format!("socket: {e}")))?;
    let own_stdin = std::io::stdin();
    let passed = match io {
        ProcessIo::Inherit { stdin: true } => Some(own_stdin.as_fd()),
        ProcessIo::Terminal { .. } => tty.map(|t| t.as_fd()),
        _ => None,
    };
    if let Some(fd) = passed {
        // Before the request: the helper takes it first, before it reads any line.
        protocol::send_fd(&writer, fd)
            .map_err(|e| SandboxError::Protocol(format!("passing stdin: {e}")))?;
    }
    protocol::send(&mut writer, req)
        .map_err(|e| SandboxError::Protocol(format!("send request: {e}")))?;
    for (stream, pipe) in [
        (
            OutputStream::Stdout,
            stdout.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
        (
            OutputStream::Stderr,
            stderr.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
    ] {
        let Some(pipe) = pipe else {
            // Inherited: nothing to drain.
            let _ = tx.send(Msg::OutputClosed);
            continue;
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(MAX_CHUNK, pipe);
            let mut line = Vec::new();
            loop {
                // Whoever shows the output may be behind: then the pipe waits, not memory.
                crate::output_gate::wait_open();
                let buf = match r.fill_buf() {
                    Ok(buf) => buf,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => &[],
                };
                if buf.is_empty() {
                    // A last line without `\n` is still a line.
                    if !line.is_empty() {
                        let _ = tx.send(Msg::Line(OutputLine { stream, line }));
                    }
                    let _ = tx.send(Msg::OutputClosed);
                    break;
                }
                let take = buf.len().min(MAX_CHUNK - line.len());
                let (piece, ended) = match buf[..take].iter().position(|&b| b == b'\n') {
                    Some(i) => (i, true),
                    None => (take, false),
                };
                line.extend_from_slice(&buf[..piece]);
                r.consume(if ended { piece + 1 } else { piece });
                let rest = if ended {
                    Vec::new()
                } else if line.len() == MAX_CHUNK {
                    line.split_off(utf8_cut(&line))
                } else {
                    continue;
                };
                let full = std::mem::replace(&mut line, rest);
                if tx
                    .send(Msg::Line(OutputLine { stream, line: full }))
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    std::thread::spawn(move || {
        let mut r = BufReader::new(ours);
        loop {
            match protocol::recv::<Event>(&mut r) {
                Ok(Some(ev)) => {
                    if tx.send(Msg::Event(ev)).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Msg::ControlClosed(None));
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Msg::ControlClosed(Some(e.to_string())));
                    break;
                }
            }
        }
    });
    Ok((helper, rx))
}

/// Said once per kiln process: a real-root sandbox fell back to the identity mapping
/// (module `idmap`). Straight to stderr: it concerns the machine, not one build step.
fn identity_mapping_note(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "warning: RUN steps run with the identity user mapping, so their root is the \
             host's root wherever the kernel checks a uid (peer credentials of Unix sockets, \
             signals): the store cannot be idmapped ({why}). Run kiln unprivileged, or keep \
             its store on ext4, xfs, btrfs or tmpfs."
        )
    });
}

/// Wait for the helper to exit and for all its output; returns the events it sent.
async fn finish_helper(
    helper: HelperProcess,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
    output: &mut impl FnMut(OutputLine),
) -> Result<Vec<Event>, SandboxError> {
    let mut events = Vec::new();
    let mut protocol_error = None;
    let (mut done, mut closed) = (false, 0);
    // Finished when the helper says the sandbox is gone and both pipes are drained, or when
    // everything closed (the helper exited, e.g. after a setup failure).
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Line(l) => output(l),
            Msg::OutputClosed => closed += 1,
            Msg::Event(Event::Done) => done = true,
            Msg::Event(Event::Note(why)) => identity_mapping_note(&why),
            Msg::Event(e) => events.push(e),
            Msg::ControlClosed(err) => protocol_error = err,
        }
        if done && closed == 2 {
            break;
        }
    }
    if done && protocol_error.is_none() {
        // Namespace teardown happens as the helper exits; reap it without waiting here.
        std::thread::spawn(move || helper.wait());
        return Ok(events);
    }
    let status = tokio::task::spawn_blocking(move || helper.wait())
        .await
        .map_err(|e| SandboxError::HelperDied(e.to_string()))?
        .map_err(|e| SandboxError::HelperDied(e.to_string()))?;
    if let Some(e) = protocol_error {
        return Err(SandboxError::Protocol(format!("{e} (helper {status})")));
    }
    if events.is_empty() && !status.success() {
        return Err(SandboxError::HelperDied(status.to_string()));
    }
    Ok(events)
}

fn mkdir(p: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(p).map_err(io_err(p))
}

/// Run `spec` and leave its layer directory in `spec.upper`.
///
/// `output` receives stdout/stderr lines as they come. A non-zero exit is reported in the
/// outcome, not as an error; the caller commits `spec.upper` only on success. If this future
/// is dropped, the sandbox is killed.
///
/// Returns once every process of the sandbox is gone and the layer is final; the helper's
/// namespaces may still be tearing down in the background (its mounts exist only in its own
/// mount namespace), so the caller may rename `upper` and delete `work` right away.
pub async fn run(
    spec: RunSpec,
    output: impl FnMut(OutputLine),
) -> Result<RunOutcome, SandboxError> {
    run_with_io(spec, ProcessIo::Pipe, output).await
}

/// [`run`] with the process's stdio chosen by `io`; `output` only hears from
/// [`ProcessIo::Pipe`].
pub async fn run_with_io(
    spec: RunSpec,
    io: ProcessIo,
    mut output: impl FnMut(OutputLine),
) -> Result<RunOutcome, SandboxError> {
    let work = spec.work.clone();
    // The helper mounts a private tmpfs here: generated files and mount points of one RUN
    // never touch the disk.
    let scratch = work.join("scratch");
    mkdir(&scratch)?;
    let mut files = Vec::new();
    if !spec.files.is_empty() {
        mkdir(&work.join("files"))?;
    }
    for (i, (path, content, mode)) in spec.files.iter().enumerate() {
        let host = work.join("files").join(format!("file{i}"));
        std::fs::write(&host, content).map_err(io_err(&host))?;
        std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(*mode))
            .map_err(io_err(&host))?;
        files.push((path.clone(), host, *mode));
    }
    let top_first: Vec<PathBuf> = spec.lowers.iter().rev().cloned().collect();
    let (rootfs, copy_root) = match spec.snapshotter {
        Snapshotter::Overlay => {
            // The overlay workdir must share the upper's filesystem; the mount point lives in
            // the helper's tmpfs.
            let (ovl, merged) = (work.join("ovl"), scratch.join("merged"));
            mkdir(&ovl)?;
            let mut lowers = top_first.clone();
            if lowers.is_empty() {
                // overlayfs needs at least one lower layer: FROM scratch gets an empty one.
                let empty = work.join("empty");
                mkdir(&empty)?;
                lowers.push(empty);
            }
            (
                RootfsPlan::Overlay {
                    lowers,
                    upper: spec.upper.clone(),
                    work: ovl,
                    target: merged,
                },
                None,
            )
        }
        Snapshotter::Copy => {
            let root = work.join("rootfs");
            let lowers = top_first.clone();
            let root2 = root.clone();
            let base =
                tokio::task::spawn_blocking(move || crate::snapshot::materialize(&lowers, &root2))
                    .await
                    .map_err(|e| SandboxError::HelperDied(e.to_string()))??;
            (RootfsPlan::Dir { path: root.clone() }, Some((root, base)))
        }
    };
    // Kept until the sandbox is gone; dropping it removes the cgroup.
    let cgroup = crate::cgroup::RunCgroup::create();
    let req = Request::Run(Box::new(HelperRun {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network_none: spec.network == Network::None,
        rootfs,
        mounts: spec.mounts.clone(),
        files,
        scratch,
        cgroup_procs: cgroup.as_ref().map(|c| c.procs()),
        insecure: spec.insecure,
    }));
    let pty = match io {
        ProcessIo::Terminal { .. } => Some(
            terminal::Pty::open()
                .map_err(|e| SandboxError::Protocol(format!("opening a pseudo-terminal: {e}")))?,
        ),
        _ => None,
    };
    // The process gets kiln's own terminal: whatever it does to its settings is undone.
    let _settings = matches!(io, ProcessIo::Inherit { .. }).then(terminal::TerminalSettings::save);
    let (helper, rx) = start_helper(&req, io, pty.as_ref().map(|p| &p.slave))?;
    let attached = match (pty, io) {
        (Some(pty), ProcessIo::Terminal { stdin }) => {
            // Only the sandbox may hold the slave: its EOF (EIO) ends the output relay.
            drop(pty.slave);
            Some(
                terminal::Attached::new(pty.master, stdin)
                    .map_err(|e| SandboxError::Protocol(format!("terminal relay: {e}")))?,
            )
        }
        _ => None,
    };
    let events = finish_helper(helper, rx, &mut output).await;
    if let Some(attached) = attached {
        attached.finish().await;
    }
    let events = events?;
    drop(cgroup);
    let mut stubs: Vec<Stub> = Vec::new();
    let mut outcome = None;
    for ev in events {
        match ev {
            Event::Stubs(s) => stubs = s,
            Event::Done | Event::Note(_) => {}
            Event::Exited { code, signal } => {
                outcome = Some(RunOutcome {
                    exit_code: code,
                    signal,
                })
            }
            Event::Failed { step, message } => return Err(SandboxError::Setup { step, message }),
            Event::Probe { .. } => {
                return Err(SandboxError::Protocol("unexpected probe answer".into()));
            }
        }
    }
    let outcome =
        outcome.ok_or_else(|| SandboxError::HelperDied("no exit status reported".into()))?;
    let upper = spec.upper.clone();
    tokio::task::spawn_blocking(move || -> Result<(), SandboxError> {
        match copy_root {
            None => {
                crate::snapshot::remove_stubs(&upper, &stubs)?;
                crate::snapshot::normalize_upper(&upper, &top_first)?;
            }
            Some((root, base)) => {
                crate::snapshot::remove_stubs(&root, &stubs)?;
                crate::layer_dir::write_layer(&root, &top_first, &upper, &base)?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| SandboxError::HelperDied(e.to_string()))??;
    Ok(outcome)
}

impl Snapshotter {
    /// Pick overlay when a test mount (in a throwaway mount namespace, through the sandbox
    /// helper) works with `userxattr`; otherwise Copy, with the reason. `scratch` is a
    /// directory this may create files under (on the filesystem layers will live on).
    pub async fn detect(scratch: &Path) -> (Snapshotter, Option<String>) {
        let dir = scratch.join(format!("overlay-probe-{}", std::process::id()));
        let result = match std::fs::create_dir_all(&dir) {
            Ok(()) => match probe_overlay(&dir).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("{}: {e}", dir.display())),
        };
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Ok(()) => (Snapshotter::Overlay, None),
            Err(why) => (Snapshotter::Copy, Some(why)),
        }
    }
}

/// Ask a helper whether overlayfs with `userxattr` works here (used by
/// [`Snapshotter::detect`]). `dir` is an empty scratch directory.
pub(crate) async fn probe_overlay(dir: &Path) -> Result<Result<(), String>, SandboxError> {
    let (helper, rx) = start_helper(
        &Request::ProbeOverlay {
            dir: dir.to_path_buf(),
        },
        ProcessIo::Pipe,
        None,
    )?;
    let events = finish_helper(helper, rx, &mut |_| {}).await?;
    for ev in events {
        if let Event::Probe { ok, detail } = ev {
            return Ok(if ok { Ok(()) } else { Err(detail) });
        }
    }
    Err(SandboxError::HelperDied(
        "overlay probe gave no answer".into(),
    ))
}
