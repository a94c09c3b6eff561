//! The RUN sandbox: a build as root holds no more power over the host than a rootless one.
//! Devices made in a build or shipped in an image never open a host device; raw sockets
//! never see the host's traffic; descriptors leaked to kiln never reach the RUN; every
//! submount of a read-only bind is read-only; Docker's masked paths are masked.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BUSYBOX, Identity, World, assert_ok, both, identities};

/// testdata/hostile/probe.c, built static into `dir/probe`.
fn probe(dir: &Path) -> PathBuf {
    let src = crate::common::testdata("hostile").join("probe.c");
    let out = dir.join("probe");
    let st = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("cc (gcc with libc6-dev) builds the probe");
    assert!(
        st.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// A context with busybox, the probe at /probe, and `dockerfile` after the base.
fn probe_context(w: &World, name: &str, body: &str) -> PathBuf {
    let ctx = w.context(name, &format!("{BUSYBOX}COPY probe /probe\n{body}"));
    probe(&ctx);
    crate::common::open_up(&ctx);
    ctx
}

fn snapshotters() -> [&'static str; 2] {
    ["overlay", "copy"]
}

#[test]
fn run_cannot_make_or_open_host_devices() {
    // The host's root filesystem device: reading it through a node made in the build
    // would read the host's disk.
    let root_dev = std::fs::metadata("/").expect("stat /").dev();
    let (maj, min) = (libc_major(root_dev), libc_minor(root_dev));
    for id in identities() {
        for snap in snapshotters() {
            let w = World::new(id);
            let body = format!(
                "RUN /probe mknod /null 1 3 > /made-null; /probe open /null > /open-null; \
                 /probe mknod /disk {maj} {min} > /made-disk; /probe open /disk > /open-disk; true\n"
            );
            let ctx = probe_context(&w, "ctx", &body);
            assert_ok(&w.build(&ctx, &["--snapshotter", snap, "-t", "dev:1"]));
            let img = w.image("dev:1");
            for f in ["/made-null", "/open-null", "/made-disk", "/open-disk"] {
                let text = img.text(f.trim_start_matches('/'));
                assert!(
                    text.contains("denied"),
                    "{id:?}/{snap}: {f} says {text:?}: a RUN reached a host device"
                );
            }
        }
    }
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

/// A docker-archive whose one layer holds `/probe` and device nodes `/devnull` (1:3) and
/// `/devdisk` (the host root filesystem's device), mode 0666: what a hostile image ships.
fn device_image(dir: &Path, probe: &Path) -> PathBuf {
    let root_dev = std::fs::metadata("/").expect("stat /").dev();
    let mut layer = tar::Builder::new(Vec::new());
    let probe_bytes = std::fs::read(probe).expect("read probe");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(probe_bytes.len() as u64);
    layer
        .append_data(&mut h, "probe", &probe_bytes[..])
        .expect("append probe");
    for (name, maj, min) in [
        ("devnull", 1, 3),
        ("devdisk", libc_major(root_dev), libc_minor(root_dev)),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(maj as u32).expect("major");
        h.set_device_minor(min as u32).expect("minor");
        layer
            .append_data(&mut h, name, &[][..])
            .expect("append node");
    }
    let layer = layer.into_inner().expect("layer tar");
    let digest = sha256_hex(&layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    })
    .to_string();
    let config_hex = sha256_hex(config.as_bytes());
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["devices:1"],
        "Layers": [format!("{digest}/layer.tar")],
    }])
    .to_string();
    let path = dir.join("devices.tar");
    let mut ar = tar::Builder::new(std::fs::File::create(&path).expect("create archive"));
    for (name, data) in [
        ("manifest.json".to_string(), manifest.into_bytes()),
        (format!("{config_hex}.json"), config.into_bytes()),
        (format!("{digest}/layer.tar"), layer),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        ar.append_data(&mut h, name, &data[..]).expect("append");
    }
    ar.into_inner().expect("archive").flush().expect("flush");
    crate::common::open_up(dir);
    path
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

#[test]
fn device_nodes_from_an_image_never_open_a_host_device() {
    // Root unpacks the device nodes and must still not open them; a user namespace cannot
    // make them, so a rootless build goes without them, and both give the same image.
    let mut image_ids = Vec::new();
    for id in identities() {
        for snap in snapshotters() {
            let w = World::new(id);
            let dir = w.user_dir("archive");
            let probe = probe(&dir);
            let archive = device_image(&dir, &probe);
            assert_ok(&w.kiln(&["load", "-i", archive.to_str().expect("utf-8")]));
            let ctx = w.context(
                "ctx",
                "FROM devices:1\nRUN [\"/probe\", \"open\", \"/devnull\"]\nRUN [\"/probe\", \"open\", \"/devdisk\"]\n",
            );
            let out = w.build(&ctx, &["--snapshotter", snap, "-t", "x:1"]);
            assert_ok(&out);
            let log = both(&out);
            assert!(!log.contains("open: ALLOWED"), "{id:?} {snap}: {log}");
            assert_eq!(
                log.matches("open: denied").count(),
                2,
                "{id:?} {snap}: {log}"
            );
            let inspect = w.kiln(&["images"]);
            image_ids.push((
                id,
                snap,
                String::from_utf8_lossy(&inspect.stdout).into_owned(),
            ));
        }
    }
    let first = &image_ids[0].2;
    for (id, snap, ids) in &image_ids {
        assert_eq!(
            ids, first,
            "{id:?} {snap}: the same images as {:?}",
            image_ids[0]
        );
    }
}

#[test]
fn raw_sockets_never_reach_the_host_network() {
    for id in identities() {
        let w = World::new(id);
        // RUN's default network is the host's.
        let ctx = probe_context(&w, "ctx", "RUN [\"/probe\", \"packet\"]\n");
        let out = w.build(&ctx, &["-t", "net:1"]);
        assert_ok(&out);
        let log = both(&out);
        assert!(log.contains("packet: denied"), "{id:?}: {log}");
        assert!(!log.contains("packet: ALLOWED"), "{id:?}: {log}");
    }
}

#[test]
fn descriptors_leaked_to_kiln_never_reach_run() {
    for id in identities() {
        let w = World::new(id);
        // A host directory with a file the build must not read, open as fd 7 in kiln's
        // caller without close-on-exec (as shells and job servers leak them).
        let host = w.user_dir("hostdir");
        let token = format!("host-secret-{}", std::process::id());
        std::fs::write(host.join("token.txt"), &token).expect("write token");
        crate::common::open_up(&host);
        let ctx = probe_context(
            &w,
            "ctx",
            "RUN /probe fds; cat /proc/self/fd/7/token.txt /proc/1/fd/7/token.txt; ls /proc/1/fd; true\n",
        );
        let kiln = crate::common::kiln_bin();
        let script = format!(
            "exec 7<{host}; exec {kiln} --root {store} build --progress plain -t fd:1 {ctx}",
            host = host.display(),
            kiln = kiln.display(),
            store = w.store().display(),
            ctx = ctx.display()
        );
        let mut cmd = match id {
            Identity::Root => Command::new("sh"),
            Identity::Rootless => {
                let mut c = Command::new("runuser");
                c.args(["-u", crate::support::USER, "--", "sh"]);
                c
            }
        };
        let out = cmd
            .arg("-c")
            .arg(&script)
            .env("HOME", &w.home)
            .current_dir(&w.home)
            .output()
            .expect("sh");
        assert_ok(&out);
        let log = both(&out);
        assert!(
            log.contains("fds: done"),
            "{id:?}: probe did not run: {log}"
        );
        assert!(!log.contains("INHERITED"), "{id:?}: {log}");
        assert!(
            !log.contains(&token),
            "{id:?}: the host file was read: {log}"
        );
    }
}

#[test]
fn read_only_binds_are_read_only_all_the_way_down() {
    for id in identities() {
        for network in ["host", "none"] {
            let w = World::new(id);
            // Every mount below /sys and /proc/sys that is not read-only is printed (the
            // marker is split in the command so that the echoed command never matches).
            let ctx = w.context(
                "ctx",
                &format!(
                    "{BUSYBOX}RUN awk '($5 ~ \"^/sys\" || $5 ~ \"^/proc/sys\") && $6 !~ /(^|,)ro(,|$)/ {{ print \"WRITA\" \"BLE \" $5 }}' /proc/self/mountinfo; echo checked-mounts\n"
                ),
            );
            let out = w.build(&ctx, &["--network", network, "-t", "ro:1"]);
            assert_ok(&out);
            let log = both(&out);
            assert!(log.contains("checked-mounts"), "{log}");
            assert!(!log.contains("WRITABLE"), "{id:?}/{network}: {log}");
        }
    }
}

#[test]
fn dockers_masked_paths_are_masked() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!(
                "{BUSYBOX}RUN for f in /proc/kcore /proc/keys /proc/interrupts /proc/timer_list /proc/sched_debug; do \
                 [ -e $f ] && echo \"$f $(head -c 64 $f | wc -c)\"; done; \
                 ls /sys/firmware | wc -l; ls /proc/acpi /proc/asound 2>/dev/null | wc -l; \
                 (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo WROTE\"\"-SYSCTL; echo masked-done\n"
            ),
        );
        let out = w.build(&ctx, &["-t", "mask:1"]);
        assert_ok(&out);
        let log = both(&out);
        assert!(log.contains("masked-done"), "{log}");
        assert!(!log.contains("WROTE-SYSCTL"), "{id:?}: {log}");
        for line in log.lines().filter(|l| l.contains("/proc/")) {
            if let Some(n) = line.rsplit(' ').next()
                && n.chars().all(|c| c.is_ascii_digit())
                && !n.is_empty()
            {
                assert_eq!(n, "0", "{id:?}: a masked file has content: {line}\n{log}");
            }
        }
    }
}

#[test]
fn dockers_seccomp_profile_refuses_what_it_refuses() {
    for id in identities() {
        let w = World::new(id);
        let ctx = probe_context(
            &w,
            "ctx",
            "RUN for s in unshare-user keyctl vsock alg-highbits; do /probe syscall $s; done; \
             sh -c 'echo forked-child' & wait\n",
        );
        let out = w.build(&ctx, &["-t", "seccomp:1"]);
        assert_ok(&out);
        let log = both(&out);
        // Forks and threads still work (clone without namespace flags; clone3 → ENOSYS).
        assert!(log.contains("forked-child"), "{id:?}: {log}");
        for s in ["unshare-user", "keyctl", "vsock", "alg-highbits"] {
            assert!(
                log.contains(&format!("{s}: denied (Operation not permitted)")),
                "{id:?}: {s} was not refused by seccomp: {log}"
            );
        }
    }
}

/// The `pids` line of /proc/self/cgroup inside a RUN, then 120 children that each note
/// that they started (the loop's shell dies at the first fork that fails), then how many
/// did, once they are gone.
const FORK_LOOP: &str = "RUN grep pids /proc/self/cgroup; (i=0; while [ $i -lt 120 ]; do \
    (echo x >> /started; sleep 2) & i=$((i+1)); done) 2>/dev/null; sleep 3; \
    echo procs=$(wc -l < /started)\n";

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context("ctx", &format!("{BUSYBOX}{FORK_LOOP}"));
        let out = w.build(&ctx, &["--pids-limit", "40", "-t", "pids:1"]);
        assert_ok(&out);
        let log = both(&out);
        // The echoed command holds "procs=" too: take the line with a number after it.
        let procs: usize = log
            .lines()
            .find_map(|l| l.split("procs=").nth(1).and_then(|n| n.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no process count: {log}"));
        let supported = match kiln_cgroup_support(id) {
            Some(s) => s,
            None => continue,
        };
        if supported {
            assert!(
                procs <= 40,
                "{id:?}: {procs} processes under --pids-limit 40: {log}"
            );
            // A cgroup of kiln's: per RUN on cgroup v2, per build on v1.
            assert!(
                log.contains("/kiln-run-") || log.contains("/kiln-build-"),
                "{id:?}: not in a cgroup of kiln's: {log}"
            );
            let path = log
                .lines()
                .find_map(|l| l.split(":pids:").nth(1))
                .unwrap_or_else(|| panic!("no cgroup path: {log}"));
            let dir = format!("/sys/fs/cgroup/pids{}", path.trim());
            // Gone once the build is over: right away for a RUN's, and a build's (which
            // kiln cannot leave while it runs) by the next kiln that makes one.
            let again = w.build(&ctx, &["--no-cache", "-t", "pids:2"]);
            assert_ok(&again);
            assert!(
                !std::path::Path::new(&dir).exists(),
                "{id:?}: {dir} left behind"
            );
        } else {
            // No cgroup to limit with: said once, and the build carried on.
            assert_eq!(
                log.matches("RUN steps run without resource limits").count(),
                1,
                "{id:?}: {log}"
            );
        }
    }
}

/// Whether kiln can make RUN cgroups for `id` on this machine: v1 pids as root, or a
/// delegated cgroup v2 (not delegated to the test user here). None: cannot tell.
fn kiln_cgroup_support(id: Identity) -> Option<bool> {
    let v2 = rustix::fs::statfs("/sys/fs/cgroup")
        .map(|s| s.f_type == 0x6367_7270)
        .ok()?;
    Some(match id {
        Identity::Root => v2 || std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists(),
        // Whether a v2 cgroup is delegated to the test user depends on how the machine
        // started it; without v2 there is nothing to delegate.
        Identity::Rootless if v2 => return None,
        Identity::Rootless => false,
    })
}

#[test]
fn insecure_runs_get_every_capability_and_still_no_host_power() {
    for id in identities() {
        let w = World::new(id);
        let ctx = probe_context(
            &w,
            "ctx",
            // core_pattern is written with the value it has: harmless to the host even if it
            // went through.
            "RUN --security=insecure mkdir -p /mnt2 && mount -t tmpfs none /mnt2 && echo mount\"\"ed; \
             /probe syscall keyctl; /probe packet; /probe mknod /null 1 3; \
             cp=$(cat /proc/sys/kernel/core_pattern); \
             (echo \"$cp\" > /proc/sys/kernel/core_pattern) 2>/dev/null && echo core-pattern-WRIT\"\"TEN; true\n",
        );
        let out = w.build(&ctx, &["--allow", "security.insecure", "-t", "insecure:1"]);
        assert_ok(&out);
        let log = both(&out);
        // CAP_SYS_ADMIN in the build's namespaces and no seccomp filter...
        assert!(log.contains("mounted"), "{id:?}: {log}");
        assert!(log.contains("keyctl: ALLOWED"), "{id:?}: {log}");
        // ...but still nothing of the host: no raw socket on its network, no device.
        assert!(log.contains("packet: denied"), "{id:?}: {log}");
        assert!(log.contains("mknod: denied"), "{id:?}: {log}");
        // ...and not the host's root for uid checks: the host's sysctls stay its own.
        assert!(!log.contains("core-pattern-WRITTEN"), "{id:?}: {log}");
    }
}

#[test]
fn host_device_nodes_and_root_only_proc_files_stay_out_of_reach() {
    use std::os::unix::fs::MetadataExt;
    for id in identities() {
        let w = World::new(id);
        let before = std::fs::metadata("/dev/full").expect("stat /dev/full");
        // chmod to the mode it has: harmless to the host even if it went through, but it
        // would still move the host node's ctime.
        let ctx = w.context(
            "ctx",
            &format!(
                "{BUSYBOX}RUN chmod 666 /dev/full; chown 0:0 /dev/null; \
                 echo kpageflags=$(head -c 64 /proc/kpageflags 2>/dev/null | wc -c); \
                 echo slabinfo=$(head -c 64 /proc/slabinfo 2>/dev/null | wc -c); \
                 echo x > /dev/null && echo wrote-dev-null\n"
            ),
        );
        let out = w.build(&ctx, &["-t", "devnodes:1"]);
        assert_ok(&out);
        let log = both(&out);
        let after = std::fs::metadata("/dev/full").expect("stat /dev/full");
        assert_eq!(
            (
                before.mode(),
                before.uid(),
                before.ctime(),
                before.ctime_nsec()
            ),
            (after.mode(), after.uid(), after.ctime(), after.ctime_nsec()),
            "{id:?}: the host's /dev/full changed: {log}"
        );
        // The devices still work as devices.
        assert!(log.contains("wrote-dev-null"), "{id:?}: {log}");
        for f in ["kpageflags", "slabinfo"] {
            assert!(
                log.contains(&format!("{f}=0")),
                "{id:?}: {f} readable: {log}"
            );
        }
    }
}

/// The uids /etc/passwd gives an account.
fn account_uids() -> Vec<u32> {
    std::fs::read_to_string("/etc/passwd")
        .expect("read /etc/passwd")
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

#[test]
fn run_is_nobody_in_particular_to_a_host_service_checking_peer_credentials() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    for id in identities() {
        let w = World::new(id);
        // A host service on an abstract Unix socket (reachable over the default host
        // network) that trusts its peer's uid, as many daemons trust uid 0.
        let name = format!("kiln-peer-{}-{id:?}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixListener::bind_addr(&addr).expect("bind the abstract socket");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let cred = rustix::net::sockopt::socket_peercred(&conn).expect("SO_PEERCRED");
            let mut byte = [0u8; 1];
            std::io::Read::read_exact(&mut conn, &mut byte).expect("read the byte");
            cred.uid.as_raw()
        });
        let ctx = probe_context(
            &w,
            "ctx",
            &format!("RUN [\"/probe\", \"peer\", \"{name}\"]\n"),
        );
        let out = w.build(&ctx, &["-t", "peer:1"]);
        assert_ok(&out);
        let log = both(&out);
        assert!(log.contains("peer: ALLOWED"), "{id:?}: {log}");
        let uid = server.join().expect("listener thread");
        assert_ne!(uid, 0, "{id:?}: the RUN was the host's root to its peer");
        match id {
            // Rootless: the RUN's root is the user who ran kiln.
            Identity::Rootless => assert_eq!(Some(uid), w.uid, "{log}"),
            // Real root: an ID of no account on the host.
            Identity::Root => assert!(
                !account_uids().contains(&uid),
                "the RUN was account uid {uid} to its peer"
            ),
        }
    }
}
