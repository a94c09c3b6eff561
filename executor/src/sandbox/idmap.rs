//! The user namespace of a real-root build's sandbox: an unprivileged ID range, and
//! idmapped views of the host paths the sandbox is given.
//!
//! Rootless kiln is already in a user namespace of its own, mapped to the user's
//! subordinate range, and its sandboxes live inside it. Real root has none. A sandbox in a
//! user namespace with the identity mapping scopes its capabilities to the build's own
//! namespaces, but its uid 0 is still the host's uid 0 wherever the kernel checks a uid
//! rather than a capability: the peer credentials of a Unix socket (a host service on an
//! abstract socket, over the default host network, trusting uid 0), signals, keyrings. So a
//! real-root sandbox's IDs 0..N are host IDs BASE..BASE+N of an unprivileged range
//! ([`range`]): to the host, the RUN is nobody in particular, as a rootless build is.
//!
//! Files keep their owners: every host path the sandbox is given (layer directories, the
//! upper and work directories, cache, bind and stage sources, generated files) is shown
//! through an idmapped mount of the sandbox's user namespace (`MOUNT_ATTR_IDMAP`), so a
//! file owned by uid k on disk is uid k inside, and a file the RUN creates as uid k is
//! stored as uid k: layers are byte for byte what the identity mapping gives. `kiln run -v`
//! directories too: the process's root acts as the invoking user on what that user shared
//! with it, as it does rootless.
//!
//! The order is what the kernel demands. Only root of the filesystem's user namespace (the
//! initial one) may idmap a mount, and only a detached one; and once in its namespace the
//! sandbox cannot walk host paths through root-only directories (the store root is 0700).
//! So the helper, still real root: takes the namespace the zygote made for every RUN (or
//! makes one: a child unshares it, the helper writes its maps), unshares a mount namespace
//! of its own, clones each host path as a detached mount and idmaps it, mounts the RUN's
//! scratch tmpfs (owned by the namespace's root) and attaches the clones under it,
//! changes directory into it, and joins the
//! namespace. Its next `unshare(CLONE_NEWNS)` carries the working directory over to the
//! copy of the scratch mount; every host path is then rewritten to
//! `/proc/self/fd/<scratch>/idmap/<n>/...`, reached without walking host directories.
//!
//! Where the filesystem cannot be idmapped (overlayfs, e.g. kiln as root inside a
//! container; NFS), the sandbox keeps the identity mapping and kiln says so once.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MoveMountFlags, OpenTreeFlags};
use rustix::process::{Pid, WaitOptions};
use rustix::thread::UnshareFlags;

use super::process::{errno, fork, unshare};
use super::protocol::{HelperRun, RootfsPlan};
use super::spec::MountKind;
use super::step::{StepError, fail};

/// An ID range of the host: sandbox IDs `0..count` are host uids `uid..uid+count` and gids
/// `gid..gid+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

/// Without an entry for root in /etc/subuid and /etc/subgid: the upper half of the ID
/// space, 2^31..2^32-2 (2^32-1 is the invalid ID). No account is ever given such an ID
/// (useradd and systemd allocate far below it), and its size keeps every uid an image
/// may use below 2^31 mapped.
const DEFAULT_RANGE: Range = Range {
    uid: 1 << 31,
    gid: 1 << 31,
    count: (1 << 31) - 1,
};

/// The host IDs of a real-root sandbox: root's range in /etc/subuid and /etc/subgid when
/// the administrator gave it one (`root:BASE:COUNT`), else [`DEFAULT_RANGE`].
pub(crate) fn range() -> Range {
    let entry = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| crate::userns::find_subid_range(&t, "root", 0))
    };
    range_from(entry("/etc/subuid"), entry("/etc/subgid"))
}

fn range_from(subuid: Option<(u32, u32)>, subgid: Option<(u32, u32)>) -> Range {
    match (subuid, subgid) {
        (Some((uid, uc)), Some((gid, gc))) if uid > 0 && gid > 0 => Range {
            uid,
            gid,
            count: uc.min(gc),
        },
        _ => DEFAULT_RANGE,
    }
}

/// How the helper entered the sandbox's user namespace.
pub(crate) enum Entered {
    /// Rootless: kiln's own user namespace, nothing done.
    Inherited,
    /// Real root with an unprivileged range; call [`Entered::rebase`] right after the next
    /// `unshare(CLONE_NEWNS)`.
    Shifted { roots: Vec<PathBuf> },
    /// Real root with the identity mapping, because the paths could not be idmapped (why).
    Identity(String),
}

impl Entered {
    /// Whether the RUN's scratch tmpfs is mounted already.
    pub(crate) fn scratch_mounted(&self) -> bool {
        matches!(self, Entered::Shifted { .. })
    }

    /// After `unshare(CLONE_NEWNS)`: opens the working directory (the scratch mount's copy
    /// in the new mount namespace) and rewrites every host path of `run` to go through it.
    /// The descriptor stays open for the sandbox's life (PID 1 inherits it).
    pub(crate) fn rebase(&self, run: &mut HelperRun) -> Result<(), StepError> {
        if !matches!(self, Entered::Shifted { .. }) {
            return Ok(());
        }
        let base = open_base()?;
        self.rebase_onto(run, &base)
    }

    /// Rewrites `run` for a sandbox whose scratch mount is `base`: every host path through
    /// its idmapped view under `base` (real root), and the scratch directory and the
    /// overlay's mount point to `base`. A host path no view serves is an error.
    pub(crate) fn rebase_onto(&self, run: &mut HelperRun, base: &Path) -> Result<(), StepError> {
        if let Entered::Shifted { roots } = self {
            for p in host_paths(run) {
                // The root clone_roots chose for it (the longest, see served_by).
                let found = longest_root(roots.iter().map(|r| (r.as_path(), ())), p);
                let Some((n, rel)) = found.and_then(|(n, (r, ()))| {
                    p.strip_prefix(r).ok().map(|rel| (n, rel.to_path_buf()))
                }) else {
                    return Err(StepError {
                        step: STEP,
                        message: format!("{} has no idmapped view", p.display()),
                    });
                };
                *p = if rel.as_os_str().is_empty() {
                    base.join("idmap").join(n.to_string())
                } else {
                    base.join("idmap").join(n.to_string()).join(rel)
                };
            }
        }
        let scratch = std::mem::take(&mut run.scratch);
        if let RootfsPlan::Overlay { target, .. } = &mut run.rootfs
            && let Ok(rel) = target.strip_prefix(&scratch)
        {
            *target = base.join(rel);
        }
        run.scratch = base.to_path_buf();
        Ok(())
    }
}

/// After `unshare(CLONE_NEWNS)` of a [`Entered::Shifted`] helper: its working directory
/// (the scratch mount's copy in the new mount namespace), as a `/proc/self/fd` path. The
/// descriptor is never closed: the paths below it name it until the sandbox is gone.
pub(crate) fn open_base() -> Result<PathBuf, StepError> {
    let dir = rustix::fs::open(".", OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(fail(STEP, "open the scratch directory"))?;
    Ok(PathBuf::from(format!(
        "/proc/self/fd/{}",
        dir.into_raw_fd()
    )))
}

/// Every host path of `run` the sandbox opens after it has entered its user namespace, for
/// a caller that only reads them (module `prepared`).
pub(crate) fn host_paths_of(run: &HelperRun) -> Vec<PathBuf> {
    let mut run = run.clone();
    host_paths(&mut run)
        .into_iter()
        .map(|p| p.clone())
        .collect()
}

const STEP: &str = "user-namespace";

/// Every host path of `run` the sandbox opens after it has entered its user namespace
/// (secrets are opened before, scratch paths are rewritten separately).
fn host_paths(run: &mut HelperRun) -> Vec<&mut PathBuf> {
    let mut out: Vec<&mut PathBuf> = Vec::new();
    match &mut run.rootfs {
        RootfsPlan::Overlay {
            lowers,
            upper,
            work,
            ..
        } => {
            out.extend(lowers.iter_mut());
            out.push(upper);
            out.push(work);
        }
        RootfsPlan::Dir { path } => out.push(path),
    }
    for m in &mut run.mounts {
        match &mut m.kind {
            MountKind::Bind { host, .. } | MountKind::Cache { host } => out.push(host),
            MountKind::Layers { lowers, .. } => out.extend(lowers.iter_mut()),
            MountKind::Tmpfs { .. } | MountKind::Secret { .. } => {}
        }
    }
    out.extend(run.files.iter_mut().map(|(_, host, _)| host));
    out
}

/// The paths to clone: each host path, but the overlay's upper and work directories as
/// their common parent (overlayfs wants them on one mount), and layer directories as their
/// parent (the store keeps them side by side: one clone for all, not one per layer). A path
/// below another root and on its mount is served by it; a clone does not take the mounts
/// below it, so a path on another mount (a context directory can be a mount point of its
/// own) is a root of its own, and a path is served by the longest root it lies in
/// ([`served_by`]). The clones are seen only by the helper and PID 1 before it pivots,
/// never by the RUN.
pub(crate) fn clone_roots(run: &mut HelperRun) -> Vec<PathBuf> {
    let mut roots: Vec<(PathBuf, Option<u64>)> = Vec::new();
    let mut lowers: Vec<PathBuf> = Vec::new();
    if let RootfsPlan::Overlay {
        upper,
        work,
        lowers: l,
        ..
    } = &run.rootfs
    {
        let root = common_parent(upper, work);
        let id = mount_id(&root);
        roots.push((root, id));
        lowers.extend(l.iter().cloned());
    }
    for m in &run.mounts {
        if let MountKind::Layers { lowers: l, .. } = &m.kind {
            lowers.extend(l.iter().cloned());
        }
    }
    for p in lowers {
        let id = mount_id(&p);
        if served_by(&roots, &p, id).is_some() {
            continue;
        }
        let root = match p.parent() {
            Some(parent) if id.is_some() && mount_id(parent) == id => parent.to_path_buf(),
            _ => p,
        };
        if served_by(&roots, &root, id).is_none() && !roots.iter().any(|(r, _)| *r == root) {
            roots.push((root, id));
        }
    }
    for p in host_paths(run) {
        let id = mount_id(p);
        // A path that cannot be looked at is cloned by itself (the clone says why not).
        if served_by(&roots, p, id).is_none() && !roots.iter().any(|(r, _)| r == p) {
            roots.push((p.clone(), id));
        }
    }
    roots.into_iter().map(|(root, _)| root).collect()
}

/// The root of `roots` (each with its mount) that serves `path`, on mount `id`: the longest
/// one it lies in, when `path` is on that root's mount (an unknown mount serves nothing).
pub(crate) fn served_by<P: AsRef<Path>>(
    roots: &[(P, Option<u64>)],
    path: &Path,
    id: Option<u64>,
) -> Option<usize> {
    let (n, (_, root_id)) = longest_root(roots.iter().map(|(r, id)| (r.as_ref(), id)), path)?;
    (id.is_some() && *root_id == id).then_some(n)
}

/// The longest of `roots` that `path` lies in, with its index.
fn longest_root<'a, T>(
    roots: impl Iterator<Item = (&'a Path, T)>,
    path: &Path,
) -> Option<(usize, (&'a Path, T))> {
    roots
        .enumerate()
        .filter(|(_, (r, _))| path.starts_with(r))
        .max_by_key(|(_, (r, _))| r.as_os_str().len())
}

/// The ID of the mount `p` is on (`None`: unknown).
pub(crate) fn mount_id(p: &Path) -> Option<u64> {
    rustix::fs::statx(
        CWD,
        p,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .ok()
    .filter(|s| s.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0)
    .map(|s| s.stx_mnt_id)
}

fn common_parent(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// Enter the sandbox's user namespace (see the module doc); `run`'s paths are rewritten
/// by [`Entered::rebase`] after the caller's next `unshare(CLONE_NEWNS)`.
///
/// `shared`: the build's namespace the zygote made with [`make_userns`] for every RUN
/// (its network namespaces belong to it); `None` makes one for this RUN alone.
pub(crate) fn enter(run: &mut HelperRun, shared: Option<OwnedFd>) -> Result<Entered, StepError> {
    if !crate::userns::is_real_root() {
        return Ok(Entered::Inherited);
    }
    let roots = clone_roots(run);
    enter_roots(roots, &run.scratch, shared)
}

/// [`enter`] with the views of `roots` (see [`clone_roots`]) and the scratch tmpfs on
/// `scratch`: a sandbox prepared before its request knows its roots, not its paths.
pub(crate) fn enter_roots(
    roots: Vec<PathBuf>,
    scratch: &Path,
    shared: Option<OwnedFd>,
) -> Result<Entered, StepError> {
    if !crate::userns::is_real_root() {
        return Ok(Entered::Inherited);
    }
    let range = range();
    let userns = match shared {
        Some(fd) => fd,
        None => make_userns(range)?,
    };
    // The clones and the scratch mount live in a mount namespace of the helper's own.
    unshare(UnshareFlags::NEWNS, STEP)?;
    super::mount::make_private()?;
    let mut clones = Vec::with_capacity(roots.len());
    for root in &roots {
        match idmapped_clone(root, &userns) {
            Ok(c) => clones.push(c),
            Err(CloneError::Unsupported(why)) => {
                drop(clones);
                enter_identity()?;
                return Ok(Entered::Identity(format!("{}: {why}", root.display())));
            }
            Err(CloneError::Failed(e)) => {
                return Err(fail(STEP, format!("clone {}", root.display()))(e));
            }
        }
    }
    mount_scratch(scratch, range)?;
    let idmap = scratch.join("idmap");
    std::fs::create_dir(&idmap).map_err(|e| StepError {
        step: STEP,
        message: format!("mkdir {}: {e}", idmap.display()),
    })?;
    // The sandbox's root must be able to walk it, whatever kiln's umask.
    rustix::fs::chown(
        &idmap,
        Some(rustix::fs::Uid::from_raw(range.uid)),
        Some(rustix::fs::Gid::from_raw(range.gid)),
    )
    .map_err(fail(STEP, format!("chown {}", idmap.display())))?;
    for (n, (root, clone)) in roots.iter().zip(clones).enumerate() {
        let at = idmap.join(n.to_string());
        let made = if root.is_dir() {
            std::fs::create_dir(&at)
        } else {
            std::fs::File::create(&at).map(drop)
        };
        made.map_err(|e| StepError {
            step: STEP,
            message: format!("mount point {}: {e}", at.display()),
        })?;
        rustix::mount::move_mount(
            clone.as_fd(),
            c"",
            CWD,
            &at,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(fail(STEP, format!("attach the view of {}", root.display())))?;
    }
    rustix::process::chdir(scratch).map_err(fail(STEP, "chdir to the scratch mount"))?;
    let kiln = rustix::process::getppid();
    rustix::thread::move_into_link_name_space(
        userns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .map_err(fail(STEP, "join the sandbox's user namespace"))?;
    // Joining keeps the host's root IDs, which the namespace does not map: become its root.
    // SAFETY: plain ID syscalls of a single-threaded process; no pointers but a null list.
    let ids = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(0, 0, 0) == 0
            && libc::setresuid(0, 0, 0) == 0
    };
    if !ids {
        return Err(fail(STEP, "become root of the sandbox's user namespace")(
            Errno::from_raw_os_error(errno()),
        ));
    }
    // A change of credentials clears the parent-death signal: arm it again, and make sure
    // kiln did not die in between (the helper would then outlive it).
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid() != kiln {
        return Err(StepError {
            step: STEP,
            message: "kiln exited".into(),
        });
    }
    Ok(Entered::Shifted { roots })
}

/// Enter a user namespace for `dir` alone, as a RUN would (the overlay probe): `dir` is
/// replaced by its idmapped view.
pub(crate) fn enter_for_probe(dir: &mut PathBuf) -> Result<Entered, StepError> {
    let mut run = HelperRun::bare(RootfsPlan::Dir { path: dir.clone() }, dir.join("scratch"));
    std::fs::create_dir_all(&run.scratch).map_err(|e| StepError {
        step: "probe",
        message: format!("mkdir {}: {e}", run.scratch.display()),
    })?;
    let entered = enter(&mut run, None)?;
    unshare(UnshareFlags::NEWNS, STEP)?;
    entered.rebase(&mut run)?;
    if let RootfsPlan::Dir { path } = run.rootfs {
        *dir = path;
    }
    Ok(entered)
}

/// As real root where the store cannot be idmapped (`idmap`'s module doc), move into a new
/// user namespace with the identity mapping, so that the sandbox's capabilities are at
/// least scoped to namespaces it owns.
///
/// A process cannot write a full mapping for itself once it has left the parent namespace,
/// so a child forked beforehand (still real root outside) writes it.
fn enter_identity() -> Result<(), StepError> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let (go_r, go_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail(STEP, "pipe"))?;
    let child = fork(STEP)?;
    if child == 0 {
        drop(go_w);
        let mut go = [0u8; 1];
        let ok = matches!(rustix::io::read(&go_r, &mut go), Ok(1)) && go[0] == b'1';
        let mapped = ok
            && ["uid_map", "gid_map"]
                .iter()
                .all(|f| std::fs::write(format!("/proc/{me}/{f}"), "0 0 4294967295\n").is_ok());
        // SAFETY: leave the forked child at once, running nothing of the parent's state.
        unsafe { libc::_exit(if mapped { 0 } else { 1 }) };
    }
    drop(go_r);
    let unshared = unshare(UnshareFlags::NEWUSER, STEP);
    let _ = rustix::io::write(&go_w, if unshared.is_ok() { b"1" } else { b"0" });
    drop(go_w);
    let status = loop {
        match rustix::process::waitpid(Pid::from_raw(child), WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(fail(STEP, "wait for the ID mapper")(e)),
        }
    };
    unshared?;
    if status.exit_status() != Some(0) {
        return Err(StepError {
            step: STEP,
            message: "writing the identity uid_map/gid_map of the sandbox failed".into(),
        });
    }
    Ok(())
}

enum CloneError {
    /// The path's filesystem does not allow idmapped mounts (why).
    Unsupported(String),
    Failed(Errno),
}

/// A detached clone of the mount at `path` (that directory or file only), idmapped with
/// `userns`.
fn idmapped_clone(path: &Path, userns: &OwnedFd) -> Result<OwnedFd, CloneError> {
    let tree = match rustix::mount::open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    ) {
        Ok(t) => t,
        Err(e) => return Err(CloneError::Failed(e)),
    };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr(2) reads `size_of::<mount_attr>()` bytes from a live struct and
    // a NUL-terminated empty path; `tree` is an open descriptor we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        let e = Errno::from_raw_os_error(errno());
        // EINVAL: the filesystem type has no idmapped mounts (overlayfs, NFS, ...).
        return if e == Errno::INVAL {
            Err(CloneError::Unsupported(format!(
                "its filesystem does not support idmapped mounts ({e})"
            )))
        } else {
            Err(CloneError::Failed(e))
        };
    }
    Ok(tree)
}

/// The RUN's scratch tmpfs, made by real root for the sandbox's root (`range`'s first IDs).
fn mount_scratch(scratch: &Path, range: Range) -> Result<(), StepError> {
    let data = format!("mode=700,uid={},gid={}", range.uid, range.gid);
    let data = std::ffi::CString::new(data).map_err(|_| StepError {
        step: STEP,
        message: "scratch mount options".into(),
    })?;
    rustix::mount::mount(
        "tmpfs",
        scratch,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(fail(STEP, format!("mount tmpfs on {}", scratch.display())))
}

/// A new user namespace with `range`'s maps, as a descriptor: a child unshares it and
/// waits while the helper (or the zygote) writes its maps and opens it, then exits.
pub(crate) fn make_userns(range: Range) -> Result<OwnedFd, StepError> {
    let (ready_r, ready_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail(STEP, "pipe"))?;
    let (done_r, done_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail(STEP, "pipe"))?;
    let child = fork(STEP)?;
    if child == 0 {
        drop(ready_r);
        drop(done_w);
        // SAFETY: the helper is single-threaded; the child touches nothing shared.
        let ok = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER) }.is_ok();
        let _ = rustix::io::write(&ready_w, if ok { b"1" } else { b"0" });
        let mut b = [0u8; 1];
        // Until the helper has the namespace open (or gives up): EOF.
        let _ = rustix::io::read(&done_r, &mut b);
        // SAFETY: leave the forked child at once, running nothing of the parent's state.
        unsafe { libc::_exit(0) };
    }
    drop(ready_w);
    drop(done_r);
    let mut b = [0u8; 1];
    let unshared = matches!(rustix::io::read(&ready_r, &mut b), Ok(1)) && b[0] == b'1';
    let made = if unshared {
        let maps = [
            ("uid_map", format!("0 {} {}\n", range.uid, range.count)),
            ("gid_map", format!("0 {} {}\n", range.gid, range.count)),
        ];
        maps.iter()
            .try_for_each(|(f, m)| std::fs::write(format!("/proc/{child}/{f}"), m))
            .map_err(|e| StepError {
                step: STEP,
                message: format!(
                    "mapping the sandbox to host IDs {}..{}: {e}",
                    range.uid,
                    u64::from(range.uid) + u64::from(range.count)
                ),
            })
            .and_then(|()| {
                rustix::fs::open(
                    format!("/proc/{child}/ns/user"),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail(STEP, "open the sandbox's user namespace"))
            })
    } else {
        Err(StepError {
            step: STEP,
            message: "unshare(CLONE_NEWUSER) failed in the namespace maker".into(),
        })
    };
    drop(done_w);
    while let Err(Errno::INTR) =
        rustix::process::waitpid(Pid::from_raw(child), WaitOptions::empty())
    {}
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_range_is_used_only_when_both_files_give_one() {
        assert_eq!(
            range_from(Some((100000, 65536)), Some((200000, 70000))),
            Range {
                uid: 100000,
                gid: 200000,
                count: 65536
            }
        );
        assert_eq!(range_from(Some((100000, 65536)), None), DEFAULT_RANGE);
        assert_eq!(range_from(None, None), DEFAULT_RANGE);
        // A range starting at 0 would map the sandbox's root to the host's.
        assert_eq!(
            range_from(Some((0, 65536)), Some((0, 65536))),
            DEFAULT_RANGE
        );
        assert_eq!(
            u64::from(DEFAULT_RANGE.uid) + u64::from(DEFAULT_RANGE.count),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn upper_and_work_share_one_clone_and_paths_below_a_root_reuse_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = tmp.path();
        for d in [
            "layers/a",
            "layers/b",
            "tmp/r1/upper",
            "tmp/r1/work/ovl",
            "tmp/r1/work/files",
        ] {
            std::fs::create_dir_all(s.join(d)).expect("mkdir");
        }
        let mut run = HelperRun::bare(
            RootfsPlan::Overlay {
                lowers: vec![s.join("layers/b"), s.join("layers/a")],
                upper: s.join("tmp/r1/upper"),
                work: s.join("tmp/r1/work/ovl"),
                target: s.join("tmp/r1/work/scratch/merged"),
            },
            s.join("tmp/r1/work/scratch"),
        );
        run.files = vec![("/x".into(), s.join("tmp/r1/work/files/file0"), 0o644)];
        std::fs::write(s.join("tmp/r1/work/files/file0"), "x").expect("write");
        assert_eq!(clone_roots(&mut run), [s.join("tmp/r1"), s.join("layers")]);
        // A layer directory that is not there (so not known to share its parent's mount)
        // is cloned by itself.
        if let RootfsPlan::Overlay { lowers, .. } = &mut run.rootfs {
            lowers.push(s.join("gone/c"));
        }
        assert_eq!(
            clone_roots(&mut run),
            [s.join("tmp/r1"), s.join("layers"), s.join("gone/c")]
        );
    }

    #[test]
    fn a_path_on_another_mount_below_a_root_is_a_root_of_its_own() {
        // /sys/fs/cgroup is a mount below /sys on most machines (not in every container).
        let (sys, cgroup) = (Path::new("/sys"), Path::new("/sys/fs/cgroup"));
        if mount_id(sys).is_none() || mount_id(cgroup) == mount_id(sys) {
            eprintln!("note: /sys/fs/cgroup is not a mount of its own here; nothing to check");
            return;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = tmp.path();
        std::fs::create_dir_all(s.join("r1/ovl")).expect("mkdir");
        std::fs::create_dir_all(s.join("r1/upper")).expect("mkdir");
        let mut run = HelperRun::bare(
            RootfsPlan::Overlay {
                lowers: vec![PathBuf::from("/sys/kernel"), cgroup.to_path_buf()],
                upper: s.join("r1/upper"),
                work: s.join("r1/ovl"),
                target: s.join("r1/scratch/merged"),
            },
            s.join("r1/scratch"),
        );
        // A clone of /sys would show the empty directory the cgroup mount covers.
        let roots = clone_roots(&mut run);
        assert_eq!(
            roots,
            [s.join("r1"), sys.to_path_buf(), cgroup.to_path_buf()]
        );
        let with_ids: Vec<(PathBuf, Option<u64>)> =
            roots.iter().map(|r| (r.clone(), mount_id(r))).collect();
        assert_eq!(served_by(&with_ids, cgroup, mount_id(cgroup)), Some(2));
        assert_eq!(
            served_by(
                &with_ids,
                Path::new("/sys/kernel"),
                mount_id(Path::new("/sys/kernel"))
            ),
            Some(1)
        );
        // Below a root but on another mount than it: served by none.
        assert_eq!(served_by(&with_ids[..2], cgroup, mount_id(cgroup)), None);
    }
}
