//! One registry's HTTP client: scheme choice (HTTPS, plain HTTP only for loopback and
//! `--insecure-registry` hosts), TLS per host, and requests that carry the right
//! `Authorization` header and turn statuses into named errors.
//!
//! Blocking (ureq 3 + rustls/ring, already in the workspace for `ADD <url>`): transfers
//! run on plain threads, so the solver calls this from `spawn_blocking`.
//!
//! - [`handshake`]: the auth handshake on `/v2/`, bearer tokens from the challenge's realm,
//!   and which host may receive the credentials or the token.
//! - [`messages`]: what a failed request says: the registry's error body, a transport
//!   error in words.
//! - [`query`]: query strings on request URLs.

mod handshake;
mod messages;
mod query;

use std::io::Read;
use std::sync::Mutex;

use ureq::http::{self, Response};
use ureq::{Agent, Body, SendBody};

use crate::auth::{Challenge, Credentials};
use crate::error::{RegistryError, Result};
use crate::name::{is_loopback_host, registry_api_host};
use crate::options::RegistryOptions;
use handshake::AuthState;
use messages::{error_message, transport_reason};

pub use handshake::parse_token_response;
pub use messages::error_body_message;
pub(crate) use query::with_query;

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
    crate::transport::agent_config()
        .tls_config(tls)
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
        RegistryError::Transport {
            registry: self.registry.clone(),
            request: request.to_string(),
            reason: crate::transport::read_reason(e),
        }
    }
}
