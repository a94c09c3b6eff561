//! Real sandbox tests (root; CI runs as root): a busybox rootfs, RUNs through both
//! snapshotters, users, env, network, mounts, the layer directory contract, a SIGKILL of
//! kiln mid-RUN, and the rootless path through the test user `kilnrootless` (and `nobody`,
//! which has no subordinate range).
//!
//! `harness = false`: the test binary is also the sandbox helper (like the kiln binary), so
//! `main` must dispatch the hidden helper argument before anything else.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_executor::sandbox::{
    self, MountKind, MountSpec, Network, RunOutcome, RunSpec, Snapshotter,
};

mod sandbox_support;
use sandbox_support::*;

// ---------- tests (root) ----------

fn run_changes_become_a_layer_with_whiteouts_and_opaque_dirs() {
    let mut sb = Sandbox::new();
    let spec = sb.spec(
        "echo hi > /f; rm /etc/x; rm -rf /d; mkdir -p /d /n/m; echo y > /d/y; chown 1000:10 /f",
    );
    let upper = spec.upper.clone();
    run(spec);
    let t = tree(&upper);
    let want: BTreeMap<String, String> = [
        ("d", "dir opaque 755 0:0"),
        ("d/y", "file \"y\\n\" 644 0:0"),
        ("etc", "dir 755 0:0"),
        ("etc/x", "char 0 0 0:0"),
        ("f", "file \"hi\\n\" 644 1000:10"),
        ("n", "dir 755 0:0"),
        ("n/m", "dir 755 0:0"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(t, want, "layer directory");
}

fn mount_points_never_reach_the_layer() {
    let mut sb = Sandbox::new();
    let mut spec = sb.spec("test -e /proc/self/status && test -c /dev/null && test -f /etc/hosts && test -d /sys/class");
    spec.mounts.push(MountSpec {
        target: "/mnt/tmp".into(),
        kind: MountKind::Tmpfs {
            size: Some(1 << 20),
        },
    });
    spec.files
        .push(("/dev/pipes/EOF".into(), b"script".to_vec(), 0o755));
    spec.files
        .push(("/run/kiln/script".into(), b"echo".to_vec(), 0o644));
    let upper = spec.upper.clone();
    run(spec);
    assert_eq!(
        tree(&upper),
        BTreeMap::new(),
        "an empty RUN leaves an empty layer"
    );
}

/// The mount points a RUN needs come from a stub layer below the image's: a RUN on an image
/// whose `/etc` (mode 0700 here) has no `hosts` sees the hosts file, and what it writes in
/// `/etc` lands in a copy of the image's `/etc`, with the image's mode, and nothing else.
fn mount_points_the_image_lacks_leave_its_directories_as_they_are() {
    let mut sb = Sandbox::new();
    let top = sb.dir.join("etc700");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::set_permissions(top.join("etc"), std::fs::Permissions::from_mode(0o700)).unwrap();
    sb.lowers.push(top);
    let spec = sb.spec(
        "stat -c %a /etc; grep -q localhost /etc/hosts && echo hosts; ls /etc; \
         test -d /proc/1 && echo proc; \
         echo x > /etc/new",
    );
    let upper = spec.upper.clone();
    let out = run(spec).stdout;
    assert_eq!(
        out,
        "700\nhosts\ngroup\nhosts\npasswd\nresolv.conf\nx\nproc\n"
    );
    let layer = tree(&upper);
    assert_eq!(
        layer.keys().collect::<Vec<_>>(),
        ["etc", "etc/new"],
        "{layer:?}"
    );
    assert_eq!(
        std::fs::metadata(upper.join("etc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
}

fn dangling_symlinked_mount_points_stay_inside_the_rootfs_and_leave_no_trace() {
    let mut sb = Sandbox::new();
    let links = sb.dir.join("links");
    std::fs::create_dir_all(links.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        links.join("etc/resolv.conf"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/../../../../tmp/kiln-escape-hosts",
        links.join("etc/hosts"),
    )
    .unwrap();
    let _ = std::fs::remove_file("/tmp/kiln-escape-hosts");
    sb.lowers.push(links);
    let spec = sb.spec("test -f /run/systemd/resolve/stub-resolv.conf && test -s /etc/hosts && test -s /tmp/kiln-escape-hosts && echo ok");
    let upper = spec.upper.clone();
    assert_eq!(run(spec).stdout, "ok\n");
    assert!(
        !Path::new("/tmp/kiln-escape-hosts").exists(),
        "a mount point escaped the rootfs"
    );
    assert_eq!(tree(&upper), BTreeMap::new());
}

fn unchanged_reads_and_noop_metadata_changes_leave_an_empty_layer() {
    let mut sb = Sandbox::new();
    let spec = sb.spec("cat /etc/passwd >/dev/null; chown root:root /etc/x; chmod 644 /etc/x; touch -r /etc/passwd /etc/passwd; true");
    let upper = spec.upper.clone();
    run(spec);
    assert_eq!(tree(&upper), BTreeMap::new());
}

/// The RUN's root overlay is `volatile`: its unmount, when the sandbox goes, does not sync
/// the store's whole filesystem, and an fsync inside the RUN does not wait for the disk.
fn the_root_overlay_is_volatile() {
    let mut sb = Sandbox::new();
    let r = try_run(sb.spec("cat /proc/mounts; sync; echo x > /f; sync /f")).unwrap();
    assert_eq!(r.outcome.exit_code, 0, "{}", r.stderr);
    let root = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[1] == "/" && f[2] == "overlay")
        .unwrap_or_else(|| panic!("no root overlay in /proc/mounts:\n{}", r.stdout));
    let options: Vec<&str> = root[3].split(',').collect();
    // Newer kernels show the flag as `fsync=volatile`, older ones as `volatile`.
    assert!(
        options
            .iter()
            .any(|o| *o == "volatile" || *o == "fsync=volatile"),
        "root overlay options: {}",
        root[3]
    );
    assert!(options.contains(&"userxattr"), "{}", root[3]);
}

fn exit_code_and_both_output_streams_are_reported() {
    let mut sb = Sandbox::new();
    let r = try_run(sb.spec("echo out; echo err >&2; printf 'no newline'; exit 3")).unwrap();
    assert_eq!(
        r.outcome,
        RunOutcome {
            exit_code: 3,
            signal: None
        }
    );
    assert_eq!(r.stdout, "out\nno newline\n");
    assert_eq!(r.stderr, "err\n");
    let r = try_run(sb.spec("kill -9 $$")).unwrap();
    assert_eq!(
        r.outcome,
        RunOutcome {
            exit_code: 137,
            signal: Some(9)
        }
    );
}

fn user_is_resolved_by_name_and_number() {
    let mut sb = Sandbox::new();
    let mut spec = sb.spec("id -u; id -g; id -G; echo $HOME");
    spec.user = "alice".into();
    assert_eq!(run(spec).stdout, "1000\n1000\n1000 10\n/home/alice\n");
    let mut spec = sb.spec("id -u; id -g");
    spec.user = "1234:55".into();
    assert_eq!(run(spec).stdout, "1234\n55\n");
    let mut spec = sb.spec("id -u; id -g");
    spec.user = "alice:wheel".into();
    assert_eq!(run(spec).stdout, "1000\n10\n");
    let mut spec = sb.spec("true");
    spec.user = "bob".into();
    let err = try_run(spec)
        .err()
        .expect("unknown user must fail")
        .to_string();
    assert!(
        err.contains("unable to find user bob: no matching entries in passwd file"),
        "{err}"
    );
}

fn env_cwd_hostname_and_pid_namespace_are_applied() {
    let mut sb = Sandbox::new();
    let mut spec = sb.spec("pwd; echo $FOO; echo $PATH; hostname; echo $$; umask");
    spec.env = vec![("FOO".into(), "bar".into())];
    spec.cwd = "/etc".into();
    let out = run(spec).stdout;
    assert_eq!(
        out,
        format!("/etc\nbar\n{}\nkilntest\n2\n0022\n", sandbox::DEFAULT_PATH)
    );
    let mut spec = sb.spec("true");
    spec.cwd = "/nonexistent".into();
    let err = try_run(spec)
        .err()
        .expect("missing cwd must fail")
        .to_string();
    assert!(
        err.contains("/nonexistent") && err.contains("No such file"),
        "{err}"
    );
    let spec = RunSpec {
        argv: vec!["nosuchcmd".into()],
        ..sb.spec("")
    };
    let err = try_run(spec)
        .err()
        .expect("missing program must fail")
        .to_string();
    assert!(
        err.contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{err}"
    );
}

fn capabilities_are_dockers_default_set_with_no_new_privs() {
    let mut sb = Sandbox::new();
    let out = run(sb.spec("grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status")).stdout;
    assert_eq!(
        out,
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\n"
    );
}

fn proc_knobs_are_read_only_and_sensitive_files_masked() {
    let mut sb = Sandbox::new();
    let script = "v=$(cat /proc/sys/kernel/sysrq); echo $v 2>/dev/null > /proc/sys/kernel/sysrq && echo wrote; \
                  test -w /proc/sysrq-trigger && echo writable; \
                  cat /proc/timer_list | wc -c; ls -A /proc/acpi | wc -l; ls -A /sys/firmware | wc -l; cat /proc/self/comm";
    let out = run(sb.spec(script)).stdout;
    assert_eq!(out, "0\n0\n0\ncat\n");
}

fn network_none_has_only_loopback_and_host_network_is_shared() {
    let mut sb = Sandbox::new();
    let mut spec =
        sb.spec("ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags");
    spec.network = Network::None;
    let out = run(spec).stdout;
    assert!(out.starts_with("lo\n"), "{out}");
    assert!(out.ends_with("0x9\n"), "lo must be up: {out}");
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let out = run(sb.spec("ls /sys/class/net")).stdout;
    assert_eq!(out.lines().count(), host.len(), "{out}");
}

/// RUNs at once in one kiln process (their helpers forked by one zygote) are strangers:
/// each sees only its own processes and files, holds only its stdio, and its output and
/// exit status are its own.
fn concurrent_runs_see_only_their_own_processes_files_and_descriptors() {
    let mut sb = Sandbox::new();
    let script = |me: &str, other: &str, code: u8| {
        format!(
            "echo {me} > /mine; sleep 60 & sleep 0.3; \
             set -- /proc/[0-9]*; echo $#; ls /proc/self/fd; test -e /{other} && echo sees-{other}; \
             cat /mine; echo to-stderr-{me} >&2; kill $!; exit {code}"
        )
    };
    let specs = [sb.spec(&script("a", "b", 3)), sb.spec(&script("b", "a", 4))];
    let uppers: Vec<PathBuf> = specs.iter().map(|s| s.upper.clone()).collect();
    let ran = block_on(async {
        let runs = specs.into_iter().map(|spec| async move {
            let mut out = Vec::new();
            let outcome = sandbox::run(spec, |l| out.push(l)).await.unwrap();
            (outcome, out)
        });
        futures_join(runs).await
    });
    for ((outcome, out), (me, code)) in ran.into_iter().zip([("a", 3), ("b", 4)]) {
        let text = |s: sandbox::OutputStream| {
            out.iter()
                .filter(|l| l.stream == s)
                .map(|l| String::from_utf8_lossy(&l.line).into_owned() + "\n")
                .collect::<String>()
        };
        // PID 1, the shell and the background sleep (alive until killed, however slow the
        // machine): nobody else's. The shell counts them with a glob of its own: a
        // pipeline's `ls /proc` could list /proc before its `grep` was forked (4, once).
        assert_eq!(
            text(sandbox::OutputStream::Stdout),
            format!("3\n0\n1\n2\n3\n{me}\n"),
            "RUN {me}"
        );
        assert_eq!(
            text(sandbox::OutputStream::Stderr),
            format!("to-stderr-{me}\n")
        );
        assert_eq!(outcome.exit_code, code);
    }
    for (upper, me) in uppers.iter().zip(["a", "b"]) {
        assert_eq!(
            std::fs::read_to_string(upper.join("mine")).unwrap(),
            format!("{me}\n")
        );
    }
}

/// Polls every future to completion on the current task (the test crate has no
/// `futures` dependency).
async fn futures_join<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// `--network none` RUNs at once each have a network namespace of their own (the zygote
/// lends each its own), with only `lo`, up; a listener a RUN leaves running is gone for the
/// RUN after it, which may be lent the same namespace.
fn network_none_runs_have_namespaces_of_their_own_with_only_loopback() {
    let mut sb = Sandbox::new();
    let script = "nc -l -p 4242 & pid=$!; sleep 0.3; kill -0 $pid && echo listening; \
                  ls /sys/class/net; cat /sys/class/net/lo/flags; readlink /proc/self/ns/net";
    let specs: Vec<RunSpec> = (0..2)
        .map(|_| RunSpec {
            network: Network::None,
            ..sb.spec(script)
        })
        .collect();
    let ran = block_on(futures_join(specs.into_iter().map(|spec| async move {
        let mut out = Vec::new();
        let outcome = sandbox::run(spec, |l| out.push(l)).await.unwrap();
        assert!(outcome.success(), "{outcome:?}");
        out.iter()
            .filter(|l| l.stream == sandbox::OutputStream::Stdout)
            .map(|l| String::from_utf8_lossy(&l.line).into_owned() + "\n")
            .collect::<String>()
    })));
    let mut namespaces = Vec::new();
    for out in &ran {
        let (head, ns) = out.rsplit_once("net:").unwrap_or_else(|| panic!("{out}"));
        assert_eq!(head, "listening\nlo\n0x9\n");
        namespaces.push(ns.to_string());
    }
    assert_ne!(
        namespaces[0], namespaces[1],
        "two RUNs at once share a network namespace"
    );
    // Port 4242 is 0x1092: nothing listens on it any more.
    let spec = RunSpec {
        network: Network::None,
        ..sb.spec("grep -c ':1092 ' /proc/net/tcp /proc/net/tcp6; ls /sys/class/net; true")
    };
    assert_eq!(run(spec).stdout, "/proc/net/tcp:0\n/proc/net/tcp6:0\nlo\n");
}

/// A `--network none` RUN that is cancelled (its helper killed, as a failing build or a
/// worker's cancelled action does) may leave its processes dying in its network
/// namespace, sockets open: that namespace is not lent to a later RUN.
fn a_cancelled_runs_network_namespace_is_not_lent_again() {
    use std::os::unix::fs::MetadataExt;
    let mut sb = Sandbox::new();
    let marker = "sleep 97531";
    let spec = RunSpec {
        network: Network::None,
        ..sb.spec(&format!("nc -l -p 4243 & exec {marker}"))
    };
    // Held open here, the cancelled RUN's namespace cannot be freed and its number given to
    // a new one, so a later RUN showing that number is in that very namespace.
    let cancelled: std::fs::File = block_on(async move {
        let running = tokio::spawn(sandbox::run(spec, |_| {}));
        let start = Instant::now();
        let netns = loop {
            let found = std::process::Command::new("pgrep")
                .args(["-f", marker])
                .output()
                .unwrap();
            let pid = String::from_utf8_lossy(&found.stdout)
                .split_whitespace()
                .next()
                .map(str::to_string);
            if let Some(ns) =
                pid.and_then(|p| std::fs::File::open(format!("/proc/{p}/ns/net")).ok())
            {
                break ns;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the RUN never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        netns
    });
    let cancelled = format!("net:[{}]", cancelled.metadata().unwrap().ino());
    for _ in 0..4 {
        let spec = RunSpec {
            network: Network::None,
            ..sb.spec("readlink /proc/self/ns/net; grep -c ':1093 ' /proc/net/tcp; true")
        };
        let out = run(spec).stdout;
        let (ns, listening) = out.split_once('\n').unwrap_or_else(|| panic!("{out}"));
        assert_ne!(
            ns, cancelled,
            "a later RUN was lent the cancelled RUN's namespace"
        );
        assert_eq!(listening, "0\n", "the cancelled RUN's listener is visible");
    }
}

fn extra_mounts_are_visible_and_read_only_binds_refuse_writes() {
    let mut sb = Sandbox::new();
    let host = sb.dir.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("h"), "host\n").unwrap();
    let secret = sb.dir.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let cache = sb.dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut spec = sb.spec(
        "cat /mnt/h/h; touch /mnt/h/new 2>/dev/null && echo wrote; cat /run/secrets/s; echo; stat -c '%a %u' /run/secrets/s; \
         echo c > /cache/c; ls /stage/d; echo z > /stage/z; cat /dev/pipes/EOF",
    );
    spec.mounts = vec![
        MountSpec {
            target: "/mnt/h".into(),
            kind: MountKind::Bind {
                host: host.clone(),
                readonly: true,
            },
        },
        MountSpec {
            target: "/run/secrets/s".into(),
            kind: MountKind::Secret {
                host: secret,
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        },
        MountSpec {
            target: "/cache".into(),
            kind: MountKind::Cache {
                host: cache.clone(),
            },
        },
        MountSpec {
            target: "/stage".into(),
            kind: MountKind::Layers {
                lowers: sb.lowers.clone(),
                readonly: false,
            },
        },
    ];
    spec.files
        .push(("/dev/pipes/EOF".into(), b"piped\n".to_vec(), 0o644));
    let upper = spec.upper.clone();
    let out = run(spec).stdout;
    assert_eq!(out, "host\ns3cret\n400 0\na\ninner\npiped\n");
    assert_eq!(std::fs::read_to_string(cache.join("c")).unwrap(), "c\n");
    assert!(!host.join("new").exists());
    assert!(!sb.lowers[0].join("z").exists());
    assert_eq!(
        tree(&upper),
        BTreeMap::new(),
        "mounts leave nothing in the layer"
    );
}

fn copy_snapshotter_gives_the_same_layer_as_overlay() {
    let scripts = [
        "echo hi > /f; rm /etc/x; rm -rf /d; mkdir -p /d /n/m; echo y > /d/y; chown 1000:10 /f",
        "rm /d/inner/b; echo 2 >> /d/a; ln -s /etc/passwd /l; ln /f2 /f3 2>/dev/null; echo > /f2; ln /f2 /f3; mkfifo /fifo",
        "rm -rf /keep/sub; echo new > /keep/sub; chmod 4755 /bin/busybox; setfattr -n user.k -v v /etc/passwd 2>/dev/null; true",
        "rm /etc/x; mkdir /etc/x; touch /etc/x/in; rm -rf /keep; ln -s /etc /keep; mkdir /d/inner/deeper",
        "true",
    ];
    for script in scripts {
        let mut sb = Sandbox::new();
        let a = sb.spec(script);
        let mut b = sb.spec(script);
        b.snapshotter = Snapshotter::Copy;
        let (ua, ub) = (a.upper.clone(), b.upper.clone());
        run(a);
        run(b);
        assert_eq!(tree(&ua), tree(&ub), "overlay vs copy for {script:?}");
    }
}

fn many_layers_beyond_the_mount_option_limit_are_stacked_in_order() {
    let mut sb = Sandbox::new();
    // 120 layers with long names: far more than fits in a 4 KiB lowerdir= option string.
    for i in 0..120 {
        let l = sb
            .dir
            .join(format!("layer-with-a-rather-long-directory-name-{i:04}"));
        std::fs::create_dir_all(l.join("stack")).unwrap();
        std::fs::write(l.join("stack/top"), format!("{i}\n")).unwrap();
        std::fs::write(l.join(format!("stack/{i}")), "").unwrap();
        sb.lowers.push(l);
    }
    let out = run(sb.spec("cat /stack/top; ls /stack | wc -l")).stdout;
    assert_eq!(out, "119\n121\n");
}

fn snapshotter_detection_finds_overlay() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let (s, why) = block_on(Snapshotter::detect(tmp.path()));
    assert_eq!((s, why), (Snapshotter::Overlay, None));
}

/// The spare helper forked while a `--network none` RUN ran holds a network namespace of
/// the zygote's pool: a host-network RUN after it must not be given it, nor a
/// `--network none` RUN after a host-network one the host's network.
fn a_spare_helper_keeps_to_its_network_choice() {
    let mut sb = Sandbox::new();
    let host = std::fs::read_dir("/sys/class/net").unwrap().count();
    for network in [
        Network::None,
        Network::Host,
        Network::Host,
        Network::None,
        Network::None,
        Network::Host,
    ] {
        let spec = RunSpec {
            network,
            ..sb.spec("ls /sys/class/net; readlink /proc/self/ns/net")
        };
        let out = run(spec).stdout;
        let names = out.lines().filter(|l| !l.starts_with("net:")).count();
        match network {
            Network::None => assert!(out.starts_with("lo\nnet:"), "{network:?}: {out}"),
            Network::Host => assert_eq!(names, host, "{network:?}: {out}"),
        }
    }
    // The spares of the other choice were let go and end by themselves: what is left
    // alive is the zygote and the spare forked last (its helper and, prepared, its PID 1).
    let start = Instant::now();
    loop {
        let alive: Vec<_> = descendants(std::process::id())
            .into_iter()
            .filter(|(pid, _)| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                *pid != std::process::id() && !matches!(state, Some("Z") | None)
            })
            .collect();
        if alive.len() <= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "spares let go are still alive: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A RUN's helper may have been forked while the RUN before it ran: it still gets
/// namespaces of its own, so nothing the RUN before left (a file in /dev/shm, a process
/// still running, a mount) reaches it, and its PID 1 is its own.
fn consecutive_runs_share_no_sandbox_state() {
    let mut sb = Sandbox::new();
    let first = RunSpec {
        // Insecure: the only RUN that may mount and rename its host.
        insecure: true,
        ..sb.spec(
            "echo left > /dev/shm/left; (sleep 1000 &); mount -t tmpfs none /keep; \
             hostname renamed",
        )
    };
    run(first);
    for _ in 0..3 {
        let out = run(sb.spec(
            "ls -A /dev/shm | wc -l; echo $$; set -- /proc/[0-9]*; echo $#; \
             grep -c ' /keep ' /proc/self/mountinfo; cat /keep/sub/file; hostname",
        ))
        .stdout;
        // Nothing in /dev/shm; the shell is PID 2 of a PID namespace holding only it and
        // PID 1; /keep is the image's; the host name is the sandbox's.
        assert_eq!(out, "0\n2\n2\n0\nk\nkilntest\n");
    }
}

/// While kiln runs, its helper processes are its zygote and at most one spare (the
/// helpers of RUNs that ended have exited); when kiln exits by itself, none is left.
fn no_helper_outlives_kiln() {
    use std::io::{BufRead, Write};
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(&exe)
        .env("KILN_SBTEST_MODE", "runs")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said, "ran\n");
    let helpers = |family: &[(u32, String)]| -> Vec<(u32, String)> {
        family
            .iter()
            .filter(|(pid, _)| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(sandbox::HELPER_ARG))
            })
            .cloned()
            .collect()
    };
    let start = Instant::now();
    let family = loop {
        let family = descendants(child.id());
        let found = helpers(&family);
        // The zygote, and the spare forked for the next RUN with the PID 1 of the sandbox
        // it prepared (module `prepared`).
        if found.len() == 3 {
            break family;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the zygote and a prepared spare expected: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // kiln exits by itself.
    child.stdin.take().unwrap().write_all(b"bye\n").unwrap();
    assert!(child.wait().unwrap().success());
    wait_all_gone(&family);
}

/// `no_helper_outlives_kiln`'s kiln: RUNs that change networks (each change kills the
/// spare forked for the other one), then it says so and exits when told.
fn runs_mode() {
    let mut sb = Sandbox::new();
    let networks = [Network::None, Network::Host, Network::None, Network::None];
    for network in networks {
        let spec = RunSpec {
            network,
            ..sb.spec("true")
        };
        assert!(run(spec).outcome.success());
    }
    println!("ran");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn killing_kiln_mid_run_leaves_no_process_and_no_mount() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(&exe)
        .env("KILN_SBTEST_MODE", "sleeper")
        .env("KILN_SBTEST_DIR", tmp.path())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let marker = "sleep 4242";
    loop {
        let found = std::process::Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .unwrap();
        if found.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the RUN never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let family = descendants(child.id());
    assert!(
        family.len() >= 3,
        "kiln, its zygote and a helper expected: {family:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let start = Instant::now();
    loop {
        let left = std::process::Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .unwrap();
        if !left.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sandbox processes survived: {:?}",
            left.stdout
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every process the killed kiln had started (its zygote, helpers, PID 1), found before
    // the kill: other kiln processes on the machine have helpers and zygotes of their own.
    wait_all_gone(&family);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = tmp.path().to_string_lossy().into_owned();
    assert!(
        !mountinfo.contains(&dir),
        "leftover mount under {dir}:\n{mountinfo}"
    );
}

/// Waits (at most 5 s) until none of `family` (pid and start time, so a reused pid is
/// not taken for it) is left.
fn wait_all_gone(family: &[(u32, String)]) {
    let start = Instant::now();
    loop {
        let survivors: Vec<&(u32, String)> = family
            .iter()
            .filter(|(pid, started)| proc_start(*pid).as_ref() == Some(started))
            .collect();
        if survivors.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "helper survived kiln: {survivors:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The start time (field 22 of `/proc/PID/stat`) of a live process: with its pid, names it
/// even after the pid is reused.
fn proc_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command name start at field 3 (state).
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// `root` and every process below it: (pid, start time).
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut family = vec![root];
    let mut i = 0;
    while i < family.len() {
        let p = family[i];
        family.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    family
        .into_iter()
        .filter_map(|pid| proc_start(pid).map(|s| (pid, s)))
        .collect()
}

fn sleeper_mode() {
    let dir = PathBuf::from(std::env::var("KILN_SBTEST_DIR").unwrap());
    let lower = busybox_layer(&dir);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let spec = RunSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "sleep 4242; true".into()],
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        hostname: String::new(),
        network: Network::Host,
        lowers: vec![lower],
        upper,
        work,
        mounts: vec![MountSpec {
            target: "/t".into(),
            kind: MountKind::Tmpfs { size: None },
        }],
        files: vec![],
        snapshotter: Snapshotter::Overlay,
        insecure: false,
        options: Default::default(),
    };
    let _ = try_run(spec);
}

fn per_run_overhead_of_true_is_small() {
    let n = std::env::var("KILN_SBTEST_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut sb = Sandbox::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut specs: Vec<RunSpec> = (0..n)
        .map(|_| RunSpec {
            argv: vec!["/bin/true".into()],
            ..sb.spec("")
        })
        .collect();
    let start = Instant::now();
    for spec in specs.drain(..) {
        let o = rt.block_on(sandbox::run(spec, |_| {})).unwrap();
        assert!(o.success());
    }
    let per = start.elapsed() / n;
    eprintln!("    per-RUN overhead of `true` (overlay, 2-layer busybox rootfs): {per:?}");
    assert!(per < Duration::from_millis(500), "{per:?}");
}

// ---------- rootless ----------

/// The one test account of the whole test suite (tests/common/mod.rs and the README's
/// "What the tests do to the machine" name it too), with a subordinate ID range.
const ROOTLESS_USER: &str = "kilnrootless";

fn ensure_rootless_user() {
    if std::process::Command::new("id")
        .arg(ROOTLESS_USER)
        .output()
        .unwrap()
        .status
        .success()
    {
        return;
    }
    let st = std::process::Command::new("useradd")
        .args(["-m", "-s", "/bin/sh", ROOTLESS_USER])
        .status()
        .unwrap();
    assert!(st.success(), "useradd failed");
}

fn ensure_subid(file: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if !text
        .lines()
        .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
    {
        let mut t = text;
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(&format!("{ROOTLESS_USER}:300000:65536\n"));
        std::fs::write(file, t).unwrap();
    }
}

fn rootless_run_maps_ids_through_the_subuid_range() {
    ensure_rootless_user();
    ensure_subid("/etc/subuid");
    ensure_subid("/etc/subgid");
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path().join("rl");
    std::fs::create_dir(&dir).unwrap();
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", ROOTLESS_USER])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse::<u32>()
    .unwrap();
    rustix::fs::chown(&dir, Some(rustix::fs::Uid::from_raw(uid)), None).unwrap();
    // A layer with a device node, which the copy snapshotter cannot recreate rootless.
    let devlayer = dir.join("devlayer");
    std::fs::create_dir(&devlayer).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        devlayer.join("node"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    for p in [&devlayer, &devlayer.join("node")] {
        rustix::fs::chown(p, Some(rustix::fs::Uid::from_raw(uid)), None).unwrap();
    }
    // The test binary must be reachable by the unprivileged user.
    let exe = std::env::current_exe().unwrap();
    let copy = tmp.path().join("sbtest");
    std::fs::copy(&exe, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            ROOTLESS_USER,
            "--",
            "env",
            "KILN_SBTEST_MODE=rootless",
        ])
        .arg(format!("KILN_SBTEST_DIR={}", dir.display()))
        .arg(&copy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rootless driver failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("inside: f 1000:1000"), "{stdout}");
    assert!(stdout.contains("run-output: 0 1000"), "{stdout}");
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert!(
        stdout.contains(&format!("host-net: {host_links} ro proc")),
        "{stdout}"
    );
    let upper = dir.join("upper");
    let md = std::fs::symlink_metadata(upper.join("f")).unwrap();
    // Container ID 1000 is subordinate ID 999 of the range (ID 0 is the user itself).
    let start = |file: &str| -> u32 {
        let t = std::fs::read_to_string(file).unwrap();
        let line = t
            .lines()
            .find(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
            .unwrap()
            .to_string();
        line.split(':').nth(1).unwrap().parse().unwrap()
    };
    let want = (start("/etc/subuid") + 999, start("/etc/subgid") + 999);
    assert_eq!(
        (md.uid(), md.gid()),
        want,
        "owner seen from outside the namespace"
    );
    let wh = std::fs::symlink_metadata(upper.join("etc/x")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout made rootless"
    );
    assert!(stdout.contains("copy-layer: [\"c\"]"), "{stdout}");
    let t = tree(&upper);
    assert_eq!(
        t.keys().cloned().collect::<Vec<_>>(),
        ["etc", "etc/x", "f"],
        "{t:?}"
    );
}

fn rootless_single_id_mapping_runs_as_root_and_refuses_foreign_chown() {
    // An account every system has and that has no subordinate range: kiln must fall back
    // to a single-ID mapping. (No account is created for this.)
    const USER: &str = "nobody";
    for f in ["/etc/subuid", "/etc/subgid"] {
        let t = std::fs::read_to_string(f).unwrap_or_default();
        assert!(
            !t.lines().any(|l| l.starts_with(&format!("{USER}:"))),
            "{USER} has a range in {f}"
        );
    }
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path().join("rl");
    std::fs::create_dir(&dir).unwrap();
    let uid: u32 = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", USER])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    rustix::fs::chown(&dir, Some(rustix::fs::Uid::from_raw(uid)), None).unwrap();
    let copy = tmp.path().join("sbtest");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", USER, "--", "env", "KILN_SBTEST_MODE=rootless-single"])
        .arg(format!("KILN_SBTEST_DIR={}", dir.display()))
        .arg(&copy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "driver failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("single: 0 denied"), "{stdout}");
    let md = std::fs::symlink_metadata(dir.join("upper/f")).unwrap();
    assert_eq!(md.uid(), uid, "root inside is the user outside");
}

fn rootless_single_mode() {
    let state = kiln_executor::userns::enter_user_namespace_if_needed().unwrap();
    assert!(
        matches!(state, kiln_executor::userns::UsernsState::SingleId { .. }),
        "{state:?}"
    );
    let dir = PathBuf::from(std::env::var("KILN_SBTEST_DIR").unwrap());
    let lower = busybox_layer(&dir);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let script = "echo f > /f; id -u; chown 1000 /f 2>/dev/null || echo denied";
    let spec = RunSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        hostname: String::new(),
        network: Network::Host,
        lowers: vec![lower],
        upper,
        work,
        mounts: vec![],
        files: vec![],
        snapshotter: Snapshotter::Overlay,
        insecure: false,
        options: Default::default(),
    };
    println!("single: {}", words(&run(spec).stdout));
}

fn rootless_mode() {
    let state = kiln_executor::userns::enter_user_namespace_if_needed().unwrap();
    assert!(
        matches!(state, kiln_executor::userns::UsernsState::Mapped { .. }),
        "{state:?}"
    );
    let dir = PathBuf::from(std::env::var("KILN_SBTEST_DIR").unwrap());
    let lower = busybox_layer(&dir);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let spec = RunSpec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo f > /f; chown 1000:1000 /f; rm /etc/x; id -u; stat -c %u /f".into(),
        ],
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        hostname: "rootless".into(),
        network: Network::None,
        lowers: vec![lower],
        upper: upper.clone(),
        work,
        mounts: vec![],
        files: vec![],
        snapshotter: Snapshotter::Overlay,
        insecure: false,
        options: Default::default(),
    };
    let r = run(spec.clone());
    println!("run-output: {}", words(&r.stdout));
    let md = std::fs::symlink_metadata(upper.join("f")).unwrap();
    println!("inside: f {}:{}", md.uid(), md.gid());
    // Host network: sysfs cannot be mounted, the host's /sys is bound read-only instead.
    let (upper2, work2) = (dir.join("upper2"), dir.join("work2"));
    std::fs::create_dir_all(&upper2).unwrap();
    std::fs::create_dir_all(&work2).unwrap();
    let script = "ls /sys/class/net | grep -c .; touch /sys/x 2>/dev/null || echo ro; \
                  head -c 4 /proc/self/stat >/dev/null && echo proc";
    let host = RunSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        network: Network::Host,
        upper: upper2,
        work: work2,
        ..spec
    };
    println!("host-net: {}", words(&run(host.clone()).stdout));
    // Copy snapshotter, rootless, over a layer holding a device node.
    let (upper3, work3) = (dir.join("upper3"), dir.join("work3"));
    std::fs::create_dir_all(&upper3).unwrap();
    std::fs::create_dir_all(&work3).unwrap();
    let copy = RunSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "echo c > /c".into()],
        lowers: vec![dir.join("base"), dir.join("devlayer")],
        upper: upper3.clone(),
        work: work3,
        snapshotter: Snapshotter::Copy,
        ..host
    };
    run(copy);
    println!("copy-layer: {:?}", tree(&upper3).keys().collect::<Vec<_>>());
}

// ---------- harness ----------

fn main() {
    if let Some(code) = sandbox::helper_main() {
        std::process::exit(code);
    }
    match std::env::var("KILN_SBTEST_MODE").as_deref() {
        Ok("sleeper") => return sleeper_mode(),
        Ok("runs") => return runs_mode(),
        Ok("rootless") => return rootless_mode(),
        Ok("rootless-single") => return rootless_single_mode(),
        _ => {}
    }
    let tests: &[(&str, fn())] = &[
        (
            "rootless_single_id_mapping_runs_as_root_and_refuses_foreign_chown",
            rootless_single_id_mapping_runs_as_root_and_refuses_foreign_chown,
        ),
        (
            "run_changes_become_a_layer_with_whiteouts_and_opaque_dirs",
            run_changes_become_a_layer_with_whiteouts_and_opaque_dirs,
        ),
        (
            "mount_points_the_image_lacks_leave_its_directories_as_they_are",
            mount_points_the_image_lacks_leave_its_directories_as_they_are,
        ),
        (
            "dangling_symlinked_mount_points_stay_inside_the_rootfs_and_leave_no_trace",
            dangling_symlinked_mount_points_stay_inside_the_rootfs_and_leave_no_trace,
        ),
        (
            "mount_points_never_reach_the_layer",
            mount_points_never_reach_the_layer,
        ),
        (
            "unchanged_reads_and_noop_metadata_changes_leave_an_empty_layer",
            unchanged_reads_and_noop_metadata_changes_leave_an_empty_layer,
        ),
        ("the_root_overlay_is_volatile", the_root_overlay_is_volatile),
        (
            "exit_code_and_both_output_streams_are_reported",
            exit_code_and_both_output_streams_are_reported,
        ),
        (
            "user_is_resolved_by_name_and_number",
            user_is_resolved_by_name_and_number,
        ),
        (
            "env_cwd_hostname_and_pid_namespace_are_applied",
            env_cwd_hostname_and_pid_namespace_are_applied,
        ),
        (
            "capabilities_are_dockers_default_set_with_no_new_privs",
            capabilities_are_dockers_default_set_with_no_new_privs,
        ),
        (
            "proc_knobs_are_read_only_and_sensitive_files_masked",
            proc_knobs_are_read_only_and_sensitive_files_masked,
        ),
        (
            "network_none_has_only_loopback_and_host_network_is_shared",
            network_none_has_only_loopback_and_host_network_is_shared,
        ),
        (
            "concurrent_runs_see_only_their_own_processes_files_and_descriptors",
            concurrent_runs_see_only_their_own_processes_files_and_descriptors,
        ),
        (
            "network_none_runs_have_namespaces_of_their_own_with_only_loopback",
            network_none_runs_have_namespaces_of_their_own_with_only_loopback,
        ),
        (
            "a_cancelled_runs_network_namespace_is_not_lent_again",
            a_cancelled_runs_network_namespace_is_not_lent_again,
        ),
        (
            "extra_mounts_are_visible_and_read_only_binds_refuse_writes",
            extra_mounts_are_visible_and_read_only_binds_refuse_writes,
        ),
        (
            "copy_snapshotter_gives_the_same_layer_as_overlay",
            copy_snapshotter_gives_the_same_layer_as_overlay,
        ),
        (
            "many_layers_beyond_the_mount_option_limit_are_stacked_in_order",
            many_layers_beyond_the_mount_option_limit_are_stacked_in_order,
        ),
        (
            "snapshotter_detection_finds_overlay",
            snapshotter_detection_finds_overlay,
        ),
        (
            "a_spare_helper_keeps_to_its_network_choice",
            a_spare_helper_keeps_to_its_network_choice,
        ),
        (
            "consecutive_runs_share_no_sandbox_state",
            consecutive_runs_share_no_sandbox_state,
        ),
        ("no_helper_outlives_kiln", no_helper_outlives_kiln),
        (
            "killing_kiln_mid_run_leaves_no_process_and_no_mount",
            killing_kiln_mid_run_leaves_no_process_and_no_mount,
        ),
        (
            "per_run_overhead_of_true_is_small",
            per_run_overhead_of_true_is_small,
        ),
        (
            "rootless_run_maps_ids_through_the_subuid_range",
            rootless_run_maps_ids_through_the_subuid_range,
        ),
    ];
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    if !rustix::process::geteuid().is_root() {
        println!("sandbox tests need root (CI runs as root); skipped");
        return;
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in tests {
        if !args.is_empty() && !args.iter().any(|a| name.contains(a.as_str())) {
            continue;
        }
        ran += 1;
        let start = Instant::now();
        let ok = std::panic::catch_unwind(f).is_ok();
        println!(
            "test {name} ... {} ({:.2?})",
            if ok { "ok" } else { "FAILED" },
            start.elapsed()
        );
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(101);
    }
}
