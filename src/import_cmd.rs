//! `kiln import`: flags and output around `kiln_solver::import` (which does the work).

use crate::root::open_store;
use anyhow::{Context, Result, anyhow};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kiln import ROOTFS.tar[.gz|.zst|-] NAME[:TAG]`
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Root filesystem tarball (plain, gzip or zstd); `-` reads it from stdin.
    pub file: PathBuf,
    /// Name for the image.
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
    /// Apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR (repeatable).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// History comment (default: `Imported from -`, as docker writes).
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
}

pub fn run(root: Option<PathBuf>, args: ImportArgs) -> Result<ExitCode> {
    let name = kiln_cache::normalize_ref(&args.name).map_err(|e| anyhow!("{}: {e}", args.name))?;
    // Like a build: SOURCE_DATE_EPOCH, else 0, so the same tarball gives the same ID.
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<i64>()
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        _ => 0,
    };
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
        source_date_epoch: Some(epoch),
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
