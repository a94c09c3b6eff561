//! `kiln load`: the images of a docker-archive, OCI archive or OCI layout into the store,
//! and their names set only once every name and manifest is known good. An image of
//! several platforms (an index, as `-o type=oci` or `skopeo copy --all` write it) is
//! loaded whole and named as a multi-platform build's result is: by its index, with this
//! machine's platform (else the first) standing for it.

use crate::BuildError;
use crate::blobs::StoreBlobs;
use kiln_store::{ImageRef, Store};
use std::collections::BTreeMap;
use std::path::Path;

/// One image of the archive, as stored, with the names it now has (none: ID only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub image: ImageRef,
    pub names: Vec<String>,
}

/// Loads `input` into `store` (which the caller holds locked) and names its images.
pub fn load(store: &Store, input: &Path) -> Result<Vec<Loaded>, BuildError> {
    let loaded = kiln_image::read_archive(input, &StoreBlobs(store)).map_err(|source| {
        BuildError::Archive {
            what: format!("loading {}", input.display()),
            source,
        }
    })?;
    if loaded.is_empty() {
        return Err(BuildError::Request(format!(
            "{}: the archive holds no image",
            input.display()
        )));
    }
    // Every name and manifest is checked before any name is set: a load that fails
    // must tag nothing, or an archive listing `bb:1` then an invalid name would move an
    // existing `bb:1` to its image and still exit with an error.
    let mut refs: BTreeMap<String, ImageRef> = BTreeMap::new();
    let mut planned: Vec<Loaded> = Vec::with_capacity(loaded.len());
    for image in loaded {
        // An archive may list one manifest many times: each is read and parsed once.
        let digest = &image.manifest_digest;
        let image_ref = match refs.get(digest) {
            Some(r) => r.clone(),
            None => {
                let r = stored_ref(store, digest)?;
                refs.insert(digest.clone(), r.clone());
                r
            }
        };
        let names = image
            .ref_names
            .iter()
            .map(|name| {
                kiln_store::normalize_ref(name)
                    .map_err(|e| BuildError::Request(format!("{name}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        planned.push(Loaded {
            image: image_ref,
            names,
        });
    }
    for loaded in &planned {
        for name in &loaded.names {
            store
                .set_ref(name, loaded.image.clone())
                .map_err(BuildError::store(format!("naming the image {name}")))?;
        }
    }
    Ok(planned)
}

/// The store's ref for the loaded manifest or index `digest`.
fn stored_ref(store: &Store, digest: &str) -> Result<ImageRef, BuildError> {
    let manifest = |digest: &str| -> Result<kiln_image::oci::ManifestKind, BuildError> {
        let reading = || format!("reading manifest {digest}");
        let bytes = store
            .read_blob(digest)
            .map_err(BuildError::store(reading()))?;
        kiln_image::oci::parse_manifest_or_index(&bytes)
            .map_err(|e| BuildError::io(reading())(std::io::Error::other(e)))
    };
    let (standing, index) = match manifest(digest)? {
        kiln_image::oci::ManifestKind::Manifest(m) => {
            return Ok(ImageRef {
                config: m.config.digest,
                manifest: digest.to_string(),
                index: None,
            });
        }
        kiln_image::oci::ManifestKind::Index(_) => {
            let children = crate::index::children(store, digest, digest)?;
            let host = kiln_parser::lower::host_platform();
            let standing = children
                .iter()
                .find(|c| c.platform.serves(&host))
                .or_else(|| children.first())
                .ok_or_else(|| {
                    BuildError::Request(format!(
                        "index {digest}: names no platform's image (kiln loads an index \
                         whose entries say their platform)"
                    ))
                })?;
            (standing.manifest.clone(), digest.to_string())
        }
    };
    match manifest(&standing)? {
        kiln_image::oci::ManifestKind::Manifest(m) => Ok(ImageRef {
            config: m.config.digest,
            manifest: standing,
            index: Some(index),
        }),
        kiln_image::oci::ManifestKind::Index(_) => Err(BuildError::Request(format!(
            "index {index}: its entry {standing} is another index (kiln loads an index of \
             images)"
        ))),
    }
}
