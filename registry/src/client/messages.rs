//! What a failed request says: the registry's `{"errors":[...]}` body (else the status
//! reason, else the body's first characters), and a transport error in words.

use std::io::Read;

use ureq::Body;
use ureq::http::Response;

/// Largest error body we read to quote in a message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A transport error in words ([`crate::transport::reason`]), without ureq's `io: `
/// prefix on a socket error (the registry's messages never carried it).
pub(super) fn transport_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        other => crate::transport::reason(other),
    }
}

/// The message of a registry error body (`{"errors":[{"code","message"}]}`), else the
/// status line's reason, else the first bytes of the body.
pub(super) fn error_message(resp: &mut Response<Body>) -> String {
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
