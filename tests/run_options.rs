//! What `kiln build`'s command line adds to every RUN, seen from inside the RUN, as root and
//! as an unprivileged user with a subordinate ID range: `--add-host` lines in
//! `/etc/hosts`; and how each enters the cache key (as BuildKit keys it).

mod common;

use common::identity::{BUSYBOX, World, assert_ok, assert_refused, both, identities};

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
