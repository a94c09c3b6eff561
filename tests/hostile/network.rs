//! Hole 4: the command line bounds the network a Dockerfile gets. `RUN --network=host` needs
//! `--allow network.host` (even when its result is cached), `RUN --security=insecure` needs
//! `--allow security.insecure`, and `--network none` holds for every RUN.

use crate::common;
use crate::support::{BUSYBOX, World, assert_ok, assert_refused, both, identities};
use std::path::Path;

/// Interfaces a RUN saw, written to `/ifaces` of the image (`/proc/net/dev`'s names).
const SAVE_IFACES: &str = "cat /proc/net/dev > /ifaces";

/// The interface names in a `/proc/net/dev` dump.
fn interfaces(dev: &str) -> Vec<String> {
    dev.lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .filter(|name| !name.contains('|') && !name.is_empty())
        .collect()
}

/// Whether this machine has an interface besides `lo` (so a host network is visible).
fn host_has_interfaces() -> bool {
    std::fs::read_to_string("/proc/net/dev")
        .map(|d| interfaces(&d).iter().any(|i| i != "lo"))
        .unwrap_or(false)
}

/// The text of `path` in the image `tag`, saved as the identity.
fn image_text(w: &World, tag: &str, path: &str) -> String {
    let file = w
        .user_dir("saved")
        .join(format!("{}.tar", tag.replace(':', "-")));
    let file_arg = file.to_str().expect("utf-8 path");
    assert_ok(&w.kiln(&["save", "-o", file_arg, tag]));
    common::Image::from_docker_archive(&file).text(path)
}

fn tagged(w: &World, tag: &str) -> bool {
    let out = w.kiln(&["images"]);
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).contains(tag)
}

fn refused_at_line(out: &std::process::Output, line: usize, entitlement: &str) {
    assert_refused(out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{entitlement} is not allowed")),
        "{}",
        both(out)
    );
    assert!(
        err.contains(&format!("Dockerfile:{line}")),
        "the error names the line: {}",
        both(out)
    );
}

fn ctx_arg(ctx: &Path) -> &str {
    ctx.to_str().expect("utf-8 path")
}

#[test]
fn run_network_host_needs_the_entitlement() {
    for id in identities() {
        let w = World::new(id);
        // Line 5: the RUN after BUSYBOX's four lines.
        let ctx = w.context(
            "ctx",
            &format!("{BUSYBOX}RUN --network=host {SAVE_IFACES}\n"),
        );
        let out = w.build(&ctx, &["-t", "net:1"]);
        refused_at_line(&out, 5, "network.host");
        assert!(!tagged(&w, "net"), "{id:?}: a refused build tagged nothing");

        // The same with --network host on the command line: the command line picks the
        // default for RUNs, it does not let the Dockerfile choose.
        let out = w.build(&ctx, &["--network", "host", "-t", "net:1"]);
        refused_at_line(&out, 5, "network.host");

        // Allowed, the RUN runs; built once, it is cached, and the cache must not let a
        // build without the entitlement through.
        let out = w.build(&ctx, &["--allow", "network.host", "-t", "net:1"]);
        assert_ok(&out);
        if host_has_interfaces() {
            let seen = interfaces(&image_text(&w, "net:1", "ifaces"));
            assert!(
                seen.iter().any(|i| i != "lo"),
                "{id:?}: with the entitlement the RUN has the host network: {seen:?}"
            );
        }
        let out = w.build(&ctx, &["-t", "net:2"]);
        refused_at_line(&out, 5, "network.host");
        assert!(
            !tagged(&w, "net:2"),
            "{id:?}: nothing tagged from the cache"
        );
    }
}

#[test]
fn network_none_holds_for_every_run() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!(
                "{BUSYBOX}RUN --network=host {SAVE_IFACES}\nRUN cat /proc/net/dev > /ifaces2\n"
            ),
        );
        let out = w.build(&ctx, &["--network", "none", "-t", "net:1"]);
        refused_at_line(&out, 5, "network.host");

        let out = w.build(
            &ctx,
            &[
                "--network",
                "none",
                "--allow",
                "network.host",
                "-t",
                "net:1",
            ],
        );
        assert_ok(&out);
        for file in ["ifaces", "ifaces2"] {
            let seen = interfaces(&image_text(&w, "net:1", file));
            assert_eq!(seen, ["lo"], "{id:?}: /{file} under --network none");
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("runs without a network"),
            "{id:?}: the override is said: {}",
            both(&out)
        );
    }
}

#[test]
fn run_security_insecure_needs_the_entitlement() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("{BUSYBOX}RUN --security=insecure touch /x\n"),
        );
        let out = w.build(&ctx, &["-t", "sec:1"]);
        refused_at_line(&out, 5, "security.insecure");
        assert!(!tagged(&w, "sec"), "{id:?}");
        // Entitled, it runs (what it may do: sandbox::insecure_runs_...).
        let out = w.build(&ctx, &["--allow", "security.insecure", "-t", "sec:1"]);
        assert!(out.status.success(), "{id:?}: {}", both(&out));
        assert!(tagged(&w, "sec"), "{id:?}");
        let out = w.build(&ctx, &["--allow", "bogus", "-t", "sec:1"]);
        assert_refused(&out);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown entitlement"),
            "{}",
            both(&out)
        );
    }
}

/// Entitlements and the network flag change nothing in the image of a build that does not
/// use them: its cache keys and image ID stay what they were.
#[test]
fn entitlements_leave_image_ids_alone() {
    let id = identities()[0];
    let w = World::new(id);
    let ctx = w.context("ctx", &format!("{BUSYBOX}RUN echo hi > /hi\n"));
    let image_id = |args: &[&str]| {
        let mut all = vec!["--progress", "quiet"];
        all.extend_from_slice(args);
        all.push(ctx_arg(&ctx));
        let mut build = vec!["build"];
        build.extend(all);
        let out = w.kiln(&build);
        assert_ok(&out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let plain = image_id(&[]);
    assert_eq!(
        image_id(&["--allow", "network.host,security.insecure"]),
        plain
    );
    let out = w.build(&ctx, &["--allow", "network.host", "-t", "again:1"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CACHED"),
        "--allow keeps the cache: {}",
        both(&out)
    );
    // --network none runs the RUN again (another network, another key), same bytes.
    assert_eq!(image_id(&["--network", "none"]), plain);
}
