//! `kiln diff A B` and `kiln build --verify-reproducible`: both open two images and
//! compare them with the image crate's compare engine (`kiln_image::compare`).
//!
//! Exit status of `kiln diff`: 0 identical, 1 different, 2 error. `--verify-reproducible`
//! builds twice with `--no-cache` into two scratch stores at once (two child `kiln build`
//! processes, so the builds share nothing), exits 1 with the differences when they
//! disagree, and otherwise copies the image into the real store and names it as a
//! plain build would.

use crate::blobs::StoreBlobs;
use crate::cli::{BuildArgs, CompressionArg, NetworkArg, ProgressMode, SnapshotterArg};
use crate::root::open_store;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use kiln_cache::{ImageRef, Store};
use kiln_image::compare::{Comparison, ImageLocation, OpenImage, compare, open_location};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};

/// Output format of `kiln diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One line per difference.
    Text,
    /// One JSON document.
    Json,
}

/// `kiln diff`: compare two images by their final filesystems, config and history.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// First image: a name in the store, oci:DIR, oci-archive:FILE or docker-archive:FILE.
    pub a: String,
    /// Second image, in the same forms.
    pub b: String,
}

/// Exit status for "the images differ".
const DIFFERENT: u8 = 1;
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

/// Finds a store image by name, or by ID (`sha256:...` or a unique hex prefix of at least 4).
fn find_ref(store: &Store, reference: &str) -> Result<ImageRef> {
    if let Ok(name) = kiln_cache::normalize_ref(reference)
        && let Some(image) = store.get_ref(&name)?
    {
        return Ok(image);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches: Vec<ImageRef> = store
            .list_refs()?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.config.trim_start_matches("sha256:").starts_with(hex))
            .collect();
        matches.dedup_by(|x, y| x.manifest == y.manifest);
        match matches.len() {
            0 => {}
            1 => return Ok(matches.remove(0)),
            n => bail!("{reference}: {n} images have IDs starting with {hex}"),
        }
    }
    bail!(
        "{reference}: no such image in the store (other sources: oci:DIR, oci-archive:FILE, \
         docker-archive:FILE)"
    )
}

/// Opens a store image for comparison.
fn open_store_image<'s>(store: &'s Store, reference: &str) -> Result<OpenImage<'s>> {
    let image = find_ref(store, reference)?;
    OpenImage::from_blobs(reference, &image.manifest, Box::new(StoreBlobs(store))).map_err(flat)
}

/// The tag given to the image in each scratch store.
const SCRATCH_TAG: &str = "kiln-verify-reproducible:latest";

/// `kiln build ARGS` as command-line words (without the global `--root`), for a
/// `--no-cache` build into a scratch store: the user's tags, outputs and iidfile are left
/// out (they are applied once, to the real store, after the check).
fn child_build_args(args: &BuildArgs, dockerfile: Option<&Path>) -> Vec<String> {
    let mut v: Vec<String> = vec!["build".into(), "--no-cache".into()];
    v.extend(["--progress".into(), "plain".into()]);
    v.extend(["-t".into(), SCRATCH_TAG.into()]);
    if let Some(f) = dockerfile {
        v.extend(["-f".into(), f.display().to_string()]);
    }
    for a in &args.build_args {
        v.extend(["--build-arg".into(), a.clone()]);
    }
    if let Some(t) = &args.target {
        v.extend(["--target".into(), t.clone()]);
    }
    v.extend([
        "--network".into(),
        match args.network {
            NetworkArg::Default => "default",
            NetworkArg::Host => "host",
            NetworkArg::None => "none",
        }
        .into(),
    ]);
    for a in &args.allow {
        v.extend(["--allow".into(), a.clone()]);
    }
    for l in &args.labels {
        v.extend(["--label".into(), l.clone()]);
    }
    v.extend([
        "--compression".into(),
        match args.compression {
            CompressionArg::Gzip => "gzip",
            CompressionArg::Zstd => "zstd",
            CompressionArg::None => "none",
        }
        .into(),
    ]);
    for s in &args.secrets {
        v.extend(["--secret".into(), s.clone()]);
    }
    v.extend([
        "--snapshotter".into(),
        match args.snapshotter {
            SnapshotterArg::Auto => "auto",
            SnapshotterArg::Overlay => "overlay",
            SnapshotterArg::Copy => "copy",
        }
        .into(),
    ]);
    if let Some(t) = &args.timestamp {
        v.extend(["--timestamp".into(), t.clone()]);
    }
    v.push(args.context.display().to_string());
    v
}

/// Copies one blob from `from` into `to` (verified on commit) unless it is there.
fn copy_blob(from: &Store, to: &Store, digest: &str) -> Result<()> {
    if to.has_blob(digest) {
        return Ok(());
    }
    let mut reader = from
        .open_blob(digest)
        .with_context(|| format!("opening blob {digest} in the scratch store"))?;
    let mut writer = to.blob_writer()?;
    std::io::copy(&mut reader, &mut writer)
        .with_context(|| format!("copying blob {digest} into the store"))?;
    writer.commit_verified(digest)?;
    Ok(())
}

/// Runs one child build; its output is kept for when it fails.
fn child_build(exe: &Path, root: &Path, words: &[String]) -> Result<Output> {
    Command::new(exe)
        .arg("--root")
        .arg(root)
        .args(words)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", exe.display()))
}

/// `kiln build --verify-reproducible`: two `--no-cache` builds in two scratch stores, in
/// parallel, compared with the diff engine. Different: prints the differences (as `kiln
/// diff` does) and returns exit status 1. Same: the image is copied into the real store,
/// tagged, and `--iidfile` / `--output` are written as a plain build would.
pub fn verify_reproducible(root: Option<PathBuf>, args: &BuildArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the kiln executable")?;
    let scratch = tempfile::Builder::new()
        .prefix("kiln-verify-")
        .tempdir()
        .context("making scratch stores")?;
    // A Dockerfile from stdin can only be read once: both builds read a copy.
    let dockerfile = match args.file.as_deref() {
        Some(f) if f == Path::new("-") => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                .context("reading the Dockerfile from stdin")?;
            let path = scratch.path().join("Dockerfile");
            std::fs::write(&path, text).context("saving the Dockerfile from stdin")?;
            Some(path)
        }
        Some(f) => Some(f.to_path_buf()),
        None => None,
    };
    let words = child_build_args(args, dockerfile.as_deref());
    let roots = [scratch.path().join("a"), scratch.path().join("b")];
    eprintln!("verify-reproducible: building twice with --no-cache in scratch stores");
    let outputs: Vec<Result<Output>> = std::thread::scope(|s| {
        let handles: Vec<_> = roots
            .iter()
            .map(|r| s.spawn(|| child_build(&exe, r, &words)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a build thread panicked")))
            })
            .collect()
    });
    for (n, out) in outputs.into_iter().enumerate() {
        let out = out?;
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            eprintln!("verify-reproducible: build {} of 2 failed", n + 1);
            return Ok(ExitCode::FAILURE);
        }
    }
    let store_a = Store::open(&roots[0]).context("opening scratch store a")?;
    let store_b = Store::open(&roots[1]).context("opening scratch store b")?;
    let ref_a = find_ref(&store_a, SCRATCH_TAG)?;
    let ref_b = find_ref(&store_b, SCRATCH_TAG)?;
    let image_a = OpenImage::from_blobs("build 1", &ref_a.manifest, Box::new(StoreBlobs(&store_a)))
        .map_err(flat)?;
    let image_b = OpenImage::from_blobs("build 2", &ref_b.manifest, Box::new(StoreBlobs(&store_b)))
        .map_err(flat)?;
    let comparison = compare(&image_a, &image_b).map_err(flat)?;
    if ref_a.manifest != ref_b.manifest {
        print!("{}", comparison.render_text());
        eprintln!(
            "verify-reproducible: not reproducible: two --no-cache builds gave manifests {} and {}",
            ref_a.manifest, ref_b.manifest
        );
        return Ok(ExitCode::from(DIFFERENT));
    }
    import_result(root, args, &store_a, &ref_a, &image_a)?;
    Ok(ExitCode::SUCCESS)
}

/// Puts the verified image into the real store and names it like `kiln build` does.
fn import_result(
    root: Option<PathBuf>,
    args: &BuildArgs,
    scratch: &Store,
    image: &ImageRef,
    opened: &OpenImage<'_>,
) -> Result<()> {
    let tags = crate::build::parse_tags(&args.tags)?;
    let outputs = crate::build::parse_outputs(&args.outputs)?;
    let store = open_store(root)?;
    let _lock = store.lock_shared().context("locking the store")?;
    // Children before the documents that name them.
    for layer in &opened.manifest.layers {
        copy_blob(scratch, &store, &layer.digest)?;
    }
    copy_blob(scratch, &store, &image.config)?;
    copy_blob(scratch, &store, &image.manifest)?;
    for tag in &tags {
        store
            .set_ref(tag, image.clone())
            .with_context(|| format!("naming the image {tag}"))?;
    }
    for output in &outputs {
        output.write(&store, &image.manifest, tags.first().map(String::as_str))?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &image.config)
            .with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    match crate::render::resolve_mode(args.progress) {
        ProgressMode::Quiet => println!("{}", image.config),
        ProgressMode::Json => {}
        _ => {
            eprintln!(
                "verify-reproducible: both builds gave the same manifest digest {}",
                image.manifest
            );
            eprintln!(
                "writing image {} (image ID: its config digest)",
                image.config
            );
            for tag in &tags {
                eprintln!("naming to {tag}");
            }
        }
    }
    Ok(())
}
