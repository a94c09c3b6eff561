//! ADD's URL sources: download over http/https (ureq with rustls), streamed to a file while
//! hashing, `--checksum=sha256:<hex>` verified, file named after the URL path's basename
//! (`__unnamed__` when there is none), mode 0600 and mtime from `Last-Modified`, as
//! BuildKit's HTTP source does.
//!
//! The server controls how much it sends, so a download is bounded twice (BuildKit has
//! neither bound; an `ADD <url>` is untrusted input here): by [`max_download`] (32 GiB, or
//! `KILN_MAX_DOWNLOAD`), refused up front when `Content-Length` says so and stopped once
//! the body passes it; and by the disk, stopped while the filesystem it lands on has less
//! than [`DISK_RESERVE`] left, so an endless body fails the build instead of filling the
//! store's filesystem. Nothing is held in memory beyond one 64 KiB buffer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_base::digest::Digest;
use kiln_image::limits::TooLarge;
use kiln_registry::transport;
use percent_encoding::percent_decode_str;
use sha2::{Digest as _, Sha256};

use super::meta;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid checksum {0:?}: expected sha256:<64 hex digits>")]
    InvalidChecksum(String),
    #[error("downloading {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("downloading {url}: server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("writing download of {url} to {path}: {source}")]
    Write {
        url: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "downloading {url}: {cause}; set KILN_MAX_DOWNLOAD (bytes, or with a K/M/G/T suffix) to allow more"
    )]
    TooLarge {
        url: String,
        // A field, not `#[source]`: the message already holds it, and a chain printer
        // would repeat it.
        cause: TooLarge,
    },
    #[error(
        "downloading {url}: stopped after {written} bytes: the filesystem of {} has only {free} bytes left (kiln keeps {DISK_RESERVE} free)",
        path.display()
    )]
    DiskFull {
        url: String,
        path: PathBuf,
        written: u64,
        free: u64,
    },
    #[error(
        "invalid KILN_MAX_DOWNLOAD {0:?}: expected a number of bytes, optionally with a K, M, G or T suffix"
    )]
    InvalidMaxDownload(String),
}

/// Largest download when `KILN_MAX_DOWNLOAD` is not set: far above any installer or
/// toolchain archive, well below "until the disk is full".
pub const DEFAULT_MAX_DOWNLOAD: u64 = 32 << 30;

/// Free space a download never takes from the filesystem it is written to.
pub const DISK_RESERVE: u64 = 256 << 20;

/// How many bytes are written between two free-space checks (so a small download never
/// pays for one).
pub(crate) const DISK_CHECK_EVERY: u64 = 16 << 20;

/// The cap on one download: `KILN_MAX_DOWNLOAD` (bytes, or with a binary K/M/G/T
/// suffix) if set, else [`DEFAULT_MAX_DOWNLOAD`].
pub fn max_download() -> Result<u64, HttpError> {
    match std::env::var("KILN_MAX_DOWNLOAD") {
        Ok(v) => parse_size(&v).ok_or(HttpError::InvalidMaxDownload(v)),
        Err(_) => Ok(DEFAULT_MAX_DOWNLOAD),
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// Bytes available to us on the filesystem holding `file`.
pub(crate) fn free_space(file: &File) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(file)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Parses `--checksum=sha256:<hex>`.
pub fn parse_checksum(s: &str) -> Result<Digest, HttpError> {
    // Upper-case hex is lowered first: kiln has always taken it (BuildKit refuses it), and
    // a Dockerfile that built must keep building.
    s.strip_prefix(kiln_base::digest::SHA256_PREFIX)
        .and_then(|hex| Digest::from_hex(&hex.to_ascii_lowercase()).ok())
        .ok_or_else(|| HttpError::InvalidChecksum(s.to_string()))
}

/// The file name BuildKit gives a URL: the basename of its (decoded) path.
pub fn file_name_for(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => "",
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    match decoded.trim_end_matches('/').rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." && b != ".." && !decoded.ends_with('/') => {
            b.to_string()
        }
        _ => "__unnamed__".to_string(),
    }
}

/// The `Authorization` header of a download (from a build secret): its value never shows
/// in a debug print, an error or a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization(String);

impl Authorization {
    pub fn new(value: String) -> Authorization {
        Authorization(value)
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorization(<redacted>)")
    }
}

/// Downloads `url` into `dir`, verifying `checksum` when given, up to [`max_download`]
/// bytes, sending `authorization` when given. Returns the file name.
pub fn download(
    url: &str,
    checksum: Option<&str>,
    authorization: Option<&Authorization>,
    dir: &Path,
) -> Result<String, HttpError> {
    download_limited(url, checksum, authorization, dir, max_download()?)
}

/// [`download`] with an explicit cap of `limit` bytes.
pub fn download_limited(
    url: &str,
    checksum: Option<&str>,
    authorization: Option<&Authorization>,
    dir: &Path,
    limit: u64,
) -> Result<String, HttpError> {
    let expected = checksum.map(parse_checksum).transpose()?;
    let too_large = |size: Option<u64>| HttpError::TooLarge {
        url: url.to_string(),
        cause: TooLarge {
            what: "the download".into(),
            size,
            limit,
        },
    };
    let req_err = |reason: String| HttpError::Request {
        url: url.to_string(),
        reason,
    };
    // The registry client's bounds: a server that never answers, or stops sending halfway
    // through the body, must not hang the build.
    // The credentials follow a redirect to the same host only, as Go's client (BuildKit's)
    // keeps them.
    let agent: ureq::Agent = transport::agent_config()
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(Authorization(value)) = authorization {
        request = request.header("Authorization", value.as_str());
    }
    let mut resp = request.call().map_err(|e| req_err(transport::reason(&e)))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            url: url.to_string(),
            status,
        });
    }
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        return Err(too_large(Some(n)));
    }
    let last_modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let name = file_name_for(url);
    let path = dir.join(&name);
    let write_err = |source| HttpError::Write {
        url: url.to_string(),
        path: path.clone(),
        source,
    };
    let mut file = File::create(&path).map_err(write_err)?;
    // One byte past the limit is read so a body of exactly `limit` bytes still passes.
    let mut reader = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .take(limit.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    let mut next_check = DISK_CHECK_EVERY;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| req_err(transport::read_reason(&e)))?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > limit {
            return Err(too_large(None));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(write_err)?;
        if written >= next_check {
            next_check = written.saturating_add(DISK_CHECK_EVERY);
            let free = free_space(&file).map_err(write_err)?;
            if free < DISK_RESERVE {
                return Err(HttpError::DiskFull {
                    url: url.to_string(),
                    path: path.clone(),
                    written,
                    free,
                });
            }
        }
    }
    file.sync_all().map_err(write_err)?;
    drop(file);
    let actual = Digest::from_hasher(hasher);
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(HttpError::ChecksumMismatch {
            url: url.to_string(),
            expected: expected.into_string(),
            actual: actual.into_string(),
        });
    }
    meta::set_mode(&path, 0o600).map_err(write_err)?;
    let t = match last_modified {
        Some(t) => FileTime::from_system_time(t),
        None => FileTime::from_unix_time(0, 0),
    };
    meta::set_mtime(&path, t).map_err(write_err)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(
            file_name_for("https://example.com/a/b/file.tar.gz?x=1"),
            "file.tar.gz"
        );
        assert_eq!(file_name_for("http://example.com/"), "__unnamed__");
        assert_eq!(file_name_for("http://example.com"), "__unnamed__");
        assert_eq!(file_name_for("http://h/dir/my%20file"), "my file");
        // An escape that is not one is kept as written; a multi-byte one is decoded.
        assert_eq!(file_name_for("http://h/a%2x%C3%A9"), "a%2xé");
    }

    #[test]
    fn download_caps_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size(" 1 T "), Some(1 << 40));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn checksums_must_be_sha256_hex() {
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum("md5:00").is_err());
        let ok = format!("sha256:{}", "A".repeat(64));
        assert_eq!(parse_checksum(&ok).unwrap().hex(), "a".repeat(64));
    }
}
