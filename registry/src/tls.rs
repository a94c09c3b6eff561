//! TLS settings per registry: the system's roots plus the CAs (`*.crt`) and client
//! certificates (`*.cert` + `*.key`) in `certs.d/HOST[:PORT]/` directories, as Docker
//! reads `/etc/docker/certs.d`.

use std::fs;
use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::error::{RegistryError, Result};

/// The default `certs.d` roots: `/etc/docker/certs.d` and `~/.config/kiln/certs.d`.
pub fn default_certs_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/docker/certs.d")];
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(config).join("kiln/certs.d"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/kiln/certs.d"));
    }
    dirs
}

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> RegistryError {
    RegistryError::TlsFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = fs::read(path).map_err(|source| RegistryError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| tls_err(path, e))? {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(tls_err(path, "no PEM certificate in the file"));
    }
    Ok(out)
}

fn read_key(path: &Path) -> Result<PrivateKey<'static>> {
    let pem = fs::read(path).map_err(|source| RegistryError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::PrivateKey(k) = item.map_err(|e| tls_err(path, e))? {
            return Ok(k);
        }
    }
    Err(tls_err(path, "no PEM private key in the file"))
}

/// The system's CAs: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the distribution's
/// bundle and directory where OpenSSL would look (rustls-native-certs).
fn system_roots() -> Vec<Certificate<'static>> {
    // An unreadable or partly broken system store is not the registry's fault: the
    // certificates that were read are used, and none falls back to Mozilla's roots.
    rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect()
}

/// What the certs.d directories hold for one host.
#[derive(Debug, Default)]
pub(crate) struct HostCerts {
    pub cas: Vec<Certificate<'static>>,
    pub client: Option<ClientCert>,
}

/// The files the certs.d directories hold for one host: its CAs (`*.crt`) and the first
/// client certificate (`*.cert`) with its key (`*.key`). Shared with every other client
/// that trusts what a registry of that name would (the REAPI cache).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostCertFiles {
    pub cas: Vec<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Lists `DIR/HOST/` for each of `dirs` (sorted file names, so the choice of client
/// certificate is stable).
pub fn host_cert_files(dirs: &[PathBuf], host: &str) -> Result<HostCertFiles> {
    let mut out = HostCertFiles::default();
    for dir in dirs {
        let host_dir = dir.join(host);
        let Ok(entries) = fs::read_dir(&host_dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for path in names {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => out.cas.push(path),
                Some("cert") if out.client.is_none() => {
                    let key_path = path.with_extension("key");
                    if !key_path.exists() {
                        return Err(tls_err(
                            &path,
                            format!("client certificate without its key {}", key_path.display()),
                        ));
                    }
                    out.client = Some((path, key_path));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Reads what [`host_cert_files`] lists for `host`.
pub(crate) fn host_certs(dirs: &[PathBuf], host: &str) -> Result<HostCerts> {
    let files = host_cert_files(dirs, host)?;
    let mut out = HostCerts::default();
    for path in &files.cas {
        out.cas.extend(read_certs(path)?);
    }
    if let Some((cert, key)) = &files.client {
        let chain = read_certs(cert)?;
        let key = read_key(key)?;
        out.client = Some(ClientCert::new_with_certs(&chain, key));
    }
    Ok(out)
}

/// TLS settings for `host`: system roots + certs.d CAs, optional client cert, and no
/// verification at all when `insecure` (hosts named with `--insecure-registry`).
pub(crate) fn tls_config(dirs: &[PathBuf], host: &str, insecure: bool) -> Result<TlsConfig> {
    let certs = host_certs(dirs, host)?;
    let mut roots = system_roots();
    roots.extend(certs.cas);
    // No bundle on the system and no certs.d CA: fall back to Mozilla's roots.
    let root_certs = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&roots)
    };
    Ok(TlsConfig::builder()
        .root_certs(root_certs)
        .client_cert(certs.client)
        .disable_verification(insecure)
        .build())
}
