//! `kiln diff A B`: opens two images (in the store or in archives and layouts) and
//! compares them with the image crate's compare engine (`kiln_image::compare`).
//!
//! Exit status: 0 identical, 1 different, 2 error.

use crate::cli::{DiffArgs, DiffFormat};
use crate::root::open_store;
use anyhow::{Context, Result, anyhow, bail};
use kiln_build::blobs::StoreBlobs;
use kiln_image::compare::{Comparison, ImageLocation, OpenImage, compare, open_location};
use kiln_store::{LookupError, Store};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for "the images differ".
pub const DIFFERENT: u8 = 1;
/// Exit status for errors `kiln diff` reports itself.
const ERROR: u8 = 2;

/// Runs `kiln diff`. Errors are printed here and give exit status 2 (not 1, which
/// means "different").
pub fn run(root: Option<PathBuf>, args: DiffArgs) -> Result<ExitCode> {
    match diff(root, &args) {
        Ok(c) => {
            match args.format {
                // Silence would read as "no output yet"; JSON says it in `identical`.
                DiffFormat::Text if c.identical => {
                    println!("identical: {} and {}", args.a, args.b)
                }
                DiffFormat::Text => print!("{}", c.render_text()),
                DiffFormat::Json => print!("{}", c.render_json()),
            }
            Ok(if c.identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(DIFFERENT)
            })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(ERROR))
        }
    }
}

fn diff(root: Option<PathBuf>, args: &DiffArgs) -> Result<Comparison> {
    let a = ImageLocation::parse(&args.a);
    let b = ImageLocation::parse(&args.b);
    // The store is opened only when a ref is compared (archives need no store).
    let store = match (&a, &b) {
        (ImageLocation::Store(_), _) | (_, ImageLocation::Store(_)) => Some(open_store(root)?),
        _ => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("kiln-diff-")
        .tempdir()
        .context("making a scratch directory for archive blobs")?;
    let open = |loc: &ImageLocation, sub: &str| -> Result<OpenImage<'_>> {
        match (loc, &store) {
            (ImageLocation::Store(reference), Some(store)) => open_store_image(store, reference),
            _ => {
                let dir = scratch.path().join(sub);
                open_location(loc, &dir).map_err(flat)
            }
        }
    };
    let image_a = open(&a, "a")?;
    let image_b = open(&b, "b")?;
    compare(&image_a, &image_b).map_err(flat)
}

/// An engine error as one line: its message already names the cause, so the cause chain
/// is not repeated after it.
fn flat(e: kiln_image::compare::CompareError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Opens a store image for comparison.
fn open_store_image<'s>(store: &'s Store, reference: &str) -> Result<OpenImage<'s>> {
    let image = match store.find_image(reference) {
        Ok(found) => found.image,
        Err(LookupError::NotFound { .. }) => bail!(
            "{reference}: no such image in the store (other sources: oci:DIR, \
             oci-archive:FILE, docker-archive:FILE)"
        ),
        Err(e) => return Err(e.into()),
    };
    OpenImage::from_blobs(reference, &image.manifest, Box::new(StoreBlobs(store))).map_err(flat)
}
