//! Building the sandbox's filesystem view inside its private mount namespace: the rootfs
//! (overlay or a plain directory), `/proc`, `/sys`, a minimal `/dev`, `/etc/hosts`,
//! `/etc/resolv.conf`, the RUN's extra mounts and files, then `pivot_root`.
//!
//! Runs in the sandbox's PID 1 (a single-threaded process). Mount targets inside the rootfs
//! are resolved and created by `mountpoint` (symlink-safe; created ones are returned as
//! [`Stub`]s so the caller removes them from the layer afterwards).
//!
//! Every filesystem mounted here but the host's `/dev/{null,zero,...}` binds is `nodev` (a
//! device node in an image or made by a build never opens a host device), and a read-only
//! bind is read-only all the way down (`mount_setattr` with `AT_RECURSIVE`: a plain
//! read-only remount would leave submounts such as `/sys/fs/cgroup` writable). The mount
//! calls themselves are in `mount`; `/proc`, `/sys` and `/dev` as a RUN sees them in
//! `kernel_fs`.
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MoveMountFlags, UnmountFlags};

use super::kernel_fs::{PROC_MASKED, PROC_READONLY, SYS_MASKED, mask, populate_dev};
use super::mount::{bind, mount, mount_overlay, set_mount_attrs};
use super::mountpoint::{Root, Want};
use super::protocol::{HelperRun, RootfsPlan, Stub};
use super::spec::{MountKind, MountSpec};
use super::step::{StepError, fail, fail_io, fd_path};
use super::trace::SetupTrace;

/// A private tmpfs over the RUN's scratch directory (hosts, resolv.conf, the rootfs mount
/// point, secrets, stage mounts): nothing of it reaches the disk, all of it vanishes with
/// the mount namespace.
/// `mounted`: the helper mounted it already, as real root (module `idmap`).
pub(crate) fn mount_scratch(run: &HelperRun, mounted: bool) -> Result<(), StepError> {
    if !mounted {
        mount_scratch_at(&run.scratch)?;
    }
    if let RootfsPlan::Overlay { target, .. } = &run.rootfs {
        std::fs::create_dir_all(target)
            .map_err(fail_io("scratch", format!("mkdir {}", target.display())))?;
    }
    Ok(())
}

/// The scratch tmpfs on `dir`, where kiln's own user namespace owns it (rootless; as real
/// root `idmap` mounts it for the sandbox's root).
pub(crate) fn mount_scratch_at(dir: &Path) -> Result<(), StepError> {
    mount(
        "tmpfs",
        &dir.to_string_lossy(),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        "mode=700",
        "scratch",
    )
}

/// The mount points every RUN needs ([`STUB_LAYER`]), as the bottom layer of an overlay
/// rootfs, on the scratch tmpfs: where the image lacks one, the overlay shows it from there
/// instead of the sandbox creating it in the RUN's layer directory (a copy-up of `/etc`,
/// two files and their removal afterwards, on the store's disk, for every RUN on an image
/// without `/etc/hosts`). At the bottom it changes nothing the image has: a directory the
/// image has keeps the image's attributes (an overlay takes a directory's from the
/// topmost layer holding it), a file or symlink the image has hides the stub, and where an
/// image's whiteout or opaque directory hides a stub, the sandbox creates the mount point
/// in the layer as before. Nothing of it reaches the layer: the RUN cannot write through
/// what is mounted over it.
pub(crate) fn add_stub_layer(run: &mut HelperRun) -> Result<(), StepError> {
    let RootfsPlan::Overlay { lowers, .. } = &mut run.rootfs else {
        return Ok(());
    };
    lowers.push(make_stub_layer(&run.scratch)?);
    Ok(())
}

/// Makes the stub layer ([`add_stub_layer`]) in `scratch` and returns its path.
pub(crate) fn make_stub_layer(scratch: &Path) -> Result<PathBuf, StepError> {
    let layer = scratch.join("stubs");
    for (path, dir) in STUB_LAYER {
        let p = layer.join(path);
        let made = if dir {
            std::fs::create_dir_all(&p)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&p)
                .map(drop)
        };
        made.map_err(fail_io("scratch", format!("create {}", p.display())))?;
        if dir {
            rustix::fs::chmod(&p, Mode::from_raw_mode(0o755))
                .map_err(fail("scratch", format!("chmod {}", p.display())))?;
        }
    }
    Ok(layer)
}

/// The stub layer's entries (path, is a directory), parents first: the mount points
/// `populate` always uses.
const STUB_LAYER: [(&str, bool); 6] = [
    ("proc", true),
    ("sys", true),
    ("dev", true),
    ("etc", true),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
];

/// Mount the root filesystem and return its host path.
pub(crate) fn mount_rootfs(plan: &RootfsPlan) -> Result<PathBuf, StepError> {
    match plan {
        RootfsPlan::Overlay {
            lowers,
            upper,
            work,
            target,
        } => {
            mount_overlay(lowers, upper, work, target)?;
            Ok(target.clone())
        }
        RootfsPlan::Dir { path } => {
            // pivot_root needs the new root to be a mount point.
            rustix::mount::mount_bind_recursive(path, path).map_err(fail(
                "rootfs",
                format!("bind {} onto itself", path.display()),
            ))?;
            let top = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(fail("rootfs", format!("open {}", path.display())))?;
            set_mount_attrs(&top, libc::MOUNT_ATTR_NODEV, "rootfs")?;
            Ok(path.clone())
        }
    }
}

/// The secrets of a RUN, opened by the helper while it is still in kiln's user namespace
/// (kiln hands them over as `/proc/<kiln>/fd/N` of a sealed memfd, which a process in
/// another user namespace may not open): mount target → open file.
#[derive(Default)]
pub(crate) struct Secrets(Vec<(String, OwnedFd)>);

impl Secrets {
    /// Opens every secret mount's source; call before leaving kiln's user namespace.
    pub(crate) fn open(run: &HelperRun) -> Result<Secrets, StepError> {
        let mut out = Vec::new();
        for m in &run.mounts {
            if let MountKind::Secret { host, .. } = &m.kind {
                let fd = rustix::fs::open(host, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(fail("mounts", format!("open the secret for {}", m.target)))?;
                out.push((m.target.clone(), fd));
            }
        }
        Ok(Secrets(out))
    }

    fn get(&self, target: &str) -> Option<&OwnedFd> {
        self.0.iter().find(|(t, _)| t == target).map(|(_, fd)| fd)
    }
}

/// Mount everything the process sees besides the rootfs itself. Returns the stubs created.
///
/// `prepared`: a directory holding `proc`, `sys` and `dev` mounted already as this RUN
/// would have them ([`prepare_kernel_fs`]), moved into place instead of mounted.
pub(crate) fn populate(
    root_path: &Path,
    run: &HelperRun,
    secrets: &Secrets,
    trace: &mut SetupTrace,
    prepared: Option<&Path>,
) -> Result<Vec<Stub>, StepError> {
    let mut root = Root::open(root_path)?;
    match prepared {
        Some(pre) => {
            for name in KERNEL_FS {
                let target = root.ensure(&format!("/{name}"), Want::Dir)?;
                // A move takes the mounts below along: the masks go with /proc and /sys.
                rustix::mount::move_mount(
                    CWD,
                    pre.join(name),
                    &target,
                    c"",
                    MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                )
                .map_err(fail("prepared", format!("move the prepared /{name}")))?;
            }
            trace.step("pid1: /proc, /sys, /dev (prepared)");
        }
        None => {
            mount_proc(&mut root, run.insecure)?;
            trace.step("pid1: /proc");
            mount_sys(&mut root, run.insecure)?;
            trace.step("pid1: /sys");
            mount_dev(&mut root, run.options.shm_size)?;
            trace.step("pid1: /dev");
        }
    }

    let hosts = run.scratch.join("hosts");
    let mut hosts_text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !hosts_text.is_empty() && !hosts_text.ends_with('\n') {
        hosts_text.push('\n');
    }
    if hosts_text.trim().is_empty() {
        hosts_text.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    if !run.hostname.is_empty() {
        hosts_text.push_str(&format!("127.0.0.1\t{}\n", run.hostname));
    }
    // `--add-host`, after the sandbox's own names as BuildKit writes them.
    for extra in &run.options.extra_hosts {
        hosts_text.push_str(&extra.hosts_line());
    }
    std::fs::write(&hosts, hosts_text)
        .map_err(fail_io("etc", format!("write {}", hosts.display())))?;
    let resolv = run.scratch.join("resolv.conf");
    let resolv_text = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(&resolv, resolv_text)
        .map_err(fail_io("etc", format!("write {}", resolv.display())))?;
    for (target, src) in [("/etc/hosts", &hosts), ("/etc/resolv.conf", &resolv)] {
        let fd = root.ensure(target, Want::File)?;
        bind(
            &src.to_string_lossy(),
            &fd,
            true,
            &|| root.reopen(target),
            "etc",
        )?;
    }

    trace.step("pid1: /etc/hosts, /etc/resolv.conf");
    let mut mounts: Vec<&MountSpec> = run.mounts.iter().collect();
    // Parents before children, so a mount inside another mount lands on top of it.
    mounts.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
    for (i, m) in mounts.iter().enumerate() {
        extra_mount(&mut root, m, &run.scratch.join(format!("mnt{i}")), secrets)?;
    }
    for (target, src, _mode) in &run.files {
        let fd = root.ensure(target, Want::File)?;
        bind(
            &src.to_string_lossy(),
            &fd,
            true,
            &|| root.reopen(target),
            "files",
        )?;
    }
    trace.step("pid1: RUN mounts, files");
    Ok(root.stubs)
}

/// The kernel's filesystems every RUN gets, by their mount points.
const KERNEL_FS: [&str; 3] = ["proc", "sys", "dev"];

/// Mounts `proc`, `sys` and `dev` under `pre` (a directory on the scratch tmpfs) exactly
/// as [`populate`] mounts them for a RUN that is not insecure, for a sandbox prepared
/// before its request (module `prepared`): [`populate`] moves them into the rootfs.
pub(crate) fn prepare_kernel_fs(pre: &Path, shm_size: Option<u64>) -> Result<(), StepError> {
    for name in KERNEL_FS {
        let dir = pre.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(fail_io("prepared", format!("mkdir {}", dir.display())))?;
    }
    let mut root = Root::open(pre)?;
    mount_proc(&mut root, false)?;
    mount_sys(&mut root, false)?;
    mount_dev(&mut root, shm_size)
}

/// `/proc`: the PID namespace's procfs, masked as Docker's default unless `insecure`.
fn mount_proc(root: &mut Root, insecure: bool) -> Result<(), StepError> {
    let nse = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc_fd = root.ensure("/proc", Want::Dir)?;
    let proc_target = fd_path(&proc_fd);
    match rustix::mount::mount("proc", proc_target.as_str(), "proc", nse, c"") {
        Ok(()) => {}
        // A host /proc with masked sub-mounts makes a fresh procfs "too revealing".
        Err(Errno::PERM) => bind("/proc", &proc_fd, true, &|| root.reopen("/proc"), "proc")?,
        Err(e) => return Err(fail("proc", "mount proc")(e)),
    }
    // --security=insecure unmasks, as a privileged container does.
    if !insecure {
        mask(&root.reopen("/proc")?, PROC_READONLY, PROC_MASKED, "proc")?;
    }
    Ok(())
}

/// `/sys`, read-only, masked as Docker's default unless `insecure`.
fn mount_sys(root: &mut Root, insecure: bool) -> Result<(), StepError> {
    let nse = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let sys_fd = root.ensure("/sys", Want::Dir)?;
    let sys_target = fd_path(&sys_fd);
    if rustix::mount::mount(
        "sysfs",
        sys_target.as_str(),
        "sysfs",
        nse | MountFlags::RDONLY,
        c"",
    )
    .is_err()
    {
        // sysfs needs a network namespace of our own; otherwise show the host's, read-only.
        bind("/sys", &sys_fd, true, &|| root.reopen("/sys"), "sys")?;
    }
    if !insecure {
        mask(&root.reopen("/sys")?, &[], SYS_MASKED, "sys")?;
    }
    Ok(())
}

/// `/dev`: a tmpfs with the harmless host devices bound in (`kernel_fs`).
fn mount_dev(root: &mut Root, shm_size: Option<u64>) -> Result<(), StepError> {
    let dev_fd = root.ensure("/dev", Want::Dir)?;
    mount(
        "tmpfs",
        &fd_path(&dev_fd),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
        "dev",
    )?;
    populate_dev(root, shm_size)
}

fn extra_mount(
    root: &mut Root,
    m: &MountSpec,
    scratch: &Path,
    secrets: &Secrets,
) -> Result<(), StepError> {
    const STEP: &str = "mounts";
    let is_file = match &m.kind {
        MountKind::Secret { .. } => true,
        MountKind::Bind { host, .. } => !host.is_dir(),
        _ => false,
    };
    let fd = root.ensure(&m.target, if is_file { Want::File } else { Want::Dir })?;
    let target = fd_path(&fd);
    let root = &*root;
    let reopen = || root.reopen(&m.target);
    match &m.kind {
        MountKind::Bind { host, readonly } => {
            bind(&host.to_string_lossy(), &fd, *readonly, &reopen, STEP)
        }
        MountKind::Cache { host } => bind(&host.to_string_lossy(), &fd, false, &reopen, STEP),
        MountKind::Tmpfs { size } => {
            let data = size.map(|s| format!("size={s}")).unwrap_or_default();
            mount(
                "tmpfs",
                &target,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                &data,
                STEP,
            )
        }
        MountKind::Secret { mode, uid, gid, .. } => {
            // The secret lives in a private tmpfs, never on disk in the rootfs.
            std::fs::create_dir_all(scratch)
                .map_err(fail_io(STEP, format!("mkdir {}", scratch.display())))?;
            let s = scratch.to_string_lossy();
            mount(
                "tmpfs",
                &s,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                "mode=700",
                STEP,
            )?;
            let file = scratch.join("secret");
            let src = secrets.get(&m.target).ok_or_else(|| StepError {
                step: STEP,
                message: format!("the secret for {} was not opened", m.target),
            })?;
            // A fresh open of the source (not a dup), so the offset is this read's own.
            let copied = std::fs::File::open(fd_path(src)).and_then(|mut input| {
                let mut output = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file)?;
                std::io::copy(&mut input, &mut output)
            });
            copied.map_err(fail_io(STEP, format!("copy the secret for {}", m.target)))?;
            rustix::fs::chown(
                &file,
                Some(rustix::fs::Uid::from_raw(*uid)),
                Some(rustix::fs::Gid::from_raw(*gid)),
            )
            .map_err(fail(STEP, format!("chown secret for {}", m.target)))?;
            rustix::fs::chmod(&file, Mode::from_raw_mode(*mode))
                .map_err(fail(STEP, "chmod secret"))?;
            bind(&file.to_string_lossy(), &fd, true, &reopen, STEP)
        }
        MountKind::Layers { lowers, readonly } => {
            std::fs::create_dir_all(scratch)
                .map_err(fail_io(STEP, format!("mkdir {}", scratch.display())))?;
            let top_first: Vec<PathBuf> = lowers.iter().rev().cloned().collect();
            if *readonly && top_first.len() == 1 {
                return bind(&top_first[0].to_string_lossy(), &fd, true, &reopen, STEP);
            }
            // Writes to a stage mount are discarded: the upper is in a throwaway tmpfs.
            let s = scratch.to_string_lossy();
            mount("tmpfs", &s, "tmpfs", MountFlags::empty(), "mode=755", STEP)?;
            let (upper, work, empty) = (
                scratch.join("upper"),
                scratch.join("work"),
                scratch.join("empty"),
            );
            for d in [&upper, &work, &empty] {
                std::fs::create_dir(d).map_err(fail_io(STEP, format!("mkdir {}", d.display())))?;
            }
            let lowers = if top_first.is_empty() {
                vec![empty]
            } else {
                top_first
            };
            let merged = scratch.join("merged");
            std::fs::create_dir(&merged)
                .map_err(fail_io(STEP, format!("mkdir {}", merged.display())))?;
            mount_overlay(&lowers, &upper, &work, &merged)?;
            bind(&merged.to_string_lossy(), &fd, *readonly, &reopen, STEP)
        }
    }
}

/// Make the rootfs `/`, detaching the old root entirely.
pub(crate) fn pivot(root: &Path) -> Result<(), StepError> {
    const STEP: &str = "pivot_root";
    rustix::process::chdir(root).map_err(fail(STEP, format!("chdir {}", root.display())))?;
    rustix::process::pivot_root(".", ".")
        .map_err(fail(STEP, format!("pivot_root {}", root.display())))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(fail(STEP, "detach old root"))?;
    rustix::process::chdir("/").map_err(fail(STEP, "chdir /"))
}
