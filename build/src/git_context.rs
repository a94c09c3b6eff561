//! A git URL as the build context (`kiln build https://host/repo.git#ref:subdir`): the
//! commit the ref names is checked out (through the store's cache repository of the
//! remote, as ADD's git sources are) into this process's scratch, and the build runs on
//! that directory like on a local context: its steps are keyed by the content they copy,
//! so a rebuild at the same commit is all CACHED.
//!
//! An ssh remote (`git@host:repo.git`, `ssh://...`) authenticates with the build's
//! `--ssh default` agent, as ADD's git sources do ([`kiln_solver::ssh::GitAgent`]).
//!
//! The checkout is hostile input like any context: the Dockerfile and `.dockerignore` are
//! read through paths clamped to it, and `subdir` is resolved inside it.

use crate::BuildError;
use kiln_context::git::{CheckoutOptions, Git};
use kiln_parser::GitRef;
use kiln_solver::ssh::GitAgent;
use kiln_solver::{SshSource, StoreGitCache};
use kiln_store::Store;
use std::path::{Path, PathBuf};

/// A checked-out git context, removed when dropped.
#[derive(Debug)]
pub struct GitContext {
    /// The remote as given, for messages.
    pub remote: String,
    /// The commit checked out.
    pub commit: String,
    /// The context directory (the checkout's root or its subdir).
    pub dir: PathBuf,
    _work: tempfile::TempDir,
}

/// The git reference `context` is, when it is one and no local path of that name exists;
/// an error when it is one whose query is wrong.
pub fn parse(context: &Path) -> Result<Option<GitRef>, BuildError> {
    if std::fs::symlink_metadata(context).is_ok() {
        return Ok(None);
    }
    let Some(text) = context.to_str() else {
        return Ok(None);
    };
    kiln_parser::parse_git_ref(text)
        .map_err(|e| BuildError::Request(format!("build context {text}: {e}")))
}

impl GitContext {
    /// Resolves and checks out `git` (the store is locked by the caller, shared), over ssh
    /// with the `default` agent of `ssh` (the build's `--ssh`).
    pub fn checkout(
        store: &Store,
        git: &GitRef,
        ssh: &[(String, SshSource)],
    ) -> Result<GitContext, BuildError> {
        let fail = |e: &dyn std::fmt::Display| {
            BuildError::Request(format!("build context {}: {e}", git.remote))
        };
        let scratch = store.scratch_dir().map_err(|e| fail(&e))?;
        let work = tempfile::tempdir_in(&scratch).map_err(|e| fail(&e))?;
        let home = work.path().join("home");
        std::fs::create_dir(&home).map_err(|e| fail(&e))?;
        // Held until the checkout is done: a key-file agent, or a relay, lives as long.
        let agent = GitAgent::of(ssh, &scratch).map_err(|e| fail(&e))?;
        let mut runner = Git::new(&home);
        if let Some(agent) = &agent {
            runner = runner.with_ssh_agent(agent.path().to_path_buf());
        }
        let resolved = runner
            .resolve(&git.remote, &git.reference)
            .map_err(|e| fail(&e))?;
        kiln_context::git::check_checksum(&git.remote, &git.checksum, &resolved.commit)
            .map_err(|e| fail(&e))?;
        let checkout = work.path().join("checkout");
        std::fs::create_dir(&checkout).map_err(|e| fail(&e))?;
        let tree = runner
            .checkout(
                &StoreGitCache(store),
                &git.remote,
                &resolved,
                &checkout,
                CheckoutOptions {
                    keep_git_dir: git.keep_git_dir.unwrap_or(false),
                    submodules: git.submodules.unwrap_or(true),
                },
            )
            .map_err(|e| fail(&e))?;
        let dir = if git.subdir.is_empty() {
            tree
        } else {
            kiln_context::resolve_in_root(&tree, &git.subdir).map_err(|e| fail(&e))?
        };
        if !dir.is_dir() {
            return Err(fail(&format!("subdir {:?} is not a directory", git.subdir)));
        }
        Ok(GitContext {
            remote: git.remote.clone(),
            commit: resolved.commit,
            dir,
            _work: work,
        })
    }

    /// The Dockerfile `-f` names: a relative path is taken inside the context (as for any
    /// remote context), an absolute one as it is; the context's `Dockerfile` by default.
    pub fn dockerfile(&self, file: Option<&Path>) -> Option<PathBuf> {
        match file {
            Some(f) if f.is_relative() && f != Path::new("-") => Some(self.dir.join(f)),
            other => other.map(Path::to_path_buf),
        }
    }
}
