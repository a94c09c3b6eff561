//! What a RUN sees of the kernel: `/proc` and `/sys` with Docker's default read-only and
//! masked paths, and a minimal `/dev` of binds to the host's harmless devices (null, zero,
//! full, random, urandom, tty) with its usual symlinks and a `/dev/shm` of the size asked
//! for.

use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountFlags;

use super::mount::{mount, remount_readonly, set_mount_attrs};
use super::mountpoint::Root;
use super::step::{StepError, fail, fd_path};

/// Docker's default read-only paths under /proc: kernel knobs a RUN must not turn.
pub(super) const PROC_READONLY: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];
/// Docker's default masked paths under /proc (files read as empty, directories as empty).
pub(super) const PROC_MASKED: &[&str] = &[
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
pub(super) const SYS_MASKED: &[&str] = &["firmware", "devices/virtual/powercap"];

/// Docker's protection of /proc and /sys: `readonly` entries are bound read-only onto
/// themselves, `masked` ones covered (directories by an empty read-only tmpfs, files by
/// /dev/null). Entries the kernel does not have are skipped.
pub(super) fn mask(
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

/// The size of a RUN's `/dev/shm` without `--shm-size`: 64 MiB, as runc's default spec
/// that BuildKit uses gives it.
pub(super) const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// `shm_size`: the size of `/dev/shm` in bytes (`--shm-size`), else [`DEFAULT_SHM_SIZE`].
pub(super) fn populate_dev(root: &Root, shm_size: Option<u64>) -> Result<(), StepError> {
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
        &format!("mode=1777,size={}", shm_size.unwrap_or(DEFAULT_SHM_SIZE)),
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
