//! Git sources: a remote repository at one commit, as a directory tree to copy from (ADD's
//! git sources) or to build in (a git URL as the build context).
//!
//! Three steps, so that a cache hit costs one round trip and no fetch:
//! 1. [`Git::resolve`]: `git ls-remote` turns the ref into a commit (a full commit id is
//!    taken as it is). The commit, never the ref name, is what keys the build.
//! 2. [`Git::checkout`], on a miss only: `git fetch --depth 1` of that commit (by commit
//!    where the server allows it, else by the ref it was resolved from) into the remote's
//!    cache repository, a bare repository in a directory the store owns and locks
//!    (`kiln_store::Store::git_repo`); a commit fetched before is not fetched again.
//! 3. Still in [`Git::checkout`]: the commit is written into a fresh directory (with a
//!    `.git` of its own only for `keep-git-dir`), files made 0644 or 0755 (executable) and
//!    directories 0755, as BuildKit's git source gives them, whatever kiln's umask.
//!
//! kiln drives the `git` command-line tool rather than linking a git library such as gix:
//! it speaks every transport and server quirk users' own git does (smart and dumb HTTP,
//! `git://`, proxies, protocol v2, shallow fetches by commit), git over ssh reuses the
//! system's OpenSSH client with the build's agent socket instead of an ssh stack of kiln's
//! own, and it adds no large dependency tree to the build. How it is run (scrubbed
//! environment, allowed protocols, the ssh command and its agent, timeouts) is
//! [`command`]'s business.
//!
//! Remotes: `https://`, `http://`, `git://`, and ssh (`ssh://[user@]host[:port]/path`,
//! scp-style `user@host:path`) when the runner has an agent ([`Git::with_ssh_agent`]):
//! keys stay in the agent, and the remote's URL (never a key) is all that reaches a
//! message; the commit, not the URL, keys the build.
//!
//! The fetched tree is hostile input, like a build context: git refuses paths through
//! `.git` and symlinks while checking out, this module never follows a symlink in it
//! (the mode walk skips them), and callers read it only with kiln's fd-relative copier or
//! [`crate::resolve_in_root`], which keep a symlink in the repository from reaching
//! outside the checkout.
//!
//! Submodules are checked out by default, as BuildKit does ([`submodule`]).
//!
//! Not yet: short commit ids (a full 40 or 64 hex digit id, or a branch or tag, is
//! needed).

mod command;
mod submodule;

pub use command::Git;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a git source could not be had.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("running git: {source} (kiln needs the git command for git sources)")]
    Spawn {
        #[source]
        source: io::Error,
    },
    #[error("git {what} {remote}: {message}")]
    Command {
        what: &'static str,
        remote: String,
        message: String,
    },
    #[error("{remote}: git over ssh needs --ssh default (an ssh agent)")]
    SshNeedsAgent { remote: String },
    #[error("{remote}: only https://, http://, git:// and ssh remotes are fetched")]
    Transport { remote: String },
    #[error("{remote}: repository does not contain ref {reference:?}")]
    UnknownRef { remote: String, reference: String },
    #[error("{remote}: expected checksum to match {checksum}, got commit {commit}")]
    ChecksumMismatch {
        remote: String,
        checksum: String,
        commit: String,
    },
    #[error("{remote}: commit {commit} could not be fetched (the ref moved while building?)")]
    CommitMissing { remote: String, commit: String },
    /// The cache repository could not be had (the caller's words).
    #[error("{0}")]
    Cache(String),
    #[error("{remote}: submodule {path:?}: {reason}")]
    Submodule {
        remote: String,
        path: String,
        reason: &'static str,
    },
    #[error("git checkout {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where each remote's cache repository is: a directory the caller owns (the store's),
/// held (locked) for as long as the returned value lives.
pub trait RepoCache {
    fn repo(&self, remote: &str) -> Result<Box<dyn AsRef<Path>>, GitError>;
}

/// What [`Git::checkout`] writes besides the files.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckoutOptions {
    /// Keep a `.git` of the checkout's own.
    pub keep_git_dir: bool,
    /// Check the submodules out too (BuildKit's default).
    pub submodules: bool,
}

/// A ref resolved on its remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit id, lower-case hex.
    pub commit: String,
    /// The full ref name it was resolved from (`refs/heads/main`); `None` when a commit id
    /// was given.
    pub refname: Option<String>,
}

impl Git {
    /// Resolves `reference` (a branch, tag, full ref name or full commit id; empty for the
    /// remote's `HEAD`) on `remote`.
    pub fn resolve(&self, remote: &str, reference: &str) -> Result<Resolved, GitError> {
        self.check_transport(remote)?;
        if is_commit_id(reference) {
            return Ok(Resolved {
                commit: reference.to_ascii_lowercase(),
                refname: None,
            });
        }
        self.ls_remote(remote, reference)
    }

    fn ls_remote(&self, remote: &str, reference: &str) -> Result<Resolved, GitError> {
        let pattern = if reference.is_empty() {
            "HEAD"
        } else {
            reference
        };
        let out = self
            .remote("ls-remote", remote)
            .arg("ls-remote")
            .arg("--")
            .arg(remote)
            .arg(pattern)
            .arg(format!("{pattern}^{{}}"))
            .run()?;
        let out = String::from_utf8_lossy(&out);
        let refs: Vec<(&str, &str)> = out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(sha, name)| (sha.trim(), name.trim()))
            .collect();
        let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(s, _)| *s);
        // A branch before a tag of the same name, as BuildKit takes ls-remote's first line
        // (sorted by name); an annotated tag's peeled commit before the tag object.
        let candidates: Vec<String> = if reference.is_empty() || reference == "HEAD" {
            vec!["HEAD".to_string()]
        } else if reference.starts_with("refs/") {
            vec![reference.to_string()]
        } else {
            vec![
                format!("refs/heads/{reference}"),
                format!("refs/tags/{reference}"),
                format!("refs/{reference}"),
            ]
        };
        for name in candidates {
            let peeled = find(&format!("{name}^{{}}"));
            if let Some(sha) = peeled.or_else(|| find(&name))
                && is_commit_id(sha)
            {
                return Ok(Resolved {
                    commit: sha.to_ascii_lowercase(),
                    refname: Some(name),
                });
            }
        }
        Err(GitError::UnknownRef {
            remote: command::redact(remote),
            reference: pattern.to_string(),
        })
    }

    /// Writes `resolved`'s commit of `remote` into `work/tree` and returns that path,
    /// fetching it into the remote's cache repository (from `cache`) first when it is not
    /// there. `work` is an empty directory of the caller's (it also holds the checkout's
    /// indexes). With `keep_git_dir` the tree has a `.git` of its own (the commit only,
    /// shallow, `origin` set to the remote without credentials). With `submodules`, the
    /// submodules the commit records are checked out into their directories ([`submodule`]).
    pub fn checkout(
        &self,
        cache: &dyn RepoCache,
        remote: &str,
        resolved: &Resolved,
        work: &Path,
        opts: CheckoutOptions,
    ) -> Result<PathBuf, GitError> {
        self.check_transport(remote)?;
        let held = cache.repo(remote)?;
        let repo = held.as_ref().as_ref();
        self.fetch(repo, remote, resolved)?;
        let commit = &resolved.commit;
        let tree = work.join("tree");
        if opts.keep_git_dir {
            self.local("init", "")
                .arg("init")
                .arg("-q")
                .arg("--template=")
                .arg(&tree)
                .run()?;
            let repo_arg = repo.as_os_str().to_owned();
            self.local("fetch", "kiln's cache")
                .arg("-C")
                .arg(&tree)
                .arg("fetch")
                .arg("-q")
                .arg("--no-tags")
                .arg("--no-write-fetch-head")
                .arg("--depth=1")
                .arg("--")
                .arg(repo_arg)
                .arg(commit)
                .run()?;
            self.local("checkout", remote)
                .arg("-C")
                .arg(&tree)
                .arg("checkout")
                .arg("-q")
                .arg("--detach")
                .arg(commit)
                .run()?;
            self.local("remote", remote)
                .arg("-C")
                .arg(&tree)
                .arg("remote")
                .arg("add")
                .arg("origin")
                .arg(without_credentials(remote))
                .run()?;
        } else {
            fs::create_dir(&tree).map_err(io_err(&tree))?;
            self.read_tree(repo, remote, commit, &tree, &work.join("index"))?;
        }
        if opts.submodules {
            let links = self.gitlinks(repo, commit)?;
            // The lock of this remote's cache goes before any submodule's is taken, so two
            // builds never hold two of them in opposite orders.
            drop(held);
            self.submodules(cache, remote, &tree, links, work, 0)?;
        }
        normalize_modes(&tree)?;
        Ok(tree)
    }

    /// Writes `commit` of the cache repository `repo` into the existing directory `dir`,
    /// with an index of its own at `index` (the repository's HEAD and index untouched).
    fn read_tree(
        &self,
        repo: &Path,
        remote: &str,
        commit: &str,
        dir: &Path,
        index: &Path,
    ) -> Result<(), GitError> {
        self.local("read-tree", remote)
            .env("GIT_INDEX_FILE", index)
            .arg("--git-dir")
            .arg(repo)
            .arg("--work-tree")
            .arg(dir)
            .arg("read-tree")
            .arg("--reset")
            .arg("-u")
            .arg(commit)
            .run()
            .map(|_| ())
    }

    /// Makes sure `repo` holds `resolved`'s commit.
    fn fetch(&self, repo: &Path, remote: &str, resolved: &Resolved) -> Result<(), GitError> {
        if !repo.join("HEAD").exists() {
            self.local("init", remote)
                .arg("init")
                .arg("-q")
                .arg("--bare")
                .arg("--template=")
                .arg(repo)
                .run()?;
        }
        if self.has_commit(repo, &resolved.commit) {
            return Ok(());
        }
        match (
            self.fetch_one(repo, remote, &resolved.commit),
            &resolved.refname,
        ) {
            (Ok(()), _) => {}
            (Err(e), None) => return Err(e),
            // A server that refuses a want by commit id (uploadpack.allowReachableSHA1InWant
            // off, protocol v0) still gives the ref, which should still be at that commit.
            (Err(_), Some(refname)) => {
                self.fetch_one(repo, remote, &format!("+{refname}:refs/kiln/fetched"))?
            }
        }
        if !self.has_commit(repo, &resolved.commit) {
            return Err(GitError::CommitMissing {
                remote: command::redact(remote),
                commit: resolved.commit.clone(),
            });
        }
        Ok(())
    }

    fn fetch_one(&self, repo: &Path, remote: &str, refspec: &str) -> Result<(), GitError> {
        self.remote("fetch", remote)
            .arg("--git-dir")
            .arg(repo)
            .arg("fetch")
            .arg("-q")
            .arg("--no-tags")
            .arg("--no-write-fetch-head")
            .arg("--depth=1")
            .arg("--")
            .arg(remote)
            .arg(refspec)
            .run()
            .map(|_| ())
    }

    fn has_commit(&self, repo: &Path, commit: &str) -> bool {
        self.local("cat-file", "")
            .arg("--git-dir")
            .arg(repo)
            .arg("cat-file")
            .arg("-e")
            .arg(format!("{commit}^{{commit}}"))
            .run()
            .is_ok()
    }
}

/// Checks `commit` of `remote` against `checksum` (a prefix of it, as `ADD --checksum`
/// gives; empty for none).
pub fn check_checksum(remote: &str, checksum: &str, commit: &str) -> Result<(), GitError> {
    if checksum.is_empty() || commit.starts_with(&checksum.to_ascii_lowercase()) {
        return Ok(());
    }
    Err(GitError::ChecksumMismatch {
        remote: command::redact(remote),
        checksum: checksum.to_string(),
        commit: commit.to_string(),
    })
}

impl Git {
    /// `https://`, `http://` and `git://` remotes are fetched; ssh ones when this runner
    /// has an agent to authenticate with.
    pub(crate) fn check_transport(&self, remote: &str) -> Result<(), GitError> {
        let lower = remote.to_ascii_lowercase();
        if ["http://", "https://", "git://"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Ok(());
        }
        let remote_shown = command::redact(remote);
        if is_ssh_remote(remote) {
            return match self.has_ssh_agent() {
                true => Ok(()),
                false => Err(GitError::SshNeedsAgent {
                    remote: remote_shown,
                }),
            };
        }
        Err(GitError::Transport {
            remote: remote_shown,
        })
    }
}

/// Whether git would reach `remote` over ssh: an `ssh://` URL, or scp-style
/// `[user@]host:path` (no scheme, a `:` before any `/`, as git itself decides; not a
/// remote helper's `name::address`).
pub fn is_ssh_remote(remote: &str) -> bool {
    let lower = remote.to_ascii_lowercase();
    if lower.starts_with("ssh://") {
        return true;
    }
    if lower.contains("://") {
        return false;
    }
    match (remote.find(':'), remote.find('/')) {
        (Some(colon), slash) => {
            colon > 0 && slash.is_none_or(|s| colon < s) && !remote[colon + 1..].starts_with(':')
        }
        (None, _) => false,
    }
}

/// `remote` as messages and cache-key labels may show it: any password (or an http
/// token) replaced by `xxxxx`.
pub fn shown_remote(remote: &str) -> String {
    command::redact(remote)
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hex digits.
pub fn is_commit_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `url` with any `user[:password]@` removed (what a kept `.git/config` may say); an ssh
/// URL keeps its user, which names the account rather than authenticating as it.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) if scheme.eq_ignore_ascii_case("ssh") => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{}", &rest[at + 1..])
        }
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GitError + '_ {
    move |source| GitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files 0644, or 0755 when the owner may execute them; directories 0755; symlinks as
/// they are (never followed: the walk reads each entry's own type).
fn normalize_modes(root: &Path) -> Result<(), GitError> {
    let mut dirs = vec![root.to_path_buf()];
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(io_err(root))?;
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err(&path))?;
            let mode = if kind.is_dir() {
                dirs.push(path.clone());
                0o755
            } else if kind.is_file() {
                let m = entry
                    .metadata()
                    .map_err(io_err(&path))?
                    .permissions()
                    .mode();
                if m & 0o100 != 0 { 0o755 } else { 0o644 }
            } else {
                continue;
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_and_transports() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(!is_commit_id("abc123"));
        let git = Git::new(Path::new("/nonexistent"));
        for ssh in [
            "git@h:r.git",
            "ssh://h/r.git",
            "SSH://git@h:22/r.git",
            "h:r.git",
        ] {
            assert!(is_ssh_remote(ssh), "{ssh}");
            let err = git.check_transport(ssh).unwrap_err().to_string();
            assert!(
                err.ends_with("git over ssh needs --ssh default (an ssh agent)"),
                "{err}"
            );
        }
        for not in [
            "/abs/r.git",
            "./a:b",
            "https://h/r.git",
            "file:///etc",
            ":x",
        ] {
            assert!(!is_ssh_remote(not), "{not}");
        }
        let with_agent = git.clone().with_ssh_agent(PathBuf::from("/run/agent"));
        assert!(with_agent.check_transport("git@h:r.git").is_ok());
        assert!(with_agent.check_transport("ssh://git@h:2222/r.git").is_ok());
        for g in [&git, &with_agent] {
            assert!(matches!(
                g.check_transport("file:///etc"),
                Err(GitError::Transport { .. })
            ));
            assert!(matches!(
                g.check_transport("ext::sh -c x"),
                Err(GitError::Transport { .. })
            ));
            assert!(g.check_transport("HTTPS://h/r.git").is_ok());
        }
        assert_eq!(
            without_credentials("https://u:p@h/r.git"),
            "https://h/r.git"
        );
        assert_eq!(
            without_credentials("ssh://git@h:2222/r.git"),
            "ssh://git@h:2222/r.git"
        );
    }
}
