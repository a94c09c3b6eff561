//! [`Plain`]: BuildKit's `--progress=plain` lines. A step is named once by its number
//! (`#2 [2/3] RUN make`), its output lines follow with the seconds since it started
//! (`#2 0.412 cc -o app app.c`; kiln's own informational lines without them), and it ends
//! with `#2 CACHED`, `#2 DONE 1.5s` or `#2 ERROR: ...` and a blank line.

use kiln_solver::progress::{Event, Stream};
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

/// Writes BuildKit-style plain lines to `W` (stderr for a build).
pub struct Plain<W: Write> {
    out: W,
    started: HashMap<usize, Instant>,
}

impl<W: Write> Plain<W> {
    pub fn new(out: W) -> Plain<W> {
        Plain {
            out,
            started: HashMap::new(),
        }
    }

    /// Writes the event's lines. A failed write is dropped: progress is not worth failing
    /// a build for.
    pub fn event(&mut self, event: Event) {
        let out = &mut self.out;
        let _ = match event {
            Event::Started(v) => {
                self.started.insert(v.id, Instant::now());
                writeln!(out, "#{} {}", v.id, v.name)
            }
            Event::Cached { id } => writeln!(out, "#{id} CACHED\n"),
            Event::Log { id, stream, line } => {
                let t = self
                    .started
                    .get(&id)
                    .map(|s| s.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                match stream {
                    Stream::Info => writeln!(out, "#{id} {line}"),
                    _ => writeln!(out, "#{id} {t:.3} {line}"),
                }
            }
            Event::Explain { id, reason } => writeln!(out, "#{id} cache miss: {reason}"),
            Event::Done { id, elapsed } => {
                writeln!(out, "#{id} DONE {:.1}s\n", elapsed.as_secs_f64())
            }
            Event::Failed { id, error } => writeln!(out, "#{id} ERROR: {error}\n"),
            Event::Note { message } => writeln!(out, "{message}"),
        };
    }

    /// The writer back (what a test reads).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::progress::VertexInfo;
    use std::time::Duration;

    fn started(id: usize, name: &str) -> Event {
        Event::Started(VertexInfo {
            id,
            name: name.to_string(),
        })
    }

    fn lines(events: Vec<Event>) -> String {
        let mut plain = Plain::new(Vec::new());
        for event in events {
            plain.event(event);
        }
        String::from_utf8(plain.into_inner()).expect("plain output is UTF-8")
    }

    #[test]
    fn plain_lines_are_buildkits() {
        let text = lines(vec![
            started(1, "[1/3] FROM docker.io/library/busybox:latest"),
            Event::Cached { id: 1 },
            started(2, "[2/3] COPY app.c ."),
            Event::Explain {
                id: 2,
                reason: "file app.c changed".to_string(),
            },
            Event::Log {
                id: 2,
                stream: Stream::Info,
                line: "copying 1 file".to_string(),
            },
            Event::Done {
                id: 2,
                elapsed: Duration::from_millis(1500),
            },
            started(3, "[3/3] RUN make"),
            Event::Failed {
                id: 3,
                error: "process \"/bin/sh -c make\" did not complete successfully: exit code: 2"
                    .to_string(),
            },
            Event::Note {
                message: "writing image sha256:abc".to_string(),
            },
        ]);
        assert_eq!(
            text,
            "#1 [1/3] FROM docker.io/library/busybox:latest\n\
             #1 CACHED\n\
             \n\
             #2 [2/3] COPY app.c .\n\
             #2 cache miss: file app.c changed\n\
             #2 copying 1 file\n\
             #2 DONE 1.5s\n\
             \n\
             #3 [3/3] RUN make\n\
             #3 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n\
             \n\
             writing image sha256:abc\n"
        );
    }

    /// A RUN's output line carries the seconds since its step started, to the millisecond
    /// (the value itself depends on the clock, its form does not).
    #[test]
    fn plain_output_lines_carry_seconds_since_the_start() {
        let text = lines(vec![
            started(4, "[2/2] RUN echo hi"),
            Event::Log {
                id: 4,
                stream: Stream::Stdout,
                line: "hi there".to_string(),
            },
            Event::Log {
                id: 9,
                stream: Stream::Stderr,
                line: "from a step never started".to_string(),
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "#4 [2/2] RUN echo hi");
        let seconds = lines[1]
            .strip_prefix("#4 ")
            .and_then(|l| l.strip_suffix(" hi there"))
            .unwrap_or_else(|| panic!("not a timed output line: {:?}", lines[1]));
        let (whole, millis) = seconds.split_once('.').expect("seconds with a fraction");
        assert!(whole.parse::<u64>().is_ok(), "{seconds}");
        assert!(
            millis.len() == 3 && millis.parse::<u32>().is_ok(),
            "{seconds}"
        );
        assert_eq!(lines[2], "#9 0.000 from a step never started");
    }
}
