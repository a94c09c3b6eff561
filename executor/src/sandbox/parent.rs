//! The parent's side of the helper: spawning it (from one long-lived thread, so its
//! parent-death signal stays armed), relaying its output lines and events while the RUN
//! runs, and waiting for it to finish.

use super::helper;
use super::protocol::{self, Event, Request};
use super::spec::{OutputLine, OutputStream, ProcessIo, SandboxError};
use super::zygote::has_exited;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};

/// argv[1] that makes the kiln binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox-helper";

/// The program that is re-exec'd as the helper (the running kiln binary).
pub(super) fn helper_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

type SpawnJob = (Command, std_mpsc::Sender<std::io::Result<Child>>);

/// Spawns helpers from one thread that lives as long as the process: PR_SET_PDEATHSIG
/// fires when the *thread* that forked the helper exits, so a tokio blocking thread (which
/// retires when idle) must not be the helper's parent.
fn spawn_helper(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("kiln-sandbox-spawner".into())
            .spawn(move || {
                // Before the first helper: they are all born in the build's cgroup. A
                // --cgroup-parent that could not be joined fails every RUN instead.
                let joined = crate::cgroup::join_build_cgroup();
                for (mut cmd, reply) in rx {
                    let spawned = match &joined {
                        Ok(()) => cmd.spawn(),
                        Err(why) => Err(std::io::Error::other(why.clone())),
                    };
                    let _ = reply.send(spawned);
                }
            })
            .ok();
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std_mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// A running helper: killed (and with it the whole sandbox) when dropped early.
pub(super) struct HelperProcess {
    process: Option<Process>,
}

enum Process {
    /// Spawned by kiln: its child.
    Spawned(Child),
    /// Forked by the zygote, which reaps it: its pidfd.
    Forked(std::os::fd::OwnedFd),
}

/// The pidfds of helpers that are done and left to exit ([`HelperProcess::let_exit`]),
/// still exiting when last looked at.
static EXITING: Mutex<Vec<std::os::fd::OwnedFd>> = Mutex::new(Vec::new());

/// Waits, at most `limit` in all, for the helpers that are done and still exiting: a
/// helper's exit tears down its RUN's namespaces (the overlay's unmount, the dentries and
/// inodes the RUN made, a network namespace), which runs beside the next RUN, and after
/// the last one, beside whatever follows this process (a no-op rebuild after a build whose
/// last RUN walked 20,000 files paid for that teardown). Call before the process exits, so
/// a build leaves no work of its own behind.
pub fn wait_for_exiting_helpers(limit: std::time::Duration) {
    let exiting = match EXITING.lock() {
        Ok(mut exiting) => std::mem::take(&mut *exiting),
        Err(_) => return,
    };
    let deadline = std::time::Instant::now() + limit;
    for pidfd in exiting {
        // A pidfd that cannot be polled leaves nothing to wait for.
        if !has_exited(&pidfd, Some(deadline)).unwrap_or(true) {
            return;
        }
    }
}

impl HelperProcess {
    /// Wait for a helper that is expected to exit by itself: its exit status, or how it
    /// ended in words where only the zygote sees the status.
    fn wait(mut self) -> std::io::Result<Result<std::process::ExitStatus, &'static str>> {
        match self.process.take() {
            Some(Process::Spawned(mut c)) => c.wait().map(Ok),
            Some(Process::Forked(pidfd)) => has_exited(&pidfd, None).map(|_| Err("exited")),
            None => Err(std::io::Error::other("helper already reaped")),
        }
    }
}

impl HelperProcess {
    /// Leave a helper that is done to exit by itself: namespace teardown happens as it
    /// exits, and nothing waits for it here ([`wait_for_exiting_helpers`] does, at the
    /// end).
    fn let_exit(mut self) {
        match self.process.take() {
            Some(Process::Spawned(mut c)) => {
                std::thread::spawn(move || c.wait());
            }
            // The zygote reaps it; its pidfd is kept until it has exited.
            Some(Process::Forked(pidfd)) => {
                if let Ok(mut exiting) = EXITING.lock() {
                    let now = Some(std::time::Instant::now());
                    exiting.retain(|fd| !has_exited(fd, now).unwrap_or(true));
                    exiting.push(pidfd);
                }
            }
            None => {}
        }
    }
}

impl Drop for HelperProcess {
    fn drop(&mut self) {
        match self.process.take() {
            Some(Process::Spawned(mut c)) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Some(Process::Forked(pidfd)) => {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
            }
            None => {}
        }
    }
}

pub(super) enum Msg {
    Line(OutputLine),
    OutputClosed,
    Event(Event),
    ControlClosed(Option<String>),
}

/// Has a spare helper forked for the first RUN to come (`netns`: it may use a network
/// namespace of the pool, as a `--network none` RUN does), so that RUN does not wait for
/// the fork either (module `spare`). Starts the zygote when it is not running.
pub fn prepare_spare(netns: bool) {
    super::spare::refill(netns, None, spawn_helper);
}

/// Start the helper with `req`; stdout/stderr lines and events arrive on the returned channel.
pub(super) fn start_helper(
    req: &Request,
    io: ProcessIo,
    tty: Option<&std::os::fd::OwnedFd>,
) -> Result<(HelperProcess, tokio::sync::mpsc::UnboundedReceiver<Msg>), SandboxError> {
    /// The longest piece of output delivered as one line: a longer line (a RUN can print
    /// a gigabyte without a newline) arrives as several, so nothing holds it whole.
    const MAX_CHUNK: usize = 64 << 10;
    /// Where to split a full chunk: before a UTF-8 sequence cut short at its end, so each
    /// piece of a text line is still text.
    fn utf8_cut(chunk: &[u8]) -> usize {
        let len = chunk.len();
        let Some(start) = (len.saturating_sub(3)..len)
            .rev()
            .find(|&i| chunk[i] & 0xC0 != 0x80)
        else {
            return len;
        };
        let needs = match chunk[start] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if start + needs > len { start } else { len }
    }
    let pair =
        || UnixStream::pair().map_err(|e| SandboxError::Protocol(format!("socketpair: {e}")));
    // Whether the helper's sandbox was prepared before this request (module `prepared`).
    let mut prepared = false;
    // A RUN's helper is forked by the zygote when it can; otherwise (`kiln run`'s stdio,
    // a zygote that failed) spawned.
    let forked = match io {
        ProcessIo::Pipe => {
            let run = match req {
                Request::Run(run) => Some(&**run),
                _ => None,
            };
            let netns = run.is_some_and(|run| run.network_none && !run.insecure);
            // A RUN takes the spare forked while the RUN before it ran (module `spare`),
            // unless it was prepared for RUNs unlike this one.
            let spare = run.and_then(|run| {
                let spare = super::spare::take(netns)?;
                if spare
                    .prepared
                    .as_ref()
                    .is_some_and(|plan| !plan.serves(run))
                {
                    super::spare::discard(spare);
                    return None;
                }
                Some(spare)
            });
            let forked = match spare {
                Some(spare) => {
                    prepared = spare.prepared.is_some();
                    Some((spare.control, spare.forked))
                }
                None => {
                    let (ours, theirs) = pair()?;
                    let theirs = std::os::fd::OwnedFd::from(theirs);
                    // kiln keeps no copy of the helper's end: its EOF is the helper gone.
                    super::zygote::fork_helper(&theirs, netns, spawn_helper).map(|f| (ours, f))
                }
            };
            if let Some(run) = run
                && forked.is_some()
            {
                super::spare::refill(netns, Some(Box::new(run.clone())), spawn_helper);
            }
            forked
        }
        _ => None,
    };
    let (ours, helper, stdout, stderr) = match forked {
        Some((ours, f)) => (
            ours,
            HelperProcess {
                process: Some(Process::Forked(f.pidfd)),
            },
            Some(std::fs::File::from(f.stdout)),
            Some(std::fs::File::from(f.stderr)),
        ),
        None => {
            // A fresh socket also when the zygote failed: a helper it forked before
            // failing must not read this one's request.
            let (ours, theirs) = pair()?;
            let (child, stdout, stderr) = spawn_direct(theirs, io, tty)?;
            (
                ours,
                HelperProcess {
                    process: Some(Process::Spawned(child)),
                },
                stdout.map(|p| std::fs::File::from(std::os::fd::OwnedFd::from(p))),
                stderr.map(|p| std::fs::File::from(std::os::fd::OwnedFd::from(p))),
            )
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut writer = ours
        .try_clone()
        .map_err(|e| SandboxError::Protocol(format!("socket: {e}")))?;
    let own_stdin = std::io::stdin();
    let passed = match io {
        ProcessIo::Inherit { stdin: true } => Some(own_stdin.as_fd()),
        ProcessIo::Terminal { .. } => tty.map(|t| t.as_fd()),
        _ => None,
    };
    if let Some(fd) = passed {
        // Before the request: the helper takes it first, before it reads any line.
        protocol::send_fd(&writer, fd)
            .map_err(|e| SandboxError::Protocol(format!("passing stdin: {e}")))?;
    }
    if prepared {
        // The helper's PID 1 joins the RUN's cgroup through a descriptor kiln opened: it
        // left kiln's user namespace before it knew the RUN. Without one the RUN runs
        // unlimited, as when the helper cannot open it (crate::cgroup).
        let procs = match req {
            Request::Run(run) => run.cgroup_procs.as_ref().and_then(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p)
                    .ok()
            }),
            _ => None,
        };
        let sent = match &procs {
            Some(f) => protocol::send_fds(&writer, super::prepared::CGROUP, &[f.as_fd()]),
            None => protocol::send_fds(&writer, super::prepared::NO_CGROUP, &[]),
        };
        sent.map_err(|e| SandboxError::Protocol(format!("send the cgroup: {e}")))?;
    }
    protocol::send(&mut writer, req)
        .map_err(|e| SandboxError::Protocol(format!("send request: {e}")))?;
    for (stream, pipe) in [
        (
            OutputStream::Stdout,
            stdout.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
        (
            OutputStream::Stderr,
            stderr.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
    ] {
        let Some(pipe) = pipe else {
            // Inherited: nothing to drain.
            let _ = tx.send(Msg::OutputClosed);
            continue;
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(MAX_CHUNK, pipe);
            let mut line = Vec::new();
            loop {
                // Whoever shows the output may be behind: then the pipe waits, not memory.
                crate::output_gate::wait_open();
                let buf = match r.fill_buf() {
                    Ok(buf) => buf,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => &[],
                };
                if buf.is_empty() {
                    // A last line without `\n` is still a line.
                    if !line.is_empty() {
                        let _ = tx.send(Msg::Line(OutputLine { stream, line }));
                    }
                    let _ = tx.send(Msg::OutputClosed);
                    break;
                }
                let take = buf.len().min(MAX_CHUNK - line.len());
                let (piece, ended) = match buf[..take].iter().position(|&b| b == b'\n') {
                    Some(i) => (i, true),
                    None => (take, false),
                };
                line.extend_from_slice(&buf[..piece]);
                r.consume(if ended { piece + 1 } else { piece });
                let rest = if ended {
                    Vec::new()
                } else if line.len() == MAX_CHUNK {
                    line.split_off(utf8_cut(&line))
                } else {
                    continue;
                };
                let full = std::mem::replace(&mut line, rest);
                if tx
                    .send(Msg::Line(OutputLine { stream, line: full }))
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    std::thread::spawn(move || {
        let mut r = BufReader::new(ours);
        loop {
            match protocol::recv::<Event>(&mut r) {
                Ok(Some(ev)) => {
                    if tx.send(Msg::Event(ev)).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Msg::ControlClosed(None));
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Msg::ControlClosed(Some(e.to_string())));
                    break;
                }
            }
        }
    });
    Ok((helper, rx))
}

/// Spawn a helper (a new exec of kiln) on control socket `theirs`, with `io`'s stdio;
/// returns it and its stdout and stderr pipes when `io` pipes them.
fn spawn_direct(
    theirs: UnixStream,
    io: ProcessIo,
    tty: Option<&std::os::fd::OwnedFd>,
) -> Result<
    (
        Child,
        Option<std::process::ChildStdout>,
        Option<std::process::ChildStderr>,
    ),
    SandboxError,
> {
    let exe = helper_exe();
    let mut cmd = Command::new(&exe);
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    match io {
        ProcessIo::Pipe => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        ProcessIo::Inherit { stdin } => {
            if stdin {
                cmd.arg(helper::STDIN_ARG);
            }
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        ProcessIo::Terminal { .. } => {
            let slave = |what: &str| {
                tty.ok_or_else(|| SandboxError::Protocol("no terminal to hand over".into()))?
                    .try_clone()
                    .map_err(|e| SandboxError::Protocol(format!("terminal for {what}: {e}")))
            };
            cmd.arg(helper::STDIN_ARG)
                .arg(helper::CTTY_ARG)
                .stdout(Stdio::from(slave("stdout")?))
                .stderr(Stdio::from(slave("stderr")?));
        }
    }
    let mut child = spawn_helper(cmd).map_err(|source| SandboxError::Spawn {
        exe: exe.display().to_string(),
        source,
    })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    Ok((child, stdout, stderr))
}

/// Said once per kiln process: a real-root sandbox fell back to the identity mapping
/// (module `idmap`). Straight to stderr: it concerns the machine, not one build step.
fn identity_mapping_note(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "warning: RUN steps run with the identity user mapping, so their root is the \
             host's root wherever the kernel checks a uid (peer credentials of Unix sockets, \
             signals): the store cannot be idmapped ({why}). Run kiln unprivileged, or keep \
             its store on ext4, xfs, btrfs or tmpfs."
        )
    });
}

/// Wait for the helper to exit and for all its output; returns the events it sent.
pub(super) async fn finish_helper(
    helper: HelperProcess,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
    output: &mut impl FnMut(OutputLine),
    phase: &mut kiln_base::phase::Phase,
) -> Result<Vec<Event>, SandboxError> {
    let mut events = Vec::new();
    let mut protocol_error = None;
    let (mut done, mut closed) = (false, 0);
    // Finished when the helper says the sandbox is gone and both pipes are drained, or when
    // everything closed (the helper exited, e.g. after a setup failure).
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Line(l) => output(l),
            Msg::OutputClosed => closed += 1,
            Msg::Event(Event::Done) => done = true,
            Msg::Event(Event::Note(why)) => identity_mapping_note(&why),
            Msg::Event(Event::Setup(steps)) => {
                for (name, ms) in steps {
                    kiln_base::phase::report(format!("run: setup: {name}"), ms);
                }
            }
            Msg::Event(e) => {
                // The helper reports its stubs once the view is mounted and pivoted, and
                // the exit once the RUN is gone.
                match e {
                    Event::Stubs(_) => *phase = kiln_base::phase::start("run: exec+wait"),
                    Event::Exited { .. } => *phase = kiln_base::phase::start("run: teardown"),
                    _ => {}
                }
                events.push(e)
            }
            Msg::ControlClosed(err) => protocol_error = err,
        }
        if done && closed == 2 {
            break;
        }
    }
    if done && protocol_error.is_none() {
        helper.let_exit();
        return Ok(events);
    }
    let status = tokio::task::spawn_blocking(move || helper.wait())
        .await
        .map_err(|e| SandboxError::HelperDied(e.to_string()))?
        .map_err(|e| SandboxError::HelperDied(e.to_string()))?;
    if let Some(e) = protocol_error {
        let status = match status {
            Ok(s) => s.to_string(),
            Err(words) => words.to_string(),
        };
        return Err(SandboxError::Protocol(format!("{e} (helper {status})")));
    }
    match status {
        Ok(s) if events.is_empty() && !s.success() => {
            return Err(SandboxError::HelperDied(s.to_string()));
        }
        Err(words) if events.is_empty() => {
            return Err(SandboxError::HelperDied(words.to_string()));
        }
        _ => {}
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child running `sleep secs`, and a helper handle of it as the zygote gives one.
    fn sleeper(secs: &str) -> (Child, HelperProcess) {
        let child = Command::new("sleep").arg(secs).spawn().unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let helper = HelperProcess {
            process: Some(Process::Forked(pidfd)),
        };
        (child, helper)
    }

    #[test]
    fn the_helpers_left_to_exit_are_waited_for_up_to_the_limit() {
        let (mut quick, helper) = sleeper("0.3");
        helper.let_exit();
        wait_for_exiting_helpers(std::time::Duration::from_secs(20));
        assert!(
            quick.try_wait().unwrap().is_some(),
            "returned before it exited"
        );

        let (mut stuck, helper) = sleeper("30");
        helper.let_exit();
        wait_for_exiting_helpers(std::time::Duration::from_millis(50));
        assert!(stuck.try_wait().unwrap().is_none());
        stuck.kill().unwrap();
        stuck.wait().unwrap();
    }
}
