//! Executing a layer step that missed the cache: RUN in the sandbox, COPY/ADD through the
//! copier, WORKDIR as a directory. Each fills `out`, an empty layer directory.

use crate::backend::{Backend, SecretSource};
use crate::entitlements::effective_network;
use crate::error::SolveError;
use crate::progress::{Event, OutputTail, Progress, Stream};
use crate::secret::SecretFile;
use crate::stage::{StageInputs, StageResult, blocking, find_input, lowers_of};
use kiln_executor::copy::{CopyRequest, SourceRoot, SourceSpec, copy_into_layer};
use kiln_executor::layered::LayeredFs;
use kiln_executor::sandbox::{self, MountKind as SandboxMount, MountSpec, OutputStream, RunSpec};
use kiln_image::ExternalContent;
use kiln_parser::{CopyOp, CopySource, MountKind, NetworkMode, Op, RunOp, Source, Step, WorkdirOp};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What [`execute`] left in `out`.
pub(crate) enum Executed {
    /// The layer directory; for a metadata tree, where its placeholders' bytes are.
    Done(ExternalContent),
    /// The metadata tree did not fit on the tmpfs: run the step again on disk.
    TmpfsFull,
}

/// Fills `out` for `step`. With `metadata_tree`, a COPY stages placeholders there.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute(
    backend: &Arc<Backend>,
    step: &Step,
    current: &StageResult,
    inputs: &StageInputs,
    out: &Path,
    metadata_tree: bool,
    id: usize,
    progress: &Progress,
) -> Result<Executed, SolveError> {
    let at = |m: String| SolveError::at(step.span, &step.source, m);
    match &step.op {
        Op::Copy(copy) => {
            let mut req = copy_request(backend, copy, current, inputs).map_err(at)?;
            req.stage_contents = metadata_tree;
            let out = out.to_path_buf();
            blocking(move || match copy_into_layer(&req, &out) {
                Ok(report) => Ok(Executed::Done(report.content)),
                Err(e) if metadata_tree && e.is_out_of_space() => Ok(Executed::TmpfsFull),
                Err(e) => Err(e.to_string()),
            })
            .await
            .map_err(at)
        }
        Op::Workdir(w) => {
            let w = w.clone();
            let lowers = current.lowers();
            let out = out.to_path_buf();
            blocking(move || make_workdir(lowers, &w, &out))
                .await
                .map_err(at)?;
            Ok(Executed::Done(ExternalContent::new()))
        }
        Op::Run(run) => {
            run_step(backend, step, run, current, inputs, out, id, progress).await?;
            Ok(Executed::Done(ExternalContent::new()))
        }
        _ => Ok(Executed::Done(ExternalContent::new())),
    }
}

fn copy_request(
    backend: &Backend,
    copy: &CopyOp,
    current: &StageResult,
    inputs: &StageInputs,
) -> Result<CopyRequest, String> {
    let from = match &copy.from {
        Source::Context => SourceRoot::Dir {
            root: backend.context_dir().to_path_buf(),
            filter: Some(backend.context_filter()),
        },
        Source::Stage(i) => {
            let stage = find_input(inputs, *i).map_err(|e| e.message)?;
            SourceRoot::Layers(LayeredFs::new(stage.lowers()))
        }
        Source::Image(reference) => {
            let image = backend.resolve_image(reference)?;
            SourceRoot::Layers(LayeredFs::new(lowers_of(&image.layers)))
        }
    };
    let sources = copy
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Path(p) => SourceSpec::Path(p.clone()),
            CopySource::Url(u) => SourceSpec::Url(u.clone()),
            CopySource::Heredoc { name, content } => SourceSpec::Inline {
                name: name.clone(),
                content: content.clone().into_bytes(),
            },
        })
        .collect();
    Ok(CopyRequest {
        sources,
        from,
        dest: copy.dest.clone(),
        workdir: copy.workdir.clone(),
        target: LayeredFs::new(current.lowers()),
        chown: copy.chown.clone(),
        chmod: copy.chmod.clone(),
        add: copy.add,
        unpack: copy.unpack,
        checksum: copy.checksum.clone(),
        parents: copy.parents,
        excludes: copy.exclude.clone(),
        link: copy.link,
        stage_contents: false,
    })
}

/// WORKDIR: `mkdir -p` as the current USER, mode 0755. Nothing to do when the directory
/// exists (an empty layer); otherwise existing parents are repeated with their own metadata
/// (as an overlay copy-up would) and the missing ones created.
fn make_workdir(lowers: Vec<PathBuf>, w: &WorkdirOp, out: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let view = LayeredFs::new(lowers);
    let resolved = view
        .resolve(&w.path, true)
        .map_err(|e| format!("WORKDIR {}: {e}", w.path))?;
    let comps = kiln_executor::layered::components(&resolved);
    let mut existing = Vec::with_capacity(comps.len());
    let mut inside = String::new();
    for comp in &comps {
        inside.push('/');
        inside.push_str(comp);
        match view.metadata(&inside).map_err(|e| e.to_string())? {
            Some(e) if e.is_dir() => existing.push(Some(e)),
            Some(_) => return Err(format!("mkdir {inside}: not a directory")),
            None => existing.push(None),
        }
    }
    if existing.iter().all(Option::is_some) {
        return Ok(());
    }
    let read = |p: &str| {
        view.read_file(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let owner = kiln_executor::sandbox::user::resolve_user(
        &w.user,
        &read("/etc/passwd"),
        &read("/etc/group"),
    )
    .map_err(|e| e.to_string())?;
    let mut inside = String::new();
    for (comp, existing) in comps.iter().zip(existing) {
        inside.push('/');
        inside.push_str(comp);
        let host = out.join(inside.trim_start_matches('/'));
        std::fs::create_dir(&host).map_err(|e| format!("mkdir {inside}: {e}"))?;
        let (mode, uid, gid, mtime) = match existing {
            Some(e) => (
                e.mode(),
                e.uid(),
                e.gid(),
                Some(filetime::FileTime::from_last_modification_time(&e.metadata)),
            ),
            None => (0o755, owner.uid, owner.gid, None),
        };
        std::os::unix::fs::chown(&host, Some(uid), Some(gid))
            .map_err(|e| format!("chown {inside}: {e}"))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {inside}: {e}"))?;
        if let Some(t) = mtime {
            filetime::set_file_mtime(&host, t).map_err(|e| format!("utime {inside}: {e}"))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    backend: &Arc<Backend>,
    step: &Step,
    run: &RunOp,
    current: &StageResult,
    inputs: &StageInputs,
    out: &Path,
    id: usize,
    progress: &Progress,
) -> Result<(), SolveError> {
    let at = |m: String| SolveError::at(step.span, &step.source, m);
    let work = backend
        .store
        .snapshot_staging()
        .map_err(|e| at(e.to_string()))?;
    let mut env = run.env.clone();
    let mut mounts = Vec::new();
    // Secret files and cache locks live until the process is done.
    let mut keep: Vec<Keep> = Vec::new();
    for mount in &run.mounts {
        if let Some(spec) = mount_spec(backend, mount, inputs, &mut env, &mut keep).map_err(at)? {
            mounts.push(spec);
        }
    }
    let network = match effective_network(run.network, backend.options.network) {
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
        snapshotter: backend.snapshotter(progress).await,
        // Entitled by --allow security.insecure (crate::entitlements checked it).
        insecure: run.security == kiln_parser::SecurityMode::Insecure,
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
    .map_err(|e| at(e.to_string()))?;
    drop(keep);
    if !outcome.success() {
        let command = run.argv.join(" ");
        let mut err = at(format!(
            "process \"{command}\" did not complete successfully: exit code: {}",
            outcome.exit_code
        ));
        err.output_tail = tail.into_lines();
        return Err(err);
    }
    kiln_executor::runc_compat::add_runc_mount_dirs(&current.lowers(), out)
        .map_err(|e| at(format!("finishing the RUN layer: {e}")))?;
    Ok(())
}

/// Something a mount needs kept alive (a secret file, a held lock) until the process ends.
type Keep = Box<dyn Send>;

/// The directory of a cache mount, created on first use (seeded from `from=`/`source=`
/// when given, then given the mount's mode and owner) and published atomically.
///
/// Every user holds the cache's lock file: shared for `sharing=shared`, exclusive for
/// `locked` (waiting its turn). `private` takes the exclusive lock without waiting and,
/// when another build holds the cache, gets a fresh throwaway directory instead, as
/// BuildKit gives a private cache to a second writer.
fn cache_mount_dir(
    backend: &Backend,
    mount: &kiln_parser::Mount,
    id: &str,
    sharing: kiln_parser::CacheSharing,
    inputs: &StageInputs,
    keep: &mut Vec<Keep>,
) -> Result<PathBuf, String> {
    use kiln_parser::CacheSharing;
    use rustix::fs::FlockOperation;
    use sha2::Digest;
    let err = |what: &str, e: &dyn std::fmt::Display| format!("cache mount {id}: {what}: {e}");
    let base = backend.store.root().join("cachemounts");
    std::fs::create_dir_all(&base).map_err(|e| err("creating", &e))?;
    let name = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    let lock = std::fs::File::create(base.join(format!("{name}.lock")))
        .map_err(|e| err("lock file", &e))?;
    let op = match sharing {
        CacheSharing::Shared => FlockOperation::LockShared,
        CacheSharing::Locked => FlockOperation::LockExclusive,
        CacheSharing::Private => FlockOperation::NonBlockingLockExclusive,
    };
    let dir = match rustix::fs::flock(&lock, op) {
        Ok(()) => {
            keep.push(Box::new(lock));
            base.join(&name)
        }
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let private =
                tempfile::tempdir_in(&backend.scratch).map_err(|e| err("private copy", &e))?;
            let path = private.path().join("cache");
            keep.push(Box::new(private));
            path
        }
        Err(e) => return Err(err("locking", &e)),
    };
    if dir.exists() {
        return Ok(dir);
    }
    let staging = tempfile::tempdir_in(&base).map_err(|e| err("creating", &e))?;
    let fresh = staging.path().join("cache");
    let seed = match &mount.from {
        Some(Source::Stage(i)) => Some(find_input(inputs, *i).map_err(|e| e.message)?.lowers()),
        Some(Source::Image(reference)) => {
            Some(lowers_of(&backend.resolve_image(reference)?.layers))
        }
        _ => None,
    };
    match seed {
        Some(lowers) => {
            let source = mount.source.clone().unwrap_or_else(|| "/".into());
            LayeredFs::new(sub_lowers(lowers, &source).map_err(|e| err("seeding", &e))?)
                .materialize(&fresh)
                .map_err(|e| err("seeding", &e))?;
        }
        None => std::fs::create_dir(&fresh).map_err(|e| err("creating", &e))?,
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        &fresh,
        std::fs::Permissions::from_mode(mount.mode.unwrap_or(0o755)),
    )
    .map_err(|e| err("chmod", &e))?;
    std::os::unix::fs::chown(&fresh, mount.uid.or(Some(0)), mount.gid.or(Some(0)))
        .map_err(|e| err("chown", &e))?;
    // Another build may have published it meanwhile: theirs wins, ours goes with staging.
    if std::fs::rename(&fresh, &dir).is_err() && !dir.exists() {
        return Err(err("publishing", &"rename failed"));
    }
    Ok(dir)
}

/// The directories of `lowers` that hold `source` (a path inside the stack), bottom first:
/// a bind of a subdirectory of a stage.
///
/// The layers were written by build steps: `source` is resolved inside the stack (its
/// symlinks with the stack as `/`, `..` clamped there) and then found layer by layer
/// without following any symlink, so neither `source=../../..` nor a `/x -> /` a step left
/// can make the mount a directory of the host.
fn sub_lowers(lowers: Vec<PathBuf>, source: &str) -> Result<Vec<PathBuf>, String> {
    let resolved = LayeredFs::new(lowers.clone())
        .resolve(source, true)
        .map_err(|e| format!("bind source {source}: {e}"))?;
    if resolved == "/" {
        return Ok(lowers);
    }
    kiln_executor::diff::merged_dirs(&lowers, &resolved)
        .map_err(|e| format!("bind source {source}: {e}"))
}

/// The sandbox mount for `mount`, or `None` when it is only an environment variable.
fn mount_spec(
    backend: &Backend,
    mount: &kiln_parser::Mount,
    inputs: &StageInputs,
    env: &mut Vec<(String, String)>,
    keep: &mut Vec<Keep>,
) -> Result<Option<MountSpec>, String> {
    let target = mount.target.clone();
    let source = mount.source.clone().unwrap_or_else(|| "/".into());
    let kind = match &mount.kind {
        MountKind::Bind => match &mount.from {
            Some(Source::Stage(i)) => {
                let stage = find_input(inputs, *i).map_err(|e| e.message)?;
                SandboxMount::Layers {
                    lowers: sub_lowers(stage.lowers(), &source)?,
                    readonly: mount.readonly,
                }
            }
            Some(Source::Image(reference)) => {
                let image = backend.resolve_image(reference)?;
                SandboxMount::Layers {
                    lowers: sub_lowers(lowers_of(&image.layers), &source)?,
                    readonly: mount.readonly,
                }
            }
            _ => {
                let host = kiln_cache::resolve_in_root(backend.context_dir(), &source)
                    .map_err(|e| e.to_string())?;
                if host.is_dir() {
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
                    let copy = tempfile::NamedTempFile::new_in(&backend.scratch)
                        .map_err(|e| format!("bind {source}: {e}"))?;
                    std::fs::copy(&host, copy.path()).map_err(|e| format!("bind {source}: {e}"))?;
                    let path = copy.path().to_path_buf();
                    keep.push(Box::new(copy));
                    SandboxMount::Bind {
                        host: path,
                        readonly: false,
                    }
                }
            }
        },
        MountKind::Cache { id, sharing } => SandboxMount::Cache {
            host: cache_mount_dir(backend, mount, id, *sharing, inputs, keep)?,
        },
        MountKind::Tmpfs { size } => SandboxMount::Tmpfs { size: *size },
        MountKind::Secret {
            id,
            env: env_name,
            required,
        } => {
            let found = backend.options.secrets.iter().find(|(sid, _)| sid == id);
            let value = match found {
                Some((_, SecretSource::File(path))) => std::fs::read(path)
                    .map_err(|e| format!("secret {id}: reading {}: {e}", path.display()))?,
                Some((_, SecretSource::Env(name))) => std::env::var(name)
                    .map_err(|_| format!("secret {id}: environment variable {name} is not set"))?
                    .into_bytes(),
                None if *required => {
                    return Err(format!(
                        "secret {id}: not provided (--secret id={id},src=FILE)"
                    ));
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
            let file = SecretFile::new(&value).map_err(|e| format!("secret {id}: {e}"))?;
            let host = file.path();
            keep.push(Box::new(file));
            SandboxMount::Secret {
                host,
                mode: mount.mode.unwrap_or(0o400),
                uid: mount.uid.unwrap_or(0),
                gid: mount.gid.unwrap_or(0),
            }
        }
        MountKind::Ssh { .. } => {
            return Err("RUN --mount=type=ssh is not supported by kiln yet".to_string());
        }
    };
    Ok(Some(MountSpec { target, kind }))
}
