//! `kiln import`: flags and output around `kiln_solver::import` (which does the work).

use crate::cli::ImportArgs;
use anyhow::{Context, Result, anyhow};
use kiln_build::open_store;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(root: Option<PathBuf>, args: ImportArgs) -> Result<ExitCode> {
    let name = kiln_store::normalize_ref(&args.name).map_err(|e| anyhow!("{}: {e}", args.name))?;
    // A build's policy: SOURCE_DATE_EPOCH, else 0, so the same tarball gives the same ID.
    let epoch = kiln_build::source_date_epoch(false, &[])?;
    let input: Box<dyn Read> = if args.file == std::path::Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?,
        )
    };
    let store = open_store(root)?;
    let _lock = store.lock_shared().context("locking the store")?;
    let opts = kiln_solver::import::ImportOptions {
        changes: args.changes,
        message: args.message,
        source_date_epoch: epoch,
        compression: kiln_image::Compression::Gzip,
        platform: kiln_parser::lower::host_platform(),
    };
    let imported = kiln_solver::import::import(
        &store,
        std::io::BufReader::new(input),
        &args.file.display().to_string(),
        &name,
        &opts,
    )?;
    println!("{}", imported.config_digest);
    Ok(ExitCode::SUCCESS)
}
