//! Where a built image goes once it is in the store: its names (`-t`, or the `<none>`
//! list), `-o` outputs, `--cache-to` caches, `--push`, `--iidfile`.
//!
//! As with buildx, `-o type=oci,dest=X` writes an OCI archive (a tar of the layout) and
//! `tar=false` writes the layout as a directory; kiln also takes a `dest` that is an existing
//! directory or ends in `/` as a layout. `kiln save` writes its archives here too
//! ([`write_archive`]).
//!
//! An image of several platforms is its OCI index wherever the format holds one (an OCI
//! layout or archive, a push); a docker archive holds one image, so it gets the build
//! machine's platform's or an error ([`archived_digest`]).

use crate::Notice;
use crate::blobs::StoreBlobs;
use crate::cache_io::{self, CacheSpec};
use crate::files::write_file;
use crate::{BuildError, BuiltImage};
use kiln_image::ExportImage;
use kiln_store::{ImageRef, Store};
use std::path::PathBuf;

/// One `-o type=...,dest=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// An OCI layout: a directory, or a tar of one when `tar` (dest is a file).
    Oci { dest: PathBuf, tar: bool },
    /// A `docker load` archive.
    Docker { dest: PathBuf },
    /// Push the image's names to their registries (like `--push`).
    Registry,
}

impl std::str::FromStr for OutputSpec {
    type Err = BuildError;

    fn from_str(spec: &str) -> Result<OutputSpec, BuildError> {
        let bad = |why: String| BuildError::Request(format!("-o {spec:?}: {why}"));
        let mut kind = None;
        let mut dest = None;
        let mut tar = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                Some(("tar", v)) => {
                    tar = Some(
                        v.parse::<bool>()
                            .map_err(|_| bad(format!("tar= takes true or false, not {v:?}")))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option {part:?} (expected type=, dest=, tar=)"
                    )));
                }
            }
        }
        if kind.as_deref() == Some("registry") {
            // The names come from -t, as with --push.
            if dest.is_some() || tar.is_some() {
                return Err(bad(
                    "type=registry takes no other options (name the image with -t)".into(),
                ));
            }
            return Ok(OutputSpec::Registry);
        }
        let dest = dest.ok_or_else(|| bad("missing dest=".into()))?;
        match kind.as_deref() {
            Some("oci") => {
                // A dest that exists as a directory, or ends in '/', means the layout itself.
                let tar = tar.unwrap_or_else(|| !(dest.is_dir() || spec.trim_end().ends_with('/')));
                Ok(OutputSpec::Oci { dest, tar })
            }
            Some("docker") => Ok(OutputSpec::Docker { dest }),
            Some(other) => Err(bad(format!("unsupported type {other:?} (oci or docker)"))),
            None => Err(bad("missing type=".into())),
        }
    }
}

impl OutputSpec {
    /// Writes the stored `image` (named `name` if given) to this output.
    pub fn write(
        &self,
        store: &Store,
        image: &ImageRef,
        name: Option<&str>,
    ) -> Result<(), BuildError> {
        let format = match self {
            OutputSpec::Docker { .. } => ArchiveFormat::Docker,
            _ => ArchiveFormat::Oci,
        };
        let images = [ExportImage {
            manifest_digest: archived_digest(store, image, format, name.unwrap_or("the image"))?,
            ref_name: name.map(str::to_string),
        }];
        match self {
            OutputSpec::Oci { dest, tar: false } => {
                kiln_image::write_oci_layout(dest, &StoreBlobs(store), &images).map_err(|source| {
                    BuildError::Archive {
                        what: format!("writing the OCI layout {}", dest.display()),
                        source,
                    }
                })
            }
            OutputSpec::Oci { dest, tar: true } => {
                write_archive(store, &images, ArchiveFormat::Oci, dest)
            }
            OutputSpec::Docker { dest } => {
                write_archive(store, &images, ArchiveFormat::Docker, dest)
            }
            // Pushed by [`export`], which holds the registry options.
            OutputSpec::Registry => Ok(()),
        }
    }
}

/// The archive files a store image is written as (`-o`, `kiln save`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker load` format (also a valid OCI layout inside).
    Docker,
    /// An OCI image layout as a tar.
    Oci,
}

/// What of the stored `image` (called `name` in errors) an archive in `format` holds:
/// an OCI layout holds the whole image, its index for several platforms; a docker archive
/// one platform's, the build machine's, which must be among them.
pub fn archived_digest(
    store: &Store,
    image: &ImageRef,
    format: ArchiveFormat,
    name: &str,
) -> Result<String, BuildError> {
    let whole = store.whole_image(image);
    let Some(index) = image.index.as_ref().filter(|i| **i == whole) else {
        return Ok(image.manifest.clone());
    };
    if format == ArchiveFormat::Oci {
        return Ok(whole);
    }
    let children = crate::index::children(store, index, name)?;
    let host = kiln_parser::lower::host_platform();
    match children
        .iter()
        .find(|c| c.manifest == image.manifest && c.platform == host)
    {
        Some(c) => Ok(c.manifest.clone()),
        None => Err(BuildError::Request(format!(
            "{name} is an image for {}: a docker archive holds one platform, this \
             machine's ({host}), which it lacks; write an OCI archive (`--format oci`, \
             `-o type=oci`) to keep every platform",
            crate::index::platform_list(children.iter().map(|c| &c.platform))
        ))),
    }
}

/// Writes `images` from `store` as one archive at `dest`, whole or not at all.
pub fn write_archive(
    store: &Store,
    images: &[ExportImage],
    format: ArchiveFormat,
    dest: &std::path::Path,
) -> Result<(), BuildError> {
    let src = StoreBlobs(store);
    write_file(dest, |out| {
        match format {
            ArchiveFormat::Docker => kiln_image::write_docker_archive(out, &src, images).map(drop),
            ArchiveFormat::Oci => kiln_image::write_oci_archive(out, &src, images).map(drop),
        }
        .map_err(std::io::Error::other)
    })
}

/// What to do with a built image, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Exports {
    /// `-t` names, normalized.
    pub tags: Vec<String>,
    pub outputs: Vec<OutputSpec>,
    pub cache_to: Vec<CacheSpec>,
    pub push: bool,
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`: buildx's JSON record of the result.
    pub metadata_file: Option<PathBuf>,
}

/// Exports `image`, stored in `store`: names, outputs, caches (their records read from
/// `records`, the store the build ran in), pushes, iidfile, in that order, so a failed
/// push still leaves the image named.
pub fn export(
    store: &Store,
    records: &Store,
    image: &BuiltImage,
    exports: &Exports,
    registry: &kiln_registry::RegistryOptions,
    notify: &dyn Fn(Notice),
) -> Result<(), BuildError> {
    let stored = ImageRef {
        config: image.config_digest.clone(),
        manifest: image.manifest_digest.clone(),
        index: image.index.clone(),
    };
    for tag in &exports.tags {
        store
            .set_ref(tag, stored.clone())
            .map_err(BuildError::store(format!("naming the image {tag}")))?;
    }
    if exports.tags.is_empty() {
        // Listed as `<none>` by `kiln images`, as docker lists an unnamed build.
        store
            .record_untagged(stored.clone())
            .map_err(BuildError::store("recording the untagged image"))?;
    }
    let first_tag = exports.tags.first().map(String::as_str);
    for output in &exports.outputs {
        output.write(store, &stored, first_tag)?;
        if *output != OutputSpec::Registry {
            notify(Notice::OutputWritten(output.clone()));
        }
    }
    for spec in &exports.cache_to {
        let keys = if spec.max() {
            &image.all_keys
        } else {
            &image.image_keys
        };
        match cache_io::export(records, spec, keys, registry) {
            Ok(exported) => notify(Notice::CacheExported {
                spec: spec.clone(),
                exported,
            }),
            // The image is built and named: an optional cache that is not there costs the
            // next build time, not this one its result.
            Err(e) if spec.optional() => notify(Notice::CacheExportFailed(e)),
            Err(e) => return Err(e),
        }
    }
    if exports.push || exports.outputs.contains(&OutputSpec::Registry) {
        if exports.tags.is_empty() {
            return Err(BuildError::Request(
                "--push needs a name: add -t REGISTRY/NAME:TAG".into(),
            ));
        }
        for tag in &exports.tags {
            let pushed = kiln_registry::push_from_store(store, tag, tag, registry)
                .map_err(BuildError::registry(format!("pushing {tag}")))?;
            notify(Notice::Pushed {
                reference: pushed.reference.to_string(),
                digest: pushed.digest,
            });
        }
    }
    if let Some(path) = &exports.iidfile {
        std::fs::write(path, image.id()).map_err(BuildError::io(format!(
            "writing --iidfile {}",
            path.display()
        )))?;
    }
    if let Some(path) = &exports.metadata_file {
        let bytes = metadata(store, image, &exports.tags)?;
        kiln_base::atomic::write(path, &bytes).map_err(BuildError::io(format!(
            "writing --metadata-file {}",
            path.display()
        )))?;
    }
    Ok(())
}

/// The `--metadata-file` document, with the keys buildx writes for an image build (CI
/// scripts read `containerimage.digest` to pin what they push).
/// An image of several platforms is its index there, with no config digest, as buildx
/// writes it.
fn metadata(store: &Store, image: &BuiltImage, tags: &[String]) -> Result<Vec<u8>, BuildError> {
    let top = image.index.as_ref().unwrap_or(&image.manifest_digest);
    let manifest = store
        .read_blob(top)
        .map_err(BuildError::store("reading the image manifest"))?;
    let media_type = crate::index::media_type(&manifest);
    let mut doc = serde_json::json!({
        "containerimage.digest": top,
        "containerimage.descriptor": {
            "mediaType": media_type,
            "digest": top,
            "size": manifest.len(),
        },
    });
    if image.index.is_none() {
        doc["containerimage.config.digest"] = image.config_digest.clone().into();
    }
    if !tags.is_empty() {
        // Fully qualified, as BuildKit names them (`docker.io/library/app:1`).
        let names: Vec<String> = tags
            .iter()
            .map(|t| {
                kiln_registry::RegistryRef::parse(t).map_or_else(|_| t.clone(), |r| r.to_string())
            })
            .collect();
        doc["image.name"] = serde_json::Value::String(names.join(","));
    }
    let mut bytes = serde_json::to_vec_pretty(&doc)
        .map_err(std::io::Error::other)
        .map_err(BuildError::io(
            "writing the --metadata-file document".to_string(),
        ))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_and_docker_outputs() {
        let parse = |s: &str| s.parse::<OutputSpec>();
        assert_eq!(
            parse("type=docker,dest=/tmp/a.tar").unwrap(),
            OutputSpec::Docker {
                dest: "/tmp/a.tar".into()
            }
        );
        assert_eq!(
            parse("type=oci,dest=/nonexistent/x.tar").unwrap(),
            OutputSpec::Oci {
                dest: "/nonexistent/x.tar".into(),
                tar: true
            }
        );
        assert_eq!(
            parse("type=oci,dest=/tmp/layout,tar=false").unwrap(),
            OutputSpec::Oci {
                dest: "/tmp/layout".into(),
                tar: false
            }
        );
        assert_eq!(parse("type=registry").unwrap(), OutputSpec::Registry);
        let err = parse("type=tarball,dest=x").unwrap_err();
        assert!(err.to_string().contains("unsupported type \"tarball\""));
        assert!(parse("type=oci").is_err());
    }
}
