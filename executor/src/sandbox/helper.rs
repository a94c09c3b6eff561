//! The sandbox helper: a freshly exec'd, single-threaded kiln process (hidden subcommand)
//! that creates the namespaces of one RUN, forks the sandbox's PID 1, and reports back.
//!
//! Process tree: kiln → helper (new user/mount/pid/ipc/uts[/net] namespaces) → PID 1 (mounts
//! the rootfs, pivots, reaps) → the RUN process (drops privileges, execs).
//!
//! A build as real root holds no more power over the host than a rootless one: the helper
//! of a real-root kiln enters a user namespace of its own, mapped to an unprivileged range
//! of host IDs, with every host path it is given shown through idmapped mounts so files keep
//! their owners (module `idmap`). That scopes the RUN's capabilities to namespaces the build
//! owns (CAP_MKNOD cannot make a device, CAP_NET_RAW cannot open a packet socket on the
//! host's network, and every filesystem the sandbox mounts is `nodev`), and makes its root
//! no account of the host's wherever the kernel checks a uid. Descriptors the caller leaked to kiln are closed first thing. Every process has
//! `PR_SET_PDEATHSIG = SIGKILL`, and PID 1 dying kills the whole PID namespace, so a killed
//! kiln leaves no process; all mounts live in the private mount namespace and vanish with it.
//!
//! stdio: a RUN gets `/dev/null` for stdin and pipes for its output. `kiln run` starts the
//! helper with its own stdout/stderr instead, and with `-i` passes its stdin over the
//! control socket (SCM_RIGHTS) after the fds above 2 are closed: the process receives
//! exactly those three and nothing else. An inherited terminal never becomes the
//! process's controlling terminal (it starts its own session), so it cannot inject input
//! into the caller's shell with TIOCSTI. With `-t` the three are the slave of a new pty
//! kiln opened for this process alone, made its controlling terminal.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use super::process::{errno, fork, unshare};
use super::protocol::{self, Event, HelperRun, Request};
use super::rootfs;
use super::step::{StepError, fail};
use super::{idmap, user};
use std::os::unix::fs::OpenOptionsExt;

/// PATH given to the process when its environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (CAP_* numbers).
const DEFAULT_CAPS: [u32; 14] = [
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// argv[2] of a helper that receives the process's stdin over the control socket
/// (`kiln run -i`) before the request.
pub(crate) const STDIN_ARG: &str = "--stdin-fd";

/// argv[3] after [`STDIN_ARG`]: that stdin is a pty made for this process alone
/// (`kiln run -t`), to become its controlling terminal.
pub(crate) const CTTY_ARG: &str = "--controlling-tty";

/// The stdin `kiln run` passed over the control socket.
struct PassedStdin {
    fd: OwnedFd,
    /// A pty of this process's own: made its controlling terminal.
    controlling: bool,
}

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
    let sock = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(_) => return 125,
    };
    let passed_stdin = if std::env::args_os().nth(2).is_some_and(|a| a == STDIN_ARG) {
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
        Request::Run(run) => match run_sandbox(*run, &mut out, passed_stdin.as_ref()) {
            Ok(code) => code,
            Err(e) => {
                let _ = protocol::send(
                    &mut out,
                    &Event::Failed {
                        step: e.step.to_string(),
                        message: e.message,
                    },
                );
                1
            }
        },
    }
}

/// close_range(2) from `first` up: closes the fds, or with `cloexec` marks them
/// close-on-exec (for a process that still needs a close-on-exec pipe until it execs).
fn close_from(first: u32, cloexec: bool) -> Result<(), StepError> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: close_range takes plain integers; no Rust object owns an fd >= `first` here
    // (called before any fd is opened, or just before exec).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) };
    if r != 0 {
        return Err(fail("fds", "close inherited file descriptors")(
            rustix::io::Errno::from_raw_os_error(errno()),
        ));
    }
    Ok(())
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
    rootfs::make_private()?;
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
    rootfs::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged)?;
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
) -> Result<i32, StepError> {
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if run.network_none {
        flags |= UnshareFlags::NEWNET;
    }
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
    let entered = idmap::enter(&mut run)?;
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
    unshare(flags, "namespaces")?;
    entered.rebase(&mut run)?;
    rootfs::make_private()?;
    rootfs::mount_scratch(&run, entered.scratch_mounted())?;
    let run = &run;
    // PID 1 cannot see its parent across the PID namespace; this pipe's write end, held
    // only by the helper, tells it whether the helper is still alive.
    let (alive_r, alive_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail("pid1", "pipe"))?;
    let pid = fork("pid1")?;
    if pid == 0 {
        drop(alive_w);
        let code = pid1(run, out, alive_r, stdin, &secrets, cgroup_procs);
        // SAFETY: _exit ends the forked child without running the parent's atexit state.
        unsafe { libc::_exit(code) };
    }
    drop(alive_r);
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

/// The sandbox's PID 1: set up the filesystem, start the process, reap until it exits.
fn pid1(
    run: &HelperRun,
    out: &mut UnixStream,
    helper_alive: OwnedFd,
    stdin: Option<&PassedStdin>,
    secrets: &rootfs::Secrets,
    cgroup_procs: Option<std::fs::File>,
) -> i32 {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // The RUN runs as the same uid as PID 1: without this it could read PID 1's fds (the
    // control socket) through /proc/1/fd or ptrace it.
    if rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .is_err()
    {
        return 1;
    }
    // Into the RUN's cgroup before the RUN process exists, so all of it is limited. A
    // failure leaves the RUN unlimited rather than failed (crate::cgroup's module doc).
    if let Some(mut procs) = cgroup_procs {
        let _ = procs.write_all(b"0");
    }
    let mut fds = [rustix::event::PollFd::new(
        &helper_alive,
        rustix::event::PollFlags::IN,
    )];
    if rustix::event::poll(
        &mut fds,
        Some(&rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    )
    .unwrap_or(0)
        > 0
    {
        return 1; // the helper died before we armed the death signal
    }
    let send = |out: &mut UnixStream, ev: &Event| {
        let _ = protocol::send(out, ev);
    };
    let setup = || -> Result<Vec<protocol::Stub>, StepError> {
        let root = rootfs::mount_rootfs(&run.rootfs)?;
        let stubs = rootfs::populate(&root, run, secrets)?;
        if !run.hostname.is_empty() {
            rustix::system::sethostname(run.hostname.as_bytes())
                .map_err(fail("hostname", &run.hostname))?;
        }
        if run.network_none {
            loopback_up()?;
        }
        rootfs::pivot(&root)?;
        Ok(stubs)
    };
    match setup() {
        Ok(stubs) => send(out, &Event::Stubs(stubs)),
        Err(e) => {
            send(
                out,
                &Event::Failed {
                    step: e.step.to_string(),
                    message: e.message,
                },
            );
            return 1;
        }
    }
    // A close-on-exec pipe tells us whether exec succeeded (EOF) or why it failed.
    let (err_r, err_w) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            send(
                out,
                &Event::Failed {
                    step: "exec".into(),
                    message: format!("pipe: {e}"),
                },
            );
            return 1;
        }
    };
    let child = match fork("exec") {
        Ok(p) => p,
        Err(e) => {
            send(
                out,
                &Event::Failed {
                    step: e.step.to_string(),
                    message: e.message,
                },
            );
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

fn loopback_up() -> Result<(), StepError> {
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

fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Find argv[0] like runc does: through the container's PATH unless it contains a `/`.
fn lookup(prog: &str, path: &str) -> Option<String> {
    if prog.contains('/') {
        return Some(prog.to_string());
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = format!("{dir}/{prog}");
        if let Ok(st) = rustix::fs::stat(cand.as_str())
            && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            && st.st_mode & 0o111 != 0
        {
            return Some(cand);
        }
    }
    None
}

/// `s` as a C string; `what` names it in the error, which never shows the value itself (an
/// environment value may hold a secret).
fn cstring(s: &str, what: impl FnOnce() -> String) -> Result<CString, StepError> {
    CString::new(s).map_err(|_| StepError {
        step: "exec",
        message: format!("{} contains a NUL byte", what()),
    })
}

/// In the RUN process, after pivot_root: stdio, user, capabilities, cwd, exec.
fn exec_process(run: &HelperRun, stdin: Option<&PassedStdin>) -> StepError {
    match exec_inner(run, stdin) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn exec_inner(run: &HelperRun, stdin: Option<&PassedStdin>) -> Result<Never, StepError> {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    reset_signals();
    // Also what keeps a terminal inherited by `kiln run -t` from being this process's
    // controlling terminal: TIOCSTI on it then needs CAP_SYS_ADMIN in the initial namespace.
    let _ = rustix::process::setsid();
    if let Some(passed) = stdin {
        // Replaces fd 0 (the control socket) with the stdin `kiln run -i` passed.
        rustix::stdio::dup2_stdin(&passed.fd).map_err(fail("stdio", "dup2 stdin"))?;
        if passed.controlling {
            // The pty kiln opened for this process alone (`kiln run -t`): as its
            // controlling terminal, Ctrl-C and job control work as in `docker run -it`.
            rustix::process::ioctl_tiocsctty(&passed.fd)
                .map_err(fail("stdio", "TIOCSCTTY on the pseudo-terminal"))?;
        }
    } else {
        let null = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR,
            rustix::fs::Mode::empty(),
        )
        .map_err(fail("stdio", "open /dev/null"))?;
        // Replaces fd 0 (the control socket) with /dev/null.
        rustix::stdio::dup2_stdin(&null).map_err(fail("stdio", "dup2 /dev/null"))?;
        drop(null);
    }
    // Whatever PID 1 still holds (the control socket's clone) must not survive exec; the
    // exec-error pipe must, until exec, so mark rather than close.
    close_from(3, true)?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));

    let passwd = account_file("/etc/passwd")?;
    let group = account_file("/etc/group")?;
    let u = user::resolve_user(&run.user, &passwd, &group).map_err(|e| StepError {
        step: "user",
        message: e.to_string(),
    })?;

    if !run.insecure {
        drop_bounding_set()?;
    }
    let groups: Vec<libc::gid_t> = u.groups.clone();
    // SAFETY: setgroups reads `groups.len()` gids from a live Vec.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        let e = errno();
        // With a single-ID mapping setgroups is denied; without extra groups that is fine.
        if !(e == libc::EPERM && groups.is_empty()) {
            return Err(fail("user", format!("setgroups {groups:?}"))(
                rustix::io::Errno::from_raw_os_error(e),
            ));
        }
    }
    // SAFETY: setresgid/setresuid take plain integers; results are checked.
    if unsafe { libc::setresgid(u.gid, u.gid, u.gid) } != 0 {
        return Err(fail(
            "user",
            format!("setgid {} (is the ID mapped in the user namespace?)", u.gid),
        )(rustix::io::Errno::from_raw_os_error(errno())));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(u.uid, u.uid, u.uid) } != 0 {
        return Err(fail(
            "user",
            format!("setuid {} (is the ID mapped in the user namespace?)", u.uid),
        )(rustix::io::Errno::from_raw_os_error(errno())));
    }
    if u.uid == 0 {
        // --security=insecure: every capability, all of them scoped to the build's own
        // namespaces (the user namespace is still there, as for every RUN).
        let caps: Vec<u32> = match run.insecure {
            true => (0..=last_cap().min(63)).collect(),
            false => DEFAULT_CAPS.to_vec(),
        };
        let mut set = rustix::thread::CapabilitySet::empty();
        for c in caps {
            set |= rustix::thread::CapabilitySet::from_bits_retain(1u64 << c);
        }
        let sets = rustix::thread::CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: set,
        };
        rustix::thread::set_capabilities(None, sets).map_err(fail("capabilities", "capset"))?;
    }
    rustix::thread::set_no_new_privs(true).map_err(fail("capabilities", "no_new_privs"))?;
    // Compiled before the filter is on (building it allocates and reads nothing filtered,
    // but the order keeps that true for any future rule).
    let filters = match run.insecure {
        true => Vec::new(),
        false => super::seccomp::default_filters().map_err(|e| StepError {
            step: "seccomp",
            message: e.to_string(),
        })?,
    };

    let cwd = if run.cwd.is_empty() {
        "/"
    } else {
        run.cwd.as_str()
    };
    rustix::process::chdir(cwd)
        .map_err(fail("cwd", format!("chdir to cwd ({cwd:?}) set in config")))?;

    let mut env: Vec<(String, String)> = run.env.clone();
    if env_get(&env, "PATH").is_none() {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if env_get(&env, "HOME").is_none() {
        env.push(("HOME".into(), u.home.clone()));
    }
    let prog = run.argv.first().ok_or_else(|| StepError {
        step: "exec",
        message: "empty command".into(),
    })?;
    let path = env_get(&env, "PATH").unwrap_or(DEFAULT_PATH).to_string();
    let exe = lookup(prog, &path).ok_or_else(|| StepError {
        step: "exec",
        message: format!("exec: {prog:?}: executable file not found in $PATH"),
    })?;
    let exe_c = cstring(&exe, || "the program path".into())?;
    let argv: Vec<CString> = run
        .argv
        .iter()
        .enumerate()
        .map(|(i, a)| cstring(a, || format!("argument {i} of the command")))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let name: String = k.chars().filter(|c| *c != '\0').collect();
            cstring(&format!("{k}={v}"), || {
                format!("the environment variable {name:?}")
            })
        })
        .collect::<Result<_, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // Last, so that nothing kiln itself does in this process runs under the filter.
    for f in &filters {
        seccompiler::apply_filter(f).map_err(|e| StepError {
            step: "seccomp",
            message: format!("installing the filter: {e}"),
        })?;
    }
    // SAFETY: exe_c, argv and envp are NUL-terminated C strings alive across the call, and
    // both pointer arrays end with NULL.
    unsafe { libc::execve(exe_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    Err(fail("exec", format!("exec {exe}"))(
        rustix::io::Errno::from_raw_os_error(errno()),
    ))
}

/// The rootfs's `/etc/passwd` or `/etc/group` for resolving USER ("" when missing). An
/// earlier step may have made it anything: only a regular file is read (a FIFO would block
/// the open, a device never end), and at most MAX_IMAGE_FILE_SIZE of it.
fn account_file(path: &str) -> Result<String, StepError> {
    use rustix::fs::OFlags;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, rustix::fs::Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(fail("user", format!("open {path}"))(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(fail("user", format!("stat {path}")))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(StepError {
            step: "user",
            message: format!("{path} is not a regular file"),
        });
    }
    let bytes = kiln_image::limits::read_capped(
        std::fs::File::from(fd),
        kiln_image::limits::MAX_IMAGE_FILE_SIZE,
        path,
    )
    .map_err(|e| StepError {
        step: "user",
        message: e.to_string(),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Default dispositions and an empty mask for every signal: ignored signals survive exec
/// (Rust's runtime ignores SIGPIPE), and the RUN must start like a fresh process.
fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL for a valid signal number; no handler code involved.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialized sigset passed to sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Remove every capability outside Docker's default set from the bounding set.
fn drop_bounding_set() -> Result<(), StepError> {
    for cap in 0..=last_cap().min(63) {
        if DEFAULT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number; errors are checked.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 && errno() != libc::EINVAL {
            return Err(fail("capabilities", format!("drop capability {cap}"))(
                rustix::io::Errno::from_raw_os_error(errno()),
            ));
        }
    }
    Ok(())
}
