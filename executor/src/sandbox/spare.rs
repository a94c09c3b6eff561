//! The spare helper: the zygote forks the next RUN's helper while the current RUN runs,
//! so the next RUN finds one waiting for its request instead of waiting for the fork.
//!
//! A spare is a helper like any other (module `zygote`: its parent-death signal on the
//! zygote, every fd but its stdio closed) that has not been sent a RUN yet, so it holds
//! nothing of any RUN. The only choice made at its fork is whether the zygote lends it a
//! network namespace of the `--network none` pool, so the spare is kept with that choice
//! and a RUN that wants the other one lets it go (closes its socket: it exits) and has a
//! helper forked as before. A spare that died (the zygote went away, someone killed it) is
//! noticed through its pidfd and not used.
//!
//! A spare forked after a RUN is also asked to prepare its sandbox for a RUN like that one
//! (module `prepared`): the filler waits for its answer before the slot holds it, and a
//! RUN the plan does not serve lets it go and has a helper forked as before. What it
//! prepared is still nothing of a RUN's: views of the store's directories, namespaces,
//! and `/proc`, `/sys` and `/dev`.
//!
//! One spare at most, in a process-wide slot, forked by one long-lived thread so that
//! the fork never stands in a RUN's way. A spare nobody takes dies with the zygote when
//! kiln exits (parent-death signals), like every helper.

use std::io::BufReader;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use kiln_base::worker::Worker;

use super::prepared::PreparePlan;
use super::protocol::{self, Event, HelperRun, Request};
use super::zygote::{self, Forked};

/// A helper forked ahead of its RUN: kiln's end of its control socket and what the
/// zygote gave back, and the plan it made its sandbox with when it did (module
/// `prepared`).
pub(super) struct Spare {
    pub control: UnixStream,
    pub forked: Forked,
    pub prepared: Option<PreparePlan>,
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
/// other choice is let go ([`discard`]).
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
        discard(spare);
        None
    }
}

/// Have a spare forked for the next RUN, with the network choice of this one, unless one
/// is there or on its way; prepared for a RUN like `like` when it is given and preparing
/// has not failed (module `prepared`). `spawn` starts the zygote if it is not running.
pub(super) fn refill(
    netns: bool,
    like: Option<Box<HelperRun>>,
    spawn: fn(Command) -> std::io::Result<Child>,
) {
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
    if FILLER.send((netns, like, spawn)).is_err() {
        settle(None);
    }
}

type FillJob = (
    bool,
    Option<Box<HelperRun>>,
    fn(Command) -> std::io::Result<Child>,
);

/// The thread that forks spares, started on first use.
static FILLER: Worker<FillJob> = Worker::new("kiln-sandbox-spare", fill);

/// Spares that failed to prepare one after another; at [`GIVE_UP`] the rest of the
/// process's spares are not asked to (where one cannot, as real root on a store that cannot
/// be idmapped, none can).
static PREPARE_FAILED: AtomicU32 = AtomicU32::new(0);
const GIVE_UP: u32 = 3;

/// The scratch directories of the spares asked to prepare, each with its helper's pidfd:
/// removed once the helper is gone (its mount namespace has the scratch tmpfs on it until
/// then), when the next spare is forked. A prepared spare's PID 1 may outlive kiln's use of
/// it by a moment; a directory left at exit goes with the process's scratch directory.
static SCRATCH_DIRS: Mutex<Vec<(PathBuf, OwnedFd)>> = Mutex::new(Vec::new());

/// How long the filler waits for a spare to prepare: it takes a few milliseconds, so
/// longer means the helper is stuck (it is killed, as one that failed).
const PREPARE_WAIT: Duration = Duration::from_secs(5);

fn fill((netns, like, spawn): FillJob) {
    remove_scratch_dirs();
    let plan = like
        .filter(|_| PREPARE_FAILED.load(Ordering::Relaxed) < GIVE_UP)
        .and_then(|run| PreparePlan::like(&run));
    settle(fork_spare(netns, plan, spawn).map(|spare| (netns, spare)));
}

fn fork_spare(
    netns: bool,
    plan: Option<PreparePlan>,
    spawn: fn(Command) -> std::io::Result<Child>,
) -> Option<Spare> {
    let (control, theirs) = UnixStream::pair().ok()?;
    // kiln keeps no copy of the helper's end: its EOF is the helper gone.
    let theirs = OwnedFd::from(theirs);
    let forked = zygote::fork_helper(&theirs, netns, spawn)?;
    let Some(plan) = plan else {
        return Some(Spare {
            control,
            forked,
            prepared: None,
        });
    };
    match prepare(&control, &plan, &forked.pidfd) {
        Ok(()) => {
            PREPARE_FAILED.store(0, Ordering::Relaxed);
            Some(Spare {
                control,
                forked,
                prepared: Some(plan),
            })
        }
        Err(why) => {
            kill(&forked.pidfd);
            PREPARE_FAILED.fetch_add(1, Ordering::Relaxed);
            if kiln_base::phase::enabled() {
                kiln_base::phase::report(format!("run: no prepared sandboxes: {why}"), 0.0);
            }
            fork_spare(netns, None, spawn)
        }
    }
}

/// Asks the spare on `control` (its pidfd `pidfd`) to prepare its sandbox with `plan`, and
/// waits for its answer.
fn prepare(control: &UnixStream, plan: &PreparePlan, pidfd: &OwnedFd) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&plan.scratch)
        .map_err(|e| format!("mkdir {}: {e}", plan.scratch.display()))?;
    if let (Ok(mut dirs), Ok(pidfd)) = (SCRATCH_DIRS.lock(), pidfd.try_clone()) {
        dirs.push((plan.scratch.clone(), pidfd));
    }
    let mut writer = control;
    protocol::send(&mut writer, &Request::Prepare(Box::new(plan.clone())))
        .map_err(|e| format!("send the plan: {e}"))?;
    control
        .set_read_timeout(Some(PREPARE_WAIT))
        .map_err(|e| format!("socket timeout: {e}"))?;
    let mut reader = BufReader::new(control);
    let answer = protocol::recv::<Event>(&mut reader);
    // Nothing else comes before the request: what the reader holds past the answer would
    // be lost to the events' reader.
    if !reader.buffer().is_empty() {
        return Err("the helper said more than its answer".into());
    }
    control
        .set_read_timeout(None)
        .map_err(|e| format!("socket timeout: {e}"))?;
    match answer {
        Ok(Some(Event::Prepared)) => Ok(()),
        Ok(Some(Event::Failed { step, message })) => Err(format!("{step}: {message}")),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// Removes the scratch directories of the spares that are gone ([`SCRATCH_DIRS`]).
fn remove_scratch_dirs() {
    let Ok(mut dirs) = SCRATCH_DIRS.lock() else {
        return;
    };
    let now = Some(std::time::Instant::now());
    dirs.retain(|(dir, pidfd)| {
        if zygote::has_exited(pidfd, now).unwrap_or(true) {
            let _ = std::fs::remove_dir(dir);
            false
        } else {
            true
        }
    });
}

/// Lets a spare taken but not used go: closing its control socket ends it (the helper,
/// or a prepared one's PID 1, reads the end of the socket where it waits for its RUN), and
/// it exits by itself, so the zygote reaps it and lends its network namespace again
/// (module `zygote`: not after a kill, as one killed may leave a sandbox dying in it).
pub(super) fn discard(spare: Spare) {
    drop(spare);
}

/// Ends a fill: the slot holds what it gave, and a RUN waiting for it wakes.
fn settle(filled: Option<(bool, Spare)>) {
    let Ok(mut slot) = SLOT.lock() else {
        if let Some((_, spare)) = filled {
            discard(spare);
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

/// For a spare that failed: the zygote reaps it (and drops its network namespace).
fn kill(pidfd: &OwnedFd) {
    let _ = rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL);
}
