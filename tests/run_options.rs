//! What `kiln build`'s command line adds to every RUN, seen from inside the RUN, as root and
//! as an unprivileged user with a subordinate ID range: `--add-host` lines in
//! `/etc/hosts`, `--ulimit` limits, the size of `/dev/shm` (`--shm-size`), the cgroup a RUN
//! runs in (`--cgroup-parent`); and how each enters the cache key (as BuildKit keys it).

mod common;

use common::identity::{BUSYBOX, Identity, World, assert_ok, assert_refused, both, identities};

/// The image ID a `--progress plain` build printed.
fn image_id(log: &str) -> &str {
    log.lines()
        .find_map(|l| l.strip_prefix("writing image "))
        .unwrap_or_else(|| panic!("no image ID: {log}"))
}

#[test]
fn add_host_lines_reach_etc_hosts_and_their_names_key_the_run() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context("ctx", &format!("{BUSYBOX}RUN cat /etc/hosts\n"));
        let first = w.build(
            &ctx,
            &[
                "--add-host",
                "DB.internal:10.1.2.3",
                "--add-host",
                "v6=[fd00::7]",
            ],
        );
        assert_ok(&first);
        let log = both(&first);
        // After the sandbox's own lines, lower-cased as BuildKit writes them.
        assert!(log.contains("10.1.2.3\tdb.internal"), "{id:?}: {log}");
        assert!(log.contains("fd00::7\tv6"), "{id:?}: {log}");
        assert!(log.contains("localhost"), "{id:?}: {log}");
        // Another address for the same names: the same step, from the cache.
        let moved = w.build(
            &ctx,
            &[
                "--add-host",
                "db.internal=10.9.9.9",
                "--add-host",
                "v6:fd00::8",
            ],
        );
        assert_ok(&moved);
        let moved_log = both(&moved);
        assert!(
            !moved_log.contains("10.9.9.9"),
            "{id:?}: ran again: {moved_log}"
        );
        assert_eq!(image_id(&moved_log), image_id(&log), "{id:?}");
        // Another name is another step.
        let renamed = w.build(&ctx, &["--add-host", "cache:10.9.9.9"]);
        assert_ok(&renamed);
        let renamed_log = both(&renamed);
        assert!(
            renamed_log.contains("10.9.9.9\tcache"),
            "{id:?}: {renamed_log}"
        );
        assert!(
            !renamed_log.contains("db.internal"),
            "{id:?}: {renamed_log}"
        );
        // Without the flag, no line of it and no cache hit on a build that had one.
        let plain = w.build(&ctx, &[]);
        assert_ok(&plain);
        let plain_log = both(&plain);
        assert!(plain_log.contains("localhost"), "{id:?}: {plain_log}");
        assert!(!plain_log.contains("10.9.9.9"), "{id:?}: {plain_log}");
    }
}

#[test]
fn a_bad_add_host_is_refused_before_anything_runs() {
    let w = World::new(identities()[0]);
    let ctx = w.context("ctx", &format!("{BUSYBOX}RUN cat /etc/hosts\n"));
    for (value, says) in [
        ("db", "expected HOST:IP or HOST=IP"),
        ("db:10.0.0.256", "is not an IPv4 or IPv6 address"),
        ("gw:host-gateway", "host-gateway is not supported"),
    ] {
        let out = w.build(&ctx, &["--add-host", value]);
        assert_refused(&out);
        let log = both(&out);
        assert!(log.contains(says), "--add-host {value}: {log}");
        assert!(!log.contains("RUN cat"), "--add-host {value}: {log}");
    }
}

/// The hard limit of open files kiln's callers have here (the test's own).
fn own_nofile_hard() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX)
}

#[test]
fn ulimit_sets_the_limits_a_run_sees() {
    let hard = own_nofile_hard();
    assert!(
        hard >= 2048,
        "this test needs a nofile hard limit of 2048: {hard}"
    );
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!(
                "{BUSYBOX}RUN echo soft=$(ulimit -Sn) hard=$(ulimit -Hn) procs=$(ulimit -u)\n"
            ),
        );
        let out = w.build(
            &ctx,
            &["--ulimit", "nofile=1000:2000", "--ulimit", "nproc=500:600"],
        );
        assert_ok(&out);
        let log = both(&out);
        assert!(
            log.contains("soft=1000 hard=2000 procs=500"),
            "{id:?}: {log}"
        );
        // Another limit is another step (as in BuildKit, where it is part of the exec op).
        let other = w.build(&ctx, &["--ulimit", "nofile=900:2000"]);
        assert_ok(&other);
        let other_log = both(&other);
        assert!(
            other_log.contains("soft=900 hard=2000"),
            "{id:?}: {other_log}"
        );
    }
}

/// Whether this (root) process may raise hard limits: CAP_SYS_RESOURCE (24) effective.
fn has_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// A hard limit above the caller's own: root raises it (before the sandbox's user
/// namespace), a rootless build (or root without CAP_SYS_RESOURCE) cannot and says so
/// instead of running with less.
#[test]
fn a_hard_limit_above_the_users_own_needs_real_root() {
    let above = own_nofile_hard() + 1000;
    let flag = format!("nofile=1024:{above}");
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context("ctx", &format!("{BUSYBOX}RUN echo hard=$(ulimit -Hn)\n"));
        let out = w.build(&ctx, &["--ulimit", &flag]);
        let log = both(&out);
        match id {
            Identity::Root if has_sys_resource() => {
                assert_ok(&out);
                assert!(log.contains(&format!("hard={above}")), "{id:?}: {log}");
            }
            // Root without CAP_SYS_RESOURCE (in a container): it cannot either.
            Identity::Root => {
                assert_refused(&out);
                assert!(
                    log.contains(&format!(
                        "--ulimit {flag}: cannot raise the hard limit from {} to {above}",
                        own_nofile_hard()
                    )),
                    "{id:?}: {log}"
                );
            }
            Identity::Rootless => {
                assert_refused(&out);
                assert!(
                    log.contains(&format!(
                        "--ulimit {flag}: the hard limit is above the one kiln was started with"
                    )),
                    "{id:?}: {log}"
                );
            }
        }
    }
}

#[test]
fn a_bad_ulimit_is_refused_before_anything_runs() {
    let w = World::new(identities()[0]);
    let ctx = w.context("ctx", &format!("{BUSYBOX}RUN true\n"));
    for (value, says) in [
        ("nofile", "expected NAME=SOFT[:HARD]"),
        ("files=10", "unknown limit \"files\""),
        (
            "nofile=20:10",
            "the soft limit must not be above the hard limit",
        ),
        ("nofile=ten", "is not a limit"),
    ] {
        let out = w.build(&ctx, &["--ulimit", value]);
        assert_refused(&out);
        let log = both(&out);
        assert!(log.contains(says), "--ulimit {value}: {log}");
        assert!(!log.contains("RUN true"), "--ulimit {value}: {log}");
    }
}

/// The options of the `/dev/shm` mount a RUN printed from /proc/mounts.
fn shm_options(log: &str) -> &str {
    log.lines()
        .find_map(|l| l.split(" /dev/shm tmpfs ").nth(1))
        .unwrap_or_else(|| panic!("no /dev/shm mount: {log}"))
}

#[test]
fn shm_size_sizes_dev_shm() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context("ctx", &format!("{BUSYBOX}RUN grep /dev/shm /proc/mounts\n"));
        // Without the flag: 64 MiB, as BuildKit gives it.
        let plain = w.build(&ctx, &[]);
        assert_ok(&plain);
        let plain_log = both(&plain);
        assert!(
            shm_options(&plain_log).contains("size=65536k"),
            "{id:?}: {plain_log}"
        );
        let sized = w.build(&ctx, &["--shm-size", "128m"]);
        assert_ok(&sized);
        let sized_log = both(&sized);
        // Another size is another step (BuildKit adds a /dev/shm mount to the exec op).
        assert!(
            shm_options(&sized_log).contains("size=131072k"),
            "{id:?}: {sized_log}"
        );
    }
    let w = World::new(identities()[0]);
    let ctx = w.context("ctx", &format!("{BUSYBOX}RUN true\n"));
    let bad = w.build(&ctx, &["--shm-size", "0"]);
    assert_refused(&bad);
    assert!(
        both(&bad).contains("--shm-size \"0\": expected a size"),
        "{}",
        both(&bad)
    );
}

/// A cgroup parent of this test's own, removed (with what kiln made in it) when dropped.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for hierarchy in ["/sys/fs/cgroup", "/sys/fs/cgroup/pids"] {
            let dir = std::path::Path::new(hierarchy).join(&self.0);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with("kiln-") {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// As root the RUN runs in a cgroup under the parent (per RUN on cgroup v2, per build in
/// the pids hierarchy of v1). Rootless it does where the parent is delegated to the user;
/// elsewhere the build fails saying why rather than running outside it.
#[test]
fn cgroup_parent_puts_the_run_under_it_or_says_why_not() {
    for id in identities() {
        let parent = CgroupParent(format!("kiln-test-{}-{id:?}", std::process::id()));
        let w = World::new(id);
        let ctx = w.context("ctx", &format!("{BUSYBOX}RUN cat /proc/self/cgroup\n"));
        let flag = format!("/{}", parent.0);
        let out = w.build(&ctx, &["--cgroup-parent", &flag]);
        let log = both(&out);
        let inside = format!("{flag}/kiln-");
        if out.status.success() {
            assert!(log.contains(&inside), "{id:?}: not under {flag}: {log}");
        } else {
            // Only rootless may be refused, with the flag named and no RUN run elsewhere.
            assert_eq!(id, Identity::Rootless, "{log}");
            assert_refused(&out);
            assert!(
                log.contains(&format!("--cgroup-parent {flag}: ")),
                "{id:?}: {log}"
            );
            assert!(
                !log.contains(":/kiln-"),
                "{id:?}: ran outside the parent: {log}"
            );
        }
        // Not part of the key: the same step, from the cache, without the flag.
        if out.status.success() {
            let again = w.build(&ctx, &[]);
            assert_ok(&again);
            assert!(
                !both(&again).contains("0::/"),
                "{id:?}: ran again: {}",
                both(&again)
            );
        }
    }
}
