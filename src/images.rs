//! Image commands over the store: images, inspect, history, tag, rmi, save, load, prune.
//! `kiln_build::images` finds and sums up the images, down to the lines shown; this
//! prints them.

use crate::cli::{PruneArgs, SaveArgs, SaveFormat};
use anyhow::Result;
use kiln_base::size::parse_size;
use kiln_build::exporter::ArchiveFormat;
use kiln_build::images::StoredImage;
use kiln_build::{images, open_store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn list(root: Option<PathBuf>) -> Result<ExitCode> {
    let store = open_store(root)?;
    let listed = images::list(&store)?.collect::<Result<Vec<_>, _>>()?;
    // The PLATFORMS column is there only when an image has several, so the table of a
    // store without one reads as it always did.
    if listed.iter().any(|i| i.index.is_some()) {
        println!("{}", images::list_header_platforms());
    } else {
        println!("{}", images::list_header());
    }
    for image in listed {
        println!("{}", image.list_line());
    }
    Ok(ExitCode::SUCCESS)
}

/// The image `reference` finds, or its image for `platform` when given.
fn find(root: Option<PathBuf>, reference: &str, platform: Option<&str>) -> Result<StoredImage> {
    let store = open_store(root)?;
    let image = images::find(&store, reference)?;
    Ok(match platform {
        Some(p) => image.select(&store, p)?,
        None => image,
    })
}

pub fn inspect(root: Option<PathBuf>, reference: &str, platform: Option<&str>) -> Result<ExitCode> {
    let image = find(root, reference, platform)?;
    println!("{}", serde_json::to_string_pretty(&image.inspect_json())?);
    Ok(ExitCode::SUCCESS)
}

pub fn history(root: Option<PathBuf>, reference: &str, platform: Option<&str>) -> Result<ExitCode> {
    let image = find(root, reference, platform)?;
    if let Some(line) = image.history_platform_line() {
        println!("{line}");
    }
    println!("{}", images::history_header());
    for row in image.history() {
        println!("{}", row.line());
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
    println!("{}", images::prune_summary(&report));
    Ok(ExitCode::SUCCESS)
}
