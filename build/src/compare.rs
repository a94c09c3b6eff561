//! `kiln diff A B`: two images opened where they are (the store, an OCI layout, an OCI or
//! docker archive) and compared with the image crate's compare engine
//! (`kiln_image::compare`). The store is opened only when one of them is in it.

use crate::BuildError;
use crate::blobs::StoreBlobs;
use crate::location::open_store;
use kiln_image::compare::{Comparison, ImageLocation, OpenImage, compare, open_location};
use kiln_store::{LookupError, Store};
use std::path::PathBuf;

/// Compares the images `a` and `b` name; `root` is the `--root` flag.
pub fn compare_images(a: &str, b: &str, root: Option<PathBuf>) -> Result<Comparison, BuildError> {
    let a = ImageLocation::parse(a);
    let b = ImageLocation::parse(b);
    let store = match (&a, &b) {
        (ImageLocation::Store(_), _) | (_, ImageLocation::Store(_)) => Some(open_store(root)?),
        _ => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("kiln-diff-")
        .tempdir()
        .map_err(BuildError::io(
            "making a scratch directory for archive blobs",
        ))?;
    let open = |loc: &ImageLocation, sub: &str| -> Result<OpenImage<'_>, BuildError> {
        match (loc, &store) {
            (ImageLocation::Store(reference), Some(store)) => open_store_image(store, reference),
            _ => open_location(loc, &scratch.path().join(sub)).map_err(BuildError::Compare),
        }
    };
    let image_a = open(&a, "a")?;
    let image_b = open(&b, "b")?;
    compare(&image_a, &image_b).map_err(BuildError::Compare)
}

/// Opens a store image for comparison.
fn open_store_image<'s>(store: &'s Store, reference: &str) -> Result<OpenImage<'s>, BuildError> {
    let image = match store.find_image(reference) {
        Ok(found) => found.image,
        Err(LookupError::NotFound { .. }) => {
            return Err(BuildError::Request(format!(
                "{reference}: no such image in the store (other sources: oci:DIR, \
                 oci-archive:FILE, docker-archive:FILE)"
            )));
        }
        Err(e) => return Err(BuildError::Lookup(e)),
    };
    OpenImage::from_blobs(reference, &image.manifest, Box::new(StoreBlobs(store)))
        .map_err(BuildError::Compare)
}
