//! A sandbox prepared before its RUN (the spare helper's, executor `sandbox::prepared`) is
//! the sandbox a helper makes for that RUN: the same mounts with the same options, the same
//! IDs, capabilities, seccomp, limits, devices, masks, host names and network. The first
//! RUN of a build gets a sandbox made for it; the next ones get prepared ones: each case
//! has both describe themselves and compares, and reads kiln's trace to know which was
//! which. A RUN a prepared sandbox does not serve gets one made for it, and still works.

use std::path::Path;

use crate::support::{BUSYBOX, Tmpfs, World, assert_ok, both, identities};

/// Prints what a RUN's sandbox is, without what differs between two equal sandboxes
/// (mount IDs, anonymous device numbers, the host paths of an overlay's layers, counters).
const DESCRIBE: &str = r#"echo "== ids"; id; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups
echo "== process"; echo "pid $$"; grep -E '^(Cap|NoNewPrivs|Seccomp|Groups)' /proc/self/status
echo "== limits"; cat /proc/self/limits
echo "== names"; hostname; cat /etc/hosts /etc/resolv.conf
echo "== cgroup"; sed 's/[0-9][0-9]*/N/g' /proc/self/cgroup
echo "== network"; cut -d: -f1 /proc/net/dev | tr -d ' '
echo "== root"; for f in /* /dev/* /dev/pts/*; do case "$f" in /first|/second) continue;; esac
  stat -c '%n %F %a %u %g %t:%T' "$f"; done
echo "== masked"; for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/acpi /sys/firmware; do
  [ -e "$f" ] && echo "$f $(cat "$f" 2>&1 | head -c 64 | wc -c) $(ls "$f" 2>/dev/null | wc -l)"; done
(echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo "wrote a sysctl"
echo "== mounts"; awk '{
  line = $4 " " $5 " " $6; fs = 0
  for (i = 7; i <= NF; i++) {
    if ($i == "-") { fs = i + 1; continue }
    if (!fs) continue
    if (i == NF && $fs == "overlay") {
      n = split($i, o, ","); keep = ""
      for (j = 1; j <= n; j++) if (o[j] !~ /dir[+]?=/) keep = keep "," o[j]
      line = line " " keep
    } else line = line " " $i
  }
  print line }' /proc/self/mountinfo | sort
echo "== end"
"#;

/// A store with `base:1` (busybox), and a context whose Dockerfile starts `FROM base:1`
/// and goes on with `body`; `describe.sh` is in the context.
fn context_on_base(w: &World, body: &str) -> std::path::PathBuf {
    let base = w.context("base", BUSYBOX);
    assert_ok(&w.build(&base, &["-t", "base:1"]));
    let ctx = w.context(
        "ctx",
        &format!("FROM base:1\nCOPY describe.sh /describe.sh\n{body}"),
    );
    std::fs::write(ctx.join("describe.sh"), DESCRIBE).expect("write describe.sh");
    crate::common::open_up(&ctx);
    ctx
}

/// `kiln build` with kiln's phase trace on.
fn traced_build(w: &World, ctx: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    all.push(ctx.to_str().expect("utf-8 path"));
    w.kiln_env(&all, &[("KILN_TRACE_PHASES", "1")])
}

/// How many RUNs of the traced build ran in a prepared sandbox.
fn prepared_runs(out: &std::process::Output) -> usize {
    String::from_utf8_lossy(&out.stderr)
        .matches("pid1: /proc, /sys, /dev (prepared)")
        .count()
}

#[test]
fn a_prepared_sandbox_is_the_sandbox_made_for_its_run() {
    for id in identities() {
        for network in ["none", "host"] {
            let w = World::new(id);
            let ctx = context_on_base(
                &w,
                "RUN sh /describe.sh > /first\nRUN sh /describe.sh > /second\n",
            );
            let out = traced_build(
                &w,
                &ctx,
                &[
                    "--network",
                    network,
                    "--ulimit",
                    "nofile=1000:2000",
                    "--add-host",
                    "db:10.0.0.7",
                    "--shm-size",
                    "32m",
                    "-t",
                    "fp:1",
                ],
            );
            assert_ok(&out);
            assert_eq!(
                prepared_runs(&out),
                1,
                "{id:?}/{network}: the second RUN only is prepared: {}",
                both(&out)
            );
            let img = w.image("fp:1");
            let (first, second) = (img.text("first"), img.text("second"));
            // What both describe is a sandbox as kiln makes it: the check is not empty.
            for part in [
                "== mounts",
                "/proc ",
                "/dev/shm ",
                "size=32768k",
                "10.0.0.7\tdb",
                "Max open files            1000                 2000",
                "== end",
            ] {
                assert!(first.contains(part), "{id:?}/{network}: {part:?}: {first}");
            }
            assert!(
                !first.contains("wrote a sysctl"),
                "{id:?}/{network}: {first}"
            );
            assert_eq!(
                first, second,
                "{id:?}/{network}: the prepared sandbox differs from the one made for its RUN"
            );
        }
    }
}

#[test]
fn a_run_the_prepared_sandbox_does_not_serve_gets_one_made_for_it() {
    for id in identities() {
        let w = World::new(id);
        let secret = w.user_dir("secrets").join("k");
        std::fs::write(&secret, "not-a-real-secret").expect("write secret");
        if let Some(uid) = w.uid {
            std::os::unix::fs::chown(&secret, Some(uid), Some(uid)).expect("chown secret");
        }
        // After a first RUN (whose sandbox is made for it, as a build's first always is),
        // the secret (opened by a helper still in kiln's user namespace) and each use of a
        // cache directory (a host path of the RUN's own) get a sandbox made for them, and
        // the RUN after each a spare that was not prepared (a RUN like them would not be
        // served); the last RUN, after a plain one, is prepared.
        let ctx = context_on_base(
            &w,
            "RUN true\n\
             RUN --mount=type=secret,id=k test -s /run/secrets/k && echo seen > /secret-seen\n\
             RUN true\n\
             RUN --mount=type=cache,target=/c echo one > /c/x\n\
             RUN --mount=type=cache,target=/c cat /c/x > /cached\n\
             RUN true\n\
             RUN cat /cached > /again\n",
        );
        let arg = format!("id=k,src={}", secret.display());
        let out = traced_build(&w, &ctx, &["--secret", &arg, "-t", "fallback:1"]);
        assert_ok(&out);
        assert_eq!(prepared_runs(&out), 1, "{id:?}: {}", both(&out));
        let img = w.image("fallback:1");
        assert_eq!(img.text("secret-seen"), "seen\n", "{id:?}");
        assert_eq!(img.text("cached"), "one\n", "{id:?}");
        assert_eq!(img.text("again"), "one\n", "{id:?}");
    }
}

#[test]
fn a_bind_of_a_mount_point_shows_the_mount_not_what_it_covers() {
    if !crate::support::is_root() {
        eprintln!("note: not root, cannot mount a tmpfs in the context; skipped");
        return;
    }
    for id in identities() {
        let w = World::new(id);
        // In a context, `m` is a mount point: on the disk below it lies a file the mount
        // hides, on the mount another one. Binding `a` first makes the context's directory
        // a root of the sandbox's views (the RUN's own, in that RUN and, before, in the
        // sandbox prepared after it): `m` is below it, on another mount.
        let ctx = context_on_base(
            &w,
            "RUN --mount=type=bind,source=a,target=/a true\n\
             RUN --mount=type=bind,source=a,target=/a --mount=type=bind,source=m,target=/m ls /m > /same-run\n\
             RUN --mount=type=bind,source=a,target=/a true\n\
             RUN --mount=type=bind,source=m,target=/m ls /m > /next-run\n",
        );
        for d in ["a", "m"] {
            std::fs::create_dir(ctx.join(d)).expect("mkdir");
        }
        std::fs::write(ctx.join("m/hidden-underneath"), "x").expect("write");
        crate::common::open_up(&ctx);
        let _mounted = Tmpfs::mount(&ctx.join("m"), "mode=755");
        std::fs::write(ctx.join("m/visible-on-mount"), "x").expect("write");
        let out = traced_build(&w, &ctx, &["-t", "mounts:1"]);
        assert_ok(&out);
        let img = w.image("mounts:1");
        for f in ["same-run", "next-run"] {
            assert_eq!(
                img.text(f),
                "visible-on-mount\n",
                "{id:?}: {f} saw what the mount covers: {}",
                both(&out)
            );
        }
    }
}
