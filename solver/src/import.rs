//! `kiln import`: a root filesystem tarball becomes a one-layer image, as `docker import`.
//!
//! The tarball is unpacked into the store's scratch space and written again with the same
//! layer writer as every build step, so the layer is normalised the same way (sorted
//! entries, no user names, times clamped to SOURCE_DATE_EPOCH or 0): the same input gives
//! the same image ID wherever it is imported, by root or in a user namespace (device nodes
//! that a user namespace cannot create are written from the unpack's record of them).
//! `--change` instructions are parsed and lowered by kiln's own parser as the body of a
//! `FROM scratch` stage and applied to the config exactly as a build applies them.

use crate::image_state::{HistoryEntry, ImageState};
use crate::oci_config;
use crate::result::{Layer, StageResult};
use kiln_image::{Compression, LayerOptions};
use kiln_parser::Platform;
use kiln_parser::instructions::Command;
use kiln_store::{ImageRef, LayerRef, Store};
use std::io::Read;
use std::path::PathBuf;

/// The instructions `docker import --change` and `docker commit --change` accept.
const CHANGE_INSTRUCTIONS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Why an import failed; nothing is tagged then.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("--change {change:?}: {message}")]
    Change { change: String, message: String },
    #[error(
        "{source_name}: not a tar archive (plain, gzip or zstd): {cause}",
        cause = match cause { Some(e) => printable(&e.to_string()), None => "no entries".to_string() }
    )]
    NotATar {
        source_name: String,
        cause: Option<kiln_image::UnpackError>,
    },
    #[error("{source_name}: {source}")]
    Unpack {
        source_name: String,
        source: kiln_image::UnpackError,
    },
    #[error("writing the layer: {0}")]
    Layer(#[from] kiln_image::LayerWriteError),
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}

/// The tar reader quotes the bytes it choked on; of a binary file those are noise.
fn printable(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `--change` instructions, one each.
    pub changes: Vec<String>,
    /// `-m`: the history comment (docker's default: `Imported from -`).
    pub message: Option<String>,
    /// Clamp file times and the creation time to this; `None` keeps real file times.
    pub source_date_epoch: Option<i64>,
    pub compression: Compression,
    pub platform: Platform,
}

/// What was imported.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `sha256:` of the config: the image ID.
    pub config_digest: String,
    pub manifest_digest: String,
}

/// The config `changes` give, applied to an empty one.
fn apply_changes(changes: &[String]) -> Result<ImageState, ImportError> {
    let bad = |change: &str, message: String| ImportError::Change {
        change: change.to_string(),
        message,
    };
    let mut text = String::from("FROM scratch\n");
    for change in changes {
        if change.contains('\n') {
            return Err(bad(change, "one instruction per --change".into()));
        }
        text.push_str(change);
        text.push('\n');
    }
    // Errors name a line; line N+1 is change N.
    let at_line = |line: usize| {
        changes
            .get(line.saturating_sub(2))
            .map_or("", String::as_str)
    };
    let df = kiln_parser::parse(&text).map_err(|e| bad(at_line(e.line), e.to_string()))?;
    let instructions = df
        .stages
        .first()
        .map(|s| s.instructions.as_slice())
        .unwrap_or_default();
    if instructions.len() != changes.len() {
        return Err(bad(
            &changes.join("; "),
            "each --change must be exactly one instruction".into(),
        ));
    }
    for (ins, change) in instructions.iter().zip(changes) {
        let word = change.split_whitespace().next().unwrap_or("");
        let allowed = CHANGE_INSTRUCTIONS
            .iter()
            .any(|w| w.eq_ignore_ascii_case(word))
            && !matches!(ins.command, Command::Run(_) | Command::Copy(_));
        if !allowed {
            return Err(bad(
                change,
                format!("{word} cannot be used here; use one of {CHANGE_INSTRUCTIONS:?}"),
            ));
        }
    }
    let graph = kiln_parser::lower(
        &df,
        &kiln_parser::LowerOptions::default(),
        &kiln_parser::EmptyResolver,
    )
    .map_err(|e| bad(&changes.join("; "), e.to_string()))?;
    let mut state = ImageState::default();
    for stage in &graph.stages {
        for step in &stage.steps {
            state.apply(step);
        }
    }
    Ok(state)
}

/// Imports the tarball read from `input` (`source_name` names it in errors) into `store`
/// and names it `name` (already normalised). Nothing is named when anything fails.
pub fn import(
    store: &Store,
    input: impl Read,
    source_name: &str,
    name: &str,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let mut state = apply_changes(&opts.changes)?;
    let staging = store.snapshot_staging()?;
    let info = match kiln_image::unpack_layer(input, staging.path(), &Default::default()) {
        Ok(info) => info,
        Err(source @ kiln_image::UnpackError::Stream(_)) => {
            return Err(ImportError::NotATar {
                source_name: source_name.to_string(),
                cause: Some(source),
            });
        }
        Err(source) => {
            return Err(ImportError::Unpack {
                source_name: source_name.to_string(),
                source,
            });
        }
    };
    if info.entries == 0 {
        // An empty or non-tar stream that the tar reader took for an empty archive.
        return Err(ImportError::NotATar {
            source_name: source_name.to_string(),
            cause: None,
        });
    }
    let mut writer = store.blob_writer()?;
    let digests = kiln_image::write_layer_adding_devices(
        staging.path(),
        &mut writer,
        &LayerOptions {
            compression: opts.compression,
            source_date_epoch: opts.source_date_epoch,
            level: None,
            reuse: None,
            xattr_free: None,
        },
        &info.skipped_devices,
    )?;
    let blob = writer.commit_verified(&digests.digest)?;
    drop(staging);
    let layer = LayerRef {
        diff_id: digests.diff_id,
        digest: blob.digest,
        media_type: digests.media_type,
        size: blob.size,
    };
    store.put_layer_blob(&layer)?;
    // docker import's history: one entry, its comment the message, no command.
    state.history = vec![HistoryEntry {
        created_by: String::new(),
        comment: Some(
            opts.message
                .clone()
                .unwrap_or_else(|| "Imported from -".to_string()),
        ),
        empty_layer: false,
        created: None,
        author: None,
    }];
    let result = StageResult {
        key: String::new(),
        layers: vec![Layer {
            diff_id: layer.diff_id.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            media_type: layer.media_type.clone(),
            // Unpacked from the blob on first use, like a pulled layer.
            snapshot: PathBuf::new(),
        }],
        state,
        base_history: 0,
        keys: Vec::new(),
    };
    let created = kiln_image::oci::rfc3339(opts.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }));
    let config = kiln_image::oci::canonical_json(&oci_config::image_config(
        &result,
        &opts.platform,
        &created,
        &[],
    ));
    let config_blob = store.put_blob_bytes(&config)?;
    let manifest = kiln_image::oci::canonical_json(&oci_config::manifest(
        &result,
        &config_blob.digest,
        config_blob.size,
    ));
    let manifest_blob = store.put_blob_bytes(&manifest)?;
    store.set_ref(
        name,
        ImageRef {
            index: None,
            config: config_blob.digest.clone(),
            manifest: manifest_blob.digest.clone(),
        },
    )?;
    Ok(Imported {
        config_digest: config_blob.digest,
        manifest_digest: manifest_blob.digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_set_the_config_as_a_build_would() {
        let state = apply_changes(&[
            "ENV A=1".into(),
            "ENV B=$A-2".into(),
            "CMD echo hi".into(),
            "WORKDIR /app".into(),
            "USER nobody".into(),
            "EXPOSE 80/tcp".into(),
        ])
        .unwrap();
        let c = &state.config;
        assert_eq!(
            c.env,
            [("A".into(), "1".into()), ("B".into(), "1-2".into())]
        );
        assert_eq!(
            c.cmd.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into(), "echo hi".into()][..])
        );
        assert_eq!(c.working_dir, "/app");
        assert_eq!(c.user, "nobody");
        assert_eq!(c.exposed_ports, ["80/tcp"]);
    }

    #[test]
    fn only_docker_import_instructions_are_accepted() {
        for bad in [
            "RUN true",
            "COPY a b",
            "FROM x",
            "ARG X",
            "ENV A=1\nENV B=2",
        ] {
            let e = apply_changes(&[bad.to_string()]).unwrap_err();
            assert!(matches!(e, ImportError::Change { .. }), "{bad}: {e}");
        }
    }
}
