//! ADD's git sources: keyed by the commit their ref resolves to (one `git ls-remote`, once
//! per remote and ref in a build, so every step of the build sees the same commit), and
//! checked out only when the step runs: fetched into the store's cache repository of the
//! remote when that commit is not there yet, then written into this process's scratch,
//! where the copier reads it like a context (fd-relative, symlinks never followed out).
//!
//! The git work itself is `kiln_context::git`'s; this module gives it the store's
//! directories and turns its results into key inputs and a copy source.

use crate::error::StepError;
use crate::session::BuildSession;
use kiln_context::git::{Git, Resolved, check_checksum};
use kiln_parser::GitRef;
use std::path::PathBuf;

/// A git checkout for one step's copy, removed when dropped.
pub(crate) struct Checkout {
    _dir: tempfile::TempDir,
    /// The repository's root in it.
    pub tree: PathBuf,
}

/// The git runner, with a fresh empty home in the scratch space (no user configuration
/// reaches git through it); the home goes with the returned directory.
fn git(session: &BuildSession) -> Result<(tempfile::TempDir, Git), StepError> {
    let home = tempfile::tempdir_in(&session.scratch).map_err(StepError::GitScratch)?;
    let git = Git::new(home.path());
    Ok((home, git))
}

/// The commit `git` names now, checked against its checksum.
pub(crate) fn resolve(session: &BuildSession, git_ref: &GitRef) -> Result<Resolved, StepError> {
    let resolved = session.resolve_git(&git_ref.remote, &git_ref.reference, || {
        let (_home, git) = git(session)?;
        Ok(git.resolve(&git_ref.remote, &git_ref.reference)?)
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
    let (_home, git) = git(session)?;
    let work = tempfile::tempdir_in(&session.scratch).map_err(StepError::GitScratch)?;
    let repo = session.store.git_repo(&git_ref.remote)?;
    let tree = git.checkout(
        repo.path(),
        &git_ref.remote,
        resolved,
        work.path(),
        git_ref.keep_git_dir.unwrap_or(false),
    )?;
    Ok(Checkout { _dir: work, tree })
}
