//! The store's images as the image commands see them (`kiln images`, `inspect`,
//! `history`, `tag`, `save`): found through the store's one lookup (an ambiguous ID
//! prefix is an error), read as a build reads its bases, and summed up (sizes, history
//! rows). The command line only prints what these return.

use crate::BuildError;
use crate::exporter::{ArchiveFormat, write_archive};
use kiln_image::ExportImage;
use kiln_image::oci::{ImageConfig, Manifest};
use kiln_solver::error::ImageError;
use kiln_store::{ImageRef, LookupError, Store, StoreError};
use std::path::Path;

/// Why an image command failed; each cause reads as its own crate says it.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name that is not a valid reference; the message quotes it.
    #[error("{0}")]
    Name(String),
    #[error(transparent)]
    Archive(#[from] BuildError),
}

/// One stored image: the name it was found by (`<none>` for an untagged build), its
/// digests, manifest and config.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub name: String,
    pub image: ImageRef,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// One entry of an image's history, sized by the layer it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub created: Option<String>,
    pub created_by: String,
    /// Compressed size of its layer (0 for a step that made none).
    pub size: u64,
    pub comment: String,
}

impl StoredImage {
    /// Reads the manifest and config of `image`, named `name`.
    pub fn read(store: &Store, name: String, image: ImageRef) -> Result<Self, ImagesError> {
        let (manifest, config) = kiln_solver::images::read_image(store, &name, &image)?;
        Ok(StoredImage {
            name,
            image,
            manifest,
            config,
        })
    }

    /// The layer blobs' size as stored: compressed, unlike docker's unpacked size.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum()
    }

    /// The first 12 hex digits of the image ID, as docker shows it.
    pub fn short_id(&self) -> &str {
        let id = self.image.config.trim_start_matches("sha256:");
        &id[..id.len().min(12)]
    }

    /// The history, newest step first, each with the size of the layer it made.
    pub fn history(&self) -> Vec<HistoryRow> {
        let mut layers = self.manifest.layers.iter();
        let mut rows: Vec<HistoryRow> = self
            .config
            .history
            .iter()
            .map(|h| HistoryRow {
                created: h.created.clone(),
                created_by: h.created_by.clone().unwrap_or_default(),
                size: if h.empty_layer {
                    0
                } else {
                    layers.next().map(|l| l.size).unwrap_or(0)
                },
                comment: h.comment.clone().unwrap_or_default(),
            })
            .collect();
        rows.reverse();
        rows
    }
}

/// Finds `reference` by name or ID and reads it.
pub fn find(store: &Store, reference: &str) -> Result<StoredImage, ImagesError> {
    let found = store.find_image(reference)?;
    StoredImage::read(store, found.name, found.image)
}

/// Every named image, then the untagged builds no name points at (as `<none>`), each
/// read when the iterator reaches it.
pub fn list(
    store: &Store,
) -> Result<impl Iterator<Item = Result<StoredImage, ImagesError>> + '_, ImagesError> {
    let named = store.list_refs()?;
    let untagged: Vec<_> = store
        .list_untagged()?
        .into_iter()
        .filter(|u| !named.iter().any(|(_, r)| r == u))
        .map(|u| ("<none>".to_string(), u))
        .collect();
    Ok(named
        .into_iter()
        .chain(untagged)
        .map(|(name, image)| StoredImage::read(store, name, image)))
}

/// `kiln tag`: names the image `source` finds `target` too. The caller holds the store
/// locked (shared), so a concurrent prune cannot drop the image while it gains a name.
pub fn tag(store: &Store, source: &str, target: &str) -> Result<(), ImagesError> {
    let found = store.find_image(source)?;
    let target = normalize(target)?;
    store.set_ref(&target, found.image)?;
    Ok(())
}

/// `kiln rmi`: removes the name `reference`; false when no image had it.
pub fn untag(store: &Store, reference: &str) -> Result<(String, bool), ImagesError> {
    let name = normalize(reference)?;
    let removed = store.remove_ref(&name)?;
    Ok((name, removed))
}

/// A name as the store keeps it (`bb` is `bb:latest`); errors quote the name given.
pub fn normalize(reference: &str) -> Result<String, ImagesError> {
    kiln_store::normalize_ref(reference).map_err(|e| ImagesError::Name(format!("{reference}: {e}")))
}

/// `kiln save`: the images `references` find, into one archive at `output`.
pub fn save(
    store: &Store,
    references: &[String],
    format: ArchiveFormat,
    output: &Path,
) -> Result<(), ImagesError> {
    let mut images = Vec::new();
    for r in references {
        let found = store.find_image(r)?;
        images.push(ExportImage {
            manifest_digest: found.image.manifest,
            ref_name: Some(found.name),
        });
    }
    write_archive(store, &images, format, output)?;
    Ok(())
}
