//! A failed step of the sandbox's setup: which step, and why. Every part of the helper
//! and PID 1 reports through it, so it sits below all of them.

use std::fmt::Display;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::io::Errno;

/// A failed setup step: which step, and why (the path involved is in the message).
#[derive(Debug)]
pub(crate) struct StepError {
    pub step: &'static str,
    pub message: String,
}

pub(crate) fn fail(step: &'static str, what: impl Display) -> impl FnOnce(Errno) -> StepError {
    let what = what.to_string();
    move |e| StepError {
        step,
        message: format!("{what}: {e}"),
    }
}

pub(super) fn fail_io(
    step: &'static str,
    what: impl Display,
) -> impl FnOnce(std::io::Error) -> StepError {
    let what = what.to_string();
    move |e| StepError {
        step,
        message: format!("{what}: {e}"),
    }
}

/// `/proc/self/fd/N`: lets path-based mount calls act on a resolved fd.
pub(super) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}
