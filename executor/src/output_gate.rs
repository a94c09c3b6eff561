//! Backpressure for RUN output: a process-wide gate the sandbox's output readers pass
//! before each read of a RUN's pipes.
//!
//! A RUN can print gigabytes faster than they are shown (a terminal, a slow pipe). The
//! readers hand each chunk on at once, so whoever shows the output closes the gate while it
//! is too far behind and opens it again when it has caught up: the readers then stop
//! reading, the pipe fills, and the RUN's process waits in `write`, as it would writing to a
//! slow terminal itself. Nothing is dropped and nothing piles up in memory.
//!
//! The gate is open unless someone closes it, so a caller of the sandbox that does not care
//! (tests, probes) never waits.

use std::sync::{Condvar, Mutex};

struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

static GATE: Gate = Gate {
    closed: Mutex::new(false),
    opened: Condvar::new(),
};

fn set_closed(closed: bool) {
    let mut state = GATE.closed.lock().unwrap_or_else(|p| p.into_inner());
    if *state != closed {
        *state = closed;
        if !closed {
            GATE.opened.notify_all();
        }
    }
}

/// Stops the readers: the consumer of RUN output is too far behind.
pub fn close() {
    set_closed(true);
}

/// Lets the readers go on.
pub fn open() {
    set_closed(false);
}

/// Waits until the gate is open (at once when nobody closed it).
pub fn wait_open() {
    let mut closed = GATE.closed.lock().unwrap_or_else(|p| p.into_inner());
    while *closed {
        closed = GATE.opened.wait(closed).unwrap_or_else(|p| p.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_holds_a_reader_until_it_opens() {
        close();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            wait_open();
            let _ = tx.send(());
        });
        assert!(rx.try_recv().is_err(), "passed a closed gate");
        open();
        rx.recv().expect("the reader went on");
        reader.join().expect("reader thread");
        wait_open();
    }
}
