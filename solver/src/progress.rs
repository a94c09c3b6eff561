//! Progress events: what the solver tells the outside world while it works.
//!
//! The solver only emits [`Event`]s on a channel; how they look (tty bars, plain numbered
//! lines like BuildKit, JSON lines, nothing) is the CLI's business.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A vertex in progress output: one FROM or step, numbered like BuildKit's `#N`.
#[derive(Debug, Clone, Serialize)]
pub struct VertexInfo {
    /// Number shown as `#N`, unique within one build.
    pub id: usize,
    /// `[build 2/4] COPY src/ ./`.
    pub name: String,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A vertex started work (or was found in the cache: `cached` then follows at once).
    Started(VertexInfo),
    /// The vertex's result came from the cache.
    Cached { id: usize },
    /// A line of output from a RUN (stdout or stderr), or an informational line.
    Log {
        id: usize,
        stream: Stream,
        line: String,
    },
    /// Why a vertex missed the cache (`--explain-cache`).
    Explain { id: usize, reason: String },
    /// The vertex finished successfully.
    Done {
        id: usize,
        #[serde(serialize_with = "as_secs")]
        elapsed: Duration,
    },
    /// The vertex failed; the build fails with it.
    Failed { id: usize, error: String },
    /// A message about the build as a whole (exporting, naming, writing the image).
    Note { message: String },
}

/// Which output stream a [`Event::Log`] line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Info,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// How many bytes of output lines may wait for the renderer before the sandbox stops
/// reading RUN output ([`kiln_executor::output_gate`]); it reads on once the renderer is
/// down to [`BACKLOG_LOW`].
const BACKLOG_HIGH: usize = 8 << 20;
const BACKLOG_LOW: usize = 2 << 20;

/// Where the solver sends events. Cloneable; sending never blocks or fails the build.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    backlog: Arc<Mutex<usize>>,
}

/// The renderer's end of a [`Progress`] channel.
#[derive(Debug)]
pub struct ProgressReceiver {
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    backlog: Arc<Mutex<usize>>,
}

fn log_bytes(event: &Event) -> usize {
    match event {
        Event::Log { line, .. } => line.len(),
        _ => 0,
    }
}

impl Progress {
    /// A sink and the receiver the renderer reads from.
    pub fn channel() -> (Progress, ProgressReceiver) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let backlog = Arc::new(Mutex::new(0));
        let progress = Progress {
            tx: Some(tx),
            backlog: backlog.clone(),
        };
        (progress, ProgressReceiver { rx, backlog })
    }

    /// A sink that drops every event (tests, nested builds).
    pub fn discard() -> Progress {
        Progress {
            tx: None,
            backlog: Arc::default(),
        }
    }

    pub fn send(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        let bytes = log_bytes(&event);
        // Sending and counting under one lock, so the receiver never counts an event
        // before it was counted in, and the gate always follows the latest count.
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        // A closed renderer must not fail the build (nor hold RUN output back).
        if tx.send(event).is_ok() {
            *backlog += bytes;
            if *backlog > BACKLOG_HIGH {
                kiln_executor::output_gate::close();
            }
        }
    }
}

impl ProgressReceiver {
    /// The next event, `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await?;
        let bytes = log_bytes(&event);
        if bytes > 0 {
            let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            *backlog = backlog.saturating_sub(bytes);
            if *backlog <= BACKLOG_LOW {
                kiln_executor::output_gate::open();
            }
        }
        Some(event)
    }
}

impl Drop for ProgressReceiver {
    fn drop(&mut self) {
        // Nobody shows the output any more: it must not wait for anyone.
        self.rx.close();
        let _backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        kiln_executor::output_gate::open();
    }
}

/// The last lines of a step's output, kept for its error message: at most [`TAIL_LINES`]
/// lines of at most [`TAIL_LINE_CHARS`] characters each, however much the step prints (the
/// whole output went to the progress events, unclipped).
#[derive(Debug, Default)]
pub struct OutputTail {
    lines: VecDeque<String>,
}

/// How many lines of a failed step's output its error repeats.
pub const TAIL_LINES: usize = 20;
/// How much of one line the error repeats.
pub const TAIL_LINE_CHARS: usize = 500;

impl OutputTail {
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(clip(line));
    }

    pub fn into_lines(self) -> Vec<String> {
        self.lines.into()
    }
}

fn clip(line: &str) -> String {
    match line.char_indices().nth(TAIL_LINE_CHARS) {
        None => line.to_string(),
        Some((at, _)) => format!("{}… [{} more bytes]", &line[..at], line.len() - at),
    }
}

/// The display name BuildKit gives a vertex: `[build 2/4] COPY src/ ./`.
pub(crate) fn vertex_name(stage: &str, n: usize, total: usize, text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if stage.is_empty() {
        format!("[{n}/{total}] {text}")
    } else {
        format!("[{stage} {n}/{total}] {text}")
    }
}

/// Says that vertex `id`, shown as `name`, has started.
pub(crate) fn started(progress: &Progress, id: usize, name: String) {
    progress.send(Event::Started(VertexInfo { id, name }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_bounded_in_lines_and_characters() {
        let mut tail = OutputTail::default();
        let long = "é".repeat(100_000);
        for _ in 0..3 * TAIL_LINES {
            tail.push(&long);
        }
        tail.push("last");
        let lines = tail.into_lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last().map(String::as_str), Some("last"));
        let first = &lines[0];
        assert!(first.starts_with(&"é".repeat(TAIL_LINE_CHARS)), "{first}");
        assert!(first.ends_with("… [199000 more bytes]"), "{first}");
    }
}
