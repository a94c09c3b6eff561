//! kiln's solver: walks a [`kiln_parser::BuildGraph`] and produces an image.
//!
//! Owns the order of work (each vertex starts when its inputs are done; independent stages
//! run in parallel on tokio), cache keys ([`key`]), the decision hit-or-run, and progress
//! events ([`progress`]). How a sandbox is made or how bytes are laid out on disk belongs to
//! the executor, cache and image crates it calls.

pub mod key;
pub mod progress;
