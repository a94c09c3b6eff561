//! RUN: keyed by its command as expanded and everything that shapes the process (env,
//! directory, user, the network it really gets, mounts, inline files, platform, the names
//! `--add-host` adds, `--ulimit`, `--shm-size`); executed in the sandbox with the layers
//! below as its rootfs and `out` as the upper dir.

use super::mounts::{Keep, mount_spec};
use super::{KeyContext, KeyParts, SourceKey, StepContext, stage_key};
use crate::entitlements::effective_network;
use crate::error::{SolveError, StepError};
use crate::named::{NamedContexts, OpenNamed};
use crate::progress::{Event, OutputTail, Stream};
use kiln_executor::sandbox::{self, OutputStream, RunSpec, Ulimit};
use kiln_parser::{
    CacheSharing, InlineFile, Mount, MountKind, NetworkMode, Platform, RunOp, SecurityMode, Source,
};
use serde::Serialize;
use std::path::Path;

/// The hashed parameters of a RUN: `{"run": ..., "platform": ...}`.
#[derive(Serialize)]
struct RunKey<'a> {
    run: RunFields<'a>,
    platform: PlatformKey<'a>,
}

#[derive(Serialize)]
struct RunFields<'a> {
    argv: &'a [String],
    shell_form: bool,
    env: &'a [(String, String)],
    workdir: &'a str,
    user: &'a str,
    /// The network the RUN gets ([`effective_network`]), not the one it asked for.
    network: &'static str,
    /// Absent for the sandbox, so the keys of every RUN written before `--security`
    /// existed stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<&'static str>,
    mounts: Vec<MountKey<'a>>,
    files: Vec<FileKey<'a>>,
    /// `--add-host`: the names only, as BuildKit clears the IPs before hashing an exec op
    /// (the name decides what the RUN can reach by name; where it points is this
    /// machine's business). Absent without the flag, so every other key stays the same.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_hosts: Vec<&'a str>,
    /// `--ulimit`, in BuildKit's exec op too; absent without the flag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ulimits: Vec<UlimitKey<'a>>,
    /// `--shm-size` in bytes: BuildKit's Dockerfile frontend adds a `/dev/shm` tmpfs mount
    /// of that size to the exec op; absent without the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    shm_size: Option<u64>,
}

/// One `--ulimit` as BuildKit's `pb.Ulimit` holds it: -1 for unlimited.
#[derive(Serialize)]
struct UlimitKey<'a> {
    name: &'a str,
    soft: i64,
    hard: i64,
}

fn ulimit_key(u: &Ulimit) -> UlimitKey<'_> {
    let n = |v: u64| i64::try_from(v).unwrap_or(-1);
    UlimitKey {
        name: &u.name,
        soft: n(u.soft),
        hard: n(u.hard),
    }
}

#[derive(Serialize)]
struct PlatformKey<'a> {
    os: &'a str,
    architecture: &'a str,
    variant: Option<&'a str>,
}

#[derive(Serialize)]
struct MountKey<'a> {
    kind: MountKindKey<'a>,
    target: &'a str,
    source: Option<&'a str>,
    from: Option<SourceKey<'a>>,
    readonly: bool,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Serialize)]
enum MountKindKey<'a> {
    Bind,
    Cache {
        id: &'a str,
        sharing: &'static str,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret {
        id: &'a str,
        env: Option<&'a str>,
        required: bool,
    },
    Ssh {
        id: &'a str,
        required: bool,
    },
}

#[derive(Serialize)]
struct FileKey<'a> {
    path: &'a str,
    content: &'a str,
    mode: u32,
}

fn network_name(network: NetworkMode) -> &'static str {
    match network {
        NetworkMode::Default => "Default",
        NetworkMode::None => "None",
        NetworkMode::Host => "Host",
    }
}

fn mount_key(mount: &Mount) -> MountKey<'_> {
    let Mount {
        kind,
        target,
        source,
        from,
        readonly,
        mode,
        uid,
        gid,
    } = mount;
    let kind = match kind {
        MountKind::Bind => MountKindKey::Bind,
        MountKind::Cache { id, sharing } => MountKindKey::Cache {
            id,
            sharing: match sharing {
                CacheSharing::Shared => "Shared",
                CacheSharing::Private => "Private",
                CacheSharing::Locked => "Locked",
            },
        },
        MountKind::Tmpfs { size } => MountKindKey::Tmpfs { size: *size },
        MountKind::Secret { id, env, required } => MountKindKey::Secret {
            id,
            env: env.as_deref(),
            required: *required,
        },
        MountKind::Ssh { id, required } => MountKindKey::Ssh {
            id,
            required: *required,
        },
    };
    MountKey {
        kind,
        target,
        source: source.as_deref(),
        from: from.as_ref().map(SourceKey::of),
        readonly: *readonly,
        mode: *mode,
        uid: *uid,
        gid: *gid,
    }
}

/// The key parameters of `run`; a stage or image it mounts adds that stage's or image's
/// key, a context bind the checksum of what it selects.
pub(crate) fn key(
    run: &RunOp,
    kc: &KeyContext,
    parts: &mut KeyParts,
) -> Result<serde_json::Value, StepError> {
    let RunOp {
        argv,
        shell_form,
        env,
        workdir,
        user,
        network,
        security,
        mounts,
        files,
        // How this machine reaches the network, not what the step makes (BuildKit clears
        // `ProxyEnv` before hashing the exec op too).
        proxy_env: _,
    } = run;
    for mount in mounts {
        match &mount.from {
            Some(Source::Stage(i)) => {
                parts
                    .inputs
                    .push((format!("stage {i}"), stage_key(kc, *i)?));
            }
            Some(Source::Named(name)) => match kc.session.named.get(name)? {
                OpenNamed::Dir(context) => {
                    let pattern = mount.source.clone().unwrap_or_else(|| ".".into());
                    let sum = NamedContexts::checksum(context, &pattern, &[], &mut parts.files)?;
                    parts
                        .inputs
                        .push((format!("context {name} {pattern}"), sum));
                }
                OpenNamed::Image(_) => {
                    let image = kc.session.resolve_named_image(name)?;
                    parts.inputs.push((format!("context {name}"), image.key));
                }
            },
            // The image's content, not only its name: a tag that moves must miss.
            Some(Source::Image(reference)) => {
                let image = kc.session.resolve_image(reference)?;
                parts.inputs.push((format!("image {reference}"), image.key));
            }
            None if mount.kind == MountKind::Bind => {
                let pattern = mount.source.clone().unwrap_or_else(|| ".".into());
                let sum = kc.session.checksum(&pattern, &[], &mut parts.files)?;
                parts.inputs.push((format!("context {pattern}"), sum));
            }
            _ => {}
        }
    }
    let Platform {
        os,
        architecture,
        variant,
    } = &kc.session.options.platform;
    let options = &kc.session.options.run_options;
    let key = RunKey {
        run: RunFields {
            argv,
            shell_form: *shell_form,
            env,
            workdir,
            user,
            network: network_name(effective_network(*network, kc.session.options.network)),
            security: match security {
                SecurityMode::Sandbox => None,
                SecurityMode::Insecure => Some("Insecure"),
            },
            mounts: mounts.iter().map(mount_key).collect(),
            files: files
                .iter()
                .map(
                    |InlineFile {
                         path,
                         content,
                         mode,
                     }| FileKey {
                        path,
                        content,
                        mode: *mode,
                    },
                )
                .collect(),
            extra_hosts: options
                .extra_hosts
                .iter()
                .map(|h| h.host.as_str())
                .collect(),
            ulimits: options.ulimits.iter().map(ulimit_key).collect(),
            shm_size: options.shm_size,
        },
        platform: PlatformKey {
            os,
            architecture,
            variant: variant.as_deref(),
        },
    };
    serde_json::to_value(key).map_err(StepError::KeySerialize)
}

/// Runs `run` in the sandbox on the layers below, writing into `out`.
pub(crate) async fn exec(run: &RunOp, ctx: &StepContext<'_>, out: &Path) -> Result<(), SolveError> {
    let (session, current, id, progress) = (ctx.session, ctx.current, ctx.id, ctx.progress);
    let work = session.store.snapshot_staging().map_err(|e| ctx.at(e))?;
    let mut env = run.env.clone();
    for (k, v) in &run.proxy_env {
        if !env.iter().any(|(e, _)| e == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    // As BuildKit's exec: the first ssh mount is the agent, unless the stage chose one.
    let first_ssh = run
        .mounts
        .iter()
        .find(|m| matches!(m.kind, MountKind::Ssh { .. }));
    if let Some(m) = first_ssh
        && !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK")
    {
        env.push(("SSH_AUTH_SOCK".to_string(), m.target.clone()));
    }
    let mut mounts = Vec::new();
    // Secret files and cache locks live until the process is done.
    let mut keep: Vec<Keep> = Vec::new();
    for mount in &run.mounts {
        if let Some(spec) =
            mount_spec(session, mount, ctx.inputs, &mut env, &mut keep).map_err(|e| ctx.at(e))?
        {
            mounts.push(spec);
        }
    }
    let network = match effective_network(run.network, session.options.network) {
        NetworkMode::None => sandbox::Network::None,
        NetworkMode::Host | NetworkMode::Default => sandbox::Network::Host,
    };
    if run.network == NetworkMode::Host && network == sandbox::Network::None {
        progress.send(Event::Log {
            id,
            stream: Stream::Info,
            line: "--network none: this RUN --network=host runs without a network".to_string(),
        });
    }
    let spec = RunSpec {
        argv: run.argv.clone(),
        env,
        cwd: run.workdir.clone(),
        user: run.user.clone(),
        hostname: "buildkitsandbox".to_string(),
        network,
        lowers: current.lowers(),
        upper: out.to_path_buf(),
        work: work.path().to_path_buf(),
        mounts,
        files: run
            .files
            .iter()
            .map(|f| (f.path.clone(), f.content.clone().into_bytes(), f.mode))
            .collect(),
        snapshotter: session.snapshotter(progress).await,
        // Entitled by --allow security.insecure (crate::entitlements checked it).
        insecure: run.security == SecurityMode::Insecure,
        options: session.options.run_options.clone(),
    };
    let mut tail = OutputTail::default();
    let progress2 = progress.clone();
    let outcome = sandbox::run(spec, |line: sandbox::OutputLine| {
        let stream = match line.stream {
            OutputStream::Stdout => Stream::Stdout,
            OutputStream::Stderr => Stream::Stderr,
        };
        let text = String::from_utf8_lossy(&line.line).into_owned();
        tail.push(&text);
        progress2.send(Event::Log {
            id,
            stream,
            line: text,
        });
    })
    .await
    .map_err(|e| ctx.at(e))?;
    drop(keep);
    // The work directory (the overlay's workdir, mount points) is removed in the
    // background: nothing reads it again, and removing directories waits on the disk (with
    // `discard`, on a TRIM), which the next step need not. The runtime waits for it before
    // kiln exits; a kiln killed first leaves it to the next start's reclaim of `tmp/`.
    tokio::task::spawn_blocking(move || drop(work));
    if !outcome.success() {
        let mut err = ctx.at(StepError::ProcessFailed {
            command: run.argv.join(" "),
            exit_code: outcome.exit_code,
        });
        err.output_tail = tail.into_lines();
        return Err(err);
    }
    kiln_executor::runc_compat::add_runc_mount_dirs(&current.lowers(), out)
        .map_err(|e| ctx.at(StepError::FinishRun(e)))?;
    Ok(())
}
