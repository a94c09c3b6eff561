//! The store as a blob source and sink for the image crate's archive and compare code,
//! and blob copies from one store into another (a verified build's image, every platform's
//! with its index, the user's base images into a scratch store).

use crate::BuildError;
use kiln_image::{BlobSink, BlobSource};
use kiln_store::Store;
use std::io::{self, Read};

/// Adapts [`Store`] to [`BlobSource`] and [`BlobSink`].
pub struct StoreBlobs<'a>(pub &'a Store);

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl BlobSource for StoreBlobs<'_> {
    fn open_blob(&self, digest: &str) -> io::Result<Box<dyn Read + '_>> {
        let file = self.0.open_blob(digest).map_err(io_error)?;
        Ok(Box::new(io::BufReader::new(file)))
    }

    fn blob_size(&self, digest: &str) -> io::Result<u64> {
        self.0.blob_size(digest).map_err(io_error)
    }
}

impl BlobSink for StoreBlobs<'_> {
    fn put_blob(&self, reader: &mut dyn Read, expected_digest: &str) -> io::Result<()> {
        if self.0.has_blob(expected_digest) {
            // Still consume nothing: the content is already there and verified on write.
            return Ok(());
        }
        let mut writer = self.0.blob_writer().map_err(io_error)?;
        io::copy(reader, &mut writer)?;
        writer.commit_verified(expected_digest).map_err(io_error)?;
        Ok(())
    }
}

/// Copies one blob from `from` into `to` (verified on commit) unless `to` has it.
pub fn copy_blob(from: &Store, to: &Store, digest: &str) -> Result<(), BuildError> {
    if to.has_blob(digest) {
        return Ok(());
    }
    let what = || format!("copying blob {digest} between stores");
    let mut reader = from.open_blob(digest).map_err(BuildError::store(what()))?;
    let mut writer = to.blob_writer().map_err(BuildError::store(what()))?;
    io::copy(&mut reader, &mut writer).map_err(BuildError::io(what()))?;
    writer
        .commit_verified(digest)
        .map_err(BuildError::store(what()))?;
    Ok(())
}

/// Copies a stored image (layers, then config, then manifest: children before the
/// documents that name them; an index last, after every platform's image) from `from`
/// into `to`.
pub fn copy_image(
    from: &Store,
    to: &Store,
    image: &kiln_store::ImageRef,
) -> Result<(), BuildError> {
    let Some(index) = &image.index else {
        return copy_manifest(from, to, &image.manifest);
    };
    // A pulled base's index is its registry's: of its images, those `from` holds.
    if from.has_blob(index) {
        for child in crate::index::children(from, index, index)? {
            if from.has_blob(&child.manifest) {
                copy_manifest(from, to, &child.manifest)?;
            }
        }
    }
    // The standing image is among the children; copied again it costs a lookup.
    copy_manifest(from, to, &image.manifest)?;
    if from.has_blob(index) {
        copy_blob(from, to, index)?;
    }
    Ok(())
}

/// Copies the image of the manifest `digest`: its layers, config, then itself.
fn copy_manifest(from: &Store, to: &Store, digest: &str) -> Result<(), BuildError> {
    let bytes = from
        .read_blob(digest)
        .map_err(BuildError::store(format!("reading manifest {digest}")))?;
    let manifest = kiln_image::parse_manifest(&bytes)
        .map_err(|e| BuildError::Request(format!("reading manifest {digest}: {e}")))?;
    for layer in &manifest.layers {
        copy_blob(from, to, &layer.digest)?;
    }
    copy_blob(from, to, &manifest.config.digest)?;
    copy_blob(from, to, digest)
}
