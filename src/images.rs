//! Image commands over the store: images, inspect, history, tag, rmi, save, load, prune.

use crate::blobs::StoreBlobs;
use crate::cli::{PruneArgs, SaveArgs, SaveFormat};
use crate::outputs::write_file;
use crate::root::open_store;
use anyhow::{Context, Result, anyhow, bail};
use kiln_cache::{ImageRef, Store};
use kiln_image::ExportImage;
use kiln_image::oci::{ImageConfig, Manifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Finds an image by name (normalized) or by ID (`sha256:...` or a unique hex prefix).
fn find(store: &Store, reference: &str) -> Result<(String, ImageRef)> {
    if let Ok(name) = kiln_cache::normalize_ref(reference)
        && let Some(image) = store.get_ref(&name)?
    {
        return Ok((name, image));
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let matches: Vec<(String, ImageRef)> = store
            .list_refs()?
            .into_iter()
            .filter(|(_, r)| r.config.trim_start_matches("sha256:").starts_with(hex))
            .collect();
        if let Some(first) = matches.first() {
            return Ok(first.clone());
        }
    }
    let Ok(wanted) = kiln_cache::normalize_ref(reference) else {
        bail!("{reference}: no such image");
    };
    // `bb` means `bb:latest`, as in docker; when `bb` has exactly one tag, name it.
    let repo = |name: &str| kiln_cache::Reference::parse(name).map(|r| r.name).ok();
    let same_repo: Vec<String> = store
        .list_refs()?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| repo(name).is_some() && repo(name) == repo(&wanted))
        .collect();
    match &same_repo[..] {
        [only] => bail!("No such image: {wanted} (did you mean {only}?)"),
        _ => bail!("No such image: {wanted}"),
    }
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

fn load_image(store: &Store, image: &ImageRef) -> Result<(Manifest, ImageConfig)> {
    let manifest = kiln_image::parse_manifest(&store.read_blob(&image.manifest)?)
        .with_context(|| format!("reading manifest {}", image.manifest))?;
    let config = kiln_image::parse_config(&store.read_blob(&image.config)?)
        .with_context(|| format!("reading config {}", image.config))?;
    Ok((manifest, config))
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
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
        let (manifest, config) = load_image(&store, &image)?;
        let size: u64 = manifest.layers.iter().map(|l| l.size).sum();
        let id = image.config.trim_start_matches("sha256:");
        println!(
            "{:<40} {:<14} {:<32} {}",
            name,
            &id[..id.len().min(12)],
            created_label(config.created.as_deref().unwrap_or_default()),
            human_size(size)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(root: Option<PathBuf>, reference: &str) -> Result<ExitCode> {
    let store = open_store(root)?;
    let (name, image) = find(&store, reference)?;
    let (manifest, config) = load_image(&store, &image)?;
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
    let (_, image) = find(&store, reference)?;
    let (manifest, config) = load_image(&store, &image)?;
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
        println!("{created:<32} {by:<60} {:>17}  {comment}", human_size(size));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tag(root: Option<PathBuf>, source: &str, target: &str) -> Result<ExitCode> {
    let store = open_store(root)?;
    // Held so a concurrent prune cannot drop the image while it gains a name.
    let _lock = store.lock_shared()?;
    let (_, image) = find(&store, source)?;
    let target = kiln_cache::normalize_ref(target).map_err(|e| anyhow!("{target}: {e}"))?;
    store.set_ref(&target, image)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(root: Option<PathBuf>, references: &[String]) -> Result<ExitCode> {
    let store = open_store(root)?;
    let mut code = ExitCode::SUCCESS;
    for r in references {
        let name = kiln_cache::normalize_ref(r).map_err(|e| anyhow!("{r}: {e}"))?;
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
    let src = StoreBlobs(&store);
    write_file(&args.output, |out| match args.format {
        SaveFormat::Docker => kiln_image::write_docker_archive(out, &src, &images)
            .map(drop)
            .map_err(Into::into),
        SaveFormat::Oci => kiln_image::write_oci_archive(out, &src, &images)
            .map(drop)
            .map_err(Into::into),
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn load(root: Option<PathBuf>, input: &Path) -> Result<ExitCode> {
    let store = open_store(root)?;
    let _lock = store.lock_shared()?;
    let loaded = kiln_image::read_archive(input, &StoreBlobs(&store))
        .with_context(|| format!("loading {}", input.display()))?;
    if loaded.is_empty() {
        bail!("{}: the archive holds no image", input.display());
    }
    // Every name and manifest is checked before any name is set: a load that fails
    // must tag nothing, or an archive listing `bb:1` then an invalid name would move an
    // existing `bb:1` to its image and still exit with an error.
    let mut refs: BTreeMap<String, ImageRef> = BTreeMap::new();
    let mut planned: Vec<(ImageRef, Vec<String>)> = Vec::with_capacity(loaded.len());
    for image in loaded {
        // An archive may list one manifest many times: each is read and parsed once.
        let image_ref = match refs.get(&image.manifest_digest) {
            Some(r) => r.clone(),
            None => {
                let manifest =
                    kiln_image::parse_manifest(&store.read_blob(&image.manifest_digest)?)
                        .with_context(|| format!("reading manifest {}", image.manifest_digest))?;
                let r = ImageRef {
                    config: manifest.config.digest.clone(),
                    manifest: image.manifest_digest.clone(),
                };
                refs.insert(image.manifest_digest.clone(), r.clone());
                r
            }
        };
        let names = image
            .ref_names
            .iter()
            .map(|name| kiln_cache::normalize_ref(name).map_err(|e| anyhow!("{name}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        planned.push((image_ref, names));
    }
    for (image_ref, names) in planned {
        if names.is_empty() {
            println!("Loaded image ID: {}", image_ref.config);
        }
        for name in names {
            store.set_ref(&name, image_ref.clone())?;
            println!("Loaded image: {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `10GB`, `512MB`, `1.5G`, `2048` (bytes) → bytes; `flag` names the option in errors.
pub(crate) fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("{flag} {s:?}: not a size"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("{flag} {s:?}: unknown unit {other:?}"),
    };
    Ok((n * mult) as u64)
}

pub fn prune(root: Option<PathBuf>, args: PruneArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let keep_storage = args
        .keep_storage
        .as_deref()
        .map(|s| parse_size("--keep-storage", s))
        .transpose()?;
    let report = store.prune(kiln_cache::PruneOptions {
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
        human_size(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(
            parse_size("--keep-storage", "10GB").unwrap(),
            10_000_000_000
        );
        assert_eq!(parse_size("--keep-storage", "512mb").unwrap(), 512_000_000);
        assert_eq!(parse_size("--keep-storage", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("--keep-storage", "2048").unwrap(), 2048);
        assert!(parse_size("--keep-storage", "ten").is_err());
        assert!(parse_size("--keep-storage", "1XB").is_err());
    }

    #[test]
    fn human_sizes_are_short() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(2_000), "2kB");
    }
}
