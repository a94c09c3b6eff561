//! `kiln build -o`: extra places a built image is written to.
//!
//! As with buildx, `type=oci,dest=X` writes an OCI archive (a tar of the layout) and
//! `tar=false` writes the layout as a directory; kiln also takes a `dest` that is an existing
//! directory or ends in `/` as a layout. Each output says on stderr what it wrote where.

use crate::blobs::StoreBlobs;
use anyhow::{Context, Result, anyhow, bail};
use kiln_cache::Store;
use kiln_image::ExportImage;
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

impl OutputSpec {
    pub fn parse(spec: &str) -> Result<OutputSpec> {
        let mut kind = None;
        let mut dest = None;
        let mut tar = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                Some(("tar", v)) => {
                    tar =
                        Some(v.parse::<bool>().map_err(|_| {
                            anyhow!("-o {spec:?}: tar= takes true or false, not {v:?}")
                        })?)
                }
                _ => bail!("-o {spec:?}: unknown option {part:?} (expected type=, dest=, tar=)"),
            }
        }
        if kind.as_deref() == Some("registry") {
            // The names come from -t, as with --push.
            if dest.is_some() || tar.is_some() {
                bail!("-o {spec:?}: type=registry takes no other options (name the image with -t)");
            }
            return Ok(OutputSpec::Registry);
        }
        let dest = dest.ok_or_else(|| anyhow!("-o {spec:?}: missing dest="))?;
        match kind.as_deref() {
            Some("oci") => {
                // A dest that exists as a directory, or ends in '/', means the layout itself.
                let tar = tar.unwrap_or_else(|| !(dest.is_dir() || spec.trim_end().ends_with('/')));
                Ok(OutputSpec::Oci { dest, tar })
            }
            Some("docker") => Ok(OutputSpec::Docker { dest }),
            Some(other) => bail!("-o {spec:?}: unsupported type {other:?} (oci or docker)"),
            None => bail!("-o {spec:?}: missing type="),
        }
    }

    /// Writes the image `manifest_digest` (named `name` if given) to this output.
    pub fn write(&self, store: &Store, manifest_digest: &str, name: Option<&str>) -> Result<()> {
        let images = [ExportImage {
            manifest_digest: manifest_digest.to_string(),
            ref_name: name.map(str::to_string),
        }];
        let src = StoreBlobs(store);
        match self {
            OutputSpec::Oci { dest, tar: false } => {
                kiln_image::write_oci_layout(dest, &src, &images)
                    .with_context(|| format!("writing the OCI layout {}", dest.display()))?;
                eprintln!("exported an OCI layout directory to {}", dest.display());
            }
            OutputSpec::Oci { dest, tar: true } => {
                write_file(dest, |f| {
                    kiln_image::write_oci_archive(f, &src, &images)
                        .map(drop)
                        .map_err(Into::into)
                })?;
                eprintln!(
                    "exported an OCI archive (tar) to {}; add tar=false for an OCI layout directory",
                    dest.display()
                );
            }
            OutputSpec::Docker { dest } => {
                write_file(dest, |f| {
                    kiln_image::write_docker_archive(f, &src, &images)
                        .map(drop)
                        .map_err(Into::into)
                })?;
                eprintln!(
                    "exported a docker archive (for docker load) to {}",
                    dest.display()
                );
            }
            // Pushed by the build command, which holds the registry options.
            OutputSpec::Registry => {}
        }
        Ok(())
    }
}

/// Writes `dest` through a temporary file beside it, renamed into place only when complete.
pub fn write_file(
    dest: &std::path::Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    // Created 0666 less the umask, as `docker save` and any shell redirect would (a bare
    // NamedTempFile is 0600, and the rename would keep that).
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(tmp.reopen()?);
    fill(&mut out).with_context(|| format!("writing {}", dest.display()))?;
    let file = out
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {}", dest.display(), e.error()))?;
    file.sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_and_docker_outputs() {
        assert_eq!(
            OutputSpec::parse("type=docker,dest=/tmp/a.tar").unwrap(),
            OutputSpec::Docker {
                dest: "/tmp/a.tar".into()
            }
        );
        assert_eq!(
            OutputSpec::parse("type=oci,dest=/nonexistent/x.tar").unwrap(),
            OutputSpec::Oci {
                dest: "/nonexistent/x.tar".into(),
                tar: true
            }
        );
        assert_eq!(
            OutputSpec::parse("type=oci,dest=/tmp/layout,tar=false").unwrap(),
            OutputSpec::Oci {
                dest: "/tmp/layout".into(),
                tar: false
            }
        );
        assert_eq!(
            OutputSpec::parse("type=registry").unwrap(),
            OutputSpec::Registry
        );
        let err = OutputSpec::parse("type=tarball,dest=x").unwrap_err();
        assert!(err.to_string().contains("unsupported type \"tarball\""));
        assert!(OutputSpec::parse("type=oci").is_err());
    }
}
