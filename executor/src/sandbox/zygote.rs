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
//! which kiln kills and waits on; it reaps its children itself. kiln asks for the next
//! RUN's helper while the current RUN runs (module `spare`): a helper waits for its
//! request however long that takes.
//!
//! It also keeps the namespaces every RUN of this kiln process would otherwise make anew.
//! As real root, the user namespace of the unprivileged range (`idmap`): one for all
//! RUNs, as rootless kiln's RUNs all live in kiln's own, which maps the same IDs. And a
//! pool of network namespaces for `--network none` (creating one costs the kernel about
//! as much as the rest of the namespaces together, and more again to tear it down): each
//! has only `lo`, up, belongs to the RUNs' user namespace (so a RUN's root mounts its
//! sysfs and holds CAP_NET_RAW in it, as in a fresh one), and is lent to one RUN at a
//! time, for as long as its helper lives (so its whole PID namespace; one whose helper
//! was killed is not lent again). A RUN without CAP_NET_ADMIN cannot change one: what the
//! next RUN may find of it is what closed sockets leave (TIME_WAIT entries, counters). An
//! insecure RUN (CAP_NET_ADMIN) always gets a fresh one.
//!
//! Lifetime: the zygote dies with the thread that spawned it (the long-lived spawner
//! thread, `parent`), so with kiln; its helpers die with it, and their PID 1s with them.
//! Only the `Pipe` stdio of a RUN goes through it: `kiln run` (its terminal, its stdin)
//! still spawns its helper directly, as does every RUN after the zygote failed once.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

use super::helper::SharedNs;
use super::process::{close_from, fork, reset_signals};
use super::protocol::{recv_fds, send_fds};

/// argv[1] of the zygote. It contains [`super::HELPER_ARG`], so whatever looks for helpers
/// by their command line (`pgrep -f`) finds the zygote and the helpers it forked too.
pub const ZYGOTE_ARG: &str = "__kiln-sandbox-helper-zygote";

/// Tags of the one-byte messages.
const FORK: u8 = b'R';
/// A fork whose RUN wants a network namespace of the pool (`--network none`).
const FORK_NET: u8 = b'N';
const FORKED: u8 = b'P';
const FAILED: u8 = b'E';

/// The namespaces the zygote keeps for its helpers (`helper::SharedNs`).
#[derive(Default)]
struct Namespaces {
    /// As real root: the user namespace of every RUN of this kiln process (the helpers'
    /// `idmap::enter`), mapped to the unprivileged range. `None` rootless (the RUNs use
    /// kiln's own) or when it could not be made (each helper then makes its own).
    userns: Option<OwnedFd>,
    tried_userns: bool,
    /// Network namespaces with only `lo`, up, owned by the RUNs' user namespace, free to
    /// lend.
    free: Vec<OwnedFd>,
    /// Those lent, by the helper that has it: free again once that helper has exited
    /// by itself, which it does only after its PID 1 is reaped, and the kernel reaps every
    /// process of a PID namespace before its PID 1 ([`Namespaces::helper_ended`]).
    lent: Vec<(i32, OwnedFd)>,
}

impl Namespaces {
    fn userns(&mut self) -> Option<&OwnedFd> {
        if !self.tried_userns {
            self.tried_userns = true;
            if crate::userns::is_real_root() {
                self.userns = super::idmap::make_userns(super::idmap::range()).ok();
            }
        }
        self.userns.as_ref()
    }

    /// A free network namespace, made when none is.
    fn take_netns(&mut self) -> Option<OwnedFd> {
        if let Some(ns) = self.free.pop() {
            return Some(ns);
        }
        let real_root = crate::userns::is_real_root();
        let userns = self.userns().map(|u| u.as_fd());
        // As real root the namespace must belong to the RUNs' user namespace (its root
        // then mounts a sysfs of it and holds CAP_NET_RAW in it), so without one, none.
        if real_root && userns.is_none() {
            return None;
        }
        make_netns(userns)
    }

    /// Reaps the helpers that ended ([`Namespaces::helper_ended`]).
    fn reap(&mut self) {
        while let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
            self.helper_ended(pid.as_raw_nonzero().get(), status.exited());
        }
    }

    /// Helper `pid` is gone, `exited` by itself or killed. A helper exits only once its
    /// PID 1 is reaped (`helper::wait_for_pid1`), and with it every process of the
    /// sandbox, so its network namespace is free again. A killed one (a cancelled RUN, a
    /// worker's cancelled action) may leave its PID 1 and the processes of the RUN dying
    /// in the namespace, their sockets still open: the next RUN would find a port it binds
    /// taken, so the namespace is dropped (the kernel frees it once they are gone) and the
    /// next RUN gets a new one.
    fn helper_ended(&mut self, pid: i32, exited: bool) {
        if let Some(i) = self.lent.iter().position(|(p, _)| *p == pid) {
            let (_, ns) = self.lent.swap_remove(i);
            if exited {
                self.free.push(ns);
            }
        }
    }
}

/// A network namespace with only `lo`, up, in user namespace `userns` (kiln's own when
/// `None`), from a child that makes it and waits while the zygote opens it.
fn make_netns(userns: Option<std::os::fd::BorrowedFd<'_>>) -> Option<OwnedFd> {
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (ready_r, ready_w) = rustix::pipe::pipe_with(flags).ok()?;
    let (done_r, done_w) = rustix::pipe::pipe_with(flags).ok()?;
    let child = fork("zygote").ok()?;
    if child == 0 {
        drop((ready_r, done_w));
        let made = (|| -> Option<()> {
            if let Some(userns) = userns {
                rustix::thread::move_into_link_name_space(
                    userns,
                    Some(rustix::thread::LinkNameSpaceType::User),
                )
                .ok()?;
                // SAFETY: plain ID syscalls of a single-threaded process.
                let ids = unsafe {
                    libc::setgroups(0, std::ptr::null()) == 0
                        && libc::setresgid(0, 0, 0) == 0
                        && libc::setresuid(0, 0, 0) == 0
                };
                ids.then_some(())?;
            }
            super::process::unshare(rustix::thread::UnshareFlags::NEWNET, "network").ok()?;
            super::pid1::loopback_up().ok()
        })();
        let _ = rustix::io::write(&ready_w, if made.is_some() { b"1" } else { b"0" });
        let mut b = [0u8; 1];
        // Until the zygote has the namespace open: EOF.
        let _ = rustix::io::read(&done_r, &mut b);
        // SAFETY: leave the forked child at once, running nothing of the zygote's state.
        unsafe { libc::_exit(0) };
    }
    drop((ready_w, done_r));
    let mut b = [0u8; 1];
    let made = matches!(rustix::io::read(&ready_r, &mut b), Ok(1)) && b[0] == b'1';
    let ns = made
        .then(|| {
            rustix::fs::open(
                format!("/proc/{child}/ns/net"),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()
        })
        .flatten();
    drop(done_w);
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Pid::from_raw(child), WaitOptions::empty())
    {}
    ns
}

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
    let mut ns = Namespaces::default();
    loop {
        ns.reap();
        let (tag, fds) = match recv_fds(&sock) {
            Ok(Some(msg)) => msg,
            // kiln closed its end (or is gone): so are we.
            Ok(None) | Err(_) => return 0,
        };
        let Ok::<[OwnedFd; 3], _>([control, stdout, stderr]) = fds.try_into() else {
            let _ = send_fds(&sock, FAILED, &[]);
            continue;
        };
        if tag != FORK && tag != FORK_NET {
            let _ = send_fds(&sock, FAILED, &[]);
            continue;
        }
        let netns = if tag == FORK_NET {
            ns.take_netns()
        } else {
            None
        };
        let shared = SharedNs {
            userns: ns.userns().map(|fd| fd.as_raw_fd()),
            netns: netns.as_ref().map(|fd| fd.as_raw_fd()),
        };
        let child = match fork("zygote") {
            Ok(pid) => pid,
            Err(_) => {
                ns.free.extend(netns);
                let _ = send_fds(&sock, FAILED, &[]);
                continue;
            }
        };
        if child == 0 {
            let code = become_helper(me, control, stdout, stderr, shared);
            // SAFETY: leave the forked child without running the zygote's state.
            unsafe { libc::_exit(code) };
        }
        drop((control, stdout, stderr));
        if let Some(netns) = netns {
            ns.lent.push((child, netns));
        }
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
fn become_helper(
    zygote: Pid,
    control: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    shared: SharedNs<RawFd>,
) -> i32 {
    let put = rustix::stdio::dup2_stdin(&control)
        .and_then(|()| rustix::stdio::dup2_stdout(&stdout))
        .and_then(|()| rustix::stdio::dup2_stderr(&stderr));
    if put.is_err() {
        return 125;
    }
    drop((control, stdout, stderr));
    super::helper::forked_helper_entry(zygote, shared)
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

/// Whether the process of `pidfd` has exited (a pidfd turns readable then), waiting until
/// `deadline` at most (`None`: as long as it takes).
pub(super) fn has_exited(
    pidfd: &std::os::fd::OwnedFd,
    deadline: Option<std::time::Instant>,
) -> std::io::Result<bool> {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    loop {
        // Recomputed after an interruption, so the deadline holds.
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fork a helper through the zygote (started on first use); `None` when the zygote cannot
/// serve (the caller then spawns the helper itself).
/// `netns`: the RUN is `--network none` (and not insecure), so it may use a network
/// namespace of the zygote's pool.
pub(super) fn fork_helper(
    control: &OwnedFd,
    netns: bool,
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
    match request(sock, control, netns) {
        Reply::Forked(forked) => Some(forked),
        // This fork failed (EAGAIN, EMFILE): the zygote and the helpers it forked before
        // (a running RUN's, the spare's) are fine.
        Reply::NotForked => None,
        Reply::Lost => {
            // Dropping the handle closes the zygote's socket: it exits.
            *state = State::Broken;
            None
        }
    }
}

/// How a fork request went.
enum Reply {
    Forked(Forked),
    /// The zygote answered that it could not fork, or kiln could not make the pipes.
    NotForked,
    /// The socket failed or the answer made no sense: the zygote is not to be used again.
    Lost,
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

fn request(sock: &UnixStream, control: &OwnedFd, netns: bool) -> Reply {
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (Ok((out_r, out_w)), Ok((err_r, err_w))) = (
        rustix::pipe::pipe_with(flags),
        rustix::pipe::pipe_with(flags),
    ) else {
        return Reply::NotForked;
    };
    let tag = if netns { FORK_NET } else { FORK };
    if send_fds(sock, tag, &[control.as_fd(), out_w.as_fd(), err_w.as_fd()]).is_err() {
        return Reply::Lost;
    }
    // Only the helper may hold the write ends: their EOF is the sandbox being gone.
    drop((out_w, err_w));
    match recv_fds(sock) {
        Ok(Some((FORKED, fds))) => match fds.into_iter().next() {
            Some(pidfd) => Reply::Forked(Forked {
                pidfd,
                stdout: out_r,
                stderr: err_r,
            }),
            None => Reply::Lost,
        },
        Ok(Some((FAILED, _))) => Reply::NotForked,
        _ => Reply::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stand_in() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").unwrap())
    }

    #[test]
    fn a_network_namespace_is_lent_again_only_after_its_helper_exited() {
        let mut ns = Namespaces::default();
        ns.lent.push((10, stand_in()));
        ns.lent.push((11, stand_in()));
        // Not a helper with a namespace: nothing changes.
        ns.helper_ended(12, true);
        assert_eq!((ns.lent.len(), ns.free.len()), (2, 0));
        // Killed: its sandbox may still be dying in the namespace.
        ns.helper_ended(10, false);
        assert_eq!((ns.lent.len(), ns.free.len()), (1, 0));
        assert_eq!(ns.lent[0].0, 11);
        ns.helper_ended(11, true);
        assert_eq!((ns.lent.len(), ns.free.len()), (0, 1));
    }
}
