//! `kiln diff A B`: the comparison `kiln_build::compare` makes, printed (platform by
//! platform for two images of several).
//!
//! Exit status: 0 identical, 1 different, 2 error.

use crate::cli::{DiffArgs, DiffFormat};
use kiln_build::compare::Diff;
use kiln_build::index::platform_list;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for "the images differ".
pub const DIFFERENT: u8 = 1;
/// Exit status for errors `kiln diff` reports itself.
const ERROR: u8 = 2;

/// Runs `kiln diff`. Errors are printed here and give exit status 2 (not 1, which
/// means "different").
pub fn run(root: Option<PathBuf>, args: DiffArgs) -> anyhow::Result<ExitCode> {
    match kiln_build::compare::compare_images(&args.a, &args.b, root, args.platform.as_deref()) {
        Ok(c) => {
            let identical = c.identical();
            match args.format {
                // Silence would read as "no output yet"; JSON says it in `identical`.
                DiffFormat::Text if identical => match &c {
                    Diff::Platforms { platforms, .. } => {
                        let platforms = platform_list(platforms.iter().map(|p| &p.platform));
                        println!("identical: {} and {} ({platforms})", args.a, args.b)
                    }
                    Diff::Image(_) => println!("identical: {} and {}", args.a, args.b),
                },
                DiffFormat::Text => print!("{}", c.render_text()),
                DiffFormat::Json => print!("{}", c.render_json()),
            }
            Ok(if identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(DIFFERENT)
            })
        }
        Err(e) => {
            eprintln!("error: {}", kiln_build::chain(&e));
            Ok(ExitCode::from(ERROR))
        }
    }
}
