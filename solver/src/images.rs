//! Images in the store as a build reads them: manifest and config, and every layer
//! unpacked into its snapshot (the lower dirs of a rootfs).

use crate::error::ImageError;
use crate::image_state::ImageState;
use crate::result::Layer;
use kiln_store::{LayerRef, Store};

/// [`ensure_snapshot`] for a cached step's layer, whose record may come from another
/// store (a registry or REAPI cache): a record pairs a diff_id with a blob, and nothing
/// but reading the blob shows that the blob holds that diff_id. The pairings this store
/// checked or made are in its blob index; another is checked by decompressing the blob
/// once (a missing snapshot is checked by the unpack itself).
pub fn ensure_verified(store: &Store, layer: &LayerRef) -> Result<Layer, ImageError> {
    let id = hex_of(&layer.diff_id)?;
    if store.has_snapshot(id)
        && store
            .find_layer_blob(&layer.diff_id, &layer.media_type)?
            .as_ref()
            != Some(layer)
    {
        let blob = store.open_blob(&layer.digest)?;
        let actual = kiln_image::diff_id_of(std::io::BufReader::new(blob)).map_err(|source| {
            ImageError::Unpack {
                digest: layer.digest.clone(),
                source: kiln_image::UnpackError::Stream(source),
            }
        })?;
        if actual != layer.diff_id {
            return Err(ImageError::DiffIdMismatch {
                digest: layer.digest.clone(),
                actual,
                expected: layer.diff_id.clone(),
            });
        }
        store.put_layer_blob(layer)?;
    }
    ensure_snapshot(store, layer)
}

/// A base image resolved in the store.
#[derive(Clone)]
pub struct ResolvedImage {
    pub key: String,
    pub layers: Vec<Layer>,
    pub state: ImageState,
}

/// The layer of `layer` in `store`, unpacking its blob into a snapshot if that is missing.
pub fn ensure_snapshot(store: &Store, layer: &LayerRef) -> Result<Layer, ImageError> {
    let id = hex_of(&layer.diff_id)?;
    if !store.has_snapshot(id) {
        let blob = store.open_blob(&layer.digest)?;
        let staging = store.snapshot_staging()?;
        let info = kiln_image::unpack_layer(
            std::io::BufReader::new(blob),
            staging.path(),
            &Default::default(),
        )
        .map_err(|source| ImageError::Unpack {
            digest: layer.digest.clone(),
            source,
        })?;
        if info.diff_id != layer.diff_id {
            return Err(ImageError::DiffIdMismatch {
                digest: layer.digest.clone(),
                actual: info.diff_id,
                expected: layer.diff_id.clone(),
            });
        }
        store.commit_snapshot(staging, id)?;
        // Verified just now: a step that produces this tar can reuse the blob.
        store.put_layer_blob(layer)?;
    }
    Ok(Layer {
        diff_id: layer.diff_id.clone(),
        digest: layer.digest.clone(),
        size: layer.size,
        media_type: layer.media_type.clone(),
        snapshot: store.snapshot_path(id)?,
    })
}

/// The layers of a stored image, bottom first, each unpacked into its snapshot if missing.
pub fn image_layers(
    store: &Store,
    manifest: &kiln_image::Manifest,
    config: &kiln_image::ImageConfig,
) -> Result<Vec<Layer>, ImageError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::LayerCount {
            manifest: manifest.layers.len(),
            config: config.rootfs.diff_ids.len(),
        });
    }
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(desc, diff_id)| {
            let layer = LayerRef {
                diff_id: diff_id.clone(),
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
            };
            ensure_snapshot(store, &layer)
        })
        .collect()
}

/// The manifest and config of a stored image (`reference` only names it in errors).
pub fn read_image(
    store: &Store,
    reference: &str,
    image: &kiln_store::ImageRef,
) -> Result<(kiln_image::Manifest, kiln_image::ImageConfig), ImageError> {
    let parse = |source| ImageError::Parse {
        reference: reference.to_string(),
        source,
    };
    let manifest =
        kiln_image::oci::parse_manifest(&store.read_blob(&image.manifest)?).map_err(parse)?;
    let config = kiln_image::oci::parse_config(&store.read_blob(&image.config)?).map_err(parse)?;
    Ok((manifest, config))
}

/// The image of the stored `image` (named `reference` in errors) for `platform`: itself
/// when its config is for that platform (or names none, as some hand-made images do),
/// else the child of its index for it when the store holds that child (a base pulled for
/// several platforms keeps the index; a multi-platform build stores every child); `None`
/// when neither.
pub fn for_platform(
    store: &Store,
    reference: &str,
    image: &kiln_store::ImageRef,
    platform: &kiln_parser::Platform,
) -> Result<Option<kiln_store::ImageRef>, ImageError> {
    let parse = |source| ImageError::Parse {
        reference: reference.to_string(),
        source,
    };
    let config = kiln_image::oci::parse_config(&store.read_blob(&image.config)?).map_err(parse)?;
    if config.architecture.is_empty() || config.platform().serves(platform) {
        return Ok(Some(image.clone()));
    }
    let Some(index) = &image.index else {
        return Ok(None);
    };
    let index = match kiln_image::oci::parse_manifest_or_index(&store.read_blob(index)?) {
        Ok(kiln_image::oci::ManifestKind::Index(index)) => index,
        Ok(_) => return Ok(None),
        Err(source) => return Err(parse(source)),
    };
    let child = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.to_platform().serves(platform))
            && store.has_blob(&d.digest)
    });
    let Some(child) = child else {
        return Ok(None);
    };
    let manifest =
        kiln_image::oci::parse_manifest(&store.read_blob(&child.digest)?).map_err(parse)?;
    if !store.has_blob(&manifest.config.digest) {
        return Ok(None);
    }
    Ok(Some(kiln_store::ImageRef {
        config: manifest.config.digest,
        manifest: child.digest.clone(),
        index: image.index.clone(),
    }))
}

/// The hex of a `sha256:` digest (a snapshot's id).
pub(crate) fn hex_of(digest: &str) -> Result<&str, ImageError> {
    kiln_base::digest::digest_hex(digest).map_err(|e| ImageError::NotSha256(e.0))
}
