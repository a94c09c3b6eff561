//! Named build contexts (`--build-context NAME=VALUE`) as the solver reads them: a local
//! directory, checksummed and copied like the main context (with its own `.dockerignore`),
//! or an image the build holds (an OCI layout loaded into the store), read like a FROM
//! image. Lowering wrote `Source::Named` / `Base::Named` with the context's name; this is
//! where the name becomes files.
//!
//! A context given as an image reference (`docker-image://`) never gets here: lowering
//! wrote the reference itself, and it is resolved as any image is.

use crate::error::{ImageError, NamedError, StepError};
use crate::images::{ResolvedImage, image_layers, read_image};
use crate::key::vertex_key;
use crate::oci_config;
use kiln_context::Context;
use kiln_store::{ImageRef, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// What a named context is, as the build was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedSource {
    /// A local directory: its stat cache is kept in the store, so a rebuild re-hashes
    /// nothing unchanged.
    Dir(PathBuf),
    /// A directory fetched for this build (a git checkout, a download): read as a local
    /// one, without a stat cache (its path is new each build).
    Fetched(PathBuf),
    /// An image already in the store, by manifest and config.
    Image(ImageRef),
}

/// A named context opened for the build.
pub(crate) enum OpenNamed {
    Dir(Arc<Context>),
    Image(ImageRef),
}

/// The build's named contexts, opened once.
#[derive(Default)]
pub(crate) struct NamedContexts {
    contexts: Vec<(String, OpenNamed)>,
}

impl NamedContexts {
    /// Opens every directory context (its `.dockerignore` and stat cache).
    pub(crate) fn open(
        store: &Store,
        sources: &[(String, NamedSource)],
    ) -> Result<NamedContexts, NamedError> {
        let mut contexts = Vec::new();
        for (name, source) in sources {
            let open = match source {
                NamedSource::Dir(dir) | NamedSource::Fetched(dir) => {
                    let matcher =
                        kiln_context::load_own(dir).map_err(|source| NamedError::Ignore {
                            name: name.clone(),
                            source: Box::new(source),
                        })?;
                    let stat_cache = match source {
                        NamedSource::Dir(_) => Some(store.stat_cache_path(dir)),
                        _ => None,
                    };
                    let context = Context::open(dir, matcher, stat_cache).map_err(|source| {
                        NamedError::Open {
                            name: name.clone(),
                            dir: dir.clone(),
                            source: Box::new(source),
                        }
                    })?;
                    OpenNamed::Dir(Arc::new(context))
                }
                NamedSource::Image(image) => OpenNamed::Image(image.clone()),
            };
            contexts.push((name.clone(), open));
        }
        Ok(NamedContexts { contexts })
    }

    pub(crate) fn get(&self, name: &str) -> Result<&OpenNamed, StepError> {
        self.contexts
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| StepError::NoNamedContext(name.to_string()))
    }

    /// The checksum of what `pattern` selects in directory context `context`.
    pub(crate) fn checksum(
        context: &Context,
        pattern: &str,
        excludes: &[String],
        files: &mut Vec<kiln_context::HashedEntry>,
    ) -> Result<String, StepError> {
        crate::key::context_checksum(context, pattern, excludes, files)
    }

    /// Saves the stat cache of every directory context.
    pub(crate) fn save_stat_caches(&self) {
        for (_, open) in &self.contexts {
            if let OpenNamed::Dir(context) = open {
                let _ = context.save_stat_cache();
            }
        }
    }
}

/// The copier's filter of a directory context: true keeps a path (see
/// `BuildSession::context_filter`).
pub(crate) fn filter(context: &Arc<Context>) -> kiln_executor::copy::SourceFilter {
    let context = context.clone();
    Arc::new(move |rel: &str| {
        let m = context.matcher();
        !m.matches(rel) || m.may_reinclude_under(rel)
    })
}

/// The held image of context `name`, with every layer unpacked; keyed by its manifest as
/// any image is, so the same image gives the same keys however it was named.
pub(crate) fn resolve_image(
    store: &Store,
    name: &str,
    image: &ImageRef,
) -> Result<ResolvedImage, ImageError> {
    let reference = format!("build context {name}");
    let (manifest, config) = read_image(store, &reference, image)?;
    let layers = image_layers(store, &manifest, &config).map_err(|e| ImageError::Layers {
        reference: reference.clone(),
        source: Box::new(e),
    })?;
    Ok(ResolvedImage {
        key: vertex_key("image", &image.manifest, &[]),
        layers,
        state: oci_config::state_from_config(&config),
    })
}
