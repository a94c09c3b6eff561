//! Where a REAPI service is and how to reach it: `grpc://HOST:PORT` (plaintext, for a
//! farm on a trusted network or loopback) or `grpcs://HOST[:PORT]` (TLS, port 443 by
//! default, trusting the system's CAs plus the `certs.d/HOST[:PORT]/` CAs and client
//! certificate a registry of that name would use), an instance name, and a bearer token
//! read from a file or an environment variable.
//!
//! The token is a secret: it is read when the channel is made, sent only as the
//! `authorization` header (marked sensitive), and never printed (`Debug` shows where it
//! comes from, not what it is).

use crate::RemoteError;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How long a connection may take before the remote counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may wait for its answer (a lookup, a batch of small blobs, the
/// first message of a stream). Enforced here, call by call ([`within`]), not as the
/// channel's deadline, which would also cut a long upload short.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a blob stream may wait for its next message.
pub(crate) const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// A REAPI endpoint as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given (`grpc://host:port`), for messages.
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The REAPI instance name (empty: the server's default instance).
    pub instance: String,
    pub token: Option<TokenSource>,
}

impl Endpoint {
    /// Parses `grpc://HOST:PORT` or `grpcs://HOST[:PORT]`; HOST may be `[v6]`.
    pub fn parse(url: &str) -> Result<Endpoint, RemoteError> {
        let bad = |why: &str| RemoteError::Endpoint {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("grpcs://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            (false, rest)
        } else {
            return Err(bad("it must start with grpc:// or grpcs://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(bad("give HOST:PORT only (the instance is instance=NAME)"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?;
                (host, Some(port))
            }
            _ => (rest, None),
        };
        let port = match (port, tls) {
            (Some(port), _) => port,
            (None, true) => 443,
            (None, false) => return Err(bad("grpc:// needs a port")),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.is_empty()
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(bad("the host is not a host name or address"));
        }
        Ok(Endpoint {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            port,
            instance: String::new(),
            token: None,
        })
    }

    /// `HOST:PORT` as certs.d names its directories (the port left out when it is 443).
    fn certs_dir_name(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a channel (eagerly: a server that is down is known at once).
    pub(crate) async fn connect(&self, certs_dirs: &[PathBuf]) -> Result<Conn, RemoteError> {
        let scheme = if self.tls { "https" } else { "http" };
        let uri = format!("{scheme}://{}:{}", self.host, self.port);
        let mut endpoint = tonic::transport::Endpoint::from_shared(uri).map_err(|source| {
            RemoteError::Connect {
                url: self.url.clone(),
                source,
            }
        })?;
        endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        if self.tls {
            endpoint = endpoint
                .tls_config(self.tls_config(certs_dirs)?)
                .map_err(|source| RemoteError::Connect {
                    url: self.url.clone(),
                    source,
                })?;
        }
        let auth = Auth(self.token()?);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| RemoteError::Connect {
                url: self.url.clone(),
                source,
            })?;
        Ok(Conn {
            channel,
            auth,
            instance: self.instance.clone(),
        })
    }

    fn tls_config(&self, certs_dirs: &[PathBuf]) -> Result<ClientTlsConfig, RemoteError> {
        let tls_err = |why: String| RemoteError::Tls {
            host: self.host.clone(),
            why,
        };
        let files = kiln_registry::host_cert_files(certs_dirs, &self.certs_dir_name())
            .map_err(|e| tls_err(e.to_string()))?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| tls_err(format!("reading {}: {e}", path.display())))
        };
        let mut config = ClientTlsConfig::new()
            .with_native_roots()
            .domain_name(self.host.trim_start_matches('[').trim_end_matches(']'));
        for ca in &files.cas {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &files.client {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(config)
    }

    fn token(&self) -> Result<Option<MetadataValue<Ascii>>, RemoteError> {
        let token = match &self.token {
            None => return Ok(None),
            Some(TokenSource::File(path)) => {
                let bytes = read_bounded(path, 64 << 10)
                    .map_err(|e| RemoteError::Token(format!("{}: {e}", path.display())))?;
                String::from_utf8(bytes)
                    .map_err(|_| RemoteError::Token(format!("{}: not UTF-8", path.display())))?
            }
            Some(TokenSource::Env(name)) => std::env::var(name)
                .map_err(|_| RemoteError::Token(format!("${name} is not set")))?,
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(RemoteError::Token("the token is empty".into()));
        }
        // Never echo the value: the error says only that it cannot be a header.
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| RemoteError::Token("the token holds characters a header cannot".into()))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// The answer of `call`, or a timeout when it has none within `limit`: a server that
/// accepts and never answers is a failed call, not a hung build.
pub(crate) async fn within<T>(
    call: &'static str,
    limit: Duration,
    answer: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RemoteError> {
    match tokio::time::timeout(limit, answer).await {
        Err(_) => Err(RemoteError::Timeout(call)),
        Ok(answer) => answer
            .map(tonic::Response::into_inner)
            .map_err(RemoteError::call(call)),
    }
}

fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("longer than {limit} bytes")));
    }
    Ok(bytes)
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub(crate) struct Auth(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Auth(bearer)"
        } else {
            "Auth(none)"
        })
    }
}

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An open channel with its token and instance.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub channel: Channel,
    pub auth: Auth,
    pub instance: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("grpc://127.0.0.1:50051").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (false, "127.0.0.1", 50051)
        );
        let e = Endpoint::parse("grpcs://cache.example.com").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "cache.example.com", 443)
        );
        assert_eq!(e.certs_dir_name(), "cache.example.com");
        let e = Endpoint::parse("grpcs://[::1]:8980/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("[::1]", 8980));
        assert_eq!(e.certs_dir_name(), "[::1]:8980");
        for bad in [
            "http://h:1",
            "grpc://h",
            "grpc://h:x",
            "grpc://h:1/instance",
            "grpc://user@h:1",
            "grpc://:1",
            "grpc://h h:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-value\n").unwrap();
        let mut e = Endpoint::parse("grpc://h:1").unwrap();
        e.token = Some(TokenSource::File(path));
        let value = e.token().unwrap().unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer s3cr3t-value");
        // Every call carries it, marked sensitive (kept out of HTTP/2 header tables).
        let sent = Auth(Some(value.clone()))
            .call(tonic::Request::new(()))
            .unwrap();
        let header = sent.metadata().get("authorization").unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer s3cr3t-value");
        assert!(header.is_sensitive());
        let none = Auth(None).call(tonic::Request::new(())).unwrap();
        assert!(none.metadata().get("authorization").is_none());
        let shown = format!("{:?} {:?}", Auth(Some(value)), e);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        e.token = Some(TokenSource::Env("KILN_TEST_NO_SUCH_TOKEN_VAR".into()));
        let err = e.token().unwrap_err().to_string();
        assert!(err.contains("KILN_TEST_NO_SUCH_TOKEN_VAR"), "{err}");
    }
}
