//! Checksums worked out ahead of the steps that ask for them.
//!
//! A build's steps are keyed in order, and a COPY's key needs the checksum of its sources:
//! in a no-op rebuild of a big context, the walk of `COPY src /src` waited for every step
//! before it (a small COPY, its stat cache, cache records). The solver knows every COPY's
//! sources once the Dockerfile is lowered, so it hands them to [`Prefetch::start`], and a few
//! threads of the context checksum them in the Dockerfile's order while the steps run.
//!
//! A step asking for a checksum ([`Prefetch::claim`]) takes the prefetched result, waits
//! for the one being computed, or computes it itself when the thread has not reached it
//! yet (the thread then skips it): a pattern is never checksummed twice for one claim. A
//! prefetch that failed is computed again by the step, so the step reports the error as
//! it always did.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Checksum, ChecksumOptions, Context};

/// How many threads prefetch at once.
const THREADS: usize = 3;

/// A checksum request: a source pattern and how it selects.
pub(crate) type Request = (String, ChecksumOptions);

enum State {
    /// Waiting for the prefetch thread.
    Queued,
    /// The prefetch thread is on it.
    Running,
    /// Finished; `None` if it failed (the claimer computes it again for the error).
    Done(Option<Checksum>),
}

/// What [`Prefetch::claim`] found.
pub(crate) enum Claim {
    Ready(Checksum),
    /// Not prefetched (or it failed): the caller computes it.
    Compute,
}

/// The prefetched checksums of one context.
#[derive(Default)]
pub(crate) struct Prefetch {
    states: Mutex<HashMap<Request, State>>,
    changed: Condvar,
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch").finish_non_exhaustive()
    }
}

impl Prefetch {
    fn states(&self) -> MutexGuard<'_, HashMap<Request, State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `requests` (a request already known is left as it is) and starts the thread
    /// that checksums them in order. If the thread cannot start, nothing is prefetched.
    pub(crate) fn start(context: &Arc<Context>, requests: Vec<Request>) {
        let mut queued = Vec::new();
        {
            let mut states = context.prefetch.states();
            for request in requests {
                if !states.contains_key(&request) {
                    states.insert(request.clone(), State::Queued);
                    queued.push(request);
                }
            }
        }
        if queued.is_empty() {
            return;
        }
        // A few threads take the requests in order: the first COPY is often a small file
        // whose hash waits for the stat cache to load, and a big walk behind it should not.
        let queue = Arc::new(Mutex::new(queued.clone().into_iter()));
        let mut started = 0;
        for _ in 0..queued.len().min(THREADS) {
            let (worker, queue) = (Arc::clone(context), Arc::clone(&queue));
            let spawned = std::thread::Builder::new()
                .name("kiln-prefetch".into())
                .spawn(move || {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some(request) = next else { break };
                        worker.prefetch.run(&worker, request);
                    }
                });
            started += usize::from(spawned.is_ok());
        }
        if started == 0 {
            let mut states = context.prefetch.states();
            for request in &queued {
                states.remove(request);
            }
        }
    }

    /// Computes `request` unless a step claimed it first.
    fn run(&self, context: &Context, request: Request) {
        {
            let mut states = self.states();
            match states.get_mut(&request) {
                Some(state @ State::Queued) => *state = State::Running,
                _ => return,
            }
        }
        let result = context.compute_checksum(&request.0, &request.1).ok();
        self.states().insert(request, State::Done(result));
        self.changed.notify_all();
    }

    /// The prefetched checksum of `request`, waiting for it if it is being computed.
    pub(crate) fn claim(&self, pattern: &str, opts: &ChecksumOptions) -> Claim {
        let mut states = self.states();
        if states.is_empty() {
            return Claim::Compute;
        }
        let request = (pattern.to_string(), opts.clone());
        while let Some(State::Running) = states.get(&request) {
            states = self.changed.wait(states).unwrap_or_else(|p| p.into_inner());
        }
        match states.remove(&request) {
            Some(State::Done(Some(sum))) => Claim::Ready(sum),
            _ => Claim::Compute,
        }
    }
}
