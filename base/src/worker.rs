//! A named thread, started on first use, that carries out the jobs sent to it in order.
//!
//! For work a build hands off and does not wait for (staging directories made ahead,
//! thrown-away trees removed, a sandbox helper forked for the next RUN): a `static`
//! [`Worker`] costs nothing until its first job, and a thread that cannot be started only
//! gives the job back, for the caller to do it itself.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

/// A thread named `name` that runs `run` on each job, in the order sent.
pub struct Worker<T: Send + 'static> {
    name: &'static str,
    run: fn(T),
    queue: OnceLock<Option<Sender<T>>>,
}

impl<T: Send + 'static> Worker<T> {
    pub const fn new(name: &'static str, run: fn(T)) -> Worker<T> {
        Worker {
            name,
            run,
            queue: OnceLock::new(),
        }
    }

    /// Hands `job` to the thread, starting it on first use; gives the job back when no
    /// thread can take it (it could not be started, or it has ended).
    pub fn send(&self, job: T) -> Result<(), T> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = channel::<T>();
            let run = self.run;
            std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    for job in rx {
                        run(job);
                    }
                })
                .ok()
                .map(|_| tx)
        });
        match queue {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

    fn record(n: u32) {
        SEEN.lock().unwrap().push(n);
    }

    #[test]
    fn jobs_run_on_the_named_thread_in_order() {
        static WORKER: Worker<u32> = Worker::new("kiln-test-worker", record);
        for n in 0..100 {
            WORKER.send(n).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while SEEN.lock().unwrap().len() < 100 {
            assert!(std::time::Instant::now() < deadline, "jobs never ran");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(*SEEN.lock().unwrap(), (0..100).collect::<Vec<_>>());
    }
}
