//! One registry's HTTP client: scheme choice (HTTPS, plain HTTP only for loopback and
//! `--insecure-registry` hosts), TLS per host, the auth handshake on `/v2/`, and requests
//! that carry the right `Authorization` header and turn statuses into named errors.
//!
//! Blocking (ureq 3 + rustls/ring, already in the workspace for `ADD <url>`): transfers
//! run on plain threads, so the solver calls this from `spawn_blocking`.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Response};
use ureq::{Agent, Body, SendBody};

use crate::auth::{Challenge, Credentials, TokenResponse};
use crate::error::{RegistryError, Result};
use crate::name::{is_loopback_host, registry_api_host};
use crate::options::RegistryOptions;

/// Largest error body we read to quote in a message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Largest token-endpoint response accepted. A token is a JWT of a few KiB (Docker Hub's
/// are about 1.5 KiB); containerd sets no cap. Over this is an error, not a token.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// A request body.
pub(crate) enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A stream of exactly this many bytes (not replayable).
    Reader(&'a mut dyn Read, u64),
}

impl Payload<'_> {
    fn replayable(&self) -> bool {
        !matches!(self, Payload::Reader(..))
    }
}

#[derive(Debug, Clone)]
enum AuthState {
    Anonymous,
    Basic,
    Bearer { token: Option<String> },
}

/// A connection to one registry, scoped to the repositories it was opened for.
#[derive(Debug)]
pub struct Client {
    registry: String,
    base: String,
    agent: Agent,
    credentials: Option<Credentials>,
    scopes: Vec<String>,
    auth: Mutex<AuthState>,
}

fn agent_for(tls: ureq::tls::TlsConfig) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(300)))
        // A server that stops sending halfway through a blob must not hang the build.
        .timeout_per_read(Some(kiln_image::limits::stall_timeout()))
        .max_redirects(10)
        // A blob GET is often redirected to a storage host: the Authorization header (the
        // registry's credentials or token) is never carried across a redirect.
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        // Keep "Accept-Encoding" off: layer blobs must arrive byte for byte.
        .accept_encoding("identity")
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The scheme, host and port of an absolute URL: where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    /// Lowercased; an IPv6 address keeps its brackets.
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &str) -> Option<Origin> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = match (uri.port_u16(), scheme.as_str()) {
            (Some(p), _) => p,
            (None, "https") => 443,
            (None, "http") => 80,
            (None, _) => return None,
        };
        Some(Origin {
            host: uri.host()?.to_ascii_lowercase(),
            scheme,
            port,
        })
    }
}

fn transport_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(ureq::Timeout::PerRead) => kiln_image::limits::stall_message(),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

impl Client {
    /// Opens `domain` (as users write it; `docker.io` is mapped to Hub's API host), pings
    /// `/v2/`, and authenticates for `scopes` (`repository:NAME:pull[,push]`).
    ///
    /// Credentials: `opts.credentials` if set, else the docker config file.
    pub fn connect(domain: &str, opts: &RegistryOptions, scopes: &[String]) -> Result<Client> {
        let host = registry_api_host(domain).to_string();
        let credentials = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => opts.docker_config()?.credentials_for(domain)?,
        };
        let insecure = opts
            .insecure_registries
            .iter()
            .any(|h| h == domain || h == &host);
        let tls = crate::tls::tls_config(&opts.certs_dirs, &host, insecure)?;
        let agent = agent_for(tls);
        let mut client = Client {
            registry: host.clone(),
            base: format!("https://{host}"),
            agent,
            credentials,
            scopes: scopes.to_vec(),
            auth: Mutex::new(AuthState::Anonymous),
        };
        let ping = match client.raw(http::Method::GET, "/v2/", &[], Payload::Empty) {
            Ok(r) => r,
            Err(https_err) if insecure || is_loopback_host(&host) => {
                client.base = format!("http://{host}");
                match client.raw(http::Method::GET, "/v2/", &[], Payload::Empty) {
                    // Only a registry's answer counts: a TLS server answering plain HTTP
                    // with 400 means HTTPS was right and its error is the one to show.
                    Ok(r) if matches!(r.status().as_u16(), 200..=299 | 401) => r,
                    _ => return Err(https_err),
                }
            }
            Err(e) => return Err(e),
        };
        client.handle_ping(ping)?;
        Ok(client)
    }

    /// The registry host (for messages).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `scheme://host`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn handle_ping(&mut self, ping: Response<Body>) -> Result<()> {
        let status = ping.status().as_u16();
        let request = format!("GET {}/v2/", self.base);
        match status {
            200..=299 => Ok(()),
            401 => {
                let challenge = ping
                    .headers()
                    .get(http::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse)
                    .ok_or_else(|| RegistryError::Protocol {
                        registry: self.registry.clone(),
                        what: request.clone(),
                        reason: "401 without a usable WWW-Authenticate challenge".into(),
                    })?;
                let state = match challenge.scheme.as_str() {
                    "basic" => {
                        if self.credentials.is_none() {
                            return Err(RegistryError::Unauthorized {
                                registry: self.registry.clone(),
                                request,
                                message: "the registry requires a login (kiln login)".into(),
                            });
                        }
                        AuthState::Basic
                    }
                    "bearer" => {
                        let token = self.fetch_token(&challenge, &self.scopes)?;
                        AuthState::Bearer { token: Some(token) }
                    }
                    other => {
                        return Err(RegistryError::Protocol {
                            registry: self.registry.clone(),
                            what: request,
                            reason: format!("unsupported auth scheme {other:?}"),
                        });
                    }
                };
                *self.auth.get_mut().unwrap_or_else(|p| p.into_inner()) = state;
                // Basic credentials are checked here so a wrong password fails at once.
                if matches!(
                    *self.auth.get_mut().unwrap_or_else(|p| p.into_inner()),
                    AuthState::Basic
                ) {
                    let again = self.raw(http::Method::GET, "/v2/", &[], Payload::Empty)?;
                    if again.status().as_u16() == 401 {
                        return Err(self.unauthorized(request));
                    }
                    self.check(again, &request, "registry API")?;
                }
                Ok(())
            }
            _ => {
                self.check(ping, &request, "registry API /v2/")?;
                Ok(())
            }
        }
    }

    fn unauthorized(&self, request: String) -> RegistryError {
        let message = match &self.credentials {
            Some(c) => format!(
                "the registry refused the credentials of user {:?} (wrong user name or password?)",
                c.username
            ),
            None => "the registry requires a login (kiln login)".into(),
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            request,
            message,
        }
    }

    /// GETs a bearer token from the challenge's realm for `scopes`.
    fn fetch_token(&self, challenge: &Challenge, scopes: &[String]) -> Result<String> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                what: "bearer challenge".into(),
                reason: "no realm in WWW-Authenticate".into(),
            })?;
        let mut url = realm.to_string();
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", percent_encode(service)));
        }
        let mut all_scopes: Vec<String> = scopes.to_vec();
        if let Some(s) = challenge.param("scope") {
            for s in s.split(' ') {
                if !s.is_empty() && !all_scopes.iter().any(|x| x == s) {
                    all_scopes.push(s.to_string());
                }
            }
        }
        for s in &all_scopes {
            query.push(format!("scope={}", percent_encode(s)));
        }
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
        let request = format!("GET {realm} (token)");
        let mut req = http::Request::get(&url);
        let withheld = match &self.credentials {
            Some(c) if self.may_send_credentials_to_realm(realm) => {
                req = req.header(http::header::AUTHORIZATION, c.basic_header());
                false
            }
            // Asked anonymously: a public repository still gets its token.
            Some(_) => true,
            None => false,
        };
        let req = req.body(()).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: request.clone(),
            reason: e.to_string(),
        })?;
        let mut resp = self.agent.run(req).map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            request: request.clone(),
            reason: transport_reason(&e),
        })?;
        let status = resp.status().as_u16();
        if (status == 401 || status == 403) && withheld {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                request,
                message: format!(
                    "kiln did not send the credentials for {} to the token realm {realm}: \
                     credentials go only over https (plain http only between loopback hosts)",
                    self.registry
                ),
            });
        }
        if status == 401 || status == 403 {
            return Err(self.unauthorized(request));
        }
        if !(200..300).contains(&status) {
            let message = error_message(&mut resp);
            return Err(RegistryError::Status {
                registry: self.registry.clone(),
                request,
                status,
                message,
            });
        }
        let body = match kiln_image::limits::read_capped(
            resp.body_mut().as_reader(),
            MAX_TOKEN_RESPONSE,
            format!("token response from {realm}"),
        ) {
            Ok(b) => b,
            Err(kiln_image::limits::CappedReadError::TooLarge(e)) => return Err(self.too_large(e)),
            Err(kiln_image::limits::CappedReadError::Io { source, .. }) => {
                return Err(self.read_error(&request, &source));
            }
        };
        let token = parse_token_response(&body).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: request.clone(),
            reason: format!("token response is not JSON: {e}"),
        })?;
        token.ok_or_else(|| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: request,
            reason: "token response has no token".into(),
        })
    }

    /// Whether the registry's Basic credentials may go to `realm`, the token endpoint its
    /// challenge named: over https to whichever host the registry names (as Docker Hub
    /// names auth.docker.io), over plain http only between loopback hosts (a local test
    /// setup) or to the registry's own host when the registry itself is plain http
    /// (`--insecure-registry`: the credentials go there in clear anyway).
    fn may_send_credentials_to_realm(&self, realm: &str) -> bool {
        let (Some(realm), Some(registry)) = (Origin::of(realm), Origin::of(&self.base)) else {
            return false;
        };
        match realm.scheme.as_str() {
            "https" => true,
            "http" => {
                (is_loopback_host(&realm.host) && is_loopback_host(&registry.host))
                    || (registry.scheme == "http" && realm.host == registry.host)
            }
            _ => false,
        }
    }

    /// Whether `url` is on the registry itself (same scheme, host and port as the base):
    /// only there do the registry's credentials and tokens go. An upload `Location` may
    /// name another host (a storage bucket), which gets the request without them.
    fn is_registry_url(&self, url: &str) -> bool {
        Origin::of(url).is_some_and(|o| Origin::of(&self.base) == Some(o))
    }

    fn auth_header(&self) -> Option<String> {
        let state = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match state {
            AuthState::Anonymous => None,
            AuthState::Basic => self.credentials.as_ref().map(Credentials::basic_header),
            AuthState::Bearer { token, .. } => token.map(|t| format!("Bearer {t}")),
        }
    }

    /// Resolves `path` (`/v2/...`) or an absolute URL (a `Location`) against the base.
    pub(crate) fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    /// One request, no auth retry.
    fn raw(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> Result<Response<Body>> {
        let url = self.url(path);
        let request = format!("{method} {url}");
        let mut builder = http::Request::builder().method(method).uri(&url);
        if self.is_registry_url(&url)
            && let Some(h) = self.auth_header()
        {
            builder = builder.header(http::header::AUTHORIZATION, h);
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let proto = |e: http::Error| RegistryError::Protocol {
            registry: self.registry.clone(),
            what: request.clone(),
            reason: e.to_string(),
        };
        let result = match payload {
            Payload::Empty => self
                .agent
                .run(builder.body(SendBody::none()).map_err(proto)?),
            Payload::Bytes(b) => {
                let mut reader: &[u8] = b;
                let builder = builder.header(http::header::CONTENT_LENGTH, b.len());
                self.agent.run(
                    builder
                        .body(SendBody::from_reader(&mut reader))
                        .map_err(proto)?,
                )
            }
            Payload::Reader(r, len) => {
                let builder = builder.header(http::header::CONTENT_LENGTH, len);
                self.agent
                    .run(builder.body(SendBody::from_reader(r)).map_err(proto)?)
            }
        };
        result.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            request,
            reason: transport_reason(&e),
        })
    }

    /// A request with auth; a 401 on a bearer registry refreshes the token (with the
    /// scope the registry asked for) and retries once when the body can be replayed.
    pub(crate) fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> Result<Response<Body>> {
        let replay: Option<Option<Vec<u8>>> = match &payload {
            Payload::Empty => Some(None),
            Payload::Bytes(b) => Some(Some(b.to_vec())),
            Payload::Reader(..) => None,
        };
        let can_retry = payload.replayable();
        let resp = self.raw(method.clone(), path, headers, payload)?;
        // Only the registry's own challenge may send the credentials to a token realm.
        if resp.status().as_u16() != 401 || !can_retry || !self.is_registry_url(&self.url(path)) {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let Some(challenge) = challenge.filter(|c| c.scheme == "bearer") else {
            return Ok(resp);
        };
        let token = self.fetch_token(&challenge, &self.scopes)?;
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) =
            AuthState::Bearer { token: Some(token) };
        let payload = match &replay {
            Some(Some(bytes)) => Payload::Bytes(bytes),
            _ => Payload::Empty,
        };
        self.raw(method, path, headers, payload)
    }

    /// Turns a non-2xx response into an error naming `what`.
    pub(crate) fn check(
        &self,
        mut resp: Response<Body>,
        request: &str,
        what: &str,
    ) -> Result<Response<Body>> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let message = error_message(&mut resp);
        Err(match status {
            401 => {
                let mut e = self.unauthorized(request.to_string());
                if let RegistryError::Unauthorized { message: m, .. } = &mut e
                    && !message.is_empty()
                {
                    m.push_str(&format!(" ({message})"));
                }
                e
            }
            404 => RegistryError::NotFound {
                registry: self.registry.clone(),
                what: what.to_string(),
                request: request.to_string(),
                message,
            },
            _ => RegistryError::Status {
                registry: self.registry.clone(),
                request: request.to_string(),
                status,
                message,
            },
        })
    }

    /// `send` then `check`, naming the request in errors.
    pub(crate) fn call(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
        what: &str,
    ) -> Result<Response<Body>> {
        let request = format!("{method} {}", self.url(path));
        let resp = self.send(method, path, headers, payload)?;
        self.check(resp, &request, what)
    }

    /// A document from this registry over its cap.
    pub(crate) fn too_large(&self, cause: kiln_image::limits::TooLarge) -> RegistryError {
        RegistryError::TooLarge {
            registry: self.registry.clone(),
            cause,
        }
    }

    /// A transport error for a body read that failed mid-way.
    pub(crate) fn read_error(&self, request: &str, e: &std::io::Error) -> RegistryError {
        let reason = match e.get_ref().and_then(|x| x.downcast_ref::<ureq::Error>()) {
            Some(inner) => transport_reason(inner),
            None => e.to_string(),
        };
        RegistryError::Transport {
            registry: self.registry.clone(),
            request: request.to_string(),
            reason,
        }
    }
}

/// The message of a registry error body (`{"errors":[{"code","message"}]}`), else the
/// status line's reason, else the first bytes of the body.
fn error_message(resp: &mut Response<Body>) -> String {
    let reason = resp.status().canonical_reason().unwrap_or("");
    // Only quoted, so an oversized body is cut rather than refused (ureq's limit would
    // fail the read and lose even the first bytes); a broken one quotes what arrived.
    let mut body = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut body);
    error_body_message(reason, &body)
}

/// The token of a token-endpoint response body (`token`, else `access_token`); `None`
/// when it names none. Public so the fuzz targets reach what a token realm controls.
pub fn parse_token_response(body: &[u8]) -> std::result::Result<Option<String>, serde_json::Error> {
    serde_json::from_slice::<TokenResponse>(body).map(TokenResponse::into_token)
}

/// What to quote from an error body: the registry's `{"errors":[...]}` messages, else the
/// status reason, else the body's first 200 characters. Public for the fuzz targets.
pub fn error_body_message(reason: &str, body: &[u8]) -> String {
    let reason = reason.to_string();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body)
        && !parsed.errors.is_empty()
    {
        return parsed
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{} ({})", e.message, e.code),
                (true, false) => e.message.clone(),
                _ => e.code.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        reason
    } else {
        let short: String = text.chars().take(200).collect();
        if reason.is_empty() {
            short
        } else {
            format!("{reason}: {short}")
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `key=value` (value percent-encoded) to a URL that may already have a query.
pub(crate) fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", percent_encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded_and_appended() {
        assert_eq!(
            with_query("/v2/a/blobs/uploads/x?_state=abc", "digest", "sha256:00"),
            "/v2/a/blobs/uploads/x?_state=abc&digest=sha256%3A00"
        );
        assert_eq!(
            percent_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
