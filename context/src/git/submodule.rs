//! Submodules of a checked-out commit, checked out as BuildKit does by default: each
//! gitlink the commit's tree records (mode 160000) whose `.gitmodules` entry names a URL is
//! fetched at the recorded commit into that URL's own cache repository and written into
//! its directory, recursively (at most [`MAX_DEPTH`] levels).
//!
//! What a repository says here is hostile: `.gitmodules` is read from the commit's blob
//! (not from the checked-out file, which could be a symlink), a relative URL is taken
//! against the superproject's remote, a URL must use an allowed transport (a submodule
//! cannot reach `file://` or `ext::`), and the directory a submodule is written into must
//! be the plain directory the checkout made for its gitlink (never reached through a
//! symlink). A gitlink without a URL stays an empty directory, as after `git clone`.

use super::{Git, GitError, RepoCache, Resolved, io_err};
use std::collections::BTreeMap;
use std::path::Path;

/// Nesting bound: a repository whose submodules go deeper is refused, not followed.
const MAX_DEPTH: usize = 8;

/// A submodule to check out: its path in the tree, the commit and the URL as written.
pub(super) struct Gitlink {
    path: String,
    commit: String,
    url: String,
}

impl Git {
    /// The gitlinks of `commit` in `repo` with their `.gitmodules` URLs.
    pub(super) fn gitlinks(&self, repo: &Path, commit: &str) -> Result<Vec<Gitlink>, GitError> {
        let listing = self
            .local("ls-tree", "")
            .arg("--git-dir")
            .arg(repo)
            .arg("ls-tree")
            .arg("-r")
            .arg("-z")
            .arg("--full-tree")
            .arg(commit)
            .run()?;
        let mut links = Vec::new();
        for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let mut meta = meta.split(' ');
            if let (Some("160000"), Some("commit"), Some(sha)) =
                (meta.next(), meta.next(), meta.next())
            {
                links.push((path.to_string(), sha.to_string()));
            }
        }
        if links.is_empty() {
            return Ok(Vec::new());
        }
        // `.gitmodules` from the commit itself; none (or unreadable) means no URLs.
        let config = self
            .local("config", "")
            .arg("--git-dir")
            .arg(repo)
            .arg("config")
            .arg("-z")
            .arg("--blob")
            .arg(format!("{commit}:.gitmodules"))
            .arg("--get-regexp")
            .arg(r"^submodule\..*\.(path|url)$")
            .run()
            .unwrap_or_default();
        let mut paths = BTreeMap::new();
        let mut urls = BTreeMap::new();
        for item in config.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let item = String::from_utf8_lossy(item);
            let Some((key, value)) = item.split_once('\n') else {
                continue;
            };
            let Some(name_key) = key.strip_prefix("submodule.") else {
                continue;
            };
            if let Some(name) = name_key.strip_suffix(".path") {
                paths.insert(value.to_string(), name.to_string());
            } else if let Some(name) = name_key.strip_suffix(".url") {
                urls.insert(name.to_string(), value.to_string());
            }
        }
        Ok(links
            .into_iter()
            .filter_map(|(path, commit)| {
                let url = urls.get(paths.get(&path)?)?.clone();
                Some(Gitlink { path, commit, url })
            })
            .collect())
    }

    /// Checks `links` (of the repository at `remote`) out under `tree`, each through its
    /// own cache repository, then theirs in turn.
    pub(super) fn submodules(
        &self,
        cache: &dyn RepoCache,
        remote: &str,
        tree: &Path,
        links: Vec<Gitlink>,
        work: &Path,
        depth: usize,
    ) -> Result<(), GitError> {
        for (n, link) in links.into_iter().enumerate() {
            let refuse = |reason| GitError::Submodule {
                remote: super::command::redact(remote),
                path: link.path.clone(),
                reason,
            };
            if depth >= MAX_DEPTH {
                return Err(refuse("submodules nest too deep"));
            }
            let url = resolve_url(remote, &link.url);
            self.check_transport(&url)?;
            let dir = tree.join(&link.path);
            let clamped = crate::resolve_in_root(tree, &link.path)
                .map_err(|_| refuse("its directory cannot be resolved inside the checkout"))?;
            let plain = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
            if clamped != dir || !plain {
                return Err(refuse(
                    "its directory is not a plain directory of the checkout",
                ));
            }
            let resolved = Resolved {
                commit: link.commit.clone(),
                refname: None,
            };
            let held = cache.repo(&url)?;
            let repo = held.as_ref().as_ref();
            self.fetch(repo, &url, &resolved)?;
            let index = work.join(format!("index-{depth}-{n}"));
            self.read_tree(repo, &url, &link.commit, &dir, &index)?;
            std::fs::remove_file(&index).map_err(io_err(&index))?;
            let nested = self.gitlinks(repo, &link.commit)?;
            drop(held);
            self.submodules(cache, &url, &dir, nested, work, depth + 1)?;
        }
        Ok(())
    }
}

/// A submodule URL as git takes it: `./x` and `../x` relative to the superproject's
/// remote (each `..` drops one path component of it), anything else as written.
fn resolve_url(remote: &str, url: &str) -> String {
    if !url.starts_with("./") && !url.starts_with("../") {
        return url.to_string();
    }
    let mut base = remote.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            // Never above the host: `https://h/a.git` + `../../x` stays on `h`.
            let path_start = base.find("://").map_or(0, |i| i + 3);
            match base[path_start..].rfind('/') {
                Some(i) => base.truncate(path_start + i),
                None => break,
            }
        } else {
            break;
        }
    }
    format!("{base}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::resolve_url;

    #[test]
    fn relative_urls_are_taken_against_the_remote() {
        assert_eq!(
            resolve_url("https://h/g/app.git", "../lib.git"),
            "https://h/g/lib.git"
        );
        assert_eq!(
            resolve_url("https://h/app.git/", "./sub"),
            "https://h/app.git/sub"
        );
        assert_eq!(
            resolve_url("git://h:1/a.git", "../../x.git"),
            "git://h:1/x.git"
        );
        assert_eq!(
            resolve_url("https://h/a.git", "https://o/b.git"),
            "https://o/b.git"
        );
    }
}
