//! Who runs kiln in a test: real root, or the unprivileged test user with a subordinate ID
//! range (kiln then maps itself into a user namespace). Suites that must hold for both
//! (the hostile suite, the real-base suite) run each case once per [`identities`] entry.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The unprivileged test user (shared with `tests/rootless.rs`).
pub const USER: &str = "kilnrootless";

/// A context prefix that gives a busybox rootfs with `/bin/sh` and friends.
pub const BUSYBOX: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n";

/// Who runs kiln.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Real root: no user namespace unless kiln makes one itself.
    Root,
    /// [`USER`], with a subordinate ID range: kiln maps itself into a user namespace.
    Rootless,
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every identity this process can test: both as root (CI), only the current user otherwise.
pub fn identities() -> Vec<Identity> {
    if is_root() {
        vec![Identity::Root, Identity::Rootless]
    } else {
        eprintln!("note: not root, so the hostile suite runs only as the current user");
        vec![Identity::Rootless]
    }
}

/// The test user's uid, created once per test binary (with its subordinate range).
pub fn test_user() -> Option<u32> {
    static UID: OnceLock<Option<u32>> = OnceLock::new();
    *UID.get_or_init(|| super::ensure_test_user(USER, 300000))
}

/// A temporary world with a store, a home and contexts for one identity.
pub struct World {
    pub id: Identity,
    /// Root-owned, 0755: everything of the test lives below it.
    pub tmp: tempfile::TempDir,
    /// The identity's home (owned by it); the store is `home/store`.
    pub home: PathBuf,
    /// Some(uid) when kiln runs as the test user.
    pub uid: Option<u32>,
}

impl World {
    pub fn new(id: Identity) -> World {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).expect("mkdir home");
        let uid = match id {
            Identity::Rootless if is_root() => {
                let uid = test_user().expect("test user");
                std::os::unix::fs::chown(&home, Some(uid), Some(uid)).expect("chown home");
                Some(uid)
            }
            _ => None,
        };
        World { id, tmp, home, uid }
    }

    pub fn store(&self) -> PathBuf {
        self.home.join("store")
    }

    /// A directory owned by the identity (for files kiln should write).
    pub fn user_dir(&self, name: &str) -> PathBuf {
        let d = self.home.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(&d, Some(uid), Some(uid)).expect("chown");
        }
        d
    }

    /// A build context holding busybox and `dockerfile` (readable by every identity).
    pub fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let ctx = self.tmp.path().join(name);
        std::fs::create_dir_all(&ctx).expect("mkdir context");
        std::fs::copy("/bin/busybox", ctx.join("busybox"))
            .expect("busybox-static must be installed (apt-get install busybox-static)");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("write Dockerfile");
        super::open_up(&ctx);
        ctx
    }

    /// `kiln --root STORE ARGS...` as the identity, with `envs` added to a clean environment.
    pub fn kiln_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.kiln_command(args, envs)
            .output()
            .expect("running kiln")
    }

    /// The command [`World::kiln_env`] runs, for a test that must spawn it and act on it
    /// while it runs.
    pub fn kiln_command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = match self.uid {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", USER, "--"]).arg(super::kiln_bin());
                c
            }
            None => Command::new(super::kiln_bin()),
        };
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &self.home)
            .envs(envs.iter().copied())
            .current_dir(&self.home)
            .arg("--root")
            .arg(self.store())
            .args(args);
        cmd
    }

    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_env(args, &[])
    }

    /// `kiln save` of `tag` into the identity's `save` directory, read back.
    pub fn image(&self, tag: &str) -> super::Image {
        let file = self
            .user_dir("save")
            .join(format!("{}.tar", tag.replace(':', "_")));
        assert_ok(&self.kiln(&["save", "-o", file.to_str().expect("utf-8"), tag]));
        super::Image::from_docker_archive(&file)
    }

    /// `kiln build --progress plain ARGS... CONTEXT`.
    pub fn build(&self, ctx: &Path, args: &[&str]) -> Output {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        let ctx = ctx.to_str().expect("utf-8 path");
        all.push(ctx);
        self.kiln(&all)
    }
}

/// Everything kiln printed, for assertion messages.
pub fn both(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// kiln refused: a non-zero exit status, not a signal and not a panic (101).
pub fn assert_refused(out: &Output) {
    assert!(
        out.status.signal().is_none(),
        "kiln was killed by a signal: {}",
        both(out)
    );
    let code = out.status.code().unwrap_or(0);
    assert!(
        code != 0,
        "kiln succeeded where it must fail: {}",
        both(out)
    );
    assert!(code != 101, "kiln panicked: {}", both(out));
}

/// kiln succeeded.
pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "kiln failed: {}", both(out));
}

/// Each step's title (`[2/5] ADD ...`) and whether it was CACHED, in order.
pub fn steps(out: &Output) -> Vec<(String, bool)> {
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let mut titles: BTreeMap<u32, String> = BTreeMap::new();
    let mut cached = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, what)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(id) = id.parse::<u32>() else { continue };
        if what.starts_with('[') && what.contains("] ") {
            titles.entry(id).or_insert_with(|| what.to_string());
        } else if what == "CACHED" {
            cached.push(id);
        }
    }
    titles
        .into_iter()
        .filter(|(_, t)| !t.contains("FROM "))
        .map(|(id, t)| (t, cached.contains(&id)))
        .collect()
}

/// The image ID a `--progress plain` build printed (`writing image sha256:...`).
pub fn image_id(out: &Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("writing image "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no image id in {}", both(out)))
}
