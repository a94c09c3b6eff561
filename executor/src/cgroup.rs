//! Resource limits for RUN: each sandbox gets a cgroup of its own, with a pids limit (a
//! fork bomb in a Dockerfile stops at it instead of at the host's process table) and the
//! optional memory and CPU limits of `kiln build --memory/--cpus`.
//!
//! Where kiln may make cgroups:
//! - **cgroup v2, delegated** (kiln's own cgroup is writable, e.g. under
//!   `systemd-run --user -p Delegate=yes`): one child per RUN with `pids.max`, `memory.max`
//!   and `cpu.max`. The "no internal processes" rule forbids enabling controllers for the
//!   children of a cgroup that holds processes, so kiln first moves itself into a leaf
//!   (`kiln-<pid>`) beside them, as runc and podman do in a delegated scope.
//! - **cgroup v1 as real root**: the `pids` hierarchy only (memory and cpu of v1 belong to
//!   whoever placed kiln in its cgroup; moving a RUN out of them would escape their
//!   accounting), and one cgroup for the whole build (`kiln-build-<pid>`), which the thread
//!   that spawns every sandbox joins once ([`join_build_cgroup`]): moving a process into a
//!   v1 cgroup waits for an RCU grace period (about 10 ms), too much to pay per RUN, while a
//!   child is born in its parent thread's cgroup for free. The build's RUNs share the limit.
//! - otherwise nothing: [`RunCgroup::create`] returns `None` and [`support`] says why, once,
//!   for the caller to print.
//!
//! `kiln build --cgroup-parent P` (a path below the cgroup mount, as docker's cgroupfs
//! driver takes it) puts those cgroups under `P` instead of kiln's own cgroup: on v2 each
//! RUN's, made with the parents runc would make (controllers enabled on the way down); on
//! v1 as root the build's in the `pids` hierarchy.
//!
//! The sandbox's PID 1 joins the cgroup first thing (before the RUN process exists), so
//! the kiln process and the helper stay outside it and every process of the RUN is inside.
//! Failing to set a cgroup up never fails a build: limits are protection, not semantics.
//! A `--cgroup-parent` is asked for, though: where it cannot be used, every RUN fails
//! saying why ([`Support::Refused`]) rather than running somewhere else.
//!
//! A quarter of its length is its tests, over fake cgroup trees for v1 and v2.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The pids limit of a RUN when none is given (podman's default is 2048; builds such as
/// `make -j` with many compilers need more headroom than a container does).
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// Limits for every RUN of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Maximum number of processes and threads; `None` = unlimited.
    pub pids: Option<u64>,
    /// Memory limit in bytes (cgroup v2 only).
    pub memory: Option<u64>,
    /// CPU limit in CPUs, e.g. 1.5 (cgroup v2 only).
    pub cpus: Option<f64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pids: Some(DEFAULT_PIDS_LIMIT),
            memory: None,
            cpus: None,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();
/// `--cgroup-parent`, relative to the cgroup mount.
static PARENT: OnceLock<String> = OnceLock::new();

/// Sets the limits for every RUN of this process and, with `parent` (`--cgroup-parent`),
/// the cgroup their cgroups go under (the first call wins; before any RUN).
pub fn configure(limits: Limits, parent: Option<&str>) {
    let _ = LIMITS.set(limits);
    if let Some(p) = parent {
        let _ = PARENT.set(p.to_string());
    }
}

fn limits() -> Limits {
    LIMITS.get().copied().unwrap_or_default()
}

/// Where RUN cgroups can be made, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    /// cgroup v2: children of this directory, with these controllers enabled for them.
    V2 {
        parent: PathBuf,
        controllers: Vec<String>,
    },
    /// cgroup v1 `pids` hierarchy: children of this directory.
    V1Pids { parent: PathBuf },
    /// No cgroup can be made; why, in a sentence for the user.
    Unavailable(String),
    /// The `--cgroup-parent` asked for cannot be used; why, in a sentence naming the flag.
    /// Every RUN fails with it.
    Refused(String),
}

/// What this process can do, decided once.
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let mnt = Path::new("/sys/fs/cgroup");
        match PARENT.get() {
            Some(parent) => detect_under(mnt, parent),
            None => detect(mnt),
        }
    })
}

/// The path of this process's cgroup in hierarchy `hier` (v2: "" → the "0::" line).
fn own_cgroup(hier: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, names, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if hier.is_empty() {
            names.is_empty()
        } else {
            names.split(',').any(|n| n == hier)
        };
        hit.then(|| path.to_string())
    })
}

fn is_cgroup2(p: &Path) -> bool {
    rustix::fs::statfs(p)
        .map(|s| s.f_type == libc::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn detect(mnt: &Path) -> Support {
    if is_cgroup2(mnt) {
        return detect_v2(mnt);
    }
    let pids = mnt.join("pids");
    if rustix::process::geteuid().is_root()
        && pids.join("cgroup.procs").exists()
        && let Some(own) = own_cgroup("pids")
    {
        let parent = pids.join(own.trim_start_matches('/'));
        return match writable(&parent) {
            true => Support::V1Pids { parent },
            false => Support::Unavailable(format!(
                "the cgroup v1 pids hierarchy ({}) is not writable",
                parent.display()
            )),
        };
    }
    Support::Unavailable(
        "cgroup v2 is not mounted at /sys/fs/cgroup with a cgroup delegated to this user".into(),
    )
}

/// Support under `given` (`--cgroup-parent`), made where missing, or why it cannot be used.
fn detect_under(mnt: &Path, given: &str) -> Support {
    let refuse = |why: String| Support::Refused(format!("--cgroup-parent {given}: {why}"));
    let dir = mnt.join(given.trim_matches('/'));
    if is_cgroup2(mnt) {
        if let Err(why) = make_v2_path(mnt, &dir) {
            return refuse(why);
        }
        let own = own_cgroup("").map(|o| mnt.join(o.trim_start_matches('/')));
        return match prepare_v2(&dir, own.as_deref() == Some(dir.as_path())) {
            Ok(support) => support,
            Err(why) => refuse(why),
        };
    }
    let pids = mnt.join("pids");
    if !pids.join("cgroup.procs").exists() {
        return refuse(
            "no cgroup v2 at /sys/fs/cgroup and no cgroup v1 pids hierarchy to make it in".into(),
        );
    }
    let dir = pids.join(given.trim_matches('/'));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return refuse(format!(
            "cannot create {} ({e}): on cgroup v1 only real root can",
            dir.display()
        ));
    }
    match writable(&dir) {
        true => Support::V1Pids { parent: dir },
        false => refuse(format!(
            "{} is not writable by this user (on cgroup v1 only real root can use it)",
            dir.display()
        )),
    }
}

/// Makes the missing directories down to `dir` on cgroup v2, enabling on the way the
/// controllers kiln uses, as runc does, so that `dir` can have them for its children
/// (best effort: [`prepare_v2`] checks what `dir` ends up with).
fn make_v2_path(mnt: &Path, dir: &Path) -> Result<(), String> {
    let mut at = mnt.to_path_buf();
    let rel = dir.strip_prefix(mnt).unwrap_or(dir);
    for part in rel.components() {
        let _ = std::fs::write(
            at.join("cgroup.subtree_control"),
            enable_line(&available_controllers(&at)),
        );
        at.push(part);
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create {} ({e}): not delegated to this user",
                    at.display()
                ));
            }
        }
    }
    Ok(())
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir.join("cgroup.procs"), rustix::fs::Access::WRITE_OK).is_ok()
        && rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

fn detect_v2(mnt: &Path) -> Support {
    let Some(own) = own_cgroup("") else {
        return Support::Unavailable("no cgroup v2 entry in /proc/self/cgroup".into());
    };
    delegated_v2(&mnt.join(own.trim_start_matches('/')))
}

/// The controllers kiln uses that `dir`'s cgroup has.
fn available_controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .filter(|c| matches!(*c, "pids" | "memory" | "cpu"))
        .map(str::to_string)
        .collect()
}

/// `+c` for each of `controllers`: what `cgroup.subtree_control` takes.
fn enable_line(controllers: &[String]) -> String {
    let text: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    text.join(" ")
}

/// Support in kiln's own v2 cgroup directory `own`.
fn delegated_v2(own: &Path) -> Support {
    prepare_v2(own, true).unwrap_or_else(Support::Unavailable)
}

/// Support in the v2 cgroup directory `dir`, its controllers enabled for the children;
/// `holds_kiln`: it is kiln's own cgroup, which kiln may leave for a leaf beside the
/// children.
fn prepare_v2(dir: &Path, holds_kiln: bool) -> Result<Support, String> {
    let own = dir.to_path_buf();
    if !writable(&own) {
        return Err(match holds_kiln {
            true => format!(
                "kiln's cgroup {} is not delegated to this user (run kiln under \
                 `systemd-run --user --scope -p Delegate=yes`, or as root)",
                own.display()
            ),
            false => format!(
                "{} is not writable by this user (not delegated to it)",
                own.display()
            ),
        });
    }
    let available = available_controllers(&own);
    let enable = |dir: &Path| -> std::io::Result<()> {
        std::fs::write(dir.join("cgroup.subtree_control"), enable_line(&available))
    };
    match enable(&own) {
        Ok(()) => {}
        // kiln's cgroup holds processes (kiln itself): move kiln into a leaf of its own,
        // then the controllers can be enabled for the children.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && holds_kiln => {
            let leaf = own.join(format!("kiln-{}", std::process::id()));
            let moved = std::fs::create_dir(&leaf)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), "0"))
                .and_then(|()| enable(&own));
            if let Err(e) = moved {
                return Err(format!(
                    "cannot enable controllers in {} ({e}): other processes share kiln's cgroup",
                    own.display()
                ));
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(format!(
                "cannot enable controllers in {} ({e}): it holds processes, and a cgroup \
                 with processes cannot have limited children",
                own.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot enable controllers in {}: {e}",
                own.display()
            ));
        }
    }
    Ok(Support::V2 {
        parent: own,
        controllers: available,
    })
}

/// One RUN's cgroup; removed when dropped (its processes are gone by then).
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
}

impl RunCgroup {
    /// Makes a cgroup for one RUN with the configured limits; `None` where cgroups are
    /// unavailable or setting one up failed (see the module doc: never fatal). An error
    /// only with a `--cgroup-parent` that cannot be used, in a sentence naming the flag.
    pub fn create() -> Result<Option<RunCgroup>, String> {
        let support = support();
        if let Support::Refused(why) = support {
            return Err(why.clone());
        }
        match (RunCgroup::create_in(support, limits()), PARENT.get()) {
            (Ok(cg), _) => Ok(cg),
            (Err(why), Some(given)) => Err(format!("--cgroup-parent {given}: {why}")),
            (Err(_), None) => Ok(None),
        }
    }

    /// `Ok(None)`: no cgroup per RUN here; `Err`: making it failed, and why.
    fn create_in(support: &Support, l: Limits) -> Result<Option<RunCgroup>, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "kiln-run-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let (dir, writes) = match support {
            Support::V2 {
                parent,
                controllers,
            } => {
                let has = |c: &str| controllers.iter().any(|x| x == c);
                let mut w = Vec::new();
                if let Some(p) = l.pids.filter(|_| has("pids")) {
                    w.push(("pids.max", p.to_string()));
                }
                if let Some(m) = l.memory.filter(|_| has("memory")) {
                    w.push(("memory.max", m.to_string()));
                    // Swap would let a limited RUN go on using memory as disk.
                    w.push(("memory.swap.max", "0".into()));
                }
                if let Some(c) = l.cpus.filter(|_| has("cpu")) {
                    let period = 100_000u64;
                    let quota = ((c * period as f64).round() as u64).max(1000);
                    w.push(("cpu.max", format!("{quota} {period}")));
                }
                (parent.join(&name), w)
            }
            // One cgroup for the build, joined by the spawner thread (join_build_cgroup).
            Support::V1Pids { .. } | Support::Unavailable(_) | Support::Refused(_) => {
                return Ok(None);
            }
        };
        static SWEPT: std::sync::Once = std::sync::Once::new();
        if let Some(parent) = dir.parent() {
            SWEPT.call_once(|| sweep_dead(parent));
        }
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = RunCgroup { dir };
        for (file, value) in writes {
            // memory.swap.max is absent without swap accounting: not a reason to give up.
            match std::fs::write(cg.dir.join(file), &value) {
                Err(_) if file == "memory.swap.max" => {}
                // Dropping cg removes the directory.
                Err(e) => return Err(format!("cannot write {}: {e}", cg.dir.join(file).display())),
                Ok(()) => {}
            }
        }
        Ok(Some(cg))
    }

    /// The file PID 1 writes "0" to, to join.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// v1 only: puts the calling thread (the one that spawns every sandbox helper) into this
/// build's cgroup, made with the configured pids limit, so every helper and everything it
/// starts is born inside it. Nothing happens elsewhere (v2 has a cgroup per RUN) or when it
/// cannot be made (limits are protection, not semantics), unless a `--cgroup-parent` was
/// asked for: then why not, in a sentence naming the flag, for every RUN to fail with.
pub fn join_build_cgroup() -> Result<(), String> {
    let joined = join_v1_build_cgroup();
    match (joined, PARENT.get()) {
        (Err(why), Some(given)) => Err(format!("--cgroup-parent {given}: {why}")),
        _ => Ok(()),
    }
}

fn join_v1_build_cgroup() -> Result<(), String> {
    let Support::V1Pids { parent } = support() else {
        return Ok(());
    };
    sweep_dead(parent);
    let dir = parent.join(format!("kiln-build-{}", std::process::id()));
    let failed = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", dir.display());
    if let Err(e) = std::fs::create_dir(&dir)
        && !dir.is_dir()
    {
        return Err(failed("create", e));
    }
    if let Some(p) = limits().pids {
        std::fs::write(dir.join("pids.max"), p.to_string())
            .map_err(|e| failed("limit the processes of", e))?;
    }
    // `tasks` moves one thread, where `cgroup.procs` would move all of kiln.
    std::fs::write(dir.join("tasks"), "0").map_err(|e| failed("join", e))
}

/// How long [`sweep_dead`] waits, in all, for the last processes of gone kilns' cgroups
/// to leave them.
const SWEEP_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Removes the RUN cgroups of kiln processes that are gone (killed before they could
/// remove their own) and their build cgroups. A cgroup that still holds processes refuses
/// rmdir (EBUSY): a gone kiln's sandbox helper zygote dies with it but not at the same
/// instant, so that is retried for up to [`SWEEP_WAIT`] in all; what is still busy then
/// (a reused PID, a process that will not die) is left, an empty directory at worst.
fn sweep_dead(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    let deadline = std::time::Instant::now() + SWEEP_WAIT;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| {
                n.strip_prefix("kiln-run-")
                    .or_else(|| n.strip_prefix("kiln-build-"))
            })
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        while let Err(err) = std::fs::remove_dir(e.path())
            && err.raw_os_error() == Some(libc::EBUSY)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // The last process may still be leaving (exit is not instant after the PID
        // namespace's init is reaped): retry briefly, then leave it (empty, harmless).
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_cap_pids_only() {
        let l = Limits::default();
        assert_eq!(l.pids, Some(DEFAULT_PIDS_LIMIT));
        assert_eq!((l.memory, l.cpus), (None, None));
    }

    /// A directory laid out like a delegated cgroup v2 directory (the kernel's own files
    /// are plain files here: this checks what kiln writes, not what the kernel enforces,
    /// which tests/hostile does where the machine has the controllers).
    fn fake_v2(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (f, text) in [
            ("cgroup.procs", ""),
            ("cgroup.controllers", controllers),
            ("cgroup.subtree_control", ""),
        ] {
            std::fs::write(dir.path().join(f), text).expect("write");
        }
        dir
    }

    #[test]
    fn a_delegated_v2_cgroup_enables_the_controllers_it_has() {
        let own = fake_v2("cpuset cpu io memory pids");
        match delegated_v2(own.path()) {
            Support::V2 {
                parent,
                controllers,
            } => {
                assert_eq!(parent, own.path());
                assert_eq!(controllers, ["cpu", "memory", "pids"]);
            }
            other => panic!("{other:?}"),
        }
        let written = std::fs::read_to_string(own.path().join("cgroup.subtree_control"));
        assert_eq!(written.expect("read"), "+cpu +memory +pids");
    }

    #[test]
    fn a_run_cgroup_gets_the_limits_and_goes_away() {
        let own = fake_v2("memory pids");
        let support = delegated_v2(own.path());
        let limits = Limits {
            pids: Some(100),
            memory: Some(512 << 20),
            cpus: Some(1.5),
        };
        let cg = RunCgroup::create_in(&support, limits)
            .expect("made")
            .expect("cgroup");
        let dir = cg.path().to_path_buf();
        assert!(dir.starts_with(own.path()));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        assert_eq!(read("pids.max").as_deref(), Some("100"));
        assert_eq!(read("memory.max").as_deref(), Some("536870912"));
        assert_eq!(read("memory.swap.max").as_deref(), Some("0"));
        // No cpu controller delegated: no cpu.max, and no failure either.
        assert_eq!(read("cpu.max"), None);
        assert_eq!(cg.procs(), dir.join("cgroup.procs"));
        // A real cgroup directory is empty once its processes are gone; a plain one is
        // emptied here so that rmdir can work as it would.
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            std::fs::remove_file(e.path()).expect("rm");
        }
        drop(cg);
        assert!(!dir.exists(), "the RUN's cgroup is removed");
    }

    #[test]
    fn cpus_become_a_quota_per_period() {
        let own = fake_v2("cpu");
        let support = delegated_v2(own.path());
        let limits = Limits {
            pids: None,
            memory: None,
            cpus: Some(0.5),
        };
        let cg = RunCgroup::create_in(&support, limits)
            .expect("made")
            .expect("cgroup");
        let max = std::fs::read_to_string(cg.path().join("cpu.max")).expect("cpu.max");
        assert_eq!(max, "50000 100000");
        assert!(!cg.path().join("pids.max").exists());
    }

    #[test]
    fn a_given_parent_is_prepared_like_kilns_own_cgroup() {
        let mnt = fake_v2("cpu io memory pids");
        let dir = mnt.path().join("ci/builds");
        // The kernel makes a cgroup's files; here they are laid out by hand.
        make_v2_path(mnt.path(), &dir).expect("path");
        for (f, text) in [
            ("cgroup.procs", ""),
            ("cgroup.controllers", "memory pids"),
            ("cgroup.subtree_control", ""),
        ] {
            std::fs::write(dir.join(f), text).expect("write");
        }
        // Enabled on the way down, as runc does.
        let top = std::fs::read_to_string(mnt.path().join("cgroup.subtree_control"));
        assert_eq!(top.expect("read"), "+cpu +memory +pids");
        match prepare_v2(&dir, false) {
            Ok(Support::V2 {
                parent,
                controllers,
            }) => {
                assert_eq!(parent, dir);
                assert_eq!(controllers, ["memory", "pids"]);
            }
            other => panic!("{other:?}"),
        }
        // Not a cgroup kiln may write to: refused, saying so.
        let bare = mnt.path().join("ci/other");
        std::fs::create_dir(&bare).expect("mkdir");
        let why = prepare_v2(&bare, false).expect_err("refused");
        assert!(why.contains("is not writable by this user"), "{why}");
    }

    #[test]
    fn a_parent_where_no_cgroup_can_be_made_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        match detect_under(dir.path(), "/ci") {
            Support::Refused(why) => {
                assert!(why.starts_with("--cgroup-parent /ci: no cgroup"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // A v1 pids hierarchy the user cannot write to.
        let pids = dir.path().join("pids");
        std::fs::create_dir(&pids).expect("mkdir");
        std::fs::write(pids.join("cgroup.procs"), "").expect("write");
        match detect_under(dir.path(), "ci") {
            Support::Refused(why) => assert!(why.contains("not writable"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_hierarchy_is_unavailable_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        match detect(dir.path()) {
            Support::Unavailable(why) => assert!(why.contains("cgroup"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
