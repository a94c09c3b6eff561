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
//! read-only remount would leave submounts such as `/sys/fs/cgroup` writable).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    UnmountFlags,
};

use super::mountpoint::{Root, Want};
use super::protocol::{HelperRun, RootfsPlan, Stub};
use super::step::{StepError, fail, fail_io, fd_path};
use super::{MountKind, MountSpec};

fn cstr(s: &str) -> CString {
    // Mount option strings we build never contain NUL; user paths go through fds.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: &str,
    step: &'static str,
) -> Result<(), StepError> {
    let data = cstr(data);
    rustix::mount::mount(src, target, fstype, flags, data.as_c_str())
        .map_err(fail(step, format!("mount {fstype} {src} on {target}")))
}

/// Make every mount in our namespace private so nothing propagates back to the host.
pub(crate) fn make_private() -> Result<(), StepError> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(fail("mount-namespace", "make / rprivate"))
}

/// A private tmpfs over the RUN's scratch directory (hosts, resolv.conf, the rootfs mount
/// point, secrets, stage mounts): nothing of it reaches the disk, all of it vanishes with
/// the mount namespace.
/// `mounted`: the helper mounted it already, as real root (module `idmap`).
pub(crate) fn mount_scratch(run: &HelperRun, mounted: bool) -> Result<(), StepError> {
    if !mounted {
        let s = run.scratch.to_string_lossy();
        mount(
            "tmpfs",
            &s,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=700",
            "scratch",
        )?;
    }
    if let RootfsPlan::Overlay { target, .. } = &run.rootfs {
        std::fs::create_dir_all(target)
            .map_err(fail_io("scratch", format!("mkdir {}", target.display())))?;
    }
    Ok(())
}

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

/// Mount overlayfs with `userxattr` (lowers top-most first) at `target`.
///
/// Uses the new mount API with one `lowerdir+` per layer (no 4 KiB option-string limit, no
/// escaping of `,` and `:` in paths); falls back to the option string on kernels before 6.8.
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), StepError> {
    const STEP: &str = "overlay";
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(fail(STEP, "fsopen overlay"))?;
    let mut legacy = false;
    for l in lowers {
        match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l) {
            Ok(()) => {}
            Err(Errno::INVAL) if !legacy => {
                legacy = true;
                break;
            }
            Err(e) => return Err(fail(STEP, format!("lower layer {}", l.display()))(e)),
        }
    }
    if legacy {
        let esc = |p: &Path| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
                .replace(',', "\\,")
        };
        let lower: Vec<String> = lowers.iter().map(|p| esc(p)).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lower.join(":"),
            esc(upper),
            esc(work)
        );
        return mount(
            "overlay",
            &target.to_string_lossy(),
            "overlay",
            MountFlags::NODEV,
            &data,
            STEP,
        );
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)
        .map_err(fail(STEP, format!("upperdir {}", upper.display())))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work)
        .map_err(fail(STEP, format!("workdir {}", work.display())))?;
    rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(fail(STEP, "option userxattr"))?;
    rustix::mount::fsconfig_create(&fs).map_err(|e| StepError {
        step: STEP,
        message: format!(
            "create overlay (upper {}): {e}{}",
            upper.display(),
            fs_log(&fs)
        ),
    })?;
    let mnt = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(fail(STEP, "fsmount overlay"))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail(
        STEP,
        format!("attach overlay at {}", target.display()),
    ))
}

/// The kernel's messages for a failed fsconfig, if any.
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        out.push_str(" (");
        out.push_str(String::from_utf8_lossy(&buf[..n]).trim());
        out.push(')');
    }
    out
}

/// Bind `src` (a host path, with everything mounted below it) onto `target` (an
/// fd-resolved mount point): `nodev`, and read-only throughout if asked. The attributes must
/// act on the new mounts, so the target is resolved again through `reopen` (a path through
/// the old fd would name the covered mount point).
fn bind(
    src: &str,
    target: &OwnedFd,
    readonly: bool,
    reopen: &dyn Fn() -> Result<OwnedFd, StepError>,
    step: &'static str,
) -> Result<(), StepError> {
    rustix::mount::mount_bind_recursive(src, fd_path(target).as_str())
        .map_err(fail(step, format!("bind {src}")))?;
    let top = reopen()?;
    let mut attrs = libc::MOUNT_ATTR_NODEV;
    if readonly {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    set_mount_attrs(&top, attrs, step)
}

/// Set mount attributes on the mount at `fd` and on every mount below it.
fn set_mount_attrs(fd: &OwnedFd, attrs: u64, step: &'static str) -> Result<(), StepError> {
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) reads `size_of::<mount_attr>()` bytes from a live struct and
    // a NUL-terminated empty path; `fd` is an open descriptor we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        return Err(fail(step, format!("set mount attributes {attrs:#x}"))(
            Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        ));
    }
    Ok(())
}

/// Remount a bind mount read-only, keeping the flags the kernel locks in a user namespace.
fn remount_readonly(target: &str, step: &'static str) -> Result<(), StepError> {
    use rustix::fs::StatVfsMountFlags as S;
    let vfs = rustix::fs::statvfs(target).map_err(fail(step, format!("statvfs {target}")))?;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    for (s, m) in [
        (S::NOSUID, MountFlags::NOSUID),
        (S::NODEV, MountFlags::NODEV),
        (S::NOEXEC, MountFlags::NOEXEC),
        (S::NOATIME, MountFlags::NOATIME),
        (S::NODIRATIME, MountFlags::NODIRATIME),
        (S::RELATIME, MountFlags::RELATIME),
    ] {
        if vfs.f_flag.contains(s) {
            flags |= m;
        }
    }
    rustix::mount::mount_remount(target, flags, c"")
        .map_err(fail(step, format!("remount {target} read-only")))
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
pub(crate) fn populate(
    root_path: &Path,
    run: &HelperRun,
    secrets: &Secrets,
) -> Result<Vec<Stub>, StepError> {
    let mut root = Root::open(root_path)?;
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
    if !run.insecure {
        mask(&root.reopen("/proc")?, PROC_READONLY, PROC_MASKED, "proc")?;
    }

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
    if !run.insecure {
        mask(&root.reopen("/sys")?, &[], SYS_MASKED, "sys")?;
    }

    let dev_fd = root.ensure("/dev", Want::Dir)?;
    mount(
        "tmpfs",
        &fd_path(&dev_fd),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
        "dev",
    )?;
    populate_dev(&root)?;

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
    Ok(root.stubs)
}

/// Docker's default read-only paths under /proc: kernel knobs a RUN must not turn.
const PROC_READONLY: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];
/// Docker's default masked paths under /proc (files read as empty, directories as empty).
const PROC_MASKED: &[&str] = &[
    // Beyond Docker's list: files only the host's root may read, which a RUN as real root
    // under the identity mapping (module `idmap`'s fallback) could otherwise read
    // (physical page flags and slab layout help kernel exploits).
    "kpageflags",
    "kpagecount",
    "kpagecgroup",
    "slabinfo",
    "vmallocinfo",
    "pagetypeinfo",
    "asound",
    "acpi",
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];
/// Docker's default masked paths under /sys: firmware tables (ACPI, EFI variables) and the
/// power-capping counters (RAPL energy readings leak what other processes compute).
const SYS_MASKED: &[&str] = &["firmware", "devices/virtual/powercap"];

/// Docker's protection of /proc and /sys: `readonly` entries are bound read-only onto
/// themselves, `masked` ones covered (directories by an empty read-only tmpfs, files by
/// /dev/null). Entries the kernel does not have are skipped.
fn mask(
    top: &OwnedFd,
    readonly: &[&str],
    masked: &[&str],
    step: &'static str,
) -> Result<(), StepError> {
    let base = fd_path(top);
    for name in readonly {
        let p = format!("{base}/{name}");
        match rustix::mount::mount_bind(p.as_str(), p.as_str()) {
            Ok(()) => remount_readonly(&p, step)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(step, format!("bind {name}"))(e)),
        }
    }
    let ro = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    for name in masked {
        let p = format!("{base}/{name}");
        let st = match rustix::fs::stat(p.as_str()) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(fail(step, format!("stat {name}"))(e)),
        };
        let r = if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
            rustix::mount::mount("tmpfs", p.as_str(), "tmpfs", ro, c"size=0")
        } else {
            rustix::mount::mount_bind("/dev/null", p.as_str())
        };
        match r {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(step, format!("mask {name}"))(e)),
        }
    }
    Ok(())
}

fn populate_dev(root: &Root) -> Result<(), StepError> {
    const STEP: &str = "dev";
    let dev = root.resolve("/dev").map_err(fail(STEP, "open /dev"))?;
    let dev_path = fd_path(&dev);
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        rustix::fs::openat(
            &dev,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(fail(STEP, format!("create /dev/{name}")))?;
        // Device nodes cannot be made in a user namespace; bind the host's instead.
        let target = format!("{dev_path}/{name}");
        rustix::mount::mount_bind(format!("/dev/{name}").as_str(), target.as_str())
            .map_err(fail(STEP, format!("bind /dev/{name}")))?;
        // These are the host's own inodes: read-only binds, so that reading and writing
        // the device works but chmod, chown and utimes on it fail (EROFS). A RUN as real
        // root could otherwise change the host's /dev/null.
        let bound = rustix::fs::open(
            target.as_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail(STEP, format!("open /dev/{name}")))?;
        set_mount_attrs(
            &bound,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
            STEP,
        )?;
    }
    for dir in ["pts", "shm"] {
        rustix::fs::mkdirat(&dev, dir, Mode::from_raw_mode(0o755))
            .map_err(fail(STEP, format!("mkdir /dev/{dir}")))?;
    }
    let pts = format!("{dev_path}/pts");
    let pts_flags = MountFlags::NOSUID | MountFlags::NOEXEC;
    if rustix::mount::mount(
        "devpts",
        pts.as_str(),
        "devpts",
        pts_flags,
        c"newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    .is_err()
    {
        // gid=5 is not mappable in a single-ID user namespace.
        mount(
            "devpts",
            &pts,
            "devpts",
            pts_flags,
            "newinstance,ptmxmode=0666,mode=0620",
            STEP,
        )?;
    }
    mount(
        "shm",
        &format!("{dev_path}/shm"),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "mode=1777,size=65536k",
        STEP,
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        rustix::fs::symlinkat(to, &dev, link)
            .map_err(fail(STEP, format!("symlink /dev/{link}")))?;
    }
    Ok(())
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
