//! The helper fork server: one kiln process re-exec'd per kiln process (hidden argument
//! [`ZYGOTE_ARG`]) that forks a fresh sandbox helper for each RUN, so a RUN does not pay
//! for exec'ing and loading the kiln binary (a large PIE: its relocations and page faults
//! were about a tenth of a small RUN step).
//!
//! The zygote is single-threaded and does nothing but wait for a request on its socket
//! (its fd 0): one byte with three descriptors (SCM_RIGHTS), the helper's control socket,
//! stdout and stderr. It forks; the child puts them on its fds 0, 1 and 2 and becomes the
//! helper exactly as an exec'd one does (`helper`'s module doc: it closes every other fd
//! first thing, resets its signals, and arms its parent-death signal, here on the zygote,
//! checking the zygote is still there). The zygote answers with a pidfd of the child,
//! which kiln kills and waits on; it reaps its children itself.
//!
//! Lifetime: the zygote dies with the thread that spawned it (the long-lived spawner
//! thread, `parent`), so with kiln; its helpers die with it, and their PID 1s with them.
//! Only the `Pipe` stdio of a RUN goes through it: `kiln run` (its terminal, its stdin)
//! still spawns its helper directly, as does every RUN after the zygote failed once.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

use super::process::{close_from, fork, reset_signals};
use super::protocol::{recv_fds, send_fds};

/// argv[1] of the zygote. It contains [`super::HELPER_ARG`], so whatever looks for helpers
/// by their command line (`pgrep -f`) finds the zygote and the helpers it forked too.
pub const ZYGOTE_ARG: &str = "__kiln-sandbox-helper-zygote";

/// Tags of the one-byte messages.
const FORK: u8 = b'R';
const FORKED: u8 = b'P';
const FAILED: u8 = b'E';

/// Entry point of the zygote process; returns its exit code.
pub(crate) fn zygote_entry() -> i32 {
    // As the helper: only stdio is ours (helper_entry's reasons).
    if close_from(3, false).is_err() {
        return 125;
    }
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    reset_signals();
    let Ok(sock) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return 125;
    };
    let sock = UnixStream::from(sock);
    let me = rustix::process::getpid();
    loop {
        // Helpers that exited since the last request (kiln learns of it from the pidfd).
        while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
        let (tag, fds) = match recv_fds(&sock) {
            Ok(Some(msg)) => msg,
            // kiln closed its end (or is gone): so are we.
            Ok(None) | Err(_) => return 0,
        };
        let Ok::<[OwnedFd; 3], _>([control, stdout, stderr]) = fds.try_into() else {
            let _ = send_fds(&sock, FAILED, &[]);
            continue;
        };
        if tag != FORK {
            let _ = send_fds(&sock, FAILED, &[]);
            continue;
        }
        let child = match fork("zygote") {
            Ok(pid) => pid,
            Err(_) => {
                let _ = send_fds(&sock, FAILED, &[]);
                continue;
            }
        };
        if child == 0 {
            let code = become_helper(me, control, stdout, stderr);
            // SAFETY: leave the forked child without running the zygote's state.
            unsafe { libc::_exit(code) };
        }
        drop((control, stdout, stderr));
        // Opened before any wait: the child cannot have been reaped, so this is its pidfd.
        let reply = Pid::from_raw(child)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()));
        match reply {
            Ok(pidfd) => {
                if send_fds(&sock, FORKED, &[pidfd.as_fd()]).is_err() {
                    let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
                    return 0;
                }
            }
            Err(_) => {
                if let Some(pid) = Pid::from_raw(child) {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                }
                let _ = send_fds(&sock, FAILED, &[]);
            }
        }
    }
}

/// In the forked child: the three descriptors become its stdio, then it is the helper.
fn become_helper(zygote: Pid, control: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> i32 {
    let put = rustix::stdio::dup2_stdin(&control)
        .and_then(|()| rustix::stdio::dup2_stdout(&stdout))
        .and_then(|()| rustix::stdio::dup2_stderr(&stderr));
    if put.is_err() {
        return 125;
    }
    drop((control, stdout, stderr));
    super::helper::forked_helper_entry(zygote)
}

/// kiln's handle on its zygote.
enum State {
    NotStarted,
    Running {
        sock: UnixStream,
        _zygote: Child,
    },
    /// It failed once: every later RUN spawns its helper directly.
    Broken,
}

static STATE: Mutex<State> = Mutex::new(State::NotStarted);

/// A helper forked by the zygote, with stdout and stderr on new pipes: its pidfd and the
/// read ends of the pipes. `control` is the helper's end of its control socket.
pub(super) struct Forked {
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Fork a helper through the zygote (started on first use); `None` when the zygote cannot
/// serve (the caller then spawns the helper itself).
pub(super) fn fork_helper(
    control: &OwnedFd,
    spawn: impl FnOnce(Command) -> std::io::Result<Child>,
) -> Option<Forked> {
    let mut state = STATE.lock().ok()?;
    if let State::NotStarted = *state {
        *state = match start(spawn) {
            Some((sock, zygote)) => State::Running {
                sock,
                _zygote: zygote,
            },
            None => State::Broken,
        };
    }
    let State::Running { sock, .. } = &*state else {
        return None;
    };
    let forked = request(sock, control);
    if forked.is_none() {
        // Dropping the handle closes the zygote's socket: it exits.
        *state = State::Broken;
    }
    forked
}

fn start(spawn: impl FnOnce(Command) -> std::io::Result<Child>) -> Option<(UnixStream, Child)> {
    let (ours, theirs) = UnixStream::pair().ok()?;
    let mut cmd = Command::new(super::parent::helper_exe());
    cmd.arg(ZYGOTE_ARG)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn(cmd).ok()?;
    Some((ours, child))
}

fn request(sock: &UnixStream, control: &OwnedFd) -> Option<Forked> {
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (out_r, out_w) = rustix::pipe::pipe_with(flags).ok()?;
    let (err_r, err_w) = rustix::pipe::pipe_with(flags).ok()?;
    send_fds(sock, FORK, &[control.as_fd(), out_w.as_fd(), err_w.as_fd()]).ok()?;
    // Only the helper may hold the write ends: their EOF is the sandbox being gone.
    drop((out_w, err_w));
    match recv_fds(sock) {
        Ok(Some((FORKED, fds))) => {
            let pidfd = fds.into_iter().next()?;
            Some(Forked {
                pidfd,
                stdout: out_r,
                stderr: err_r,
            })
        }
        _ => None,
    }
}
