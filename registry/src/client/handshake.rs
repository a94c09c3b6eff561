//! The auth handshake: the `/v2/` ping's challenge (anonymous, Basic or Bearer), bearer
//! tokens fetched from the challenge's realm (and refreshed on a 401), and the rules for
//! which host may receive the registry's credentials or its token.

use ureq::Body;
use ureq::http::{self, Response};

use super::messages::{error_message, transport_reason};
use super::query::percent_encode;
use super::{Client, Payload};
use crate::auth::{Challenge, Credentials, TokenResponse};
use crate::error::{RegistryError, Result};
use crate::name::is_loopback_host;

/// Largest token-endpoint response accepted. A token is a JWT of a few KiB (Docker Hub's
/// are about 1.5 KiB); containerd sets no cap. Over this is an error, not a token.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub(super) enum AuthState {
    Anonymous,
    Basic,
    Bearer { token: Option<String> },
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

impl Client {
    pub(super) fn handle_ping(&mut self, ping: Response<Body>) -> Result<()> {
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

    pub(super) fn unauthorized(&self, request: String) -> RegistryError {
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
    pub(super) fn fetch_token(&self, challenge: &Challenge, scopes: &[String]) -> Result<String> {
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
    pub(super) fn is_registry_url(&self, url: &str) -> bool {
        Origin::of(url).is_some_and(|o| Origin::of(&self.base) == Some(o))
    }

    pub(super) fn auth_header(&self) -> Option<String> {
        let state = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match state {
            AuthState::Anonymous => None,
            AuthState::Basic => self.credentials.as_ref().map(Credentials::basic_header),
            AuthState::Bearer { token, .. } => token.map(|t| format!("Bearer {t}")),
        }
    }
}

/// The token of a token-endpoint response body (`token`, else `access_token`); `None`
/// when it names none. Public so the fuzz targets reach what a token realm controls.
pub fn parse_token_response(body: &[u8]) -> std::result::Result<Option<String>, serde_json::Error> {
    serde_json::from_slice::<TokenResponse>(body).map(TokenResponse::into_token)
}
