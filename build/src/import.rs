//! `kiln import`: a root filesystem tarball as a one-layer image, under a build's policies
//! (times clamped to SOURCE_DATE_EPOCH, else 0; this machine's platform; gzip layers), so
//! the same tarball gives the same image ID. The work is `kiln_solver::import`'s.

use crate::BuildError;
use kiln_solver::import::{ImportOptions, Imported};
use kiln_store::Store;
use std::io::Read;

/// One import, its name and options checked before anything is read.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The image's name, normalized.
    pub name: String,
    pub options: ImportOptions,
}

impl ImportRequest {
    /// `name` (NAME[:TAG]), `--change` instructions and the `-m` message, with the build
    /// policies applied.
    pub fn new(
        name: &str,
        changes: Vec<String>,
        message: Option<String>,
    ) -> Result<ImportRequest, BuildError> {
        let normalized = kiln_store::normalize_ref(name)
            .map_err(|e| BuildError::Request(format!("{name}: {e}")))?;
        let options = ImportOptions {
            changes,
            message,
            source_date_epoch: crate::source_date_epoch(false, &[])?,
            compression: kiln_image::Compression::Gzip,
            platform: kiln_parser::lower::host_platform(),
        };
        Ok(ImportRequest {
            name: normalized,
            options,
        })
    }

    /// Imports `input` (`source_name` names it in errors) into `store`, which the caller
    /// holds locked (shared), and names it.
    pub fn import(
        &self,
        store: &Store,
        input: impl Read,
        source_name: &str,
    ) -> Result<Imported, BuildError> {
        let imported =
            kiln_solver::import::import(store, input, source_name, &self.name, &self.options)?;
        Ok(imported)
    }
}
