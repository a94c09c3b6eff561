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
use kiln_parser::Platform;
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
    /// `--platform` names no platform of the image, or no platform at all.
    #[error("{0}")]
    Platform(String),
}

/// One stored image: the name it was found by (`<none>` for an untagged build), its
/// digests, manifest and config. An image of several platforms (an index the store holds
/// whole: a build's) is read as the image that stands for it ([`ImageRef`]) with every
/// platform's listed in `platforms`; one of its platforms chosen
/// ([`StoredImage::select`]) is that platform's image, `platform` saying which. A base
/// pulled for some of its registry's platforms shows as the one image it is named by, and
/// `--platform` chooses among the platforms the store holds of it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub name: String,
    pub image: ImageRef,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// The index's digest when the store holds all of it: an image of several platforms.
    pub index: Option<String>,
    /// Each platform's image of its index the store holds, in the index's order (none
    /// without one).
    pub platforms: Vec<PlatformImage>,
    /// The platform of `manifest` when the image has an index.
    pub platform: Option<Platform>,
    /// Whether `--platform` chose `manifest` ([`StoredImage::select`]), rather than it
    /// standing for the whole.
    pub chosen: bool,
}

/// One platform's image of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    pub platform: Platform,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Its layer blobs' size, compressed.
    pub size: u64,
    /// Its layers' digests and sizes (shared ones count once in the whole image's size).
    layers: Vec<(String, u64)>,
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
    /// Reads the manifest and config of `image`, named `name`, and, when it has an
    /// index, every platform's manifest.
    pub fn read(store: &Store, name: String, image: ImageRef) -> Result<Self, ImagesError> {
        let (manifest, config) = kiln_solver::images::read_image(store, &name, &image)?;
        let mut platforms = Vec::new();
        let mut whole = None;
        if let Some(index) = &image.index {
            let children = if store.whole_image(&image) == *index {
                whole = Some(index.clone());
                crate::index::children(store, index, &name)?
            } else {
                // A pulled base's index: its registry's, mostly of images never pulled.
                let children = crate::index::children(store, index, &name).unwrap_or_default();
                children
                    .into_iter()
                    .filter(|c| store.has_blob(&c.manifest))
                    .collect()
            };
            for child in children {
                let manifest = kiln_image::oci::parse_manifest(&store.read_blob(&child.manifest)?)
                    .map_err(|source| ImageError::Parse {
                        reference: name.clone(),
                        source,
                    })?;
                platforms.push(PlatformImage {
                    platform: child.platform,
                    manifest_digest: child.manifest,
                    config_digest: manifest.config.digest.clone(),
                    size: manifest.layers.iter().map(|l| l.size).sum(),
                    layers: manifest
                        .layers
                        .iter()
                        .map(|l| (l.digest.clone(), l.size))
                        .collect(),
                });
            }
        }
        let platform = platforms
            .iter()
            .find(|p| p.manifest_digest == image.manifest)
            .map(|p| p.platform.clone());
        Ok(StoredImage {
            name,
            image,
            manifest,
            config,
            index: whole,
            platforms,
            platform,
            chosen: false,
        })
    }

    /// This image's image for `wanted` (`os/arch[/variant]`): its index's for that
    /// platform, or itself when it has no index and is for it. An error names the
    /// platforms it has.
    pub fn select(self, store: &Store, wanted: &str) -> Result<StoredImage, ImagesError> {
        let platform = Platform::parse_normalized(wanted)
            .map_err(|e| ImagesError::Platform(format!("--platform {wanted}: {e}")))?;
        if self.image.index.is_none() {
            let has = self.config.platform();
            if has.serves(&platform) {
                return Ok(self);
            }
            return Err(ImagesError::Platform(format!(
                "{} has no image for {platform}; it is an image for {has}",
                self.name
            )));
        }
        let Some(chosen) = self.platforms.iter().find(|p| p.platform.serves(&platform)) else {
            let held = crate::index::platform_list(self.platforms.iter().map(|p| &p.platform));
            return Err(ImagesError::Platform(match self.index {
                Some(_) => format!(
                    "{} has no image for {platform}; its platforms are {held}",
                    self.name
                ),
                None => format!(
                    "{name}: the store holds no image for {platform}, only for {held}; \
                     `kiln pull --platform {platform} {name}` fetches it",
                    name = self.name
                ),
            }));
        };
        let image = ImageRef {
            config: chosen.config_digest.clone(),
            manifest: chosen.manifest_digest.clone(),
            index: self.image.index.clone(),
        };
        let mut chosen = StoredImage::read(store, self.name, image)?;
        chosen.chosen = true;
        Ok(chosen)
    }

    /// The layer blobs' size as stored: compressed, unlike docker's unpacked size. An
    /// image of several platforms counts every platform's layers, each blob once.
    pub fn size(&self) -> u64 {
        if self.index.is_none() {
            return self.manifest.layers.iter().map(|l| l.size).sum();
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut size = 0;
        for p in &self.platforms {
            for (digest, layer_size) in &p.layers {
                if seen.insert(digest) {
                    size += layer_size;
                }
            }
        }
        size
    }

    /// The image ID: its index's digest for an image of several platforms (what its build
    /// printed and wrote to `--iidfile`), else its config's.
    pub fn id(&self) -> &str {
        self.index.as_deref().unwrap_or(&self.image.config)
    }

    /// The first 12 hex digits of the image ID, as docker shows it.
    pub fn short_id(&self) -> &str {
        let id = self.id().trim_start_matches("sha256:");
        &id[..id.len().min(12)]
    }

    /// Its row of `kiln images`' table (under [`list_header`]); an image of several
    /// platforms has its platforms in a last column (under [`list_header_platforms`]).
    pub fn list_line(&self) -> String {
        let line = format!(
            "{:<40} {:<14} {:<32} ",
            self.name,
            self.short_id(),
            created_label(self.config.created.as_deref()),
        );
        let size = human_size(self.size());
        if self.index.is_none() {
            return format!("{line}{size}");
        }
        let platforms = crate::index::platform_list(self.platforms.iter().map(|p| &p.platform));
        format!("{line}{size:<17}  {platforms}")
    }

    /// `kiln inspect`'s document: the name, both digests, the manifest and the config.
    /// An image of several platforms has its index's digest as its ID, then each
    /// platform's digests, then the document of the image that stands for it (`Platform`
    /// saying which). One platform of it chosen is that platform's image's document with
    /// its `Platform` and `IndexDigest`.
    pub fn inspect_json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "Name": self.name,
            "Id": self.image.config,
        });
        if let Some(index) = &self.index
            && !self.chosen
        {
            doc["Id"] = index.clone().into();
            let platforms: Vec<serde_json::Value> = self
                .platforms
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "Platform": p.platform.to_string(),
                        "ManifestDigest": p.manifest_digest,
                        "ConfigDigest": p.config_digest,
                        "Size": p.size,
                    })
                })
                .collect();
            doc["Platforms"] = platforms.into();
        }
        if let (Some(index), true) = (&self.image.index, self.index.is_some() || self.chosen) {
            doc["IndexDigest"] = index.clone().into();
            if let Some(platform) = &self.platform {
                doc["Platform"] = platform.to_string().into();
            }
        }
        doc["ManifestDigest"] = self.image.manifest.clone().into();
        doc["Manifest"] = serde_json::json!(self.manifest);
        doc["Config"] = serde_json::json!(self.config);
        doc
    }

    /// `kiln history`'s line above its table for an image of several platforms: which
    /// platform's history it is, of which (none for a single image).
    pub fn history_platform_line(&self) -> Option<String> {
        if self.index.is_none() && !self.chosen {
            return None;
        }
        let platform = self.platform.as_ref()?;
        let all = crate::index::platform_list(self.platforms.iter().map(|p| &p.platform));
        Some(if self.chosen {
            format!("PLATFORM {platform} (of {all})")
        } else {
            format!("PLATFORM {platform} (of {all}; --platform chooses)")
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

/// The header of `kiln images`' table when an image of several platforms is listed:
/// [`list_header`] with a PLATFORMS column.
pub fn list_header_platforms() -> String {
    // SIZE's header is as wide as its column here.
    format!("{}  PLATFORMS", list_header())
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
            index: None,
            platforms: Vec::new(),
            platform: None,
            chosen: false,
        }
    }

    const INDEX: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    /// `image` as the amd64 image of a two-platform index whose arm64 image shares its
    /// first layer.
    fn multi(chosen: bool) -> StoredImage {
        let mut multi = image(Some("1970-01-01T00:00:00Z"));
        multi.image.index = Some(INDEX.to_string());
        multi.index = Some(INDEX.to_string());
        let platform = |p: &str, manifest: &str, layers: Vec<(String, u64)>| PlatformImage {
            platform: Platform::parse(p).unwrap(),
            manifest_digest: manifest.to_string(),
            config_digest: CONFIG.to_string(),
            size: layers.iter().map(|l| l.1).sum(),
            layers,
        };
        let other = format!("sha256:{}", "e".repeat(64));
        multi.platforms = vec![
            platform(
                "linux/amd64",
                MANIFEST,
                vec![(CONFIG.to_string(), 1000), (MANIFEST.to_string(), 2048)],
            ),
            platform(
                "linux/arm64",
                &other,
                vec![(CONFIG.to_string(), 1000), (other.clone(), 500)],
            ),
        ];
        multi.platform = Some(Platform::parse("linux/amd64").unwrap());
        multi.chosen = chosen;
        multi
    }

    #[test]
    fn an_image_of_several_platforms_lists_them_in_a_last_column_under_its_index_id() {
        let header = list_header_platforms();
        assert_eq!(header, format!("{}  PLATFORMS", list_header()));
        let line = multi(false).list_line();
        // Shared layers count once.
        let size = human_size(1000 + 2048 + 500);
        assert_eq!(
            line,
            format!(
                "app:1{}111111111111   1970-01-01 (SOURCE_DATE_EPOCH=0) {size:<17}  \
                 linux/amd64, linux/arm64",
                " ".repeat(36)
            )
        );
        assert_eq!(line.find("linux/amd64"), header.find("PLATFORMS"));
    }

    #[test]
    fn inspect_of_an_index_names_it_and_every_platforms_digests() {
        let doc = multi(false).inspect_json();
        assert_eq!(doc["Id"], INDEX);
        assert_eq!(doc["IndexDigest"], INDEX);
        assert_eq!(doc["Platform"], "linux/amd64");
        assert_eq!(doc["ManifestDigest"], MANIFEST);
        let platforms = doc["Platforms"].as_array().unwrap();
        assert_eq!(platforms.len(), 2);
        assert_eq!(platforms[1]["Platform"], "linux/arm64");
        assert_eq!(
            platforms[1]["ManifestDigest"],
            format!("sha256:{}", "e".repeat(64))
        );
        assert_eq!(platforms[1]["ConfigDigest"], CONFIG);
        assert_eq!(platforms[1]["Size"], 1500);
        assert_eq!(
            multi(false).history_platform_line().unwrap(),
            "PLATFORM linux/amd64 (of linux/amd64, linux/arm64; --platform chooses)"
        );

        // One platform chosen: that image's document, its ID its config's.
        let doc = multi(true).inspect_json();
        assert_eq!(doc["Id"], CONFIG);
        assert_eq!(doc["IndexDigest"], INDEX);
        assert_eq!(doc["Platform"], "linux/amd64");
        assert!(doc.get("Platforms").is_none(), "{doc}");
        assert_eq!(
            multi(true).history_platform_line().unwrap(),
            "PLATFORM linux/amd64 (of linux/amd64, linux/arm64)"
        );

        // A single image's document and history are what they were.
        let single = image(None);
        let doc = single.inspect_json();
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["Config", "Id", "Manifest", "ManifestDigest", "Name"]);
        assert_eq!(single.history_platform_line(), None);
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
