//! A sandbox made before its RUN: the spare helper (module `spare`) is asked to make as much
//! of the next RUN's sandbox as does not depend on that RUN, while the RUN before it runs,
//! so the next RUN's path holds only what does.
//!
//! What is made before ([`PreparePlan`], taken from the RUN that was running when the spare
//! was forked): as real root the idmapped views of the same host directories (the store's
//! layers and the process's staging directory: `idmap::clone_roots` of its overlay and
//! files, never of its mounts' sources, a cache or context directory), the user namespace
//! joined, the network namespace (the lent one or a new one, `lo` up), the mount, PID, IPC
//! and UTS namespaces, the scratch tmpfs with the stub layer, PID 1, and under the scratch
//! `/proc` (with its masks), `/sys` and `/dev` mounted as `rootfs::populate` mounts them.
//! PID 1 then says [`Event::Prepared`] and waits for the RUN; the helper waits for PID 1 as
//! usual.
//!
//! What is left for the request, in PID 1: joining the RUN's cgroup (kiln opens its
//! `cgroup.procs` and passes the descriptor before the request, as the helper would have
//! opened it while still privileged), the overlay, moving the prepared `/proc`, `/sys` and
//! `/dev` into it (a move takes the masks along), the hosts files, the RUN's mounts and
//! files, the host name, `pivot_root`, and the process.
//!
//! A RUN the plan does not serve ([`PreparePlan::serves`]) gets a helper made for it as
//! before, and the spare is killed: an insecure RUN (no masks, a network namespace of its
//! own), another network choice or other build options, secrets (opened by the helper in
//! kiln's user namespace), the copy snapshotter, a host path outside the roots or on
//! another mount than its root (a clone does not take the mounts below it), a root that
//! is no longer the directory it was (moved away, replaced, covered by a mount). PID 1
//! checks what it can see again. A RUN its own plan would not serve leaves the next spare
//! unprepared: the next RUN is likely of its kind. After three spares in a row fail to
//! prepare (the identity mapping's fallback, `idmap`), kiln stops asking.

#![allow(unsafe_code)]

use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::helper::{SharedNs, sandbox_flags, wait_for_pid1};
use super::idmap::{self, Entered};
use super::options::RunOptions;
use super::pid1;
use super::process::{fork, unshare};
use super::protocol::{self, Event, HelperRun, Request, RootfsPlan};
use super::rootfs;
use super::spec::MountKind;
use super::step::{StepError, fail, fail_io};
use super::trace::SetupTrace;

/// What a sandbox is made with before its request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PreparePlan {
    /// The host directories a RUN's paths must lie in, on their mounts (`idmap::served_by`),
    /// each as it was when the plan was made: the process's staging directory and the
    /// store's layers, never a cache or context directory (those are the RUN's own).
    pub roots: Vec<PlanRoot>,
    /// As real root: the sandbox sees the roots through idmapped views of them (module
    /// `idmap`); rootless, as they are.
    pub idmapped: bool,
    /// An empty directory kiln made for the sandbox's scratch tmpfs.
    pub scratch: PathBuf,
    /// Whether the RUN has no network (the spare's network namespace is chosen at its
    /// fork: module `spare`).
    pub network_none: bool,
    /// The build's options every RUN gets (limits raised while still privileged, the size
    /// of `/dev/shm`).
    pub options: RunOptions,
}

/// A root of a [`PreparePlan`], with what it was: a directory moved away, replaced or
/// covered by a mount since is not the one the views show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlanRoot {
    pub path: PathBuf,
    pub mount: u64,
    pub dev: (u32, u32),
    pub ino: u64,
}

impl PlanRoot {
    /// `path` as it is now; `None` when it cannot be looked at.
    fn of(path: PathBuf) -> Option<PlanRoot> {
        let st = rustix::fs::statx(
            rustix::fs::CWD,
            &path,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::MNT_ID | rustix::fs::StatxFlags::INO,
        )
        .ok()
        .filter(|s| s.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0)?;
        Some(PlanRoot {
            path,
            mount: st.stx_mnt_id,
            dev: (st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
        })
    }
}

/// Tag of the descriptor message before a prepared sandbox's request: the RUN's
/// `cgroup.procs` attached ([`CGROUP`]) or none ([`NO_CGROUP`]).
pub(super) const CGROUP: u8 = b'C';
pub(super) const NO_CGROUP: u8 = b'-';

impl PreparePlan {
    /// The plan for a RUN like `run` (the same roots, network and options), with its
    /// scratch directory beside `run`'s work directory; `None` where a prepared sandbox
    /// would not serve `run` itself (see [`PreparePlan::serves`]): the next RUN is likely
    /// the same kind, and a spare that is not prepared serves it without a fork on its
    /// path.
    pub(super) fn like(run: &HelperRun) -> Option<PreparePlan> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // The RUN's scratch is `<work>/scratch`; its work directory is one of the
        // process's staging directories.
        let staging = run.scratch.parent()?.parent()?;
        let scratch = staging.join(format!(
            "spare-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // The roots of its overlay and files: its mounts' sources are its own.
        let mut shape = run.clone();
        shape.mounts.clear();
        let roots = idmap::clone_roots(&mut shape)
            .into_iter()
            .map(PlanRoot::of)
            .collect::<Option<Vec<_>>>()?;
        let plan = PreparePlan {
            roots,
            idmapped: crate::userns::is_real_root(),
            scratch,
            network_none: run.network_none,
            options: run.options.clone(),
        };
        plan.serves(run).then_some(plan)
    }

    /// Whether a sandbox prepared with this plan can run `run` exactly as a helper made
    /// for it would: [`PreparePlan::fits`], and every root is still what it was and holds
    /// each of `run`'s host paths on its own mount (a clone does not take the mounts
    /// below it).
    pub(crate) fn serves(&self, run: &HelperRun) -> bool {
        let roots: Vec<(&Path, Option<u64>)> = self
            .roots
            .iter()
            .map(|r| (r.path.as_path(), Some(r.mount)))
            .collect();
        // served_by asks more of each path than fits does (below a root, on its mount).
        self.same_kind(run)
            && self
                .roots
                .iter()
                .all(|r| PlanRoot::of(r.path.clone()).as_ref() == Some(r))
            && idmap::host_paths_of(run)
                .iter()
                .all(|p| idmap::served_by(&roots, p, idmap::mount_id(p)).is_some())
    }

    /// What of [`PreparePlan::serves`] holds without looking at the host (PID 1 checks it
    /// again, from where it cannot): [`PreparePlan::same_kind`], and host paths below the
    /// roots.
    pub(crate) fn fits(&self, run: &HelperRun) -> bool {
        self.same_kind(run)
            && idmap::host_paths_of(run)
                .iter()
                .all(|p| self.roots.iter().any(|r| p.starts_with(&r.path)))
    }

    /// The RUN is not insecure, and has the plan's network and options, an overlay
    /// rootfs and no secrets.
    fn same_kind(&self, run: &HelperRun) -> bool {
        !run.insecure
            && run.network_none == self.network_none
            && run.options == self.options
            && matches!(run.rootfs, RootfsPlan::Overlay { .. })
            && !has_secrets(run)
    }
}

/// Whether `run` mounts secrets (which its helper opens while still in kiln's user
/// namespace).
fn has_secrets(run: &HelperRun) -> bool {
    run.mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Secret { .. }))
}

/// The helper's side of [`Request::Prepare`]: makes the sandbox, forks PID 1 (which
/// prepares the kernel's filesystems and waits for the RUN) and waits for it.
pub(super) fn prepare(
    plan: PreparePlan,
    out: &mut UnixStream,
    shared: SharedNs<OwnedFd>,
) -> Result<i32, StepError> {
    const STEP: &str = "prepare";
    if plan.idmapped != crate::userns::is_real_root() {
        return Err(StepError {
            step: STEP,
            message: "the plan was made for another kind of kiln process".into(),
        });
    }
    let entered = if plan.idmapped {
        super::rlimit::raise_hard_limits(&plan.options.ulimits)?;
        let roots = plan.roots.iter().map(|r| r.path.clone()).collect();
        idmap::enter_roots(roots, &plan.scratch, shared.userns)?
    } else {
        Entered::Inherited
    };
    if let Entered::Identity(why) = &entered {
        return Err(StepError {
            step: STEP,
            message: format!("the store cannot be idmapped ({why})"),
        });
    }
    let lent_netns = shared.netns.filter(|_| plan.network_none);
    unshare(sandbox_flags(plan.network_none, lent_netns), "namespaces")?;
    let base = match &entered {
        Entered::Shifted { .. } => idmap::open_base()?,
        _ => plan.scratch.clone(),
    };
    super::mount::make_private()?;
    if !entered.scratch_mounted() {
        rootfs::mount_scratch_at(&plan.scratch)?;
    }
    let stubs = rootfs::make_stub_layer(&base)?;
    let (alive_r, alive_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail("pid1", "pipe"))?;
    let pid = fork("pid1")?;
    if pid == 0 {
        drop(alive_w);
        let code = prepared_pid1(&plan, &entered, &base, stubs, out, alive_r);
        // SAFETY: _exit ends the forked child without running the parent's atexit state.
        unsafe { libc::_exit(code) };
    }
    drop(alive_r);
    wait_for_pid1(pid, alive_w, out)
}

/// PID 1 of a prepared sandbox: `/proc`, `/sys` and `/dev` under `base`, then the RUN.
fn prepared_pid1(
    plan: &PreparePlan,
    entered: &Entered,
    base: &Path,
    stubs: PathBuf,
    out: &mut UnixStream,
    helper_alive: OwnedFd,
) -> i32 {
    if !pid1::arm() || pid1::helper_gone(&helper_alive) {
        return 1;
    }
    let pre = base.join("pre");
    let ready = rootfs::prepare_kernel_fs(&pre, plan.options.shm_size).and_then(|()| {
        if plan.network_none {
            pid1::loopback_up()
        } else {
            Ok(())
        }
    });
    let answer = match ready {
        Ok(()) => Event::Prepared,
        Err(e) => Event::from(e),
    };
    let prepared = matches!(answer, Event::Prepared);
    if protocol::send(out, &answer).is_err() || !prepared {
        return 1;
    }
    // The request: the descriptor message first (it must be read as one), then the RUN.
    let cgroup = match protocol::recv_fds(out) {
        Ok(Some((CGROUP, fds))) => fds.into_iter().next().map(std::fs::File::from),
        Ok(Some((NO_CGROUP, _))) => None,
        // kiln went away (or killed the spare) without a RUN for it.
        _ => return 0,
    };
    let req = out
        .try_clone()
        .and_then(|s| protocol::recv::<Request>(&mut BufReader::new(s)));
    let Ok(Some(Request::Run(run))) = req else {
        return 0;
    };
    let mut run = *run;
    let mut trace = SetupTrace::new(run.trace);
    pid1::join_cgroup(cgroup);
    let view = if plan.fits(&run) {
        take_request(&mut run, entered, base, stubs).and_then(|()| {
            trace.step("pid1: request");
            pid1::set_up_view(&run, &rootfs::Secrets::default(), Some(&pre), &mut trace)
        })
    } else {
        Err(StepError {
            step: "prepared",
            message: "the RUN does not fit the sandbox prepared for it".into(),
        })
    };
    pid1::run_process(&run, out, None, view, trace)
}

/// Rewrites the RUN's paths for this sandbox (its views, its scratch) and puts the stub
/// layer under its layers.
fn take_request(
    run: &mut HelperRun,
    entered: &Entered,
    base: &Path,
    stubs: PathBuf,
) -> Result<(), StepError> {
    entered.rebase_onto(run, base)?;
    if let RootfsPlan::Overlay { lowers, target, .. } = &mut run.rootfs {
        lowers.push(stubs);
        std::fs::create_dir_all(&*target)
            .map_err(fail_io("scratch", format!("mkdir {}", target.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::options::{UNLIMITED, Ulimit};
    use crate::sandbox::spec::MountSpec;

    /// A RUN whose work directory is in the process's staging directory `s/tmp/p`, over
    /// layers in `s/layers` (all made).
    fn run_in(s: &Path) -> HelperRun {
        for d in [
            "layers/a",
            "layers/b",
            "tmp/p/up/upper",
            "tmp/p/r1/ovl",
            "tmp/p/r1/files",
            "tmp/p/r1/scratch",
            "cache/c1",
            "tmp/p/cache",
        ] {
            std::fs::create_dir_all(s.join(d)).expect("mkdir");
        }
        std::fs::write(s.join("tmp/p/r1/files/file0"), "x").expect("write");
        let mut run = HelperRun::bare(
            RootfsPlan::Overlay {
                lowers: vec![s.join("layers/b"), s.join("layers/a")],
                upper: s.join("tmp/p/up/upper"),
                work: s.join("tmp/p/r1/ovl"),
                target: s.join("tmp/p/r1/scratch/merged"),
            },
            s.join("tmp/p/r1/scratch"),
        );
        run.files = vec![("/x".into(), s.join("tmp/p/r1/files/file0"), 0o644)];
        run
    }

    fn secret(s: &Path) -> MountSpec {
        MountSpec {
            target: "/run/secrets/k".into(),
            kind: MountKind::Secret {
                host: s.join("tmp/p/secret"),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        }
    }

    fn cache(s: &Path, host: &str) -> MountSpec {
        MountSpec {
            target: "/c".into(),
            kind: MountKind::Cache { host: s.join(host) },
        }
    }

    #[test]
    fn a_plan_serves_the_runs_it_was_made_for_and_no_other() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = tmp.path();
        let plan = PreparePlan::like(&run_in(s)).expect("a plan");
        assert_eq!(
            plan.roots
                .iter()
                .map(|r| r.path.clone())
                .collect::<Vec<_>>(),
            [s.join("tmp/p"), s.join("layers")]
        );
        assert!(plan.serves(&run_in(s)));

        let mut other = run_in(s);
        other.insecure = true;
        assert!(
            !plan.serves(&other),
            "insecure: no masks, a network of its own"
        );
        let mut other = run_in(s);
        other.network_none = false;
        assert!(!plan.serves(&other), "another network choice");
        let mut other = run_in(s);
        other.options.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft: 10,
            hard: UNLIMITED,
        }];
        assert!(!plan.serves(&other), "other limits to raise");
        let mut other = run_in(s);
        other.rootfs = RootfsPlan::Dir {
            path: s.join("tmp/p/r1/rootfs"),
        };
        assert!(!plan.serves(&other), "the copy snapshotter");
        let mut other = run_in(s);
        other.mounts.push(secret(s));
        assert!(!plan.serves(&other), "a secret, opened in kiln's namespace");
        let mut other = run_in(s);
        other.mounts.push(cache(s, "cache/c1"));
        assert!(!plan.serves(&other), "a host path without a prepared view");
        assert!(
            PreparePlan::like(&other).is_none(),
            "a RUN its own plan would not serve gets none"
        );
        let mut other = run_in(s);
        other.mounts.push(cache(s, "tmp/p/cache"));
        assert!(plan.serves(&other), "a host path below a prepared view");
    }

    #[test]
    fn a_root_moved_away_and_replaced_serves_no_more() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = tmp.path();
        let plan = PreparePlan::like(&run_in(s)).expect("a plan");
        std::fs::rename(s.join("layers"), s.join("moved")).expect("rename");
        // Made again at the same path: the views show the one moved away.
        let run = run_in(s);
        assert!(plan.fits(&run), "the paths alone still fit");
        assert!(!plan.serves(&run));
    }

    #[test]
    fn a_plan_is_made_beside_the_runs_work_directory_and_not_for_every_run() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = tmp.path();
        let made = PreparePlan::like(&run_in(s)).expect("a plan");
        assert_eq!(made.scratch.parent(), Some(s.join("tmp/p").as_path()));
        assert!(
            made.scratch
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("spare-"))
        );
        assert!(made.network_none);
        let mut insecure = run_in(s);
        insecure.insecure = true;
        assert_eq!(PreparePlan::like(&insecure), None);
        let mut with_secret = run_in(s);
        with_secret.mounts.push(secret(s));
        assert_eq!(PreparePlan::like(&with_secret), None);
    }
}
