//! kiln-registry: the OCI distribution client. Pulls images from registries into the
//! store and pushes images from the store to registries; logs in and out.
//!
//! - [`pull_into_store`]: reference → manifest (platform chosen from an index) → blobs
//!   streamed in parallel into the store, each verified → manifest → local tag.
//! - [`push_from_store`]: blobs (HEAD, cross-repository mount, monolithic or chunked
//!   upload) → manifest.
//! - [`push_cache`] / [`pull_cache`]: the remote build cache as an OCI manifest whose
//!   config lists cache records and whose layers are their blobs.
//! - [`login`] / [`logout`]: check credentials against a registry and record them in the
//!   docker config file (`auths`, or a credential helper).
//! - [`RegistryRef`]: names with Docker Hub's defaults (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! - [`transport`]: the HTTP agent's timeouts and transport errors in words, shared with
//!   `ADD <url>` in kiln-executor.
//!
//! Transport: blocking ureq 3 with rustls (ring), already in the workspace; HTTPS always,
//! plain HTTP only to loopback hosts and `--insecure-registry` hosts; CAs and client
//! certificates from `certs.d/HOST:PORT/`. Auth: anonymous, basic, bearer tokens via the
//! `WWW-Authenticate` challenge; credentials from `~/.docker/config.json`.

mod auth;
mod cache;
mod client;
mod dockerconfig;
mod error;
mod login;
mod name;
mod options;
mod pull;
mod push;
mod sources;
mod tls;
pub mod transport;

pub use auth::{Challenge, Credentials, repository_scope};
pub use cache::{MEDIA_TYPE_CACHE_CONFIG, pull_cache, push_cache};
pub use client::{Client, error_body_message, parse_token_response};
pub use dockerconfig::{DockerConfig, auth_key, default_config_path};
pub use error::{RegistryError, Result};
pub use login::{login, logout};
pub use name::{
    DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN, RegistryRef, is_loopback_host, registry_api_host,
};
pub use options::{Progress, ProgressFn, RegistryOptions};
pub use pull::{
    FetchedManifest, MANIFEST_ACCEPT, PulledImage, choose_platform, fetch_blob_into_store,
    fetch_manifest, pull_into_store,
};
pub use push::{BlobOutcome, PushedImage, blob_exists, push_blob, push_from_store};
pub use tls::{HostCertFiles, default_certs_dirs, host_cert_files};
