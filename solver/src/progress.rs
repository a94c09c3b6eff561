//! Progress events: what the solver tells the outside world while it works.
//!
//! The solver only emits [`Event`]s on a channel; how they look (tty bars, plain numbered
//! lines like BuildKit, JSON lines, nothing) is the CLI's business.

use serde::Serialize;
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

/// Where the solver sends events. Cloneable; sending never blocks or fails the build.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
}

impl Progress {
    /// A sink and the receiver the renderer reads from.
    pub fn channel() -> (Progress, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Progress { tx: Some(tx) }, rx)
    }

    /// A sink that drops every event (tests, nested builds).
    pub fn discard() -> Progress {
        Progress { tx: None }
    }

    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            // A closed renderer must not fail the build.
            let _ = tx.send(event);
        }
    }
}
