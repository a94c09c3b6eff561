//! Process primitives of the sandbox helper and its PID 1, both single-threaded processes
//! (a fresh exec that starts no threads): that is what makes `fork` and `unshare` sound
//! here, and why they live apart from kiln's threaded code.
#![allow(unsafe_code)]

use rustix::thread::UnshareFlags;

use super::step::{StepError, fail};

pub(super) fn unshare(flags: UnshareFlags, step: &'static str) -> Result<(), StepError> {
    // SAFETY: the helper is single-threaded (a fresh exec that starts no threads), so no
    // other thread can observe the unshared file-descriptor table or fs state.
    unsafe { rustix::thread::unshare_unsafe(flags) }
        .map_err(fail(step, format!("unshare {flags:?}")))
}

/// fork(2). Returns 0 in the child.
pub(super) fn fork(step: &'static str) -> Result<i32, StepError> {
    // SAFETY: the helper and PID 1 are single-threaded, so the child may run any code
    // (no lock can be held by a thread that does not exist in the child).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(step, "fork")(rustix::io::Errno::from_raw_os_error(
            errno(),
        )));
    }
    Ok(pid)
}

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// close_range(2) from `first` up: closes the fds, or with `cloexec` marks them
/// close-on-exec (for a process that still needs a close-on-exec pipe until it execs).
pub(super) fn close_from(first: u32, cloexec: bool) -> Result<(), StepError> {
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

/// Closes every fd from `first` up but those in `keep`.
pub(super) fn close_except(first: u32, keep: &[std::os::fd::RawFd]) -> Result<(), StepError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let mut from = first;
    for fd in keep.into_iter().filter(|&fd| fd >= first) {
        if fd > from {
            close_range(from, fd - 1)?;
        }
        from = fd + 1;
    }
    close_range(from, libc::c_uint::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), StepError> {
    // SAFETY: close_range takes plain integers; no Rust object owns an fd in the range
    // (called before any fd is opened).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r != 0 {
        return Err(fail("fds", "close inherited file descriptors")(
            rustix::io::Errno::from_raw_os_error(errno()),
        ));
    }
    Ok(())
}

/// Default dispositions and an empty mask for every signal: ignored signals survive exec
/// (Rust's runtime ignores SIGPIPE), and the RUN must start like a fresh process.
pub(super) fn reset_signals() {
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
