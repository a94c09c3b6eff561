//! The store seen as a blob source and sink for the image crate's archive code.

use kiln_cache::Store;
use kiln_image::{BlobSink, BlobSource};
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
