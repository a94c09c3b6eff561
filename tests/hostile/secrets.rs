//! Hole 6: a `--secret` never reaches a disk, a message or a record. Its value is nowhere
//! under the store (nor in `/dev/shm` or the runtime directory) after a build that
//! succeeded, after a RUN that failed, and after kiln was killed with SIGKILL while a RUN
//! had the secret mounted; and kiln never prints it.

use crate::support::{
    BUSYBOX, World, assert_ok, assert_refused, both, files_containing, identities,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A value no file holds by chance, and a file (readable by the identity) that holds it.
fn secret(w: &World) -> (String, PathBuf) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let value = format!("kiln-hostile-secret-{}-{nanos}", std::process::id());
    let file = w.user_dir("secrets").join("k");
    std::fs::write(&file, &value).expect("write secret");
    if let Some(uid) = w.uid {
        std::os::unix::fs::chown(&file, Some(uid), Some(uid)).expect("chown secret");
    }
    (value, file)
}

/// Where a leaked secret could sit outside the store: shared-memory and runtime tmpfs.
fn tmpfs_dirs(w: &World) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/dev/shm")];
    dirs.extend(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
    let uid = w.uid.unwrap_or_else(|| rustix::process::getuid().as_raw());
    dirs.push(PathBuf::from(format!("/run/user/{uid}")));
    dirs
}

fn assert_nowhere(w: &World, value: &str, when: &str) {
    let store = w.store();
    let mut found = files_containing(&store, value.as_bytes());
    for dir in tmpfs_dirs(w) {
        found.extend(files_containing(&dir, value.as_bytes()));
    }
    assert!(
        found.is_empty(),
        "{:?} {when}: the secret is in {found:?}",
        w.id
    );
}

fn assert_not_printed(out: &std::process::Output, value: &str) {
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(value)
            && !String::from_utf8_lossy(&out.stderr).contains(value),
        "kiln printed the secret: {}",
        both(out)
    );
}

fn secret_arg(file: &Path) -> String {
    format!("id=k,src={}", file.display())
}

#[test]
fn a_secret_stays_out_of_the_store_when_the_build_succeeds_or_fails() {
    for id in identities() {
        let w = World::new(id);
        let (value, file) = secret(&w);
        let ctx = w.context(
            "ok",
            &format!(
                "{BUSYBOX}RUN --mount=type=secret,id=k test -s /run/secrets/k\n\
                 RUN --mount=type=secret,id=k,env=API_KEY test -n \"$API_KEY\"\n\
                 RUN --mount=type=secret,id=k,target=/s,env=K2 test -s /s -a -n \"$K2\"\n"
            ),
        );
        let arg = secret_arg(&file);
        let out = w.build(&ctx, &["--explain-cache", "--secret", &arg, "-t", "ok:1"]);
        assert_ok(&out);
        assert_not_printed(&out, &value);
        assert_nowhere(&w, &value, "after a build");
        // The saved image does not hold it either.
        let saved = w.user_dir("saved").join("ok.tar");
        assert_ok(&w.kiln(&["save", "-o", saved.to_str().expect("utf-8"), "ok:1"]));
        let image = std::fs::read(&saved).expect("read archive");
        assert!(
            !image
                .windows(value.len())
                .any(|win| win == value.as_bytes()),
            "{id:?}: the image holds the secret"
        );

        let ctx = w.context(
            "fail",
            &format!(
                "{BUSYBOX}RUN --mount=type=secret,id=k,env=API_KEY test -s /run/secrets/k && false\n"
            ),
        );
        let out = w.build(&ctx, &["--secret", &arg, "-t", "fail:1"]);
        assert_refused(&out);
        assert_not_printed(&out, &value);
        assert_nowhere(&w, &value, "after a failed RUN");
    }
}

/// The pid of `name` among the children of `parent` (kiln under runuser).
fn child_named(parent: u32, name: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1;
        let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm == name).then_some(pid)
    })
}

#[test]
fn a_secret_leaves_nothing_behind_when_kiln_is_killed() {
    for id in identities() {
        let w = World::new(id);
        let (value, file) = secret(&w);
        let ctx = w.context(
            "ctx",
            &format!(
                "{BUSYBOX}RUN --mount=type=secret,id=k,target=/run/secrets/k,env=API_KEY sh -c 'test -s /run/secrets/k && echo mounted-$((6*7)) && sleep 30'\n"
            ),
        );
        let secret = secret_arg(&file);
        let ctx_arg = ctx.to_str().expect("utf-8 path");
        let mut cmd = w.kiln_command(
            &["build", "--progress", "plain", "--secret", &secret, ctx_arg],
            &[],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kiln");
        let stderr = child.stderr.take().expect("stderr");
        // Wait until the RUN has the secret mounted (it says so), reading kiln's progress.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // The step's title holds the command, not what it prints.
                if line.contains("mounted-42") {
                    let _ = tx.send(());
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            seen
        });
        let mounted = rx.recv_timeout(Duration::from_secs(60)).is_ok();
        let kiln = match w.uid {
            Some(_) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    if let Some(pid) = child_named(child.id(), "kiln") {
                        break pid;
                    }
                    assert!(Instant::now() < deadline, "kiln under runuser not found");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => child.id(),
        };
        let killed = Command::new("kill")
            .args(["-KILL", &kiln.to_string()])
            .status()
            .expect("kill");
        let _ = child.wait();
        let seen = reader.join().unwrap_or_default();
        assert!(mounted, "{id:?}: the RUN never had the secret: {seen}");
        assert!(killed.success(), "kill -9 {kiln}");
        assert!(!seen.contains(&value), "{id:?}: kiln printed the secret");
        assert_nowhere(&w, &value, "after kill -9 of kiln");
    }
}
