//! The HTTP transport every kiln download shares: the agent's timeouts and a transport
//! error in words. The registry client builds on it, and so does `ADD <url>`
//! (kiln-executor), so a server that never answers, or stops sending halfway through a
//! body, is bounded and reported the same way in both.

use std::io;
use std::time::Duration;

use ureq::config::ConfigBuilder;
use ureq::typestate::AgentScope;

/// An agent configuration with kiln's bounds: statuses are answers, not errors (callers
/// name them); a connect gives up after 30 s; a server that accepts and never answers
/// after 300 s; one that stops sending mid-body after the stall timeout
/// ([`kiln_image::limits::stall_timeout`]).
pub fn agent_config() -> ConfigBuilder<AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(300)))
        .timeout_per_read(Some(kiln_image::limits::stall_timeout()))
}

/// Why a request failed, in words: a stall names its timeout.
pub fn reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(ureq::Timeout::PerRead) => kiln_image::limits::stall_message(),
        other => other.to_string(),
    }
}

/// Why reading a response body failed midway: the transport error inside, in
/// [`reason`]'s words, else the I/O error's own.
pub fn read_reason(e: &io::Error) -> String {
    match e.get_ref().and_then(|x| x.downcast_ref::<ureq::Error>()) {
        Some(inner) => reason(inner),
        None => e.to_string(),
    }
}
