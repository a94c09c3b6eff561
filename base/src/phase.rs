//! Phase timings for profiling a build: with `KILN_TRACE_PHASES=1` in the environment
//! each [`Phase`] prints its name, how long it took and when it ended (since
//! [`init`], normally the start of `main`) to stderr when it ends.
//!
//! Off, a phase costs one load of a cached flag and no clock read, so phases can stay in
//! the hot paths they measure (a no-op rebuild, a RUN step). `bench/build.sh` prints a
//! no-op rebuild's phases this way.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Instant;

/// The moment tracing started, or `None` when it is off (read once).
fn origin() -> Option<Instant> {
    static ORIGIN: OnceLock<Option<Instant>> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        std::env::var_os("KILN_TRACE_PHASES")
            .filter(|v| !v.is_empty() && v != "0")
            .map(|_| Instant::now())
    })
}

/// Reads `KILN_TRACE_PHASES` and, when set, starts the clock the "at" times count from.
pub fn init() {
    origin();
}

/// Whether phases are traced.
pub fn enabled() -> bool {
    origin().is_some()
}

/// A running phase: printed when dropped (or [`Phase::end`]ed). Nothing when tracing is
/// off.
#[must_use = "a phase is timed until it is dropped"]
pub struct Phase(Option<(Cow<'static, str>, Instant)>);

/// Starts timing the phase `name`.
pub fn start(name: impl Into<Cow<'static, str>>) -> Phase {
    Phase(origin().map(|_| (name.into(), Instant::now())))
}

/// Prints a phase timed elsewhere (by another process) as ending now.
pub fn report(name: impl Into<Cow<'static, str>>, ms: f64) {
    if let Some(origin) = origin() {
        print(&name.into(), ms, origin);
    }
}

fn print(name: &str, ms: f64, origin: Instant) {
    eprintln!(
        "kiln phase {name:<34} {ms:8.2} ms   (at {:8.2} ms)",
        (Instant::now() - origin).as_secs_f64() * 1e3
    );
}

impl Phase {
    /// Ends the phase here rather than at the end of its scope.
    pub fn end(self) {}
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let (Some((name, started)), Some(origin)) = (self.0.take(), origin()) {
            print(&name, started.elapsed().as_secs_f64() * 1e3, origin);
        }
    }
}
