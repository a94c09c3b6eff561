//! The spare helper: the zygote forks the next RUN's helper while the current RUN runs,
//! so the next RUN finds one waiting for its request instead of waiting for the fork.
//!
//! A spare is a helper like any other (module `zygote`: its parent-death signal on the
//! zygote, every fd but its stdio closed) that has not been sent a request yet: it has
//! done nothing but wait on its control socket, so it holds nothing of any RUN. The only
//! choice made at its fork is whether the zygote lends it a network namespace of the
//! `--network none` pool, so the spare is kept with that choice and a RUN that wants the
//! other one kills it (its pidfd) and has a helper forked as before. A spare that died
//! (the zygote went away, someone killed it) is noticed through its pidfd and not used.
//!
//! One spare at most, in a process-wide slot, forked by one long-lived thread so that
//! the fork never stands in a RUN's way. A spare nobody takes dies with the zygote when
//! kiln exits (parent-death signals), like every helper.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use kiln_base::worker::Worker;

use super::zygote::{self, Forked};

/// A helper forked ahead of its RUN: kiln's end of its control socket and what the
/// zygote gave back.
pub(super) struct Spare {
    pub control: UnixStream,
    pub forked: Forked,
}

enum Slot {
    Empty,
    /// The filler thread is forking one.
    Filling,
    /// Forked with (`netns`) or without a network namespace of the pool.
    Ready {
        netns: bool,
        spare: Spare,
    },
}

static SLOT: Mutex<Slot> = Mutex::new(Slot::Empty);
static FILLED: Condvar = Condvar::new();

/// How long a RUN waits for a spare still being forked before forking its own: a fork
/// through the zygote takes well under a millisecond, so longer means the zygote is stuck,
/// and the RUN's own fork then fails the usual way.
const FILL_WAIT: Duration = Duration::from_millis(200);

/// The spare when there is one forked with the same network choice (`netns`: the RUN may
/// use a network namespace of the pool) and alive; otherwise `None`, and a spare of the
/// other choice is killed.
pub(super) fn take(netns: bool) -> Option<Spare> {
    let mut slot = SLOT.lock().ok()?;
    if let Slot::Filling = *slot {
        slot = FILLED
            .wait_timeout_while(slot, FILL_WAIT, |s| matches!(s, Slot::Filling))
            .ok()?
            .0;
    }
    let Slot::Ready { .. } = *slot else {
        return None;
    };
    let Slot::Ready { netns: has, spare } = std::mem::replace(&mut *slot, Slot::Empty) else {
        return None;
    };
    drop(slot);
    if has == netns && alive(&spare.forked.pidfd) {
        Some(spare)
    } else {
        kill(&spare.forked.pidfd);
        None
    }
}

/// Have a spare forked for the next RUN, with the network choice of this one, unless one
/// is there or on its way. `spawn` starts the zygote if it is not running.
pub(super) fn refill(netns: bool, spawn: fn(Command) -> std::io::Result<Child>) {
    let Ok(mut slot) = SLOT.lock() else {
        return;
    };
    if !matches!(*slot, Slot::Empty) {
        return;
    }
    *slot = Slot::Filling;
    drop(slot);
    // A filler that is gone (or never started) would leave the slot filling for good, and
    // every RUN waiting.
    if FILLER.send((netns, spawn)).is_err() {
        settle(None);
    }
}

type FillJob = (bool, fn(Command) -> std::io::Result<Child>);

/// The thread that forks spares, started on first use.
static FILLER: Worker<FillJob> = Worker::new("kiln-sandbox-spare", fill);

fn fill((netns, spawn): FillJob) {
    settle(fork_spare(netns, spawn).map(|spare| (netns, spare)));
}

fn fork_spare(netns: bool, spawn: fn(Command) -> std::io::Result<Child>) -> Option<Spare> {
    let (control, theirs) = UnixStream::pair().ok()?;
    // kiln keeps no copy of the helper's end: its EOF is the helper gone.
    let theirs = OwnedFd::from(theirs);
    let forked = zygote::fork_helper(&theirs, netns, spawn)?;
    Some(Spare { control, forked })
}

/// Ends a fill: the slot holds what it gave, and a RUN waiting for it wakes.
fn settle(filled: Option<(bool, Spare)>) {
    let Ok(mut slot) = SLOT.lock() else {
        if let Some((_, spare)) = filled {
            kill(&spare.forked.pidfd);
        }
        return;
    };
    *slot = match filled {
        Some((netns, spare)) => Slot::Ready { netns, spare },
        None => Slot::Empty,
    };
    drop(slot);
    FILLED.notify_all();
}

/// Whether the spare's process is still there: one that cannot be asked is taken as gone.
fn alive(pidfd: &OwnedFd) -> bool {
    !zygote::has_exited(pidfd, Some(std::time::Instant::now())).unwrap_or(true)
}

/// The zygote reaps it (and takes back its network namespace).
fn kill(pidfd: &OwnedFd) {
    let _ = rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL);
}
