//! The sandbox helper: a freshly exec'd, single-threaded kiln process (hidden subcommand)
//! that creates the namespaces of one RUN, forks the sandbox's PID 1, and reports back.
//!
//! Process tree: kiln → helper (new user/mount/pid/ipc/uts[/net] namespaces) → PID 1 (mounts
//! the rootfs, pivots, reaps: module `pid1`) → the RUN process (drops privileges, execs:
//! module `exec`).
//!
//! A build as real root holds no more power over the host than a rootless one: the helper
//! of a real-root kiln enters a user namespace of its own, mapped to an unprivileged range
//! of host IDs, with every host path it is given shown through idmapped mounts so files keep
//! their owners (module `idmap`). That scopes the RUN's capabilities to namespaces the build
//! owns (CAP_MKNOD cannot make a device, CAP_NET_RAW cannot open a packet socket on the
//! host's network, and every filesystem the sandbox mounts is `nodev`), and makes its root
//! no account of the host's wherever the kernel checks a uid. Descriptors the caller leaked
//! to kiln are closed first thing. Every process has `PR_SET_PDEATHSIG = SIGKILL`, and PID 1
//! dying kills the whole PID namespace, so a killed kiln leaves no process; all mounts live
//! in the private mount namespace and vanish with it.
//!
//! stdio: a RUN gets `/dev/null` for stdin and pipes for its output. `kiln run` starts the
//! helper with its own stdout/stderr instead, and with `-i` passes its stdin over the
//! control socket (SCM_RIGHTS) after the fds above 2 are closed: the process receives
//! exactly those three and nothing else. An inherited terminal never becomes the
//! process's controlling terminal (it starts its own session), so it cannot inject input
//! into the caller's shell with TIOCSTI. With `-t` the three are the slave of a new pty
//! kiln opened for this process alone, made its controlling terminal.
#![allow(unsafe_code)]

use std::io::BufReader;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use super::exec::PassedStdin;
use super::idmap;
use super::mount;
use super::pid1::pid1;
use super::process::{close_except, close_from, fork, reset_signals, unshare};
use super::protocol::{self, Event, HelperRun, Request};
use super::rlimit;
use super::rootfs;
use super::step::{StepError, fail};
use super::trace::SetupTrace;
use std::os::unix::fs::OpenOptionsExt;

/// argv[2] of a helper that receives the process's stdin over the control socket
/// (`kiln run -i`) before the request.
pub(crate) const STDIN_ARG: &str = "--stdin-fd";

/// argv[3] after [`STDIN_ARG`]: that stdin is a pty made for this process alone
/// (`kiln run -t`), to become its controlling terminal.
pub(crate) const CTTY_ARG: &str = "--controlling-tty";

/// Entry point of the helper process; returns its exit code.
pub(crate) fn helper_entry() -> i32 {
    // Only stdio is ours: fds a shell, CI runner or job server leaked to kiln (not
    // close-on-exec) would otherwise reach PID 1 and the RUN, e.g. a directory fd that
    // opens the host filesystem through /proc/self/fd/N.
    if close_from(3, false).is_err() {
        return 125;
    }
    // If kiln dies, so do we (and, through PID 1, the whole sandbox).
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // An inherited SIG_IGN for SIGCHLD would make children vanish before PID 1 reaps them.
    reset_signals();
    serve(
        std::env::args_os().nth(2).is_some_and(|a| a == STDIN_ARG),
        SharedNs::none(),
    )
}

/// Entry point of a helper the zygote forked (module `zygote`), its stdio already in
/// place; returns its exit code.
///
/// `shared`: descriptors of the zygote's namespaces this helper may use (module
/// `zygote`), which it keeps open; every other descriptor above stderr is closed.
pub(crate) fn forked_helper_entry(zygote: Pid, shared: SharedNs<RawFd>) -> i32 {
    // What an exec'd helper does first, for the same reasons (fds the zygote held, its
    // signal state).
    let keep: Vec<RawFd> = [shared.userns, shared.netns]
        .into_iter()
        .flatten()
        .collect();
    if close_except(3, &keep).is_err() {
        return 125;
    }
    // SAFETY: the zygote left these open for us, and nothing else in this process owns them.
    let shared = SharedNs {
        userns: shared.userns.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
        netns: shared.netns.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
    };
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // The zygote may have died before the death signal was armed.
    if rustix::process::getppid() != Some(zygote) {
        return 125;
    }
    reset_signals();
    serve(false, shared)
}

/// Namespaces of the build the zygote holds for its helpers: as real root the user
/// namespace every RUN enters (`idmap::enter`), and for a `--network none` RUN a network
/// namespace of the zygote's pool, with only `lo`, up, lent to this RUN alone.
pub(crate) struct SharedNs<Fd> {
    pub userns: Option<Fd>,
    pub netns: Option<Fd>,
}

impl<Fd> SharedNs<Fd> {
    /// An exec'd helper's: none.
    fn none() -> SharedNs<Fd> {
        SharedNs {
            userns: None,
            netns: None,
        }
    }
}

/// The helper proper, on its control socket (fd 0): receives the request (with
/// `passed_stdin`, first the stdin to give the process) and carries it out.
fn serve(passed_stdin: bool, shared: SharedNs<OwnedFd>) -> i32 {
    let sock = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(_) => return 125,
    };
    let passed_stdin = if passed_stdin {
        match protocol::recv_fd(&sock) {
            Ok(fd) => Some(PassedStdin {
                fd,
                controlling: std::env::args_os().nth(3).is_some_and(|a| a == CTTY_ARG),
            }),
            Err(_) => return 125,
        }
    } else {
        None
    };
    let mut reader = match sock.try_clone() {
        Ok(s) => BufReader::new(s),
        Err(_) => return 125,
    };
    let mut out = sock;
    let req: Request = match protocol::recv(&mut reader) {
        Ok(Some(r)) => r,
        _ => return 125,
    };
    match req {
        Request::ProbeOverlay { dir } => {
            let ev = match probe_overlay(&dir) {
                Ok(()) => Event::Probe {
                    ok: true,
                    detail: String::new(),
                },
                Err(e) => Event::Probe {
                    ok: false,
                    detail: format!("{}: {}", e.step, e.message),
                },
            };
            let _ = protocol::send(&mut out, &ev);
            0
        }
        // Its PID 1 reads the request next, straight from the socket: nothing may wait in
        // this reader (kiln sends nothing before the answer).
        Request::Prepare(plan) if reader.buffer().is_empty() && passed_stdin.is_none() => {
            match super::prepared::prepare(*plan, &mut out, shared) {
                Ok(code) => code,
                Err(e) => {
                    let _ = protocol::send(&mut out, &Event::from(e));
                    1
                }
            }
        }
        Request::Prepare(_) => 125,
        Request::Run(run) => match run_sandbox(*run, &mut out, passed_stdin.as_ref(), shared) {
            Ok(code) => code,
            Err(e) => {
                let _ = protocol::send(&mut out, &Event::from(e));
                1
            }
        },
    }
}

/// Mount a tiny overlay in a throwaway mount namespace and check that a deletion leaves a
/// 0:0 whiteout and a replaced directory is marked opaque with `user.overlay.opaque`.
fn probe_overlay(dir: &Path) -> Result<(), StepError> {
    // Probe under the same conditions as a RUN: in the sandbox's user namespace, on an
    // idmapped view of `dir` as real root.
    let mut dir = dir.to_path_buf();
    let entered = idmap::enter_for_probe(&mut dir)?;
    if !entered.scratch_mounted() {
        unshare(UnshareFlags::NEWNS, "probe")?;
    }
    mount::make_private()?;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| StepError {
            step: "probe",
            message: format!("{what}: {e}"),
        }
    };
    let (lower, upper, work, merged) = (dir.join("l"), dir.join("u"), dir.join("w"), dir.join("m"));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(io(&format!("mkdir {}", d.display())))?;
    }
    std::fs::write(lower.join("f"), b"x").map_err(io("write lower file"))?;
    std::fs::create_dir_all(lower.join("d/sub")).map_err(io("mkdir lower dir"))?;
    mount::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged)?;
    std::fs::remove_file(merged.join("f")).map_err(io("delete through overlay"))?;
    std::fs::remove_dir_all(merged.join("d")).map_err(io("remove dir through overlay"))?;
    std::fs::create_dir(merged.join("d")).map_err(io("recreate dir through overlay"))?;
    let wh = rustix::fs::lstat(upper.join("f")).map_err(fail("probe", "stat whiteout"))?;
    let is_whiteout = rustix::fs::FileType::from_raw_mode(wh.st_mode)
        == rustix::fs::FileType::CharacterDevice
        && wh.st_rdev == 0;
    if !is_whiteout {
        return Err(StepError {
            step: "probe",
            message: "deletion did not leave a 0:0 whiteout".into(),
        });
    }
    let opaque = xattr::get(upper.join("d"), kiln_base::whiteout::OPAQUE_XATTR)
        .ok()
        .flatten();
    if opaque.as_deref() != Some(b"y") {
        return Err(StepError {
            step: "probe",
            message: "replaced directory is not marked user.overlay.opaque".into(),
        });
    }
    Ok(())
}

fn run_sandbox(
    mut run: HelperRun,
    out: &mut UnixStream,
    stdin: Option<&PassedStdin>,
    shared: SharedNs<OwnedFd>,
) -> Result<i32, StepError> {
    let mut trace = SetupTrace::new(run.trace);
    // An insecure RUN holds CAP_NET_ADMIN: what it changes in a network namespace would
    // outlive it, so it never gets a lent one.
    let lent_netns = shared.netns.filter(|_| run.network_none && !run.insecure);
    // Before leaving kiln's user namespace: kiln's secret memfds cannot be opened from
    // another one.
    let secrets = rootfs::Secrets::open(&run)?;
    // Opened while still privileged: the sandbox's root need not be able to open it, the
    // kernel checks the opener's credentials when PID 1 writes to it.
    let cgroup_procs = run.cgroup_procs.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
            .ok()
    });
    // Still in kiln's user namespace: the only place a hard limit can be raised (as real
    // root), inherited by everything below.
    if crate::userns::is_real_root() {
        rlimit::raise_hard_limits(&run.options.ulimits)?;
    }
    trace.step("helper: secrets, cgroup, limits");
    let entered = idmap::enter(&mut run, shared.userns)?;
    trace.step("helper: user namespace");
    let flags = sandbox_flags(run.network_none, lent_netns);
    if let idmap::Entered::Identity(why) = &entered {
        if run.insecure {
            // Every capability and no masks, with a root that is the host's root for uid
            // checks, could write the host's sysctls (core_pattern runs a program as root).
            return Err(StepError {
                step: "security",
                message: format!(
                    "RUN --security=insecure needs an unprivileged ID range, and the store \
                     cannot be idmapped ({why}); run kiln as an unprivileged user"
                ),
            });
        }
        let _ = protocol::send(out, &Event::Note(why.clone()));
    }
    trace.step("helper: network namespace");
    unshare(flags, "namespaces")?;
    trace.step("helper: unshare");
    entered.rebase(&mut run)?;
    mount::make_private()?;
    rootfs::mount_scratch(&run, entered.scratch_mounted())?;
    rootfs::add_stub_layer(&mut run)?;
    trace.step("helper: scratch, stub layer");
    let run = &run;
    // PID 1 cannot see its parent across the PID namespace; this pipe's write end, held
    // only by the helper, tells it whether the helper is still alive.
    let (alive_r, alive_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail("pid1", "pipe"))?;
    let pid = fork("pid1")?;
    if pid == 0 {
        drop(alive_w);
        trace.step("fork pid1");
        let code = pid1(run, out, alive_r, stdin, &secrets, cgroup_procs, trace);
        // SAFETY: _exit ends the forked child without running the parent's atexit state.
        unsafe { libc::_exit(code) };
    }
    drop(alive_r);
    wait_for_pid1(pid, alive_w, out)
}

/// The namespaces a sandbox unshares. Without a network (`network_none`): the `lent`
/// namespace joined when this user namespace may join it (it belongs to the build's; not
/// to the identity mapping's), else a new one.
pub(super) fn sandbox_flags(network_none: bool, lent: Option<OwnedFd>) -> UnshareFlags {
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if network_none {
        let joined = lent.is_some_and(|ns| {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .is_ok()
        });
        if !joined {
            flags |= UnshareFlags::NEWNET;
        }
    }
    flags
}

/// The helper's part once PID 1 is forked (`pid`; `alive_w`: the write end of the pipe
/// that tells PID 1 the helper lives): waits for PID 1 and says [`Event::Done`].
pub(super) fn wait_for_pid1(
    pid: i32,
    alive_w: OwnedFd,
    out: &mut UnixStream,
) -> Result<i32, StepError> {
    // Only the sandbox should hold the output pipes, so their EOF means it is gone.
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    // Wait for PID 1; it reports the RUN's status itself.
    let pid = Pid::from_raw(pid).ok_or_else(|| StepError {
        step: "pid1",
        message: "fork returned pid 0".into(),
    })?;
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                drop(alive_w);
                if let Some(sig) = status.terminating_signal() {
                    return Err(StepError {
                        step: "pid1",
                        message: format!("sandbox init killed by signal {sig}"),
                    });
                }
                // PID 1 has exited, so the kernel has killed and reaped every process of
                // the PID namespace: nothing writes to the rootfs any more.
                let _ = protocol::send(out, &Event::Done);
                return Ok(0);
            }
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(fail("pid1", "wait for sandbox init")(e)),
        }
    }
}
