//! The mount calls the sandbox's filesystem is made of: plain mounts, overlayfs with
//! `userxattr` through the new mount API, binds that are `nodev` and read-only all the way
//! down (`mount_setattr` with `AT_RECURSIVE`), read-only remounts that keep the flags a
//! user namespace locks, and making the namespace's mounts private.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
};

use super::step::{StepError, fail, fd_path};

pub(super) fn cstr(s: &str) -> CString {
    // Mount option strings we build never contain NUL; user paths go through fds.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

pub(super) fn mount(
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

/// Mount overlayfs with `userxattr` and `volatile` (lowers top-most first) at `target`.
///
/// Uses the new mount API with one `lowerdir+` per layer (no 4 KiB option-string limit, no
/// escaping of `,` and `:` in paths); falls back to the option string on kernels before 6.8.
///
/// `volatile` (Linux 5.10; left out where the kernel does not know it): without it, the
/// overlay's last unmount, when the sandbox's mount namespace goes, syncs the whole
/// filesystem under the upper directory (`ovl_sync_fs`), so every RUN waited for every
/// dirty page of the store's disk, whoever wrote it (150 ms after 200 MB of writes, here),
/// and an `fsync` inside a RUN (dpkg makes thousands) waited for the disk too. What a RUN
/// writes becomes a layer, made durable as every new layer is: by the build's one sync at
/// its end, or dropped after a power cut before it (the store's `durability`).
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
            "lowerdir={},upperdir={},workdir={},userxattr,index=off",
            lower.join(":"),
            esc(upper),
            esc(work)
        );
        let target = target.to_string_lossy();
        let volatile = format!("{data},volatile");
        let with_volatile = rustix::mount::mount(
            "overlay",
            target.as_ref(),
            "overlay",
            MountFlags::NODEV,
            cstr(&volatile).as_c_str(),
        );
        return match with_volatile {
            Err(Errno::INVAL) => mount(
                "overlay",
                &target,
                "overlay",
                MountFlags::NODEV,
                &data,
                STEP,
            ),
            done => done.map_err(fail(STEP, format!("mount overlay overlay on {target}"))),
        };
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)
        .map_err(fail(STEP, format!("upperdir {}", upper.display())))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work)
        .map_err(fail(STEP, format!("workdir {}", work.display())))?;
    rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(fail(STEP, "option userxattr"))?;
    // Whatever the kernel's default: with `index=on` a lower still in use as another
    // overlay's upper (the previous RUN's, its helper still tearing down) fails the mount
    // with EBUSY instead of a warning.
    rustix::mount::fsconfig_set_string(&fs, "index", "off")
        .map_err(fail(STEP, "option index=off"))?;
    match rustix::mount::fsconfig_set_flag(&fs, "volatile") {
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(fail(STEP, "option volatile")(e)),
    }
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
pub(super) fn fs_log(fs: &OwnedFd) -> String {
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
pub(super) fn bind(
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
pub(super) fn set_mount_attrs(
    fd: &OwnedFd,
    attrs: u64,
    step: &'static str,
) -> Result<(), StepError> {
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
pub(super) fn remount_readonly(target: &str, step: &'static str) -> Result<(), StepError> {
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
