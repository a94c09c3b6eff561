//! The sandbox's PID 1: joins the RUN's cgroup, builds the filesystem view, pivots, forks
//! the RUN process and reaps every process of the PID namespace until the RUN exits.
//! Leaving it kills whatever the RUN left running.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use rustix::process::{Signal, WaitOptions};

use super::exec::{PassedStdin, exec_process};
use super::process::{errno, fork};
use super::protocol::{self, Event, HelperRun};
use super::rootfs;
use super::step::{StepError, fail};
use super::trace::SetupTrace;

/// The sandbox's PID 1: set up the filesystem, start the process, reap until it exits.
pub(super) fn pid1(
    run: &HelperRun,
    out: &mut UnixStream,
    helper_alive: OwnedFd,
    stdin: Option<&PassedStdin>,
    secrets: &rootfs::Secrets,
    cgroup_procs: Option<std::fs::File>,
    mut trace: SetupTrace,
) -> i32 {
    if !arm() {
        return 1;
    }
    join_cgroup(cgroup_procs);
    if helper_gone(&helper_alive) {
        return 1; // the helper died before we armed the death signal
    }
    trace.step("pid1: start");
    let view = set_up_view(run, secrets, None, &mut trace);
    run_process(run, out, stdin, view, trace)
}

/// What PID 1 does first: dies with the helper, and cannot be read by the RUN. False when
/// it could not make itself undumpable.
pub(super) fn arm() -> bool {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // The RUN runs as the same uid as PID 1: without this it could read PID 1's fds (the
    // control socket) through /proc/1/fd or ptrace it.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).is_ok()
}

/// Into the RUN's cgroup before the RUN process exists, so all of it is limited. A
/// failure leaves the RUN unlimited rather than failed (crate::cgroup's module doc).
pub(super) fn join_cgroup(cgroup_procs: Option<std::fs::File>) {
    if let Some(mut procs) = cgroup_procs {
        let _ = procs.write_all(b"0");
    }
}

/// Whether the helper is gone (its end of the `alive` pipe closed), checked once the death
/// signal is armed: it may have died before.
pub(super) fn helper_gone(helper_alive: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        helper_alive,
        rustix::event::PollFlags::IN,
    )];
    rustix::event::poll(
        &mut fds,
        Some(&rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    )
    .unwrap_or(0)
        > 0
}

/// Mounts the RUN's view (`prepared`: `/proc`, `/sys` and `/dev` made already, see
/// `rootfs::populate`), names the host and pivots into it; returns the stubs created.
pub(super) fn set_up_view(
    run: &HelperRun,
    secrets: &rootfs::Secrets,
    prepared: Option<&std::path::Path>,
    trace: &mut SetupTrace,
) -> Result<Vec<protocol::Stub>, StepError> {
    let root = rootfs::mount_rootfs(&run.rootfs)?;
    trace.step("pid1: rootfs");
    let stubs = rootfs::populate(&root, run, secrets, trace, prepared)?;
    if !run.hostname.is_empty() {
        rustix::system::sethostname(run.hostname.as_bytes())
            .map_err(fail("hostname", &run.hostname))?;
    }
    // A prepared sandbox brought it up before its request.
    if run.network_none && prepared.is_none() {
        loopback_up()?;
    }
    trace.step("pid1: hostname, lo");
    rootfs::pivot(&root)?;
    trace.step("pid1: pivot_root, detach old root");
    Ok(stubs)
}

/// After [`set_up_view`]: reports the setup (or its failure), starts the RUN process and
/// reaps every process of the PID namespace until it exits; returns PID 1's exit code.
pub(super) fn run_process(
    run: &HelperRun,
    out: &mut UnixStream,
    stdin: Option<&PassedStdin>,
    view: Result<Vec<protocol::Stub>, StepError>,
    mut trace: SetupTrace,
) -> i32 {
    let send = |out: &mut UnixStream, ev: &Event| {
        let _ = protocol::send(out, ev);
    };
    match view {
        Ok(stubs) => {
            let steps = trace.take();
            if !steps.is_empty() {
                send(out, &Event::Setup(steps));
            }
            send(out, &Event::Stubs(stubs))
        }
        Err(e) => {
            send(out, &Event::from(e));
            return 1;
        }
    }
    // A close-on-exec pipe tells us whether exec succeeded (EOF) or why it failed.
    let (err_r, err_w) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            send(out, &Event::from(fail("exec", "pipe")(e)));
            return 1;
        }
    };
    let child = match fork("exec") {
        Ok(p) => p,
        Err(e) => {
            send(out, &Event::from(e));
            return 1;
        }
    };
    if child == 0 {
        drop(err_r);
        let e = exec_process(run, stdin);
        let mut w = std::fs::File::from(err_w);
        let _ = w.write_all(format!("{}\n{}", e.step, e.message).as_bytes());
        // SAFETY: leave the forked child immediately; nothing of the parent must run here.
        unsafe { libc::_exit(127) };
    }
    drop(err_w);
    let mut msg = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
    let mut failed = false;
    if !msg.is_empty() {
        let (step, message) = msg.split_once('\n').unwrap_or(("exec", msg.as_str()));
        send(
            out,
            &Event::Failed {
                step: step.to_string(),
                message: message.to_string(),
            },
        );
        failed = true;
    }
    // Reap everything; stop when the RUN process itself is gone. Leaving PID 1 then kills
    // whatever it left running in the PID namespace.
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == child => {
                if !failed {
                    let ev = match status.terminating_signal() {
                        Some(sig) => Event::Exited {
                            code: 128 + sig,
                            signal: Some(sig),
                        },
                        None => Event::Exited {
                            code: status.exit_status().unwrap_or(0),
                            signal: None,
                        },
                    };
                    send(out, &ev);
                }
                return 0;
            }
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 0,
        }
    }
}

pub(super) fn loopback_up() -> Result<(), StepError> {
    // SAFETY: plain socket(2); the fd is checked and wrapped into an OwnedFd right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("network", "socket for lo")(
            rustix::io::Errno::from_raw_os_error(errno()),
        ));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own, on a valid socket.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(fail("network", "get lo flags")(
                rustix::io::Errno::from_raw_os_error(errno()),
            ));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(fail("network", "bring lo up")(
                rustix::io::Errno::from_raw_os_error(errno()),
            ));
        }
    }
    Ok(())
}
