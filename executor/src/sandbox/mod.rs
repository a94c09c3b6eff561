//! The rootless RUN sandbox: runs one process in fresh namespaces over a layered rootfs and
//! turns what it changed into a layer directory.
//!
//! Entry point: [`run`]. The namespaces are made by a helper process (the kiln binary
//! re-exec'd with the hidden argument [`HELPER_ARG`], or for a RUN's piped output forked
//! by the long-lived `zygote`, itself the kiln binary re-exec'd once; `main` must call
//! [`helper_main`] first thing). The parent and the helper exchange typed JSON messages over a socket pair
//! (`protocol`); the helper enters the sandbox's user namespace (`idmap`: as real root an
//! unprivileged ID range over idmapped mounts), builds the filesystem view (`rootfs`, with
//! symlink-safe mount points from `mountpoint`, the mount calls of `mount` and the
//! `/proc`, `/sys` and `/dev` of `kernel_fs`) in its PID 1 (`pid1`), and the RUN process
//! sets its `--ulimit`s (`rlimit`), resolves USER (`user`), confines itself (`seccomp`)
//! and execs the command (`exec`); `trace` times the setup steps for `KILN_TRACE_PHASES`.
//! `process` holds the fork, unshare and fd/signal resets
//! of those single-threaded processes, `step` the error every setup step reports. On
//! kiln's side, `parent` spawns the helper (or takes the `spare` the zygote forked while
//! the RUN before ran, which has made as much of the sandbox as does not depend on its
//! RUN when it could: `prepared`) and relays its output and events; `spec` holds
//! what a RUN is asked and gives back ([`RunSpec`], [`RunOutcome`], [`SandboxError`]),
//! `options` what the command line adds to every RUN ([`RunOptions`]: hosts, limits,
//! `/dev/shm`'s size).
//! Choosing a snapshotter ([`Snapshotter::detect`]) asks a helper to mount a test overlay.
//!
//! Layer directory contract: after a successful [`run`], `spec.upper` holds exactly what the
//! RUN added or changed — deletions as 0:0 character devices, replaced directories with
//! `user.overlay.opaque=y` — and nothing else (no mount points, no overlay-internal xattrs,
//! no copied-up entries that are identical to the lower layers). Both snapshotters give the
//! same tree.

mod exec;
mod helper;
mod idmap;
mod kernel_fs;
mod mount;
mod mountpoint;
mod options;
mod parent;
mod pid1;
mod prepared;
mod process;
mod protocol;
mod rlimit;
mod rootfs;
mod seccomp;
mod spare;
mod spec;
mod step;
mod terminal;
mod trace;
pub mod user;
mod zygote;

use std::path::{Path, PathBuf};

pub use crate::snapshot::Snapshotter;
pub use exec::DEFAULT_PATH;
use kiln_base::phase::start as start_phase;
pub use options::{ExtraHost, RunOptions, ULIMIT_NAMES, UNLIMITED, Ulimit};
pub use parent::{HELPER_ARG, prepare_spare, wait_for_exiting_helpers};
use parent::{finish_helper, start_helper};
use protocol::{Event, HelperRun, Request, RootfsPlan, Stub};
use spec::io_err;
pub use spec::{
    MountKind, MountSpec, Network, OutputLine, OutputStream, ProcessIo, RunOutcome, RunSpec,
    SandboxError,
};

/// Call first thing in `main()`: when this process was started as the sandbox helper, runs
/// it and returns its exit code (the caller exits with it); otherwise returns `None`.
///
/// Also serves the user-namespace ID mapper ([`crate::userns::MAPPER_ARG`]).
pub fn helper_main() -> Option<i32> {
    if let Some(code) = crate::userns::mapper_main() {
        return Some(code);
    }
    let arg = std::env::args_os().nth(1)?;
    if arg == zygote::ZYGOTE_ARG {
        return Some(zygote::zygote_entry());
    }
    if arg != HELPER_ARG {
        return None;
    }
    Some(helper::helper_entry())
}

fn mkdir(p: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(p).map_err(io_err(p))
}

/// Run `spec` and leave its layer directory in `spec.upper`.
///
/// `output` receives stdout/stderr lines as they come. A non-zero exit is reported in the
/// outcome, not as an error; the caller commits `spec.upper` only on success. If this future
/// is dropped, the sandbox is killed.
///
/// Returns once every process of the sandbox is gone and the layer is final; the helper's
/// namespaces may still be tearing down in the background (its mounts exist only in its own
/// mount namespace), so the caller may rename `upper` and delete `work` right away.
pub async fn run(
    spec: RunSpec,
    output: impl FnMut(OutputLine),
) -> Result<RunOutcome, SandboxError> {
    run_with_io(spec, ProcessIo::Pipe, output).await
}

/// [`run`] with the process's stdio chosen by `io`; `output` only hears from
/// [`ProcessIo::Pipe`].
pub async fn run_with_io(
    spec: RunSpec,
    io: ProcessIo,
    mut output: impl FnMut(OutputLine),
) -> Result<RunOutcome, SandboxError> {
    // Each phase of the RUN ends where the next starts (KILN_TRACE_PHASES).
    let phase = start_phase("run: prepare");
    let work = spec.work.clone();
    // The helper mounts a private tmpfs here: generated files and mount points of one RUN
    // never touch the disk.
    let scratch = work.join("scratch");
    mkdir(&scratch)?;
    let mut files = Vec::new();
    if !spec.files.is_empty() {
        mkdir(&work.join("files"))?;
    }
    for (i, (path, content, mode)) in spec.files.iter().enumerate() {
        let host = work.join("files").join(format!("file{i}"));
        std::fs::write(&host, content).map_err(io_err(&host))?;
        std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(*mode))
            .map_err(io_err(&host))?;
        files.push((path.clone(), host, *mode));
    }
    let top_first: Vec<PathBuf> = spec.lowers.iter().rev().cloned().collect();
    let (rootfs, copy_root) = match spec.snapshotter {
        Snapshotter::Overlay => {
            // The overlay workdir must share the upper's filesystem; the mount point lives in
            // the helper's tmpfs.
            let (ovl, merged) = (work.join("ovl"), scratch.join("merged"));
            mkdir(&ovl)?;
            let mut lowers = top_first.clone();
            if lowers.is_empty() {
                // overlayfs needs at least one lower layer: FROM scratch gets an empty one.
                let empty = work.join("empty");
                mkdir(&empty)?;
                lowers.push(empty);
            }
            (
                RootfsPlan::Overlay {
                    lowers,
                    upper: spec.upper.clone(),
                    work: ovl,
                    target: merged,
                },
                None,
            )
        }
        Snapshotter::Copy => {
            let root = work.join("rootfs");
            let lowers = top_first.clone();
            let root2 = root.clone();
            let base =
                tokio::task::spawn_blocking(move || crate::snapshot::materialize(&lowers, &root2))
                    .await
                    .map_err(|e| SandboxError::HelperDied(e.to_string()))??;
            (RootfsPlan::Dir { path: root.clone() }, Some((root, base)))
        }
    };
    // Kept until the sandbox is gone; dropping it removes the cgroup.
    let cgroup = crate::cgroup::RunCgroup::create().map_err(SandboxError::Cgroup)?;
    let req = Request::Run(Box::new(HelperRun {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network_none: spec.network == Network::None,
        rootfs,
        mounts: spec.mounts.clone(),
        files,
        scratch,
        cgroup_procs: cgroup.as_ref().map(|c| c.procs()),
        insecure: spec.insecure,
        options: spec.options.clone(),
        trace: kiln_base::phase::enabled(),
    }));
    let pty = match io {
        ProcessIo::Terminal { .. } => Some(
            terminal::Pty::open()
                .map_err(|e| SandboxError::Protocol(format!("opening a pseudo-terminal: {e}")))?,
        ),
        _ => None,
    };
    // The process gets kiln's own terminal: whatever it does to its settings is undone.
    let _settings = matches!(io, ProcessIo::Inherit { .. }).then(terminal::TerminalSettings::save);
    phase.end();
    let phase = start_phase("run: spawn helper");
    let (helper, rx) = start_helper(&req, io, pty.as_ref().map(|p| &p.slave))?;
    phase.end();
    let mut phase = start_phase("run: namespaces+mounts");
    let attached = match (pty, io) {
        (Some(pty), ProcessIo::Terminal { stdin }) => {
            // Only the sandbox may hold the slave: its EOF (EIO) ends the output relay.
            drop(pty.slave);
            Some(
                terminal::Attached::new(pty.master, stdin)
                    .map_err(|e| SandboxError::Protocol(format!("terminal relay: {e}")))?,
            )
        }
        _ => None,
    };
    let events = finish_helper(helper, rx, &mut output, &mut phase).await;
    if let Some(attached) = attached {
        attached.finish().await;
    }
    let events = events?;
    drop(cgroup);
    let mut stubs: Vec<Stub> = Vec::new();
    let mut outcome = None;
    for ev in events {
        match ev {
            Event::Stubs(s) => stubs = s,
            Event::Done | Event::Note(_) | Event::Setup(_) | Event::Prepared => {}
            Event::Exited { code, signal } => {
                outcome = Some(RunOutcome {
                    exit_code: code,
                    signal,
                })
            }
            Event::Failed { step, message } => return Err(SandboxError::Setup { step, message }),
            Event::Probe { .. } => {
                return Err(SandboxError::Protocol("unexpected probe answer".into()));
            }
        }
    }
    let outcome =
        outcome.ok_or_else(|| SandboxError::HelperDied("no exit status reported".into()))?;
    let upper = spec.upper.clone();
    phase = start_phase("run: diff");
    let diffed = tokio::task::spawn_blocking(move || -> Result<(), SandboxError> {
        match copy_root {
            None => {
                crate::snapshot::remove_stubs(&upper, &stubs)?;
                crate::snapshot::normalize_upper(&upper, &top_first)?;
            }
            Some((root, base)) => {
                crate::snapshot::remove_stubs(&root, &stubs)?;
                crate::layer_dir::write_layer(&root, &top_first, &upper, &base)?;
            }
        }
        Ok(())
    })
    .await;
    phase.end();
    diffed.map_err(|e| SandboxError::HelperDied(e.to_string()))??;
    Ok(outcome)
}

impl Snapshotter {
    /// Pick overlay when a test mount (in a throwaway mount namespace, through the sandbox
    /// helper) works with `userxattr`; otherwise Copy, with the reason. `scratch` is a
    /// directory this may create files under (on the filesystem layers will live on).
    pub async fn detect(scratch: &Path) -> (Snapshotter, Option<String>) {
        let dir = scratch.join(format!("overlay-probe-{}", std::process::id()));
        let result = match std::fs::create_dir_all(&dir) {
            Ok(()) => match probe_overlay(&dir).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("{}: {e}", dir.display())),
        };
        // Nothing waits for the removal (directories are slow to remove on some disks):
        // the runtime finishes it before kiln exits, and a kiln killed first leaves it in
        // its scratch directory, which the next build reclaims.
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir));
        match result {
            Ok(()) => (Snapshotter::Overlay, None),
            Err(why) => (Snapshotter::Copy, Some(why)),
        }
    }
}

/// Ask a helper whether overlayfs with `userxattr` works here (used by
/// [`Snapshotter::detect`]). `dir` is an empty scratch directory.
pub(crate) async fn probe_overlay(dir: &Path) -> Result<Result<(), String>, SandboxError> {
    let (helper, rx) = start_helper(
        &Request::ProbeOverlay {
            dir: dir.to_path_buf(),
        },
        ProcessIo::Pipe,
        None,
    )?;
    let mut phase = start_phase("probe overlay");
    let events = finish_helper(helper, rx, &mut |_| {}, &mut phase).await?;
    for ev in events {
        if let Event::Probe { ok, detail } = ev {
            return Ok(if ok { Ok(()) } else { Err(detail) });
        }
    }
    Err(SandboxError::HelperDied(
        "overlay probe gave no answer".into(),
    ))
}
