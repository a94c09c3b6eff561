//! Progress rendering: turns the solver's events into what the user sees.
//!
//! `plain` mimics BuildKit's numbered lines (`#5 [build 2/4] COPY src/ ./`, `#5 CACHED`,
//! `#5 DONE 0.3s`) on stderr; `tty` draws live spinners with indicatif and prints finished
//! steps and every output line above them; `json` writes one event per line on stdout;
//! `quiet` shows nothing. Output lines are never clipped.

use crate::cli::ProgressMode;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_solver::progress::{Event, ProgressReceiver, Stream};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

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
            let mut tty = Tty::new();
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
            let mut plain = Plain::default();
            while let Some(event) = rx.recv().await {
                plain.event(event);
            }
        }
    }
}

/// Events kept of a build nobody watched (a failed build of `--verify-reproducible`),
/// drawn as plain lines on stderr.
pub fn replay_plain(events: Vec<Event>) {
    let mut plain = Plain::default();
    for event in events {
        plain.event(event);
    }
}

/// BuildKit-style plain lines on stderr.
#[derive(Default)]
struct Plain {
    started: HashMap<usize, Instant>,
}

impl Plain {
    fn event(&mut self, event: Event) {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            Event::Started(v) => {
                self.started.insert(v.id, Instant::now());
                writeln!(err, "#{} {}", v.id, v.name)
            }
            Event::Cached { id } => writeln!(err, "#{id} CACHED\n"),
            Event::Log { id, stream, line } => {
                let t = self
                    .started
                    .get(&id)
                    .map(|s| s.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                match stream {
                    Stream::Info => writeln!(err, "#{id} {line}"),
                    _ => writeln!(err, "#{id} {t:.3} {line}"),
                }
            }
            Event::Explain { id, reason } => writeln!(err, "#{id} cache miss: {reason}"),
            Event::Done { id, elapsed } => {
                writeln!(err, "#{id} DONE {:.1}s\n", elapsed.as_secs_f64())
            }
            Event::Failed { id, error } => writeln!(err, "#{id} ERROR: {error}\n"),
            Event::Note { message } => writeln!(err, "{message}"),
        };
    }
}

/// Live spinners for running steps; finished steps and output printed above them.
struct Tty {
    multi: MultiProgress,
    bars: HashMap<usize, (ProgressBar, String)>,
    /// Steps whose `#N name` header is printed already (before their first output line,
    /// so a step's lines never come before its name).
    headed: std::collections::HashSet<usize>,
}

impl Tty {
    fn new() -> Tty {
        Tty {
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            headed: std::collections::HashSet::new(),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner:.blue} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Started(v) => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::style());
                bar.set_message(format!("#{} {}", v.id, v.name));
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bars.insert(v.id, (bar, v.name));
            }
            Event::Cached { id } => self.close(id, "CACHED".to_string()),
            Event::Log { id, line, .. } => {
                self.header(id);
                let _ = self.multi.println(format!("#{id} {line}"));
            }
            Event::Explain { id, reason } => {
                self.header(id);
                let _ = self.multi.println(format!("#{id} cache miss: {reason}"));
            }
            Event::Done { id, elapsed } => {
                self.close(id, format!("DONE {:.1}s", elapsed.as_secs_f64()))
            }
            Event::Failed { id, error } => self.close(id, format!("ERROR: {error}")),
            Event::Note { message } => {
                let _ = self.multi.println(message);
            }
        }
    }

    fn header(&mut self, id: usize) {
        if let Some((_, name)) = self.bars.get(&id)
            && self.headed.insert(id)
        {
            let _ = self.multi.println(format!("#{id} {name}"));
        }
    }

    fn close(&mut self, id: usize, status: String) {
        if let Some((bar, name)) = self.bars.remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
            let _ = self.multi.println(format!("#{id} {name} {status}"));
        }
    }

    fn finish(self) {
        for (_, (bar, _)) in self.bars {
            bar.finish_and_clear();
        }
    }
}
