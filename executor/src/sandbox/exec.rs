//! The RUN process itself, between PID 1's fork and exec: its stdio and session, its
//! `--ulimit`s, USER, the environment and `PATH` lookup, then capabilities, no_new_privs
//! and seccomp, in the order runc uses. Nothing here returns on success: the process
//! execs or reports why not.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::OwnedFd;

use super::process::{close_from, errno, reset_signals};
use super::protocol::HelperRun;
use super::step::{StepError, fail};
use super::user;
use rustix::process::Signal;

/// PATH given to the process when its environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The stdin `kiln run` passed over the control socket.
pub(super) struct PassedStdin {
    pub fd: OwnedFd,
    /// A pty of this process's own: made its controlling terminal.
    pub controlling: bool,
}

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
pub(super) fn exec_process(run: &HelperRun, stdin: Option<&PassedStdin>) -> StepError {
    match exec_inner(run, stdin) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

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
    // Before the user changes (as runc): RLIMIT_NPROC is checked against the new user.
    super::rlimit::apply(&run.options.ulimits)?;

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

enum Never {}
