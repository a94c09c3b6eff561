//! Image commands over the store: images, inspect, history, tag, rmi, save, load, prune.

use crate::cli::{PruneArgs, SaveArgs, SaveFormat};
use crate::root::open_store;
use crate::sizes;
use anyhow::{Result, anyhow};
use kiln_build::exporter::ArchiveFormat;
use kiln_image::ExportImage;
use kiln_image::oci::{ImageConfig, Manifest};
use kiln_store::{ImageRef, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Finds an image by name or ID (the store's one lookup: an ambiguous ID prefix is an
/// error).
fn find(store: &Store, reference: &str) -> Result<(String, ImageRef)> {
    let found = store.find_image(reference)?;
    Ok((found.name, found.image))
}

/// The CREATED column: a date from SOURCE_DATE_EPOCH (0 unless set, for reproducible
/// images) says so, or 1970 looks like a bug.
fn created_label(created: &str) -> String {
    match created {
        "" => "-".to_string(),
        c if c.starts_with("1970-01-01T00:00:00") => "1970-01-01 (SOURCE_DATE_EPOCH=0)".to_string(),
        c => c.to_string(),
    }
}

/// The manifest and config of a stored image, read as a build reads its bases.
fn load_image(store: &Store, name: &str, image: &ImageRef) -> Result<(Manifest, ImageConfig)> {
    kiln_solver::images::read_image(store, name, image).map_err(|e| anyhow!(e))
}

pub fn list(root: Option<PathBuf>) -> Result<ExitCode> {
    let store = open_store(root)?;
    // SIZE sums the layer blobs as stored: compressed, unlike docker's unpacked size.
    println!(
        "{:<40} {:<14} {:<32} SIZE (compressed)",
        "NAME", "IMAGE ID", "CREATED"
    );
    let named = store.list_refs()?;
    // Untagged builds show as docker shows them, unless a name now points at them.
    let untagged = store
        .list_untagged()?
        .into_iter()
        .filter(|u| !named.iter().any(|(_, r)| r == u))
        .map(|u| ("<none>".to_string(), u));
    for (name, image) in named.iter().cloned().chain(untagged) {
        let (manifest, config) = load_image(&store, &name, &image)?;
        let size: u64 = manifest.layers.iter().map(|l| l.size).sum();
        let id = image.config.trim_start_matches("sha256:");
        println!(
            "{:<40} {:<14} {:<32} {}",
            name,
            &id[..id.len().min(12)],
            created_label(config.created.as_deref().unwrap_or_default()),
            sizes::human_size(size)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(root: Option<PathBuf>, reference: &str) -> Result<ExitCode> {
    let store = open_store(root)?;
    let (name, image) = find(&store, reference)?;
    let (manifest, config) = load_image(&store, &name, &image)?;
    let doc = serde_json::json!({
        "Name": name,
        "Id": image.config,
        "ManifestDigest": image.manifest,
        "Manifest": manifest,
        "Config": config,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}

pub fn history(root: Option<PathBuf>, reference: &str) -> Result<ExitCode> {
    let store = open_store(root)?;
    let (name, image) = find(&store, reference)?;
    let (manifest, config) = load_image(&store, &name, &image)?;
    let mut layers = manifest.layers.iter();
    let mut rows = Vec::new();
    for h in &config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        rows.push((
            created_label(h.created.as_deref().unwrap_or_default()),
            h.created_by.clone().unwrap_or_default(),
            size,
            h.comment.clone().unwrap_or_default(),
        ));
    }
    println!(
        "{:<32} {:<60} {:>17}  COMMENT",
        "CREATED", "CREATED BY", "SIZE (compressed)"
    );
    for (created, by, size, comment) in rows.into_iter().rev() {
        let by: String = by.chars().take(60).collect();
        println!(
            "{created:<32} {by:<60} {:>17}  {comment}",
            sizes::human_size(size)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tag(root: Option<PathBuf>, source: &str, target: &str) -> Result<ExitCode> {
    let store = open_store(root)?;
    // Held so a concurrent prune cannot drop the image while it gains a name.
    let _lock = store.lock_shared()?;
    let (_, image) = find(&store, source)?;
    let target = kiln_store::normalize_ref(target).map_err(|e| anyhow!("{target}: {e}"))?;
    store.set_ref(&target, image)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(root: Option<PathBuf>, references: &[String]) -> Result<ExitCode> {
    let store = open_store(root)?;
    let mut code = ExitCode::SUCCESS;
    for r in references {
        let name = kiln_store::normalize_ref(r).map_err(|e| anyhow!("{r}: {e}"))?;
        if store.remove_ref(&name)? {
            println!("Untagged: {name}");
        } else {
            eprintln!("error: {r}: no such image");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

pub fn save(root: Option<PathBuf>, args: SaveArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let mut images = Vec::new();
    for r in &args.references {
        let (name, image) = find(&store, r)?;
        images.push(ExportImage {
            manifest_digest: image.manifest,
            ref_name: Some(name),
        });
    }
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    kiln_build::exporter::write_archive(&store, &images, format, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

pub fn load(root: Option<PathBuf>, input: &Path) -> Result<ExitCode> {
    let store = open_store(root)?;
    let _lock = store.lock_shared()?;
    for loaded in kiln_build::load::load(&store, input)? {
        if loaded.names.is_empty() {
            println!("Loaded image ID: {}", loaded.image.config);
        }
        for name in loaded.names {
            println!("Loaded image: {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn prune(root: Option<PathBuf>, args: PruneArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let keep_storage = args
        .keep_storage
        .as_deref()
        .map(|s| sizes::parse_size("--keep-storage", s))
        .transpose()?;
    let report = store.prune(kiln_store::PruneOptions {
        all: args.all,
        keep_storage,
    })?;
    println!(
        "Deleted {} blobs, {} snapshots, {} cache records, {} cache mounts, \
         {} leftovers of interrupted builds; total reclaimed space: {}",
        report.blobs_removed,
        report.snapshots_removed,
        report.records_removed,
        report.cache_mounts_removed,
        report.scratch_removed,
        sizes::human_size(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}
