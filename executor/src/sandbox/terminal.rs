//! The pseudo-terminal of `kiln run -t`: kiln opens a fresh pty pair, the process gets the
//! slave as stdin, stdout, stderr and controlling terminal, and kiln relays between its
//! own stdio and the master (with its terminal in raw mode, so Ctrl-C, Ctrl-Z and line
//! editing reach the process's terminal, as with `docker run -it`).
//!
//! The pty is new and the process's alone: it cannot reach the caller's terminal (no
//! TIOCSTI into the caller's shell), and what it writes passes through kiln unchanged.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios};

/// A pty pair: the master stays with kiln, the slave goes to the sandbox.
pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    /// A new pty pair, sized like kiln's own terminal when it has one.
    pub(crate) fn open() -> std::io::Result<Pty> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        // By fd, not by name: no window in which another process could open the slave.
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
        if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
            let _ = rustix::termios::tcsetwinsize(&master, size);
        }
        Ok(Pty { master, slave })
    }
}

/// kiln's terminal in raw mode until dropped (nothing when stdin is not a terminal).
pub(crate) struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub(crate) fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ =
                rustix::termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, saved);
        }
    }
}

/// The settings of the terminals on kiln's fds 0-2, put back when dropped: a process that
/// writes straight to the caller's terminal (`kiln run` without `-t`) could otherwise leave
/// it changed (`stty -echo`) after kiln is gone.
pub(crate) struct TerminalSettings {
    saved: Vec<(i32, Termios)>,
}

impl TerminalSettings {
    pub(crate) fn save() -> TerminalSettings {
        let fds: [(i32, std::os::fd::BorrowedFd<'static>); 3] = [
            (0, rustix::stdio::stdin()),
            (1, rustix::stdio::stdout()),
            (2, rustix::stdio::stderr()),
        ];
        let saved = fds
            .into_iter()
            .filter(|(_, fd)| rustix::termios::isatty(fd))
            .filter_map(|(n, fd)| rustix::termios::tcgetattr(fd).ok().map(|t| (n, t)))
            .collect();
        TerminalSettings { saved }
    }
}

impl Drop for TerminalSettings {
    fn drop(&mut self) {
        for (n, t) in &self.saved {
            let fd = match n {
                0 => rustix::stdio::stdin(),
                1 => rustix::stdio::stdout(),
                _ => rustix::stdio::stderr(),
            };
            let _ = rustix::termios::tcsetattr(fd, OptionalActions::Now, t);
        }
    }
}

/// Copies the master's output to kiln's stdout until every slave is closed (EIO), on a
/// thread; join it to have all the output written.
pub(crate) fn relay_output(master: &OwnedFd) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut from = std::fs::File::from(master.try_clone()?);
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        let mut out = std::io::stdout().lock();
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO: the last slave is closed, the process and its children are gone.
                Err(_) => break,
            }
        }
    }))
}

/// Copies kiln's stdin to the master for as long as there is input. Not joined: it may
/// sit in read(2) after the process is gone, and goes with kiln.
pub(crate) fn relay_input(master: &OwnedFd) -> std::io::Result<()> {
    let mut to = std::fs::File::from(master.try_clone()?);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut input = std::io::stdin();
        loop {
            match input.read(&mut buf) {
                Ok(0) => {
                    // End of a piped stdin: EOF for the process too, as a terminal says it.
                    let _ = to.write_all(&[4]);
                    break;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    Ok(())
}

/// Keeps the pty's size following kiln's terminal (SIGWINCH) until the task is aborted.
pub(crate) fn follow_window_size(master: &OwnedFd) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let master = master.try_clone().ok()?;
    let mut changes = signal(SignalKind::window_change()).ok()?;
    Some(tokio::spawn(async move {
        while changes.recv().await.is_some() {
            if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
                let _ = rustix::termios::tcsetwinsize(&master, size);
            }
        }
    }))
}

/// kiln attached to a pty master for one run: raw mode, relays and the window size.
pub(crate) struct Attached {
    _raw: Option<RawMode>,
    output: std::thread::JoinHandle<()>,
    window: Option<tokio::task::JoinHandle<()>>,
}

impl Attached {
    /// Starts relaying; `stdin` also forwards kiln's stdin (in raw mode when it is a
    /// terminal, so its keys reach the process's terminal unchanged).
    pub(crate) fn new(master: OwnedFd, stdin: bool) -> std::io::Result<Attached> {
        let raw = (stdin && rustix::termios::isatty(std::io::stdin())).then(RawMode::enter);
        let output = relay_output(&master)?;
        if stdin {
            relay_input(&master)?;
        }
        let window = follow_window_size(&master);
        Ok(Attached {
            _raw: raw,
            output,
            window,
        })
    }

    /// Waits until the process's output is all written, then gives kiln its terminal back.
    pub(crate) async fn finish(self) {
        if let Some(window) = &self.window {
            window.abort();
        }
        let Attached { _raw, output, .. } = self;
        let _ = tokio::task::spawn_blocking(move || output.join()).await;
        drop(_raw);
    }
}
