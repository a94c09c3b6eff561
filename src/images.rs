//! Image commands over the store: images, inspect, history, tag, rmi, save, load, prune.
//! `kiln_build::images` finds and sums up the images; this prints them.

use crate::cli::{PruneArgs, SaveArgs, SaveFormat};
use anyhow::Result;
use kiln_base::size::{human_size, parse_size};
use kiln_build::exporter::ArchiveFormat;
use kiln_build::{images, open_store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The CREATED column: a date from SOURCE_DATE_EPOCH (0 unless set, for reproducible
/// images) says so, or 1970 looks like a bug.
fn created_label(created: Option<&str>) -> String {
    match created.unwrap_or_default() {
        "" => "-".to_string(),
        c if c.starts_with("1970-01-01T00:00:00") => "1970-01-01 (SOURCE_DATE_EPOCH=0)".to_string(),
        c => c.to_string(),
    }
}

pub fn list(root: Option<PathBuf>) -> Result<ExitCode> {
    let store = open_store(root)?;
    println!(
        "{:<40} {:<14} {:<32} SIZE (compressed)",
        "NAME", "IMAGE ID", "CREATED"
    );
    for image in images::list(&store)? {
        let image = image?;
        println!(
            "{:<40} {:<14} {:<32} {}",
            image.name,
            image.short_id(),
            created_label(image.config.created.as_deref()),
            human_size(image.size())
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(root: Option<PathBuf>, reference: &str) -> Result<ExitCode> {
    let image = images::find(&open_store(root)?, reference)?;
    let doc = serde_json::json!({
        "Name": image.name,
        "Id": image.image.config,
        "ManifestDigest": image.image.manifest,
        "Manifest": image.manifest,
        "Config": image.config,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}

pub fn history(root: Option<PathBuf>, reference: &str) -> Result<ExitCode> {
    let image = images::find(&open_store(root)?, reference)?;
    println!(
        "{:<32} {:<60} {:>17}  COMMENT",
        "CREATED", "CREATED BY", "SIZE (compressed)"
    );
    for row in image.history() {
        let created = created_label(row.created.as_deref());
        let by: String = row.created_by.chars().take(60).collect();
        let size = human_size(row.size);
        println!("{created:<32} {by:<60} {size:>17}  {}", row.comment);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tag(root: Option<PathBuf>, source: &str, target: &str) -> Result<ExitCode> {
    let store = open_store(root)?;
    let _lock = store.lock_shared()?;
    images::tag(&store, source, target)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(root: Option<PathBuf>, references: &[String]) -> Result<ExitCode> {
    let store = open_store(root)?;
    let mut code = ExitCode::SUCCESS;
    for r in references {
        match images::untag(&store, r)? {
            (name, true) => println!("Untagged: {name}"),
            (_, false) => {
                eprintln!("error: {r}: no such image");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

pub fn save(root: Option<PathBuf>, args: SaveArgs) -> Result<ExitCode> {
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    images::save(&open_store(root)?, &args.references, format, &args.output)?;
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
    let keep_storage = args.keep_storage.as_deref();
    let keep_storage = keep_storage
        .map(|s| parse_size("--keep-storage", s))
        .transpose()?;
    let report = store.prune(kiln_store::PruneOptions {
        all: args.all,
        keep_storage,
    })?;
    // Git repositories are named only when there were some, so the line stays what it
    // was for a store without git sources.
    let git = match report.git_repos_removed {
        0 => String::new(),
        n => format!("{n} git repositories, "),
    };
    println!(
        "Deleted {} blobs, {} snapshots, {} cache records, {} cache mounts, \
         {git}{} leftovers of interrupted builds; total reclaimed space: {}",
        report.blobs_removed,
        report.snapshots_removed,
        report.records_removed,
        report.cache_mounts_removed,
        report.scratch_removed,
        human_size(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}
