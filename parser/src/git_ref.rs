//! Git references as a Dockerfile writes them (`ADD https://host/repo.git#ref:subdir`, a
//! git URL as the build context), recognised as BuildKit's `dfgitutil.ParseGitRef` does.
//!
//! A source is a git reference when it is
//! - an `http://` or `https://` URL whose path ends in `.git`,
//! - a `git://` or `ssh://` URL,
//! - scp-style: `user@host:path` (what `git clone git@host:repo.git` takes). BuildKit
//!   takes `host:path` without a user too; kiln does not (see [`scp_style`]).
//!
//! `#ref:subdir` after it, or the query form `?ref=&tag=&branch=&checksum=&commit=&subdir=
//! &keep-git-dir=&submodules=`, say what to take. Anything else (another scheme, a plain
//! path, `github.com/...`, which BuildKit accepts only for build contexts and deprecates)
//! is not a git reference and stays what it was.

use std::collections::BTreeMap;

/// How the remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum GitTransport {
    Http,
    Https,
    /// `git://`: git's own unencrypted protocol.
    Git,
    /// `ssh://` or scp-style.
    Ssh,
}

/// A parsed git reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GitRef {
    /// The repository URL, without fragment and query (what `git` is given).
    pub remote: String,
    pub transport: GitTransport,
    /// A branch, tag, full ref name or commit; empty for the remote's default branch.
    pub reference: String,
    /// `checksum=` / `commit=`: a prefix the resolved commit must have; empty for none.
    pub checksum: String,
    /// A directory in the repository to take instead of its root; empty for the root.
    pub subdir: String,
    /// `keep-git-dir=` in the query, when given.
    pub keep_git_dir: Option<bool>,
    /// `submodules=` in the query, when given.
    pub submodules: Option<bool>,
}

/// A git reference that cannot be used, with BuildKit's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitRefError {
    #[error("query {0:?} has no value")]
    NoValue(String),
    #[error("query {0:?} has multiple values")]
    MultipleValues(String),
    #[error("ref conflicts: {0:?} vs {1:?}")]
    RefConflict(String, String),
    #[error("subdir conflicts: {0:?} vs {1:?}")]
    SubdirConflict(String, String),
    #[error("invalid {0} value: {1:?}")]
    InvalidBool(&'static str, String),
    #[error("unexpected query {0:?}")]
    UnexpectedQuery(String),
    #[error("branch conflicts with tag")]
    BranchWithTag,
}

/// `Ok(None)` when `source` is not a git reference; an error when it is one whose query
/// cannot be used.
pub fn parse_git_ref(source: &str) -> Result<Option<GitRef>, GitRefError> {
    if source.starts_with("./") || source.starts_with("../") {
        return Ok(None);
    }
    let Some((remote, transport, fragment, query)) = split(source) else {
        return Ok(None);
    };
    let (reference, subdir) = match fragment {
        Some(f) => match f.split_once(':') {
            Some((r, s)) => (r.to_string(), s.to_string()),
            None => (f.to_string(), String::new()),
        },
        None => (String::new(), String::new()),
    };
    let mut git = GitRef {
        remote,
        transport,
        reference,
        checksum: String::new(),
        subdir,
        keep_git_dir: None,
        submodules: None,
    };
    if let Some(query) = query {
        git.load_query(query)?;
    }
    Ok(Some(git))
}

/// The remote, its transport, the fragment and the query of a git reference, or `None`.
fn split(source: &str) -> Option<(String, GitTransport, Option<&str>, Option<&str>)> {
    if let Some((scheme, rest)) = scheme_of(source) {
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "http" => GitTransport::Http,
            "https" => GitTransport::Https,
            "git" => GitTransport::Git,
            "ssh" => GitTransport::Ssh,
            _ => return None,
        };
        let (before_fragment, fragment) = match rest.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (rest, None),
        };
        let (location, query) = match before_fragment.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (before_fragment, None),
        };
        let path = location.find('/').map(|i| &location[i..]).unwrap_or("");
        if matches!(transport, GitTransport::Http | GitTransport::Https) && !path.ends_with(".git")
        {
            return None;
        }
        let remote = format!("{scheme}://{location}");
        return Some((remote, transport, fragment, query));
    }
    scp_style(source).map(|(remote, fragment)| (remote, GitTransport::Ssh, fragment, None))
}

/// `scheme://rest` when `source` starts with a scheme (letters and digits, as BuildKit's
/// `^[a-zA-Z0-9]+://`).
fn scheme_of(source: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = source.split_once("://")?;
    (!scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some((scheme, rest))
}

/// `user@host:path[#fragment]` (BuildKit's `sshutil.ParseSCPStyleURL`): the remote and
/// the fragment. Not when the text before the first `:` is a URL scheme followed by `/`
/// (`c:/x` is a path), as Go's URL parser decides there.
fn scp_style(source: &str) -> Option<(String, Option<&str>)> {
    let (head, path) = source.split_once(':')?;
    let is_scheme = head.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && head
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if is_scheme && path.starts_with('/') {
        return None;
    }
    // kiln asks for the user BuildKit makes optional: `host:path` is far more often a
    // Windows path (`C:\Program Files\Go`, in docker-library's own Dockerfiles) or a
    // file name with a colon than a git remote.
    let (user, host) = head.split_once('@')?;
    if user.is_empty()
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return None;
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        return None;
    }
    let (path, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    Some((format!("{user}@{host}:{path}"), fragment))
}

impl GitRef {
    /// The query options, checked against the fragment as BuildKit's `loadQuery` does
    /// (keys in sorted order, so the first error found is always the same one).
    fn load_query(&mut self, query: &str) -> Result<(), GitRefError> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            // Like Go's url.ParseQuery (as url.Query uses it): a pair that does not
            // unescape is dropped.
            if let (Some(k), Some(v)) = (unescape(k), unescape(v)) {
                values.entry(k).or_default().push(v);
            }
        }
        let (mut tag, mut branch) = (String::new(), String::new());
        for (k, v) in values {
            if v.len() > 1 {
                return Err(GitRefError::MultipleValues(k));
            }
            let v = v.into_iter().next().unwrap_or_default();
            let flag = matches!(k.as_str(), "submodules" | "keep-git-dir");
            if v.is_empty() && !flag {
                return Err(GitRefError::NoValue(k));
            }
            match k.as_str() {
                "ref" => {
                    if !self.reference.is_empty() && self.reference != v {
                        return Err(GitRefError::RefConflict(self.reference.clone(), v));
                    }
                    self.reference = v;
                }
                "tag" => tag = v,
                "branch" => branch = v,
                "subdir" => {
                    if !self.subdir.is_empty() && self.subdir != v {
                        return Err(GitRefError::SubdirConflict(self.subdir.clone(), v));
                    }
                    self.subdir = v;
                }
                "checksum" | "commit" => self.checksum = v,
                "keep-git-dir" => self.keep_git_dir = Some(flag_value("keep-git-dir", &v)?),
                "submodules" => self.submodules = Some(flag_value("submodules", &v)?),
                _ => return Err(GitRefError::UnexpectedQuery(k)),
            }
        }
        if !tag.is_empty() {
            if !tag.starts_with("refs/tags/") {
                tag = format!("refs/tags/{tag}");
            }
            self.set_ref(tag.clone())?;
        }
        if !branch.is_empty() {
            if !tag.is_empty() {
                return Err(GitRefError::BranchWithTag);
            }
            if !branch.starts_with("refs/heads/") {
                branch = format!("refs/heads/{branch}");
            }
            self.set_ref(branch)?;
        }
        if !self.checksum.is_empty() && self.reference.is_empty() {
            self.reference = self.checksum.clone();
        }
        Ok(())
    }

    fn set_ref(&mut self, r: String) -> Result<(), GitRefError> {
        if !self.reference.is_empty() && self.reference != r {
            return Err(GitRefError::RefConflict(self.reference.clone(), r));
        }
        self.reference = r;
        Ok(())
    }
}

/// A query flag: no value means true, else Go's `strconv.ParseBool`.
fn flag_value(name: &'static str, v: &str) -> Result<bool, GitRefError> {
    match v {
        "" | "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(GitRefError::InvalidBool(name, v.to_string())),
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` for a bad escape or
/// bytes that are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(s: &str) -> GitRef {
        parse_git_ref(s).unwrap().unwrap()
    }

    #[test]
    fn what_is_a_git_reference() {
        for not in [
            "https://example.com/file.tar.gz",
            "https://example.com/repo",
            "ftp://x/y.git",
            "./a:b",
            "src/",
            "/abs:x",
            "c:/x",
            "github.com/moby/buildkit",
            "a b:c",
            "C:\\Program Files\\Go",
            "host:repo.git",
        ] {
            assert_eq!(parse_git_ref(not).unwrap(), None, "{not}");
        }
        let g = git("https://example.com/a/repo.git#v1:sub/dir");
        assert_eq!(g.remote, "https://example.com/a/repo.git");
        assert_eq!(g.transport, GitTransport::Https);
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("v1", "sub/dir"));
        assert_eq!(git("git://h:9418/r").transport, GitTransport::Git);
        assert_eq!(git("http://h/r.git").reference, "");
        let g = git("git@github.com:moby/buildkit.git#main");
        assert_eq!(g.remote, "git@github.com:moby/buildkit.git");
        assert_eq!(g.transport, GitTransport::Ssh);
        assert_eq!(g.reference, "main");
        assert_eq!(git("ssh://git@h/r.git").transport, GitTransport::Ssh);
    }

    #[test]
    fn the_query_form() {
        let g = git("https://h/r.git?branch=dev&subdir=x&keep-git-dir&submodules=false");
        assert_eq!(g.remote, "https://h/r.git");
        assert_eq!(g.reference, "refs/heads/dev");
        assert_eq!(g.subdir, "x");
        assert_eq!(g.keep_git_dir, Some(true));
        assert_eq!(g.submodules, Some(false));
        assert_eq!(git("https://h/r.git?tag=v1").reference, "refs/tags/v1");
        let g = git("https://h/r.git?checksum=abc123");
        assert_eq!(
            (g.reference.as_str(), g.checksum.as_str()),
            ("abc123", "abc123")
        );
        assert_eq!(git("https://h/r.git?ref=a%2Fb#a/b").reference, "a/b");
        let err = |s: &str| parse_git_ref(s).unwrap_err().to_string();
        assert_eq!(err("https://h/r.git?ref="), "query \"ref\" has no value");
        assert_eq!(
            err("https://h/r.git?ref=a&ref=b"),
            "query \"ref\" has multiple values"
        );
        assert_eq!(err("https://h/r.git?x=1"), "unexpected query \"x\"");
        assert_eq!(
            err("https://h/r.git?ref=b#a"),
            "ref conflicts: \"a\" vs \"b\""
        );
        assert_eq!(
            err("https://h/r.git?tag=a&branch=b"),
            "branch conflicts with tag"
        );
        assert_eq!(
            err("https://h/r.git?keep-git-dir=yes"),
            "invalid keep-git-dir value: \"yes\""
        );
    }
}
