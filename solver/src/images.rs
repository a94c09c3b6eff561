//! Images in the store as a build reads them: manifest and config, and every layer
//! unpacked into its snapshot (the lower dirs of a rootfs).

use crate::config::ImageState;
use crate::result::Layer;
use kiln_cache::{LayerRef, Store};

/// A base image resolved in the store.
#[derive(Clone)]
pub struct ResolvedImage {
    pub key: String,
    pub layers: Vec<Layer>,
    pub state: ImageState,
}

/// The layer of `layer` in `store`, unpacking its blob into a snapshot if that is missing.
pub fn ensure_snapshot(store: &Store, layer: &LayerRef) -> Result<Layer, String> {
    let id = hex_of(&layer.diff_id)?;
    if !store.has_snapshot(id) {
        let blob = store.open_blob(&layer.digest).map_err(|e| e.to_string())?;
        let staging = store.snapshot_staging().map_err(|e| e.to_string())?;
        let info = kiln_image::unpack_layer(
            std::io::BufReader::new(blob),
            staging.path(),
            &Default::default(),
        )
        .map_err(|e| format!("unpacking layer {}: {e}", layer.digest))?;
        if info.diff_id != layer.diff_id {
            return Err(format!(
                "layer {} unpacks to {} but the image says {}",
                layer.digest, info.diff_id, layer.diff_id
            ));
        }
        store
            .commit_snapshot(staging, id)
            .map_err(|e| e.to_string())?;
        // Verified just now: a step that produces this tar can reuse the blob.
        store.put_layer_blob(layer).map_err(|e| e.to_string())?;
    }
    Ok(Layer {
        diff_id: layer.diff_id.clone(),
        digest: layer.digest.clone(),
        size: layer.size,
        media_type: layer.media_type.clone(),
        snapshot: store.snapshot_path(id).map_err(|e| e.to_string())?,
    })
}

/// The layers of a stored image, bottom first, each unpacked into its snapshot if missing.
pub fn image_layers(
    store: &Store,
    manifest: &kiln_image::Manifest,
    config: &kiln_image::ImageConfig,
) -> Result<Vec<Layer>, String> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(format!(
            "manifest lists {} layers but config {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        ));
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
    image: &kiln_cache::ImageRef,
) -> Result<(kiln_image::Manifest, kiln_image::ImageConfig), String> {
    let read = |digest: &str| store.read_blob(digest).map_err(|e| e.to_string());
    let manifest = kiln_image::oci::parse_manifest(&read(&image.manifest)?)
        .map_err(|e| format!("{reference}: {e}"))?;
    let config = kiln_image::oci::parse_config(&read(&image.config)?)
        .map_err(|e| format!("{reference}: {e}"))?;
    Ok((manifest, config))
}

/// The hex of a `sha256:` digest (a snapshot's id).
pub(crate) fn hex_of(digest: &str) -> Result<&str, String> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64)
        .ok_or_else(|| format!("not a sha256 digest: {digest}"))
}
