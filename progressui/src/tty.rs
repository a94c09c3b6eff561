//! [`Tty`]: the live view. Each running step is a spinner with its elapsed time; a step's
//! `#N name` line is printed above them before its first output line, every output line
//! as it comes, and the step again with its end (`CACHED`, `DONE 1.5s`, `ERROR: ...`)
//! when its spinner goes.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_solver::progress::Event;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Live spinners for running steps; finished steps and output printed above them.
pub(crate) struct Tty {
    multi: MultiProgress,
    bars: HashMap<usize, (ProgressBar, String)>,
    /// Steps whose `#N name` header is printed already (before their first output line,
    /// so a step's lines never come before its name).
    headed: HashSet<usize>,
}

impl Tty {
    pub(crate) fn new() -> Tty {
        Tty {
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            headed: HashSet::new(),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner:.blue} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    pub(crate) fn event(&mut self, event: Event) {
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

    pub(crate) fn finish(self) {
        for (_, (bar, _)) in self.bars {
            bar.finish_and_clear();
        }
    }
}
