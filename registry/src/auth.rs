//! Registry authentication: credentials, `WWW-Authenticate` challenges and the bearer
//! token flow (`GET realm?service=..&scope=..`, with basic credentials when we have them).
//!
//! Pure parsing lives here; the HTTP round trips are in [`crate::client`].

use std::collections::BTreeMap;

use base64::Engine as _;

/// A user name and password (or token). `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` header value.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", encode_basic(&self.username, &self.password))
    }
}

/// base64 of `user:password`, the form of both the Basic header and docker config's `auth`.
pub fn encode_basic(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

/// Decodes docker config's `auth` field (`base64(user:password)`).
pub fn decode_basic(auth: &str) -> Option<Credentials> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some(Credentials {
        username: user.to_string(),
        password: pass.to_string(),
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `basic` or `bearer`.
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`, `error`...), names lowercased.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme k="v", k2=v2`. Quoted values may hold commas and `\"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.split_once(char::is_whitespace) {
            Some((s, r)) => (s, r),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c == ',' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if name.trim().is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'=') {
                chars.next();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(n) = chars.next() {
                                    value.push(n);
                                }
                            }
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                } else {
                    while let Some(&c) = chars.peek() {
                        if c == ',' {
                            break;
                        }
                        value.push(c);
                        chars.next();
                    }
                }
            }
            params.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// The scope string for `repository` with `actions` (`pull` or `pull,push`).
pub fn repository_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

/// The token endpoint's answer: `token`, or `access_token` (OAuth2 style).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_keeps_commas_inside_quotes() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn basic_challenge_and_unquoted_values_parse() {
        let c = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("Registry Realm"));
        let c = Challenge::parse("Bearer realm=http://x/t, service=s").unwrap();
        assert_eq!(c.param("realm"), Some("http://x/t"));
        assert_eq!(c.param("service"), Some("s"));
    }

    #[test]
    fn basic_auth_round_trips_and_debug_hides_the_password() {
        let enc = encode_basic("alice", "s3:cr3t");
        assert_eq!(enc, "YWxpY2U6czM6Y3IzdA==");
        let c = decode_basic(&enc).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3:cr3t")
        );
        assert!(!format!("{c:?}").contains("s3:cr3t"));
        assert_eq!(c.basic_header(), format!("Basic {enc}"));
        assert!(decode_basic("!!!").is_none());
    }
}
