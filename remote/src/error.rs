//! What can go wrong talking to a REAPI service. Every error is the remote's: the build
//! that meets one goes on locally (one warning), so none carries a secret or needs more
//! than its text.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RemoteError {
    #[error("{url:?} is not a REAPI endpoint: {why}")]
    Endpoint { url: String, why: String },
    #[error("reading the token: {0}")]
    Token(String),
    #[error("TLS for {host}: {why}")]
    Tls { host: String, why: String },
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{call}: {code:?}: {message}")]
    Call {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{0} did not answer in time")]
    Timeout(&'static str),
    #[error("the step failed on the farm: {0}")]
    Failed(String),
    #[error("the server answered garbage: {0}")]
    Garbage(String),
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: kiln_store::StoreError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A server's message, bounded: it ends up in a warning line.
fn bounded(message: &str) -> String {
    message.chars().take(300).collect()
}

impl RemoteError {
    pub(crate) fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> RemoteError {
        move |status| RemoteError::Call {
            call,
            code: status.code(),
            message: bounded(status.message()),
        }
    }

    /// A failure a server reported inside an answer (a `google.rpc.Status` of a batch
    /// entry or an operation), as the failed call's error.
    pub(crate) fn status(
        call: &'static str,
        status: &bazel_remote_apis::google::rpc::Status,
    ) -> RemoteError {
        RemoteError::Call {
            call,
            code: tonic::Code::from_i32(status.code),
            message: bounded(&status.message),
        }
    }

    pub(crate) fn store(
        what: impl Into<String>,
    ) -> impl FnOnce(kiln_store::StoreError) -> RemoteError {
        let what = what.into();
        move |source| RemoteError::Store { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RemoteError {
        let what = what.into();
        move |source| RemoteError::Io { what, source }
    }
}
