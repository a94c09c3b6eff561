//! The store's images as the image commands see them (`kiln images`, `inspect`,
//! `history`, `tag`, `save`): found through the store's one lookup (an ambiguous ID
//! prefix is an error), read as a build reads its bases, and summed up (sizes, history
//! rows), down to the lines the commands show (the `images` and `history` tables,
//! `inspect`'s document, `prune`'s summary). The command line only prints what these
//! return.

use crate::BuildError;
use crate::exporter::{ArchiveFormat, archived_digest, write_archive};
use kiln_base::size::human_size;
use kiln_image::ExportImage;
use kiln_image::oci::{ImageConfig, Manifest};
use kiln_solver::error::ImageError;
use kiln_store::{ImageRef, LookupError, PruneReport, Store, StoreError};
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

    /// Its row of `kiln images`' table (under [`list_header`]).
    pub fn list_line(&self) -> String {
        format!(
            "{:<40} {:<14} {:<32} {}",
            self.name,
            self.short_id(),
            created_label(self.config.created.as_deref()),
            human_size(self.size())
        )
    }

    /// `kiln inspect`'s document: the name, both digests, the manifest and the config.
    pub fn inspect_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Name": self.name,
            "Id": self.image.config,
            "ManifestDigest": self.image.manifest,
            "Manifest": self.manifest,
            "Config": self.config,
        })
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

impl HistoryRow {
    /// Its row of `kiln history`'s table (under [`history_header`]); the step's command
    /// is cut at 60 characters to keep the columns.
    pub fn line(&self) -> String {
        let created = created_label(self.created.as_deref());
        let by: String = self.created_by.chars().take(60).collect();
        let size = human_size(self.size);
        format!("{created:<32} {by:<60} {size:>17}  {}", self.comment)
    }
}

/// The CREATED column: a date from SOURCE_DATE_EPOCH (0 unless set, for reproducible
/// images) says so, or 1970 looks like a bug.
pub fn created_label(created: Option<&str>) -> String {
    match created.unwrap_or_default() {
        "" => "-".to_string(),
        c if c.starts_with("1970-01-01T00:00:00") => "1970-01-01 (SOURCE_DATE_EPOCH=0)".to_string(),
        c => c.to_string(),
    }
}

/// The header of `kiln images`' table.
pub fn list_header() -> String {
    format!(
        "{:<40} {:<14} {:<32} SIZE (compressed)",
        "NAME", "IMAGE ID", "CREATED"
    )
}

/// The header of `kiln history`'s table.
pub fn history_header() -> String {
    format!(
        "{:<32} {:<60} {:>17}  COMMENT",
        "CREATED", "CREATED BY", "SIZE (compressed)"
    )
}

/// `kiln prune`'s one line: what went and the space it freed. Git repositories are
/// named only when there were some, so the line stays what it was for a store without
/// git sources.
pub fn prune_summary(report: &PruneReport) -> String {
    let git = match report.git_repos_removed {
        0 => String::new(),
        n => format!("{n} git repositories, "),
    };
    format!(
        "Deleted {} blobs, {} snapshots, {} cache records, {} cache mounts, \
         {git}{} leftovers of interrupted builds; total reclaimed space: {}",
        report.blobs_removed,
        report.snapshots_removed,
        report.records_removed,
        report.cache_mounts_removed,
        report.scratch_removed,
        human_size(report.bytes_freed)
    )
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
            manifest_digest: archived_digest(store, &found.image, format, &found.name)?,
            ref_name: Some(found.name),
        });
    }
    write_archive(store, &images, format, output)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const MANIFEST: &str =
        "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn image(created: Option<&str>) -> StoredImage {
        let layer = |size: u64| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": CONFIG,
                "size": size,
            })
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": CONFIG,
                "size": 100,
            },
            "layers": [layer(1000), layer(2048)],
        });
        let mut config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [
                {"created_by": "ADD rootfs.tar /"},
                {"created_by": "ENV A=b", "empty_layer": true},
                {"created_by": "RUN make", "comment": "buildkit.dockerfile.v0"},
            ],
        });
        if let Some(c) = created {
            config["created"] = c.into();
        }
        StoredImage {
            name: "app:1".to_string(),
            image: ImageRef {
                index: None,
                config: CONFIG.to_string(),
                manifest: MANIFEST.to_string(),
            },
            manifest: serde_json::from_value(manifest).expect("a manifest"),
            config: serde_json::from_value(config).expect("a config"),
        }
    }

    #[test]
    fn the_created_column_explains_the_epoch() {
        assert_eq!(created_label(None), "-");
        assert_eq!(created_label(Some("")), "-");
        assert_eq!(
            created_label(Some("1970-01-01T00:00:00Z")),
            "1970-01-01 (SOURCE_DATE_EPOCH=0)"
        );
        assert_eq!(
            created_label(Some("2024-05-01T12:00:00Z")),
            "2024-05-01T12:00:00Z"
        );
    }

    #[test]
    fn the_images_table_keeps_its_columns() {
        assert_eq!(
            list_header(),
            format!(
                "NAME{}IMAGE ID{}CREATED{}SIZE (compressed)",
                " ".repeat(37),
                " ".repeat(7),
                " ".repeat(26)
            )
        );
        let line = image(Some("1970-01-01T00:00:00Z")).list_line();
        assert_eq!(
            line,
            format!(
                "app:1{}0123456789ab   1970-01-01 (SOURCE_DATE_EPOCH=0) {}",
                " ".repeat(36),
                human_size(3048)
            )
        );
        // Each column starts where the header's does.
        assert_eq!(line.find("0123456789ab"), list_header().find("IMAGE ID"));
        assert_eq!(line.find("1970"), list_header().find("CREATED"));
    }

    #[test]
    fn history_rows_are_newest_first_with_their_layer_sizes() {
        let lines: Vec<String> = image(None).history().iter().map(HistoryRow::line).collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("-                                RUN make "),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(&format!("{:>17}  buildkit.dockerfile.v0", human_size(2048))));
        assert!(lines[1].contains(" ENV A=b "), "{}", lines[1]);
        assert!(
            lines[1].ends_with(&format!("{:>17}  ", human_size(0))),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(&format!("{:>17}  ", human_size(1000))),
            "{}",
            lines[2]
        );
        let header = history_header();
        assert_eq!(lines[0].find("RUN make"), header.find("CREATED BY"));
        assert_eq!(
            lines[0].len(),
            header.len() - "COMMENT".len() + "buildkit.dockerfile.v0".len()
        );

        let long = HistoryRow {
            created: None,
            created_by: "x".repeat(80),
            size: 0,
            comment: String::new(),
        };
        assert!(long.line().contains(&format!("{} ", "x".repeat(60))));
        assert!(!long.line().contains(&"x".repeat(61)));
    }

    #[test]
    fn inspect_names_both_digests() {
        let doc = image(None).inspect_json();
        assert_eq!(doc["Name"], "app:1");
        assert_eq!(doc["Id"], CONFIG);
        assert_eq!(doc["ManifestDigest"], MANIFEST);
        assert_eq!(doc["Manifest"]["layers"][1]["size"], 2048);
        assert_eq!(doc["Config"]["history"][2]["created_by"], "RUN make");
    }

    #[test]
    fn prune_names_git_repositories_only_when_some_went() {
        let mut report = PruneReport {
            blobs_removed: 3,
            snapshots_removed: 2,
            records_removed: 5,
            cache_mounts_removed: 1,
            git_repos_removed: 0,
            scratch_removed: 4,
            bytes_freed: 2048,
        };
        let freed = human_size(2048);
        assert_eq!(
            prune_summary(&report),
            format!(
                "Deleted 3 blobs, 2 snapshots, 5 cache records, 1 cache mounts, \
                 4 leftovers of interrupted builds; total reclaimed space: {freed}"
            )
        );
        report.git_repos_removed = 2;
        assert_eq!(
            prune_summary(&report),
            format!(
                "Deleted 3 blobs, 2 snapshots, 5 cache records, 1 cache mounts, \
                 2 git repositories, 4 leftovers of interrupted builds; \
                 total reclaimed space: {freed}"
            )
        );
    }
}
