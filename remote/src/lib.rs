//! kiln-remote: kiln's build cache in a Remote Execution API (REAPI v2) service, the
//! engine build farms already run (BuildGrid, Buildbarn, BuildBuddy, NativeLink).
//!
//! - [`endpoint`]: `grpc://` / `grpcs://` endpoints, instance names, bearer tokens, TLS
//!   with the certs.d rules registries use, and the deadlines that make a hung server a
//!   failed call instead of a hung build.
//! - [`action`]: the documented scheme that turns a step's cache key into an Action
//!   digest, and what the ActionResult holds (the layer blob and a small record).
//! - `cas`: FindMissingBlobs, batches for small blobs, ByteStream for layers, every read
//!   checked against its digest before the store keeps it.
//! - [`RemoteCache`]: per-step lookups ([`RemoteCache::fetch`]) and pushes
//!   ([`RemoteCache::push`]).
//! - [`exec`]: a step executed on the farm ([`RemoteExecutor`], the Execution service) and
//!   the scheme of its Action; [`worker`]: `kiln worker`, a bot of the scheduler (`bots`:
//!   the Remote Workers API) that runs such Actions.
//!
//! Nothing here decides what a failure means: the solver and the build treat every
//! [`RemoteError`] as "the remote is not there" and go on locally with one warning.
//! The crate knows nothing of Dockerfiles or the solver; it maps keys to actions and
//! moves blobs between the store and the server.

pub mod action;
mod bots;
mod cache;
mod cas;
pub mod endpoint;
mod error;
pub mod exec;
pub mod worker;

pub use cache::{PushReport, RemoteCache, push_blocking};
pub use endpoint::{Endpoint, TokenSource};
pub use error::RemoteError;
pub use exec::{Executed, RemoteExecutor};
