//! `kiln import`: flags and output around `kiln_build::import` (which does the work).

use crate::cli::ImportArgs;
use anyhow::{Context, Result};
use kiln_build::import::ImportRequest;
use kiln_build::open_store;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(root: Option<PathBuf>, args: ImportArgs) -> Result<ExitCode> {
    let request = ImportRequest::new(&args.name, args.changes, args.message)?;
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
    let source = args.file.display().to_string();
    let imported = request.import(&store, std::io::BufReader::new(input), &source)?;
    println!("{}", imported.config_digest);
    Ok(ExitCode::SUCCESS)
}
