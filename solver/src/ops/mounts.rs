//! RUN's mounts: what each `--mount` becomes in the sandbox (a stage, image or context
//! directory, a cache directory shared between builds under a lock, a tmpfs, a secret
//! file), and what must stay alive until the process ends.

use crate::error::StepError;
use crate::named::OpenNamed;
use crate::result::{StageInputs, find_input, lowers_of};
use crate::secret::SecretFile;
use crate::session::BuildSession;
use crate::ssh::{AgentForward, AgentSocket};
use kiln_executor::layered::LayeredFs;
use kiln_executor::sandbox::{MountKind as SandboxMount, MountSpec};
use kiln_parser::{MountKind, Source};
use kiln_store::{CacheMountDir, CacheSharing};
use std::path::PathBuf;

/// Something a mount needs kept alive (a secret file, a held lock) until the process ends.
pub(crate) type Keep = Box<dyn Send>;

/// The directory of a cache mount, held (see [`kiln_store::Store::cache_mount`] for the
/// sharing modes and locks) until the process ends; a new one is seeded from
/// `from=`/`source=` when given, then given the mount's mode and owner by the store.
fn cache_mount_dir(
    session: &BuildSession,
    mount: &kiln_parser::Mount,
    id: &str,
    sharing: kiln_parser::CacheSharing,
    inputs: &StageInputs,
    keep: &mut Vec<Keep>,
) -> Result<PathBuf, StepError> {
    let sharing = match sharing {
        kiln_parser::CacheSharing::Shared => CacheSharing::Shared,
        kiln_parser::CacheSharing::Private => CacheSharing::Private,
        kiln_parser::CacheSharing::Locked => CacheSharing::Locked,
    };
    let new = match session.store.cache_mount(id, sharing)? {
        CacheMountDir::Ready(held) => {
            let dir = held.path().to_path_buf();
            keep.push(Box::new(held));
            return Ok(dir);
        }
        CacheMountDir::New(new) => new,
    };
    let seed = match &mount.from {
        Some(Source::Stage(i)) => Some(find_input(inputs, *i)?.lowers()),
        Some(Source::Image(reference)) => {
            Some(lowers_of(&session.resolve_image(reference)?.layers))
        }
        Some(Source::Named(name)) => match session.named.get(name)? {
            OpenNamed::Dir(context) => Some(vec![context.root().to_path_buf()]),
            OpenNamed::Image(_) => Some(lowers_of(&session.resolve_named_image(name)?.layers)),
        },
        _ => None,
    };
    if let Some(lowers) = seed {
        let source = mount.source.clone().unwrap_or_else(|| "/".into());
        let seed = sub_lowers(lowers, &source).map_err(|e| StepError::CacheSeed {
            id: id.to_string(),
            source: Box::new(e),
        })?;
        LayeredFs::new(seed)
            .materialize(&new.path())
            .map_err(|source| StepError::CacheSeedCopy {
                id: id.to_string(),
                source,
            })?;
    }
    let held = new.publish(
        mount.mode.unwrap_or(0o755),
        mount.uid.unwrap_or(0),
        mount.gid.unwrap_or(0),
    )?;
    let dir = held.path().to_path_buf();
    keep.push(Box::new(held));
    Ok(dir)
}

/// The directories of `lowers` that hold `source` (a path inside the stack), bottom first:
/// a bind of a subdirectory of a stage.
///
/// The layers were written by build steps: `source` is resolved inside the stack (its
/// symlinks with the stack as `/`, `..` clamped there) and then found layer by layer
/// without following any symlink, so neither `source=../../..` nor a `/x -> /` a step left
/// can make the mount a directory of the host.
fn sub_lowers(lowers: Vec<PathBuf>, source: &str) -> Result<Vec<PathBuf>, StepError> {
    let resolved = LayeredFs::new(lowers.clone())
        .resolve(source, true)
        .map_err(|e| StepError::BindSource {
            path: source.to_string(),
            source: e,
        })?;
    if resolved == "/" {
        return Ok(lowers);
    }
    kiln_executor::layer_dir::merged_dirs(&lowers, &resolved).map_err(|e| {
        StepError::BindSourceLayers {
            path: source.to_string(),
            source: e,
        }
    })
}

/// The sandbox mount for `mount`, or `None` when it is only an environment variable.
pub(crate) fn mount_spec(
    session: &BuildSession,
    mount: &kiln_parser::Mount,
    inputs: &StageInputs,
    env: &mut Vec<(String, String)>,
    keep: &mut Vec<Keep>,
) -> Result<Option<MountSpec>, StepError> {
    let target = mount.target.clone();
    let source = mount.source.clone().unwrap_or_else(|| "/".into());
    let kind = match &mount.kind {
        MountKind::Bind => match &mount.from {
            Some(Source::Stage(i)) => {
                let stage = find_input(inputs, *i)?;
                SandboxMount::Layers {
                    lowers: sub_lowers(stage.lowers(), &source)?,
                    readonly: mount.readonly,
                }
            }
            Some(Source::Image(reference)) => {
                let image = session.resolve_image(reference)?;
                SandboxMount::Layers {
                    lowers: sub_lowers(lowers_of(&image.layers), &source)?,
                    readonly: mount.readonly,
                }
            }
            Some(Source::Named(name)) => match session.named.get(name)? {
                OpenNamed::Dir(context) => {
                    host_bind(session, context.root(), mount, &source, keep)?
                }
                OpenNamed::Image(_) => {
                    let image = session.resolve_named_image(name)?;
                    SandboxMount::Layers {
                        lowers: sub_lowers(lowers_of(&image.layers), &source)?,
                        readonly: mount.readonly,
                    }
                }
            },
            _ => host_bind(session, session.context_dir(), mount, &source, keep)?,
        },
        MountKind::Cache { id, sharing } => SandboxMount::Cache {
            host: cache_mount_dir(session, mount, id, *sharing, inputs, keep)?,
        },
        MountKind::Tmpfs { size } => SandboxMount::Tmpfs { size: *size },
        MountKind::Secret {
            id,
            env: env_name,
            required,
        } => {
            let found = session.options.secrets.iter().find(|(sid, _)| sid == id);
            let value = match found {
                Some((_, source)) => source.read(id)?,
                None if *required => {
                    return Err(StepError::SecretMissing { id: id.clone() });
                }
                // Like BuildKit: an optional secret that was not given is simply absent.
                None => return Ok(None),
            };
            if let Some(name) = env_name {
                env.push((name.clone(), String::from_utf8_lossy(&value).into_owned()));
            }
            if target.is_empty() {
                // `env=` alone: the secret is only an environment variable.
                return Ok(None);
            }
            // Never a file under the store or on a disk, and gone with kiln however kiln
            // ends (crate::secret).
            let file = SecretFile::new(&value).map_err(|source| StepError::SecretFile {
                id: id.clone(),
                source,
            })?;
            let host = file.path();
            keep.push(Box::new(file));
            SandboxMount::Secret {
                host,
                mode: mount.mode.unwrap_or(0o400),
                uid: mount.uid.unwrap_or(0),
                gid: mount.gid.unwrap_or(0),
            }
        }
        MountKind::Ssh { id, required } => {
            let ssh_err = |source| StepError::Ssh {
                id: id.clone(),
                source,
            };
            let agent = session.ssh_agent(id).map_err(ssh_err)?;
            let Some(AgentSocket {
                path: upstream,
                agent: key_agent,
            }) = agent
            else {
                if *required {
                    return Err(StepError::SshMissing { id: id.clone() });
                }
                // Like BuildKit: an optional agent that was not given is simply absent.
                return Ok(None);
            };
            let forward = AgentForward::start(
                &session.scratch,
                &upstream,
                mount.uid.unwrap_or(0),
                mount.gid.unwrap_or(0),
                mount.mode.unwrap_or(0o600),
            )
            .map_err(ssh_err)?;
            let host = forward.socket().to_path_buf();
            keep.push(Box::new(forward));
            if let Some(agent) = key_agent {
                keep.push(Box::new(agent));
            }
            // A socket ignores read-only mounts: connecting is not writing to the file.
            SandboxMount::Bind {
                host,
                readonly: true,
            }
        }
    };
    Ok(Some(MountSpec { target, kind }))
}

/// A bind of `source` in the directory `root` (the build context or a named one): a
/// directory as a lower dir whose writes are discarded, a file bound read-only or as a
/// private copy, so the directory stays as it is.
fn host_bind(
    session: &BuildSession,
    root: &std::path::Path,
    mount: &kiln_parser::Mount,
    source: &str,
    keep: &mut Vec<Keep>,
) -> Result<SandboxMount, StepError> {
    let host = kiln_context::resolve_in_root(root, source)?;
    Ok(if host.is_dir() {
        // Writes to a context bind are discarded, never written to the context.
        SandboxMount::Layers {
            lowers: vec![host],
            readonly: mount.readonly,
        }
    } else if mount.readonly {
        SandboxMount::Bind {
            host,
            readonly: true,
        }
    } else {
        // A writable file bind gets a private copy, so the context stays as it is.
        let bind_err = |e| StepError::BindCopy {
            path: source.to_string(),
            source: e,
        };
        let copy = tempfile::NamedTempFile::new_in(&session.scratch).map_err(bind_err)?;
        std::fs::copy(&host, copy.path()).map_err(bind_err)?;
        let path = copy.path().to_path_buf();
        keep.push(Box::new(copy));
        SandboxMount::Bind {
            host: path,
            readonly: false,
        }
    })
}
