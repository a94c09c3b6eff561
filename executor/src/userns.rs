//! Entering a user namespace when kiln runs unprivileged, so the whole build — store
//! writes, COPY chown, RUN — runs as root inside it with native file ownership (buildah's
//! approach).
//!
//! How, without fork in a possibly threaded process: before unsharing, kiln starts a tiny
//! mapper (itself, re-exec'd with [`MAPPER_ARG`]) that stays in the parent user namespace;
//! then kiln calls `unshare(CLONE_NEWUSER)`, tells the mapper to go, and the mapper runs
//! `newuidmap`/`newgidmap` on kiln's pid (checking their exit status). Without a subuid
//! range kiln maps only itself (0 → its uid) by writing its own maps. Then kiln becomes
//! uid/gid 0 in the namespace. Call [`enter_user_namespace_if_needed`] at the very start of
//! `main`, before any thread exists (unshare(CLONE_NEWUSER) fails in a threaded process).
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// argv[1] of the mapper process.
pub const MAPPER_ARG: &str = "__kiln-userns-mapper";

/// One line of a uid_map/gid_map: `count` IDs from `inside` map to `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// What [`enter_user_namespace_if_needed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernsState {
    /// Already root (real root, or root inside an existing user namespace): nothing done.
    AlreadyRoot,
    /// Entered a new user namespace with these mappings (0 → caller, 1.. → subordinate IDs).
    Mapped { uids: Vec<IdMap>, gids: Vec<IdMap> },
    /// Entered a new user namespace mapping only the caller (no range in /etc/subuid or
    /// /etc/subgid); chown to other IDs fails. The caller should warn the user about that.
    SingleId {
        uid: u32,
        gid: u32,
        /// Why: no subordinate range, or newuidmap/newgidmap failed (their message).
        why: String,
    },
}

impl UsernsState {
    /// What to say on every command about this state, if anything. Without a subordinate
    /// range nothing is said here: only a step that needs other IDs fails, and its error
    /// names the cause and the fix. A range that newuidmap could not apply is a broken
    /// setup worth a word on every command.
    pub fn warning(&self) -> Option<String> {
        match self {
            UsernsState::SingleId { why, .. } if !why.starts_with(NO_RANGE) => Some(format!(
                "warning: mapping subordinate IDs failed ({why}); only your own ID is mapped"
            )),
            _ => None,
        }
    }
}

/// Why the user namespace could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "cannot create a user namespace: {source}{}",
        restriction_hint(restriction)
    )]
    Unshare {
        source: std::io::Error,
        /// What the distribution's settings say about unprivileged user namespaces.
        restriction: Option<Restriction>,
    },
    #[error("cannot start the ID mapper {exe}: {source}")]
    Mapper { exe: String, source: std::io::Error },
    #[error("mapping IDs with newuidmap/newgidmap failed: {0}")]
    Map(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot become root in the user namespace: {0}")]
    SetId(std::io::Error),
}

/// A setting that stops unprivileged users from creating user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// Ubuntu 23.10+: AppArmor confines unprivileged user namespaces.
    AppArmor,
    /// Debian's (and older Ubuntu's) `kernel.unprivileged_userns_clone=0`.
    UnprivilegedClone,
    /// `user.max_user_namespaces=0`.
    MaxUserNamespaces,
}

impl Restriction {
    /// The first restricting setting found in /proc/sys, if any.
    pub fn detect() -> Option<Restriction> {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
        };
        if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
            Some(Restriction::AppArmor)
        } else if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
            Some(Restriction::UnprivilegedClone)
        } else if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
            Some(Restriction::MaxUserNamespaces)
        } else {
            None
        }
    }

    /// What to change, as the user would type it.
    pub fn fix(self) -> &'static str {
        match self {
            Restriction::AppArmor => {
                "AppArmor restricts unprivileged user namespaces \
                 (kernel.apparmor_restrict_unprivileged_userns=1); allow them with \
                 `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0` (persist it in \
                 /etc/sysctl.d/), or give kiln an AppArmor profile with `userns,`"
            }
            Restriction::UnprivilegedClone => {
                "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0); \
                 enable them with `sudo sysctl kernel.unprivileged_userns_clone=1` (persist it \
                 in /etc/sysctl.d/)"
            }
            Restriction::MaxUserNamespaces => {
                "user namespaces are disabled (user.max_user_namespaces=0); enable them with \
                 `sudo sysctl user.max_user_namespaces=15000` (persist it in /etc/sysctl.d/)"
            }
        }
    }
}

fn restriction_hint(r: &Option<Restriction>) -> String {
    match r {
        Some(r) => format!("; {}", r.fix()),
        None => {
            " (are unprivileged user namespaces enabled? see /proc/sys/user/max_user_namespaces)"
                .into()
        }
    }
}

/// How [`UsernsState::SingleId::why`] starts when the user has no subordinate range.
pub const NO_RANGE: &str = "no range for user";

/// The command that gives the current user a subordinate ID range.
pub const SUBID_FIX: &str =
    "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER";

/// A chown to an ID that kiln's user namespace does not map (the kernel says EINVAL).
#[derive(Debug, thiserror::Error)]
#[error("{kind} {id} is not mapped in kiln's user namespace: {why}")]
pub struct UnmappedId {
    /// `uid` or `gid`.
    pub kind: &'static str,
    pub id: u32,
    why: String,
    #[source]
    pub source: std::io::Error,
}

/// How many IDs `/proc/self/{uid,gid}_map` maps, and whether `id` is one of them.
fn id_mapping(file: &str, id: u32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut total = 0u64;
    let mut mapped = false;
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [inside, _outside, count] = f[..] {
            total += count;
            mapped |= (inside..inside + count).contains(&u64::from(id));
        }
    }
    Some((total, mapped))
}

/// Explains a failed chown to `uid`:`gid`: an EINVAL for an ID the namespace does not map
/// becomes an [`UnmappedId`] naming the cause and the fix; any other error is returned as
/// it was.
pub fn explain_chown_error(uid: u32, gid: u32, err: std::io::Error) -> std::io::Error {
    if err.raw_os_error() != Some(libc::EINVAL) {
        return err;
    }
    for (kind, file, id) in [
        ("uid", "/proc/self/uid_map", uid),
        ("gid", "/proc/self/gid_map", gid),
    ] {
        let Some((total, false)) = id_mapping(file, id) else {
            continue;
        };
        let why = if total <= 1 {
            format!(
                "only your own ID is, because this user has no subordinate ID range in \
                 /etc/subuid and /etc/subgid; fix: `{SUBID_FIX}`, then run kiln again"
            )
        } else {
            format!(
                "the user's subordinate ID range maps IDs 0 to {}; give it a larger one in \
                 /etc/subuid and /etc/subgid (`sudo usermod --add-subuids ...`)",
                total - 1
            )
        };
        return std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            UnmappedId {
                kind,
                id,
                why,
                source: err,
            },
        );
    }
    err
}

/// True when kiln runs in a user namespace that maps a single ID (its user's own): the
/// user has no usable subordinate range, so RUN cannot switch users or chown.
pub fn only_own_id_mapped() -> bool {
    id_mapping("/proc/self/uid_map", 0).is_some_and(|(total, _)| total <= 1)
}

/// What a failed step should add when [`only_own_id_mapped`]: the likely cause and the fix.
pub fn single_id_hint() -> String {
    format!(
        "kiln maps only your own ID (this user has no subordinate ID range in /etc/subuid \
         and /etc/subgid), so a step that needs other IDs (chown, USER, files owned by \
         others) fails; fix: `{SUBID_FIX}`"
    )
}

/// Parse `/etc/subuid`-style text: the first range for `name` or `uid`.
pub fn find_subid_range(text: &str, name: &str, uid: u32) -> Option<(u32, u32)> {
    let uid_s = uid.to_string();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || (f[0] != name && f[0] != uid_s) {
            return None;
        }
        let start = f[1].parse().ok()?;
        let count: u32 = f[2].parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    kiln_base::passwd::users(&passwd)
        .find(|u| u.uid == uid)
        .map(|u| u.name.to_string())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default()
}

/// True when this process is real root: uid 0 in the initial user namespace (the full ID
/// range mapped to itself). An unreadable map counts as not real root.
pub fn is_real_root() -> bool {
    rustix::process::geteuid().is_root() && kiln_image::host::in_initial_user_namespace()
}

/// Enter a user namespace mapped to root when kiln runs unprivileged (see the module doc).
pub fn enter_user_namespace_if_needed() -> Result<UsernsState, UsernsError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    if uid == 0 {
        return Ok(UsernsState::AlreadyRoot);
    }
    let name = user_name(uid);
    let subuid = std::fs::read_to_string("/etc/subuid")
        .ok()
        .and_then(|t| find_subid_range(&t, &name, uid));
    let subgid = std::fs::read_to_string("/etc/subgid")
        .ok()
        .and_then(|t| find_subid_range(&t, &name, uid));
    let state = match (subuid, subgid) {
        (Some((us, uc)), Some((gs, gc))) => {
            let uids = vec![
                IdMap {
                    inside: 0,
                    outside: uid,
                    count: 1,
                },
                IdMap {
                    inside: 1,
                    outside: us,
                    count: uc,
                },
            ];
            let gids = vec![
                IdMap {
                    inside: 0,
                    outside: gid,
                    count: 1,
                },
                IdMap {
                    inside: 1,
                    outside: gs,
                    count: gc,
                },
            ];
            match map_with_helpers(&uids, &gids) {
                Ok(()) => UsernsState::Mapped { uids, gids },
                // Already in the new namespace but unmapped: our own single mapping still
                // works if newuidmap wrote nothing (e.g. it is not installed).
                Err(UsernsError::Map(why)) => match write_single(uid, gid) {
                    Ok(()) => UsernsState::SingleId { uid, gid, why },
                    Err(_) => return Err(UsernsError::Map(why)),
                },
                Err(e) => return Err(e),
            }
        }
        _ => {
            // No subordinate range: the caller warns that chown to other IDs will fail
            // (kiln's main prints it; a library must not write to stderr on its own).
            unshare_user()?;
            write_single(uid, gid)?;
            UsernsState::SingleId {
                uid,
                gid,
                why: format!("{NO_RANGE} {name:?} in /etc/subuid and /etc/subgid"),
            }
        }
    };
    become_root()?;
    Ok(state)
}

/// Map only ourselves (0 → uid, 0 → gid); setgroups must be denied first when unprivileged.
fn write_single(uid: u32, gid: u32) -> Result<(), UsernsError> {
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("0 {uid} 1\n"))?;
    write_file("/proc/self/gid_map", &format!("0 {gid} 1\n"))
}

fn unshare_user() -> Result<(), UsernsError> {
    // SAFETY: called at the start of main before any thread exists (documented contract), so
    // no other thread shares the state being unshared.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }.map_err(|e| {
        UsernsError::Unshare {
            source: e.into(),
            restriction: Restriction::detect(),
        }
    })
}

fn write_file(path: &str, text: &str) -> Result<(), UsernsError> {
    std::fs::write(path, text).map_err(|source| UsernsError::Write {
        path: path.to_string(),
        source,
    })
}

fn become_root() -> Result<(), UsernsError> {
    // SAFETY: plain integer syscalls; the result is checked. libc's wrappers apply them to
    // every thread of the process.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(UsernsError::SetId(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn map_args(maps: &[IdMap]) -> Vec<String> {
    maps.iter()
        .flat_map(|m| {
            [
                m.inside.to_string(),
                m.outside.to_string(),
                m.count.to_string(),
            ]
        })
        .collect()
}

fn map_with_helpers(uids: &[IdMap], gids: &[IdMap]) -> Result<(), UsernsError> {
    let pid = std::process::id().to_string();
    let exe = "/proc/self/exe";
    let mut child = Command::new(exe)
        .arg(MAPPER_ARG)
        .arg(&pid)
        .arg(map_args(uids).join(","))
        .arg(map_args(gids).join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| UsernsError::Mapper {
            exe: exe.into(),
            source,
        })?;
    let unshared = unshare_user();
    let mut stdin = child.stdin.take();
    if unshared.is_ok()
        && let Some(s) = stdin.as_mut()
    {
        let _ = s.write_all(b"go\n");
    }
    drop(stdin); // EOF without "go" tells the mapper to give up
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().map_err(|source| UsernsError::Mapper {
        exe: exe.into(),
        source,
    })?;
    unshared?;
    if !status.success() {
        return Err(UsernsError::Map(format!("{} ({status})", err.trim())));
    }
    Ok(())
}

/// The mapper process: wait for "go", then run newuidmap/newgidmap on the target pid.
/// Returns None unless argv[1] is [`MAPPER_ARG`].
pub fn mapper_main() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(MAPPER_ARG) || args.len() != 5 {
        return None;
    }
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    if go.trim() != "go" {
        return Some(1);
    }
    for (tool, maps) in [("newuidmap", &args[3]), ("newgidmap", &args[4])] {
        let mut cmd = Command::new(tool);
        cmd.arg(&args[2]).args(maps.split(','));
        match cmd.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "{tool} {} {}: {} ({})",
                    args[2],
                    maps.replace(',', " "),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    out.status
                );
                return Some(1);
            }
            Err(e) => {
                eprintln!("cannot run {tool}: {e} (install the uidmap package)");
                return Some(1);
            }
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_unshare_says_which_setting_to_change() {
        let err = |restriction| UsernsError::Unshare {
            source: std::io::Error::from_raw_os_error(libc::EACCES),
            restriction,
        };
        let apparmor = err(Some(Restriction::AppArmor)).to_string();
        assert!(
            apparmor.contains("sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0"),
            "{apparmor}"
        );
        let debian = err(Some(Restriction::UnprivilegedClone)).to_string();
        assert!(
            debian.contains("kernel.unprivileged_userns_clone=1"),
            "{debian}"
        );
        let max = err(Some(Restriction::MaxUserNamespaces)).to_string();
        assert!(max.contains("user.max_user_namespaces=15000"), "{max}");
        assert!(err(None).to_string().contains("max_user_namespaces"));
    }

    use super::*;

    #[test]
    fn subid_range_is_found_by_name_or_uid() {
        let t = "tester:100000:65536\n1005:300000:1000\n";
        assert_eq!(find_subid_range(t, "tester", 1001), Some((100000, 65536)));
        assert_eq!(find_subid_range(t, "other", 1005), Some((300000, 1000)));
        assert_eq!(find_subid_range(t, "nobody", 7), None);
    }

    #[test]
    fn map_args_are_triples() {
        let m = [
            IdMap {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            IdMap {
                inside: 1,
                outside: 200000,
                count: 65536,
            },
        ];
        assert_eq!(map_args(&m).join(","), "0,1000,1,1,200000,65536");
    }
}
