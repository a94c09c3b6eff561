//! ADD's git sources: keyed by the commit their ref resolves to (one `git ls-remote`, once
//! per remote and ref in a build, so every step of the build sees the same commit), and
//! checked out only when the step runs: fetched into the store's cache repository of the
//! remote when that commit is not there yet, then written into this process's scratch,
//! where the copier reads it like a context (fd-relative, symlinks never followed out).
//!
//! The git work itself is `kiln_context::git`'s; this module gives it the store's
//! directories and the build's `--ssh default` agent (for ssh remotes and submodules), and
//! turns its results into key inputs and a copy source.

use crate::error::StepError;
use crate::session::BuildSession;
use kiln_context::git::{CheckoutOptions, Git, GitError, RepoCache, Resolved, check_checksum};
use kiln_parser::GitRef;
use kiln_store::Store;
use std::path::{Path, PathBuf};

/// The store's cache repositories, as the git checkout asks for them: each held (locked)
/// while git works in it.
pub struct StoreGitCache<'a>(pub &'a Store);

struct Held(kiln_store::GitRepo);

impl AsRef<Path> for Held {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl RepoCache for StoreGitCache<'_> {
    fn repo(&self, remote: &str) -> Result<Box<dyn AsRef<Path>>, GitError> {
        match self.0.git_repo(remote) {
            Ok(repo) => Ok(Box::new(Held(repo))),
            Err(e) => Err(GitError::Cache(e.to_string())),
        }
    }
}

/// A git checkout for one step's copy, removed when dropped.
pub(crate) struct Checkout {
    _dir: tempfile::TempDir,
    /// The repository's root in it.
    pub tree: PathBuf,
}

/// The git runner, with a fresh empty home in the scratch space (no user configuration
/// reaches git through it) and the build's `default` ssh agent when it has one, for an
/// ssh remote or submodule (without one, the runner refuses those, naming
/// `--ssh default`). The home and the agent live as long as the returned [`Runner`].
fn git(session: &BuildSession) -> Result<Runner, StepError> {
    let home = tempfile::tempdir_in(&session.scratch).map_err(StepError::GitScratch)?;
    let mut git = Git::new(home.path());
    let agent = session.git_ssh_agent().map_err(|source| StepError::Ssh {
        id: crate::ssh::GIT_SSH_ID.to_string(),
        source,
    })?;
    if let Some(agent) = &agent {
        git = git.with_ssh_agent(agent.path().to_path_buf());
    }
    Ok(Runner {
        git,
        _home: home,
        _agent: agent,
    })
}

/// A git runner with what it needs kept alive.
struct Runner {
    git: Git,
    _home: tempfile::TempDir,
    _agent: Option<crate::ssh::GitAgent>,
}

/// The commit `git` names now, checked against its checksum.
pub(crate) fn resolve(session: &BuildSession, git_ref: &GitRef) -> Result<Resolved, StepError> {
    let resolved = session.resolve_git(&git_ref.remote, &git_ref.reference, || {
        let runner = git(session)?;
        Ok(runner.git.resolve(&git_ref.remote, &git_ref.reference)?)
    })?;
    check_checksum(&git_ref.remote, &git_ref.checksum, &resolved.commit)?;
    Ok(resolved)
}

/// Checks `resolved` out of `git_ref`'s remote (through the store's cache repository).
pub(crate) fn checkout(
    session: &BuildSession,
    git_ref: &GitRef,
    resolved: &Resolved,
) -> Result<Checkout, StepError> {
    let runner = git(session)?;
    let work = tempfile::tempdir_in(&session.scratch).map_err(StepError::GitScratch)?;
    let tree = runner.git.checkout(
        &StoreGitCache(&session.store),
        &git_ref.remote,
        resolved,
        work.path(),
        CheckoutOptions {
            keep_git_dir: git_ref.keep_git_dir.unwrap_or(false),
            submodules: git_ref.submodules.unwrap_or(true),
        },
    )?;
    Ok(Checkout { _dir: work, tree })
}
