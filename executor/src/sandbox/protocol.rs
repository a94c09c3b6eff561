//! Typed messages between the kiln process and its sandbox helper.
//!
//! The helper's stdin is one end of a Unix socket pair; each message is one line of JSON.
//! The parent sends exactly one [`Request`]; the helper (and the PID 1 it forks) answer
//! with [`Event`]s until the socket closes.

use std::io::{BufRead, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use serde::{Deserialize, Serialize};

use super::options::RunOptions;
use super::spec::MountSpec;
pub(crate) use crate::snapshot::Stub;

/// What the parent asks the helper to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Run one process in a fresh sandbox.
    Run(Box<HelperRun>),
    /// Check whether overlayfs with `userxattr` can be mounted, using scratch dirs in `dir`.
    ProbeOverlay { dir: PathBuf },
    /// Make the sandbox of a RUN to come as far as it can be made without the RUN (module
    /// `prepared`), answer [`Event::Prepared`], then take a [`Request::Run`] that the plan
    /// serves.
    Prepare(Box<super::prepared::PreparePlan>),
}

/// Everything the helper needs for one RUN; paths are host paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelperRun {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub network_none: bool,
    pub rootfs: RootfsPlan,
    pub mounts: Vec<MountSpec>,
    /// Files placed in the sandbox: (container path, host file holding the content, mode).
    pub files: Vec<(String, PathBuf, u32)>,
    /// Empty directory the helper covers with a private tmpfs: the rootfs mount point and
    /// generated files (hosts, resolv.conf, secrets, stage mounts).
    pub scratch: PathBuf,
    /// The `cgroup.procs` file of this RUN's cgroup, joined by PID 1 before anything runs.
    #[serde(default)]
    pub cgroup_procs: Option<PathBuf>,
    /// `RunSpec::insecure`.
    #[serde(default)]
    pub insecure: bool,
    /// `RunSpec::options`.
    #[serde(default)]
    pub options: RunOptions,
    /// Time the setup steps and send them ([`Event::Setup`]): `KILN_TRACE_PHASES`.
    #[serde(default)]
    pub trace: bool,
}

impl HelperRun {
    /// A run of nothing over `rootfs`: no process, mounts or files, no network (the overlay
    /// probe's, and tests').
    pub(crate) fn bare(rootfs: RootfsPlan, scratch: PathBuf) -> HelperRun {
        HelperRun {
            argv: Vec::new(),
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            hostname: String::new(),
            network_none: true,
            rootfs,
            mounts: Vec::new(),
            files: Vec::new(),
            scratch,
            cgroup_procs: None,
            insecure: false,
            options: RunOptions::default(),
            trace: false,
        }
    }
}

/// How the root filesystem is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RootfsPlan {
    /// overlay(lowers, upper) mounted at `target`.
    Overlay {
        /// Layer directories, top-most first.
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    /// A plain directory used as the rootfs (copy snapshotter).
    Dir { path: PathBuf },
}

/// What the helper reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Event {
    /// Mount points created in the rootfs, to remove after the run.
    Stubs(Vec<Stub>),
    /// How long each setup step took, in milliseconds, when [`HelperRun::trace`] asked.
    Setup(Vec<(String, f64)>),
    /// The process ran and exited.
    Exited { code: i32, signal: Option<i32> },
    /// Sandbox setup failed before the process could run.
    Failed { step: String, message: String },
    /// Every process of the sandbox is gone (sent by the helper after PID 1 is reaped); the
    /// layer may be read. The helper's own exit (namespace teardown) is not waited for.
    Done,
    /// Something the user should hear once (the sandbox runs with less isolation than
    /// usual, and why).
    Note(String),
    /// Answer to [`Request::ProbeOverlay`].
    Probe { ok: bool, detail: String },
    /// Answer to [`Request::Prepare`]: the sandbox waits for its RUN.
    Prepared,
}

impl From<super::step::StepError> for Event {
    fn from(e: super::step::StepError) -> Event {
        Event::Failed {
            step: e.step.to_string(),
            message: e.message,
        }
    }
}

/// Write one message as a JSON line.
pub(crate) fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Read one message; `Ok(None)` at end of stream.
pub(crate) fn recv<T: for<'de> Deserialize<'de>>(
    r: &mut impl BufRead,
) -> std::io::Result<Option<T>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Hands `fd` to the helper over the control socket (SCM_RIGHTS, one byte of payload):
/// how `kiln run -i` gives the process the caller's stdin while the helper's own fd 0
/// stays the control socket.
pub(crate) fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    send_fds(sock, b'F', &[fd])
}

/// Sends `tag` (one byte) with `fds` (at most [`MAX_FDS`]) attached as SCM_RIGHTS.
pub(crate) fn send_fds(sock: &UnixStream, tag: u8, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS
        || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(std::io::Error::other("no room for the descriptors"));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&[tag])],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// The most descriptors one message of [`send_fds`] carries.
pub(crate) const MAX_FDS: usize = 3;

/// Receives one message of [`send_fds`]: its tag and descriptors (close-on-exec).
/// `Ok(None)` at end of stream. Reads exactly its one byte, so a request line after it
/// is left for a buffered reader.
pub(crate) fn recv_fds(sock: &UnixStream) -> std::io::Result<Option<(u8, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut received = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            received.extend(fds);
        }
    }
    Ok(Some((byte[0], received)))
}

/// Receives the descriptor [`send_fd`] sent.
pub(crate) fn recv_fd(sock: &UnixStream) -> std::io::Result<OwnedFd> {
    match recv_fds(sock)? {
        // A second descriptor is nobody's: dropping closes it.
        Some((_, fds)) => fds
            .into_iter()
            .next()
            .ok_or_else(|| std::io::Error::other("the descriptor message carried no fd")),
        None => Err(std::io::Error::other("no descriptor before the request")),
    }
}
