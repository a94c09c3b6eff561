//! ADD's URL sources, fetched once: keying downloads a URL (one without `--checksum`) into
//! the session's scratch space and hashes those bytes; the copy then takes that same file.
//! A server whose answer changes between two requests can therefore never give a layer
//! that does not match its key.
//!
//! A git source is kept the same way: keying resolves its ref to a commit (kept here),
//! and only a step that runs checks that commit out ([`super::git`]), into a directory
//! kept here until the step is done.

use crate::error::StepError;
use crate::session::BuildSession;
use kiln_executor::copy::SourceSpec;
use std::path::Path;

/// The URLs a step's keying downloaded, kept until the step is done.
#[derive(Default)]
pub(crate) struct Fetched {
    files: Vec<FetchedUrl>,
    /// The commit of the step's git source, as keying resolved it.
    pub(crate) git: Option<kiln_context::git::Resolved>,
    /// The git checkout the step's copy reads, once made.
    pub(crate) checkout: std::sync::Mutex<Option<super::git::Checkout>>,
}

struct FetchedUrl {
    url: String,
    /// The download's directory in the scratch space; removed when dropped.
    dir: tempfile::TempDir,
    /// The file's name in `dir` (from the URL's path, as the copier names it).
    name: String,
    digest: String,
}

impl Fetched {
    /// Downloads `url` into `scratch` (once per step) and returns the digest of what it
    /// served: its content and its Last-Modified time (BuildKit keys HTTP sources on both).
    pub(crate) fn fetch(&mut self, session: &BuildSession, url: &str) -> Result<String, StepError> {
        if let Some(known) = self.files.iter().find(|f| f.url == url) {
            return Ok(known.digest.clone());
        }
        let fetch_err = |source| StepError::Fetch {
            url: url.to_string(),
            source,
        };
        let dir = tempfile::tempdir_in(&session.scratch).map_err(fetch_err)?;
        let authorization = session.http_authorization(url)?;
        let name =
            kiln_executor::copy::http::download(url, None, authorization.as_ref(), dir.path())?;
        let digest = file_digest(&dir.path().join(&name)).map_err(fetch_err)?;
        self.files.push(FetchedUrl {
            url: url.to_string(),
            dir,
            name,
            digest: digest.clone(),
        });
        Ok(digest)
    }

    /// What the copier gets for `url`: the file fetched while keying, else the URL itself
    /// (a source with `--checksum`, which the copier downloads and verifies).
    pub(crate) fn source(&self, url: &str) -> SourceSpec {
        match self.files.iter().find(|f| f.url == url) {
            Some(f) => SourceSpec::Fetched {
                dir: f.dir.path().to_path_buf(),
                name: f.name.clone(),
            },
            None => SourceSpec::Url(url.to_string()),
        }
    }
}

/// `sha256:<hex of the content> <mtime in seconds>` of a downloaded file.
fn file_digest(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let (digest, _) = kiln_image::digest::digest_reader(&file)?;
    let mtime = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(format!("{digest} {mtime}"))
}
