//! Running the `git` CLI as a child process that reads nothing of the user's setup and
//! cannot hang the build.
//!
//! - The environment is cleared, then given back only `PATH`, the proxy variables (a build
//!   behind a proxy fetches through it, as `ADD <url>` does) and the CA bundle variables;
//!   `HOME` and `XDG_CONFIG_HOME` point to an empty directory, `GIT_CONFIG_NOSYSTEM` and
//!   `GIT_CONFIG_GLOBAL=/dev/null` keep `/etc/gitconfig` and `~/.gitconfig` out (no
//!   credential helper, `insteadOf` rewrite or hook of the user's applies), and
//!   `GIT_TERMINAL_PROMPT=0` makes a server that asks for a password fail instead of
//!   waiting on a terminal. `LC_ALL=C` keeps git's messages, which errors quote, in English.
//! - Every invocation names the transports it allows (`protocol.allow=never`, then http,
//!   https and git): a URL or a submodule written in a repository can never make git run
//!   `ext::` commands or read local paths (`file://`). Only [`Git::local`] invocations,
//!   whose remote is kiln's own cache repository, allow `file`.
//! - ssh is allowed only for an invocation whose remote is an ssh one (`ssh://`,
//!   `user@host:path`), and only when the runner was given an agent
//!   ([`Git::with_ssh_agent`], the build's `--ssh default`). git then runs the system's
//!   `ssh` as [`ssh_command`] says: the agent's socket as `SSH_AUTH_SOCK` and nothing else
//!   of the user's: no `~/.ssh/config` or `/etc/ssh/ssh_config` (`-F /dev/null`), no key
//!   file (`IdentityFile=none`: keys come from the agent only, as BuildKit's git source
//!   takes them), no prompt (`BatchMode`), and no known_hosts: like BuildKit without
//!   known hosts, any host key is accepted (`StrictHostKeyChecking=no`) and none is
//!   recorded (`/dev/null`).
//! - Hooks are off (`core.hooksPath=/dev/null`, repositories made with an empty
//!   `--template`), as are fsmonitor, auto-gc, reflogs and submodule recursion.
//! - A command that runs longer than [`Git::timeout`] is killed, and an HTTP transfer
//!   slower than 1 byte/s for the stall time is dropped by git itself.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::GitError;

/// Variables passed through to git from kiln's environment.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Configuration every invocation gets (`-c` before the subcommand).
const CONFIG: &[&str] = &[
    "protocol.allow=never",
    "protocol.http.allow=always",
    "protocol.https.allow=always",
    "protocol.git.allow=always",
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.symlinks=true",
    "core.logAllRefUpdates=false",
    "credential.helper=",
    "gc.auto=0",
    "maintenance.auto=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
    "http.lowSpeedLimit=1",
];

/// How git is run: the program, its empty home and its time limits.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    home: PathBuf,
    /// The longest one git command may run.
    pub timeout: Duration,
    /// How long an HTTP transfer may stall (under 1 byte/s) before git drops it; an ssh
    /// connection that answers no keepalive for about as long is dropped too.
    pub stall: Duration,
    /// The ssh agent socket git over ssh authenticates with; `None`: ssh remotes refused.
    ssh_agent: Option<PathBuf>,
}

/// One git command line being built.
pub(crate) struct Invocation<'a> {
    git: &'a Git,
    /// What the command is for, in errors (`ls-remote`, `fetch`).
    what: &'static str,
    /// The remote named in errors, credentials removed.
    remote: String,
    /// The password in the remote's URL, which git's messages must not carry out.
    secret: Option<String>,
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
    allow_file: bool,
    /// The remote is an ssh one: the command may use ssh (with the runner's agent).
    ssh: bool,
}

impl Git {
    /// Git run from `PATH`, with `home` (an empty directory the caller owns) as its home,
    /// 10 minutes per command and a 2 minute stall limit (`KILN_GIT_TIMEOUT` and
    /// `KILN_STALL_TIMEOUT`, in seconds, override them).
    pub fn new(home: &Path) -> Git {
        let secs = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .unwrap_or(default)
        };
        Git {
            program: PathBuf::from("git"),
            home: home.to_path_buf(),
            timeout: Duration::from_secs(secs("KILN_GIT_TIMEOUT", 600)),
            stall: Duration::from_secs(secs("KILN_STALL_TIMEOUT", 120)),
            ssh_agent: None,
        }
    }

    /// This runner, fetching ssh remotes with the agent listening at `socket`.
    pub fn with_ssh_agent(self, socket: PathBuf) -> Git {
        Git {
            ssh_agent: Some(socket),
            ..self
        }
    }

    /// Whether ssh remotes can be fetched (an agent was given).
    pub(crate) fn has_ssh_agent(&self) -> bool {
        self.ssh_agent.is_some()
    }

    /// A command about `remote` (a URL from the Dockerfile or the command line).
    pub(crate) fn remote(&self, what: &'static str, remote: &str) -> Invocation<'_> {
        Invocation {
            git: self,
            what,
            remote: redact(remote),
            secret: password(remote),
            args: Vec::new(),
            env: Vec::new(),
            allow_file: false,
            ssh: super::is_ssh_remote(remote),
        }
    }

    /// A command whose only remote, if any, is kiln's own cache repository: `file` is
    /// allowed, for it.
    pub(crate) fn local(&self, what: &'static str, remote: &str) -> Invocation<'_> {
        Invocation {
            allow_file: true,
            ssh: false,
            ..self.remote(what, remote)
        }
    }
}

impl Invocation<'_> {
    pub(crate) fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub(crate) fn env(mut self, k: &'static str, v: impl Into<OsString>) -> Self {
        self.env.push((k, v.into()));
        self
    }

    /// Runs the command; its stdout on success, else an error with the end of its stderr.
    pub(crate) fn run(self) -> Result<Vec<u8>, GitError> {
        let git = self.git;
        let mut cmd = Command::new(&git.program);
        cmd.env_clear();
        for k in PASSED_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        cmd.env("HOME", &git.home)
            .env("XDG_CONFIG_HOME", &git.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("LC_ALL", "C")
            // Reflogs are off, but an ident must never come from the host's passwd entry
            // or hostname.
            .env("GIT_AUTHOR_NAME", "kiln")
            .env("GIT_AUTHOR_EMAIL", "kiln@localhost")
            .env("GIT_COMMITTER_NAME", "kiln")
            .env("GIT_COMMITTER_EMAIL", "kiln@localhost");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for c in CONFIG {
            cmd.arg("-c").arg(c);
        }
        cmd.arg("-c")
            .arg(format!("http.lowSpeedTime={}", git.stall.as_secs()));
        let file = if self.allow_file { "always" } else { "never" };
        cmd.arg("-c").arg(format!("protocol.file.allow={file}"));
        if let (true, Some(agent)) = (self.ssh, &git.ssh_agent) {
            cmd.arg("-c").arg("protocol.ssh.allow=always");
            cmd.env("SSH_AUTH_SOCK", agent)
                .env("GIT_SSH_COMMAND", ssh_command(git.stall))
                .env("GIT_SSH_VARIANT", "ssh");
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let fail = |message: String| GitError::Command {
            what: self.what,
            remote: self.remote.clone(),
            message,
        };
        let mut child = cmd.spawn().map_err(|e| GitError::Spawn { source: e })?;
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let deadline = Instant::now() + git.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    // git's own children (remote helpers) end when their pipes close.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {}s (KILN_GIT_TIMEOUT)",
                        git.timeout.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if status.success() {
            return Ok(stdout);
        }
        Err(fail(last_lines(&stderr, self.secret.as_deref())))
    }
}

/// The ssh command git runs for an ssh remote (through the shell, so plain words only).
/// Keepalives every 15s drop a connection silent for about the stall time.
pub(crate) fn ssh_command(stall: Duration) -> String {
    let alive = (stall.as_secs() / 15).max(1);
    [
        "ssh",
        "-F /dev/null",
        "-o BatchMode=yes",
        "-o IdentityFile=none",
        "-o IdentitiesOnly=no",
        "-o StrictHostKeyChecking=no",
        "-o UserKnownHostsFile=/dev/null",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o UpdateHostKeys=no",
        "-o ForwardAgent=no",
        "-o ControlMaster=no",
        "-o ControlPath=none",
        "-o LogLevel=ERROR",
        "-o ConnectTimeout=30",
        "-o ServerAliveInterval=15",
    ]
    .join(" ")
        + &format!(" -o ServerAliveCountMax={alive}")
}

/// Reads a child's pipe to its end on a thread of its own (so neither pipe can fill and
/// stall git while the other is read).
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// The last few lines of git's stderr (its `fatal:` line is last), bounded, on one line.
fn last_lines(stderr: &[u8], secret: Option<&str>) -> String {
    let text = String::from_utf8_lossy(stderr);
    // git's advice after a failed ssh or http connection would crowd out the cause
    // (ssh's `Permission denied (publickey)`, the line before).
    let advice = [
        "Please make sure you have the correct access rights",
        "and the repository exists.",
    ];
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !advice.contains(l))
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    let mut tail: String = tail.chars().take(1000).collect();
    if tail.is_empty() {
        tail = "git failed without a message".to_string();
    }
    // git may quote the URL it was given; never the credentials in it.
    match secret {
        Some(s) => tail.replace(s, "xxxxx"),
        None => tail,
    }
}

/// The secret in a URL's `user[:password]@`: the password, or for http(s) a user given
/// alone (a token, as hosting services take one); an ssh or git user names an account.
fn password(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let userinfo = &rest[..rest[..rest.find('/').unwrap_or(rest.len())].rfind('@')?];
    match userinfo.split_once(':') {
        Some((_, pass)) => (!pass.is_empty()).then(|| pass.to_string()),
        None if is_http(scheme) => (!userinfo.is_empty()).then(|| userinfo.to_string()),
        None => None,
    }
}

fn is_http(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// `url` with its secret ([`password`]) replaced by `xxxxx`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_string();
    };
    let host = &rest[at + 1..];
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:xxxxx@{host}"),
        None if is_http(scheme) => format!("{scheme}://xxxxx@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_reach_a_message() {
        assert_eq!(
            redact("https://u:secret@h/r.git"),
            "https://u:xxxxx@h/r.git"
        );
        assert_eq!(redact("https://h/r.git"), "https://h/r.git");
        assert_eq!(redact("git@h:r.git"), "git@h:r.git");
        assert_eq!(redact("https://TOKEN@h/r.git"), "https://xxxxx@h/r.git");
        assert_eq!(redact("ssh://git@h:2222/r.git"), "ssh://git@h:2222/r.git");
        assert_eq!(super::password("ssh://git@h/r.git"), None);
        assert_eq!(
            super::password("https://TOKEN@h/r.git").as_deref(),
            Some("TOKEN")
        );
        assert_eq!(
            super::password("https://u:secret@h/r.git").as_deref(),
            Some("secret")
        );
        assert_eq!(
            super::last_lines(b"fatal: https://u:secret@h/r.git\n", Some("secret")),
            "fatal: https://u:xxxxx@h/r.git"
        );
        let denied = b"root@h: Permission denied (publickey).\r\nfatal: Could not read from \
            remote repository.\n\nPlease make sure you have the correct access rights\nand the \
            repository exists.\n";
        assert_eq!(
            super::last_lines(denied, None),
            "root@h: Permission denied (publickey).; fatal: Could not read from remote repository."
        );
    }
}
