//! kiln-build: the build facade. A [`BuildRequest`] in, an image in the store out
//! ([`build`]), then written where the user asked ([`export`]); and
//! `--verify-reproducible` as two such builds compared ([`verify`]).
//!
//! The data flow of one build:
//!
//! 1. [`Dockerfile::read`] reads the Dockerfile (from the context, a path, or stdin);
//!    [`request`] holds the policies decided before anything runs: SOURCE_DATE_EPOCH,
//!    the target platforms (`--platform`, one or several) and the checks on each lowered
//!    graph (every stage's `FROM --platform=` parses; a RUN for another architecture needs
//!    a binfmt_misc emulator), the registry options.
//! 2. [`build`] makes the named contexts ready ([`contexts`]: a directory checked, an OCI
//!    layout's image loaded), lowers the Dockerfile with base images looked up in the
//!    store, pulling a missing one ([`bases`]), tells what the build checks found
//!    ([`checks`]; `kiln build --check` runs only those, [`Dockerfile::check`]), imports
//!    `--cache-from` caches ([`cache_io`]) and hands the graph to the solver, whose
//!    progress events go to the caller's renderer (the `kiln` binary's is
//!    kiln-progressui). A build for several platforms lowers once per platform (base
//!    images for each), solves the graphs at once sharing steps by key, and ties the
//!    images in an OCI index (`index`).
//! 3. [`export`] names the image (or records it as untagged), writes `-o` outputs,
//!    exports `--cache-to` caches, pushes and writes the iidfile ([`exporter`]).
//!
//! [`verify::verify`] runs step 2 twice, at once, in two scratch stores that get the
//! user's base images copied in (the user's store is only read; a base missing from it
//! is pulled into it once, as a plain build would), compares the results with the image
//! crate's compare engine (platform by platform for several, [`compare`]), and on a match
//! copies the image into the user's store and exports it as step 3. A build for several
//! platforms is tied together by [`index`], which also reads a stored index's platforms
//! for the image commands, `kiln diff` and the exporters.
//!
//! `kiln save` and `kiln load` use the same archive writer and a store-side load
//! ([`exporter::write_archive`], [`load::load`]); the other image commands find, list and
//! sum up stored images through [`images`], `kiln diff` opens its two images through
//! [`compare`], `kiln import` applies a build's policies through [`import`], and every
//! command opens the store [`location`] chooses.
//!
//! A git URL as the build context is checked out first ([`git_context`]) and built like a
//! local one.
//!
//! A REAPI farm ([`farm`]): `--remote` sends eligible RUN steps to its kiln workers, and
//! `kiln worker` is one of them; `--cache-from/--cache-to type=reapi` keep the step cache
//! in its CAS and Action Cache ([`cache_io`]).
//!
//! The values of build flags (`--build-arg`, `--secret`, `--ssh`, `--allow`, limits, the
//! RUN options) are read by
//! [`flags`]; a failed step is reported by [`report`], the same for a plain build and
//! `--verify-reproducible`.
//!
//! Nothing here prints: what a caller shows comes back as values ([`Notice`] with its
//! words, [`BuildError`], [`verify::Verdict`]), so the CLI writes every line itself.

pub mod bases;
pub mod blobs;
mod build;
pub mod cache_io;
pub mod checks;
pub mod compare;
pub mod contexts;
mod dockerfile;
mod error;
pub mod exporter;
pub mod farm;
pub mod files;
pub mod flags;
pub mod git_context;
pub mod images;
pub mod import;
pub mod index;
pub mod load;
pub mod location;
mod notice;
pub mod report;
pub mod request;
pub mod verify;

pub use build::{build, check};
pub use dockerfile::Dockerfile;
pub use error::BuildError;
pub use exporter::{Exports, OutputSpec, export};
pub use kiln_solver::BuiltImage;
pub use location::open_store;
pub use notice::{Notice, chain};
pub use request::{BuildRequest, source_date_epoch};
