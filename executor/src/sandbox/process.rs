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
