//! kiln-progressui: how a build's progress looks, as BuildKit's `util/progress/progressui`
//! is a library apart from `buildctl`. The solver only sends
//! [`kiln_solver::progress::Event`]s; this crate turns them into what the user sees.
//!
//! - plain ([`ProgressMode::Plain`], drawn by [`Plain`]): BuildKit's numbered lines on
//!   stderr (`#5 [build 2/4] COPY src/ ./`, `#5 CACHED`, `#5 DONE 0.3s`);
//! - tty ([`ProgressMode::Tty`]): live spinners drawn with indicatif for running steps,
//!   with finished steps and every output line printed above them;
//! - json ([`ProgressMode::Json`]): one event per line on stdout, as the solver
//!   serializes it;
//! - quiet ([`ProgressMode::Quiet`]): nothing.
//!
//! [`resolve_mode`] turns [`ProgressMode::Auto`] into one of those for the terminal at
//! hand, [`render`] draws a build's events as they come, and [`replay_plain`] draws events
//! kept of a build nobody watched. Output lines are never clipped. The command line's flag
//! (clap) stays in the `kiln` binary, which maps it onto [`ProgressMode`].

mod plain;
mod tty;

pub use plain::Plain;

use kiln_solver::progress::{Event, ProgressReceiver};
use std::io::{IsTerminal, Write};

/// How build progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Tty when stderr is a terminal with a size, else plain.
    Auto,
    /// Live steps with spinners.
    Tty,
    /// Numbered lines like BuildKit's `--progress=plain`.
    Plain,
    /// One JSON event per line on stdout.
    Json,
    /// No progress at all.
    Quiet,
}

/// The concrete mode after resolving `auto`. A terminal that reports no size (a pty nobody
/// sized, as under `script` without a terminal) gets plain lines: the live display would
/// redraw every line over the last one without a newline.
pub fn resolve_mode(mode: ProgressMode) -> ProgressMode {
    let sized = || console::Term::stderr().size_checked().is_some();
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() && sized() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        ProgressMode::Tty if !sized() => ProgressMode::Plain,
        other => other,
    }
}

/// Reads events until the solver drops its sender, drawing them in `mode`.
pub async fn render(mode: ProgressMode, mut rx: ProgressReceiver) {
    match resolve_mode(mode) {
        ProgressMode::Tty => {
            let mut tty = tty::Tty::new();
            while let Some(event) = rx.recv().await {
                tty.event(event);
            }
            tty.finish();
        }
        ProgressMode::Json => {
            while let Some(event) = rx.recv().await {
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        ProgressMode::Quiet => while rx.recv().await.is_some() {},
        ProgressMode::Plain | ProgressMode::Auto => {
            let mut plain = Plain::new(std::io::stderr());
            while let Some(event) = rx.recv().await {
                plain.event(event);
            }
        }
    }
}

/// Events kept of a build nobody watched (a failed build of `--verify-reproducible`),
/// drawn as plain lines on stderr.
pub fn replay_plain(events: Vec<Event>) {
    let mut plain = Plain::new(std::io::stderr());
    for event in events {
        plain.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_keeps_every_mode_but_auto_and_tty() {
        for mode in [ProgressMode::Plain, ProgressMode::Json, ProgressMode::Quiet] {
            assert_eq!(resolve_mode(mode), mode);
        }
        // Whatever the test's stderr is, `auto` becomes a concrete mode.
        assert!(matches!(
            resolve_mode(ProgressMode::Auto),
            ProgressMode::Tty | ProgressMode::Plain
        ));
        assert!(matches!(
            resolve_mode(ProgressMode::Tty),
            ProgressMode::Tty | ProgressMode::Plain
        ));
    }
}
