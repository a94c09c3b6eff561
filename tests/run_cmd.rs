//! `kiln run` through the binary, as root and as the unprivileged test user `kilnrootless`
//! (subordinate ID range; created when the tests run as root): output and exit status,
//! the image's config and docker's overrides, binds, `--network none`, stdin with `-i`, a
//! terminal with `-t`, changes thrown away, and the debug command a failed RUN prints.

mod common;

use common::kiln_bin;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const USER: &str = "kilnrootless";

/// A busybox base FROM scratch (busybox-static from the host), as tests/build_run.rs.
const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

/// Where kiln runs: as the test process's user, or through runuser as the test user.
struct Runner {
    uid: Option<u32>,
    _tmp: tempfile::TempDir,
    /// Owned by whoever runs kiln.
    home: PathBuf,
}

impl Runner {
    fn new(uid: Option<u32>) -> Runner {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = tmp.path().join("home");
        fs::create_dir(&home).unwrap();
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
        }
        Runner {
            uid,
            _tmp: tmp,
            home,
        }
    }

    /// Every runner the machine allows: this user, and the test user when we are root.
    fn all() -> Vec<Runner> {
        let mut runners = vec![Runner::new(None)];
        match common::ensure_test_user(USER, 300000) {
            Some(uid) => runners.push(Runner::new(Some(uid))),
            None => eprintln!("SKIP rootless half: creating {USER} needs root"),
        }
        runners
    }

    fn name(&self) -> &'static str {
        if self.uid.is_some() {
            "rootless"
        } else {
            "root"
        }
    }

    fn store(&self) -> PathBuf {
        self.home.join("store")
    }

    /// A directory of the home, owned by the runner's user.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.home.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        }
        dir
    }

    fn command(&self) -> Command {
        let mut cmd = match self.uid {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", USER, "--"]).arg(kiln_bin());
                c
            }
            None => Command::new(kiln_bin()),
        };
        cmd.env_remove("SOURCE_DATE_EPOCH")
            .env("HOME", &self.home)
            .current_dir(&self.home);
        cmd
    }

    /// `kiln --root STORE ARGS...` with `stdin` (else /dev/null).
    fn kiln_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command();
        cmd.arg("--root").arg(self.store()).args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("running kiln");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_in(args, None)
    }

    /// Builds `dockerfile_tail` on [`BASE`] as `tag`.
    fn build(&self, tag: &str, dockerfile_tail: &str) -> Output {
        let ctx = self.dir(&format!("ctx-{}", tag.replace(':', "-")));
        fs::copy("/bin/busybox", ctx.join("busybox"))
            .expect("busybox-static must be installed (apt-get install busybox-static)");
        fs::write(ctx.join("Dockerfile"), format!("{BASE}{dockerfile_tail}")).unwrap();
        common::open_up(&ctx);
        self.kiln(&[
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ])
    }

    fn build_ok(&self, tag: &str, dockerfile_tail: &str) {
        let out = self.build(tag, dockerfile_tail);
        assert!(
            out.status.success(),
            "{}: build failed:\n{}",
            self.name(),
            text(&out.stderr)
        );
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts `out` exited with `code` and printed `stdout`; shows everything otherwise.
#[track_caller]
fn expect(who: &str, out: &Output, code: i32, stdout: &str) {
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(code), stdout),
        "{who}: stderr:\n{}",
        text(&out.stderr)
    );
}

const IMAGE: &str = "RUN echo kept > /in-image && mkdir /work\nENV FROM_IMAGE=yes\nWORKDIR /work\nCMD [\"echo\", \"default-cmd\"]\n";

#[test]
fn output_exit_status_and_the_image_config() {
    for r in Runner::all() {
        let who = r.name();
        r.build_ok("img:1", IMAGE);
        expect(who, &r.kiln(&["run", "img:1", "echo", "hi"]), 0, "hi\n");
        expect(who, &r.kiln(&["run", "--rm", "img:1"]), 0, "default-cmd\n");
        expect(who, &r.kiln(&["run", "img:1", "sh", "-c", "exit 3"]), 3, "");
        expect(
            who,
            &r.kiln(&["run", "img:1", "sh", "-c", "kill -9 $$"]),
            137,
            "",
        );
        let missing = r.kiln(&["run", "img:1", "no-such-program"]);
        assert_eq!(missing.status.code(), Some(127), "{who}");
        assert!(
            text(&missing.stderr).contains("no-such-program"),
            "{who}: {}",
            text(&missing.stderr)
        );
        let unknown = r.kiln(&["run", "nothing:here", "true"]);
        assert_eq!(unknown.status.code(), Some(125), "{who}");
        assert!(text(&unknown.stderr).contains("no such image"), "{who}");
        let bad_bind = r.kiln(&["run", "-v", "relative:/x", "img:1", "true"]);
        assert_eq!(bad_bind.status.code(), Some(125), "{who}");
        assert!(text(&bad_bind.stderr).contains("absolute"), "{who}");

        // Config defaults, and docker's flags over them.
        expect(
            who,
            &r.kiln(&[
                "run",
                "img:1",
                "sh",
                "-c",
                "echo $FROM_IMAGE $(pwd) $(id -u)",
            ]),
            0,
            "yes /work 0\n",
        );
        expect(
            who,
            &r.kiln(&[
                "run",
                "-e",
                "FROM_IMAGE=flag",
                "-e",
                "NEW=1",
                "-w",
                "/bin",
                "--user",
                "1000:1000",
                "img:1",
                "sh",
                "-c",
                "echo $FROM_IMAGE $NEW $(pwd) $(id -u):$(id -g)",
            ]),
            0,
            "flag 1 /bin 1000:1000\n",
        );
        expect(
            who,
            &r.kiln(&["run", "--entrypoint", "echo", "img:1", "a", "b"]),
            0,
            "a b\n",
        );
        // The image ID (or a prefix of it) names the image too.
        let inspect = r.kiln(&["inspect", "img:1"]);
        let doc: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let id = doc["Id"].as_str().unwrap().to_string();
        expect(who, &r.kiln(&["run", &id, "echo", "by-id"]), 0, "by-id\n");
        expect(
            who,
            &r.kiln(&["run", &id["sha256:".len()..][..12], "echo", "by-prefix"]),
            0,
            "by-prefix\n",
        );
    }
}

/// Directories left in the store's scratch space (a container's upper and work dirs).
fn scratch_dirs(store: &Path) -> Vec<String> {
    fs::read_dir(store.join("tmp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn binds_network_and_changes_thrown_away() {
    for r in Runner::all() {
        let who = r.name();
        r.build_ok("img:1", IMAGE);
        let host = r.dir("shared");
        fs::write(host.join("from-host"), "host data\n").unwrap();
        common::open_up(&host);
        if let Some(uid) = r.uid {
            std::os::unix::fs::chown(host.join("from-host"), Some(uid), Some(uid)).unwrap();
        }
        let rw = format!("{}:/mnt", host.display());
        expect(
            who,
            &r.kiln(&[
                "run",
                "-v",
                &rw,
                "img:1",
                "sh",
                "-c",
                "cat /mnt/from-host && echo back > /mnt/from-container",
            ]),
            0,
            "host data\n",
        );
        assert_eq!(
            fs::read_to_string(host.join("from-container")).unwrap(),
            "back\n",
            "{who}: a writable bind writes through"
        );
        let ro = format!("{}:/mnt:ro", host.display());
        let out = r.kiln(&["run", "-v", &ro, "img:1", "touch", "/mnt/nope"]);
        assert_ne!(out.status.code(), Some(0), "{who}: a :ro bind is read-only");
        assert!(!host.join("nope").exists(), "{who}");

        // --network none: only the loopback interface.
        let out = r.kiln(&["run", "--network", "none", "img:1", "cat", "/proc/net/dev"]);
        assert!(out.status.success(), "{who}: {}", text(&out.stderr));
        let ifaces: Vec<String> = text(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
            .collect();
        assert_eq!(ifaces, ["lo"], "{who}");

        // Nothing a container changes is kept, and its scratch is gone.
        expect(
            who,
            &r.kiln(&[
                "run",
                "img:1",
                "sh",
                "-c",
                "echo x > /made-here && rm /in-image && echo changed",
            ]),
            0,
            "changed\n",
        );
        expect(
            who,
            &r.kiln(&[
                "run",
                "img:1",
                "sh",
                "-c",
                "cat /in-image; ls /made-here 2>&1 | wc -l",
            ]),
            0,
            "kept\n1\n",
        );
        assert_eq!(scratch_dirs(&r.store()), Vec::<String>::new(), "{who}");
    }
}

#[test]
fn stdin_reaches_the_process_only_with_i() {
    for r in Runner::all() {
        let who = r.name();
        r.build_ok("img:1", IMAGE);
        expect(
            who,
            &r.kiln_in(&["run", "-i", "img:1", "cat"], Some(b"data\nmore\n")),
            0,
            "data\nmore\n",
        );
        // Without -i the process reads /dev/null, even when kiln's stdin has data.
        expect(
            who,
            &r.kiln_in(&["run", "img:1", "cat"], Some(b"ignored\n")),
            0,
            "",
        );
    }
}

#[test]
fn t_gives_the_process_a_terminal_of_its_own() {
    for r in Runner::all() {
        let who = r.name();
        r.build_ok("img:1", IMAGE);
        // util-linux `script` gives kiln a terminal, as a user's shell would.
        let kiln = format!(
            "{} --root {} run -it img:1 sh -c 'test -t 0 && test -t 1 && echo tty-ok; cut -d\" \" -f7 /proc/self/stat; exit 4'",
            kiln_bin().display(),
            r.store().display()
        );
        let mut cmd = match r.uid {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", USER, "--", "script"]);
                c
            }
            None => Command::new("script"),
        };
        let out = cmd
            .args(["-qec", &kiln, "/dev/null"])
            .env("HOME", &r.home)
            .current_dir(&r.home)
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux) runs kiln on a terminal");
        assert_eq!(out.status.code(), Some(4), "{who}: {}", text(&out.stdout));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
        // (`script` with no input of its own sends a NUL, which the pty echoes as `^@`.)
        assert!(
            lines.iter().any(|l| l.ends_with("tty-ok")),
            "{who}: {stdout:?}"
        );
        // Field 7 of /proc/self/stat: the controlling terminal, 0 when there is none.
        let tty_nr = lines
            .iter()
            .find_map(|l| l.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{who}: {stdout:?}"));
        assert_ne!(tty_nr, 0, "{who}: no controlling terminal: {stdout:?}");
    }
}

#[test]
fn a_failed_run_prints_a_command_that_opens_the_state_before_it() {
    for r in Runner::all() {
        let who = r.name();
        let out = r.build(
            "fails:1",
            "RUN echo before > /file-from-previous-step\nARG STAGE=debugging\nWORKDIR /srv\nRUN cat /file-from-previous-step && exit 5\nRUN echo never\n",
        );
        assert_eq!(out.status.code(), Some(1), "{who}");
        let stderr = text(&out.stderr);
        let hint = stderr
            .lines()
            .find_map(|l| l.strip_prefix("to debug: "))
            .unwrap_or_else(|| panic!("{who}: no debug hint in:\n{stderr}"));
        let words: Vec<&str> = hint.split_whitespace().collect();
        let store = r.store();
        assert_eq!(
            words[..6],
            [
                "kiln",
                "--root",
                store.to_str().unwrap(),
                "run",
                "--rm",
                "-it"
            ],
            "{who}: {hint}"
        );
        assert_eq!(words[7..], ["sh"], "{who}: {hint}");
        // The hinted command, without a terminal and with a command of our own.
        let mut cmd = r.command();
        cmd.args(&words[1..5]).arg(words[6]).args([
            "sh",
            "-c",
            "cat /file-from-previous-step; echo $STAGE $(pwd)",
        ]);
        let out = cmd.output().unwrap();
        expect(who, &out, 0, "before\ndebugging /srv\n");
    }
}

#[test]
fn a_process_on_the_callers_terminal_cannot_leave_it_changed() {
    for r in Runner::all() {
        let who = r.name();
        r.build_ok("img:1", IMAGE);
        // Without -t the process writes to kiln's own terminal; it turns echo off there,
        // then kiln is gone and the shell asks the terminal how it is.
        let script = format!(
            "{} --root {} run img:1 sh -c 'stty -echo -icanon <&1'; stty -a",
            kiln_bin().display(),
            r.store().display()
        );
        let mut cmd = match r.uid {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", USER, "--", "script"]);
                c
            }
            None => Command::new("script"),
        };
        let out = cmd
            .args(["-qec", &script, "/dev/null"])
            .env("HOME", &r.home)
            .current_dir(&r.home)
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux) runs kiln on a terminal");
        let stdout = text(&out.stdout);
        let words: Vec<&str> = stdout.split_whitespace().collect();
        assert!(words.contains(&"echo"), "{who}: echo left off: {stdout:?}");
        assert!(
            words.contains(&"icanon"),
            "{who}: icanon left off: {stdout:?}"
        );
    }
}
