//! `kiln run`: one process in an image's filesystem, in the same rootless sandbox as RUN,
//! and nothing kept.
//!
//! The image's layers are the sandbox's lower dirs (snapshots in the store, unpacked on
//! demand as for FROM); the process writes into a throwaway upper dir in the store's
//! scratch space, removed when the run ends (`docker run --rm`). Config defaults
//! (Entrypoint, Cmd, Env, WorkingDir, User) come from the image and are overridden the
//! way docker overrides them.
//!
//! The state before a failed RUN is runnable too: the build stores its config (with the
//! RUN's own environment, directory and user) as an untagged config blob
//! ([`store_debug_state`]) and prints its ID; [`open_image`] accepts such an ID, whose
//! layers are already snapshots. It lives until the next `kiln prune` removes the blob.

use crate::error::ImageError;
use crate::images::{image_layers, read_image};
use crate::result::{Layer, StageResult, lowers_of};
use crate::session::BuildSession;
use kiln_base::digest::{Digest, SHA256_PREFIX};
use kiln_executor::sandbox::{self, MountKind, MountSpec, Network, ProcessIo, RunOutcome, RunSpec};
use kiln_executor::snapshot::Snapshotter;
use kiln_image::ImageConfig;
use kiln_store::Store;
use std::path::PathBuf;

/// Why `kiln run` could not run the process (its own non-zero exit is not one of these).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: no such image (name, image ID or ID prefix)")]
    NoSuchImage(String),
    #[error("{reference}: {source}")]
    Image {
        reference: String,
        source: ImageError,
    },
    /// An ID prefix of several images, or a store that could not be read.
    #[error(transparent)]
    Lookup(#[from] kiln_store::LookupError),
    #[error("{0}")]
    Usage(String),
    #[error("preparing the container's scratch space: {0}")]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
}

impl RunError {
    /// The exit status `kiln run` ends with, as docker's: 126 when the command cannot be
    /// executed, 127 when it is not found, 125 for every failure of kiln's own (no such
    /// image, an unusable flag, a sandbox failure).
    pub fn exit_status(&self) -> u8 {
        match self {
            RunError::Sandbox(sandbox::SandboxError::Setup { step, message }) if step == "exec" => {
                if message.contains("not found") {
                    127
                } else {
                    126
                }
            }
            _ => 125,
        }
    }
}

/// An image ready to run: its config and its layers' snapshot dirs, bottom first.
pub struct RunnableImage {
    /// `sha256:` of the config (the image ID).
    pub id: String,
    pub config: ImageConfig,
    pub lowers: Vec<PathBuf>,
}

/// `-v HOST:CONTAINER[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub target: String,
    pub readonly: bool,
}

impl std::str::FromStr for Bind {
    type Err = String;

    fn from_str(spec: &str) -> Result<Bind, String> {
        let bad = |why: &str| format!("-v {spec:?}: {why} (expected HOST:CONTAINER[:ro])");
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, target, readonly) = match parts.as_slice() {
            [h, t] => (*h, *t, false),
            [h, t, "ro"] => (*h, *t, true),
            [h, t, "rw"] => (*h, *t, false),
            [_, _, o] => return Err(bad(&format!("unknown option {o:?}"))),
            _ => return Err(bad("wrong number of fields")),
        };
        if !host.starts_with('/') {
            // A bare name is a docker named volume; kiln has none.
            return Err(bad("the host path must be absolute"));
        }
        if !target.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        Ok(Bind {
            host: PathBuf::from(host),
            target: target.to_string(),
            readonly,
        })
    }
}

/// What `kiln run` changes from the image's config, docker's flags.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Arguments after the image: replace Cmd.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces Entrypoint (and drops the image's Cmd); `""` clears it.
    pub entrypoint: Option<String>,
    /// `-e`: set after the image's variables, a later one wins.
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub network_none: bool,
    pub binds: Vec<Bind>,
    pub io: ProcessIo,
    /// `None` detects one (overlayfs when usable), as a build does.
    pub snapshotter: Option<Snapshotter>,
}

/// Finds `reference`: a name, an image ID or ID prefix of a named image, or the full ID
/// of any config in the store whose layers are unpacked (the state before a failed RUN).
pub fn open_image(store: &Store, reference: &str) -> Result<RunnableImage, RunError> {
    let err = |source: ImageError| RunError::Image {
        reference: reference.to_string(),
        source,
    };
    // A prefix of two images is an error here too; only "not a named image" falls back
    // to the debug states below.
    let found = match store.find_image(reference) {
        Ok(found) => Some(found.image),
        Err(kiln_store::LookupError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(image) = found {
        let (manifest, config) = read_image(store, reference, &image).map_err(err)?;
        let layers = image_layers(store, &manifest, &config).map_err(err)?;
        return Ok(RunnableImage {
            id: image.config,
            config,
            lowers: lowers_of(&layers),
        });
    }
    // An image ID, with or without its `sha256:`.
    let hex = reference.strip_prefix(SHA256_PREFIX).unwrap_or(reference);
    let digest = match Digest::from_hex(hex) {
        Ok(d) if store.has_blob(d.as_str()) => d,
        _ => return Err(RunError::NoSuchImage(reference.to_string())),
    };
    let bytes = store
        .read_blob(digest.as_str())
        .map_err(|e| err(e.into()))?;
    let config = kiln_image::parse_config(&bytes).map_err(|e| err(ImageError::Config(e)))?;
    let mut layers = Vec::new();
    for diff_id in &config.rootfs.diff_ids {
        // Without a manifest there is no blob to unpack from: the snapshot must be there.
        let id = diff_id
            .strip_prefix(SHA256_PREFIX)
            .ok_or_else(|| err(ImageError::NotSha256DiffId(diff_id.clone())))?;
        if !store.has_snapshot(id) {
            return Err(err(ImageError::Pruned(diff_id.clone())));
        }
        layers.push(Layer {
            diff_id: diff_id.clone(),
            digest: String::new(),
            size: 0,
            media_type: String::new(),
            snapshot: store.snapshot_path(id)?,
        });
    }
    Ok(RunnableImage {
        id: digest.into_string(),
        config,
        lowers: lowers_of(&layers),
    })
}

/// The argv docker would run: `--entrypoint` replaces the image's Entrypoint and drops its
/// Cmd; arguments replace Cmd.
pub fn command_line(config: &ImageConfig, opts: &RunOptions) -> Result<Vec<String>, RunError> {
    let c = &config.config;
    let (entrypoint, default_cmd) = match &opts.entrypoint {
        Some(ep) if ep.is_empty() => (Vec::new(), Vec::new()),
        Some(ep) => (vec![ep.clone()], Vec::new()),
        None => (
            c.entrypoint.clone().unwrap_or_default(),
            c.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if opts.command.is_empty() {
        default_cmd
    } else {
        opts.command.clone()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(RunError::Usage(
            "no command: the image has no Entrypoint or Cmd; give one after the image".into(),
        ));
    }
    Ok(argv)
}

/// Runs the process and returns how it ended; the container's changes are gone by then.
pub async fn run_image(
    store: &Store,
    image: &RunnableImage,
    opts: &RunOptions,
) -> Result<RunOutcome, RunError> {
    let argv = command_line(&image.config, opts)?;
    let c = &image.config.config;
    let mut env: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    for (k, v) in &opts.env {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    let snapshotter = match opts.snapshotter {
        Some(s) => s,
        // Probed in this process's scratch: on the store's filesystem, reclaimed if killed.
        None => Snapshotter::detect(&store.scratch_dir()?).await.0,
    };
    // Both live in the store's scratch space and are removed when dropped: nothing the
    // process wrote survives the run.
    let upper = store.snapshot_staging()?;
    let work = store.snapshot_staging()?;
    let spec = RunSpec {
        argv,
        env,
        cwd: opts
            .workdir
            .clone()
            .or_else(|| c.working_dir.clone())
            .unwrap_or_default(),
        user: opts
            .user
            .clone()
            .or_else(|| c.user.clone())
            .unwrap_or_default(),
        hostname: image
            .id
            .trim_start_matches(SHA256_PREFIX)
            .chars()
            .take(12)
            .collect(),
        network: if opts.network_none {
            Network::None
        } else {
            Network::Host
        },
        lowers: image.lowers.clone(),
        upper: upper.path().to_path_buf(),
        work: work.path().to_path_buf(),
        mounts: opts
            .binds
            .iter()
            .map(|b| MountSpec {
                target: b.target.clone(),
                kind: MountKind::Bind {
                    host: b.host.clone(),
                    readonly: b.readonly,
                },
            })
            .collect(),
        files: Vec::new(),
        snapshotter,
        insecure: false,
        options: Default::default(),
    };
    let outcome = sandbox::run_with_io(spec, opts.io, |_| {}).await?;
    drop(upper);
    drop(work);
    Ok(outcome)
}

/// Stores the state a failed RUN started from as an untagged image config and returns
/// its ID: the stage's layers and config, with the RUN's own environment (ARGs included),
/// working directory and user, so `kiln run ID sh` opens a shell where the RUN ran.
pub(crate) fn store_debug_state(
    session: &BuildSession,
    current: &StageResult,
    run: &kiln_parser::RunOp,
) -> Result<String, kiln_store::StoreError> {
    let mut before = current.clone();
    let c = &mut before.state.config;
    c.env = run.env.clone();
    c.working_dir = run.workdir.clone();
    c.user = run.user.clone();
    let created = kiln_image::oci::rfc3339(session.options.source_date_epoch.unwrap_or(0));
    let config = crate::oci_config::image_config(&before, &session.options.platform, &created, &[]);
    let blob = session
        .store
        .put_blob_bytes(&kiln_image::oci::canonical_json(&config))?;
    Ok(blob.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse_like_docker() {
        let b: Bind = "/srv:/data:ro".parse().unwrap();
        assert_eq!(
            b,
            Bind {
                host: "/srv".into(),
                target: "/data".into(),
                readonly: true
            }
        );
        assert!(!"/srv:/data".parse::<Bind>().unwrap().readonly);
        assert!("vol:/data".parse::<Bind>().is_err());
        assert!("/srv:data".parse::<Bind>().is_err());
        assert!("/srv:/data:z".parse::<Bind>().is_err());
    }

    #[test]
    fn entrypoint_and_cmd_are_overridden_like_docker() {
        let mut config: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["ep"],"Cmd":["c"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let run = |opts: RunOptions| command_line(&config, &opts).unwrap();
        assert_eq!(run(RunOptions::default()), ["ep", "c"]);
        let args = RunOptions {
            command: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(run(args.clone()), ["ep", "x"]);
        let ep = RunOptions {
            entrypoint: Some("sh".into()),
            ..Default::default()
        };
        assert_eq!(run(ep), ["sh"]);
        config.config.entrypoint = None;
        config.config.cmd = None;
        assert!(command_line(&config, &RunOptions::default()).is_err());
    }
}
