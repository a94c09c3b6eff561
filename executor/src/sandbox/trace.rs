//! How long each setup step of the helper and PID 1 took, for `KILN_TRACE_PHASES`: they
//! cannot print (their stderr is the RUN's), so PID 1 sends the steps to kiln just before
//! the stubs, and kiln prints them as phases of its own (`run: setup: ...`).

use std::time::Instant;

/// The steps timed so far; nothing when tracing is off.
pub(super) struct SetupTrace {
    last: Option<Instant>,
    steps: Vec<(String, f64)>,
}

impl SetupTrace {
    pub(super) fn new(on: bool) -> SetupTrace {
        SetupTrace {
            last: on.then(Instant::now),
            steps: Vec::new(),
        }
    }

    /// Ends step `name` here: it began where the step before ended.
    pub(super) fn step(&mut self, name: &str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            self.steps
                .push((name.to_string(), (now - last).as_secs_f64() * 1e3));
            self.last = Some(now);
        }
    }

    /// The steps, in milliseconds (empty when tracing is off).
    pub(super) fn take(&mut self) -> Vec<(String, f64)> {
        std::mem::take(&mut self.steps)
    }
}
