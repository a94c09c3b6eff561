//! `kiln build`, `kiln graph` and `kiln debug parse`: from a Dockerfile to an image, a graph
//! or an AST dump.

use crate::cli::{BuildArgs, CompressionArg, GraphArgs, NetworkArg, ProgressMode, SnapshotterArg};
use crate::{cache_io, outputs, render, root};
use anyhow::{Context, Result, anyhow, bail};
use kiln_cache::Store;
use kiln_executor::snapshot::Snapshotter;
use kiln_parser::{BaseImage, BaseResolver, LowerOptions};
use kiln_solver::progress::Progress;
use kiln_solver::{
    Backend, Entitlement, Entitlements, NetworkDefault, SecretSource, SolveError, SolveOptions,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// A Dockerfile as read: where from (for messages and the ignore file) and its text.
struct DockerfileSource {
    path: PathBuf,
    display: String,
    text: String,
}

fn read_dockerfile(context: &Path, file: Option<&Path>) -> Result<DockerfileSource> {
    match file {
        Some(p) if p == Path::new("-") => {
            let bytes = kiln_image::limits::read_capped(
                std::io::stdin(),
                kiln_parser::MAX_DOCKERFILE_SIZE,
                "the Dockerfile from stdin",
            )?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("the Dockerfile from stdin is not UTF-8 text"))?;
            Ok(DockerfileSource {
                path: context.join("Dockerfile"),
                display: "Dockerfile".into(),
                text,
            })
        }
        _ => {
            let path = file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| default_dockerfile(context));
            // A Dockerfile inside the context is one of its files: a symlink there resolves
            // inside the context (a planted `Dockerfile -> /etc/shadow` must not be read and
            // echoed in a parse error). One outside it is the user's explicit choice.
            let real = kiln_cache::resolve::resolve_context_path(context, &path)
                .with_context(|| format!("finding the Dockerfile {}", path.display()))?;
            let meta = std::fs::metadata(&real)
                .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
            if !meta.is_file() {
                bail!("the Dockerfile {}: not a regular file", path.display());
            }
            let file = std::fs::File::open(&real)
                .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
            let what = format!("the Dockerfile {}", path.display());
            let bytes =
                kiln_image::limits::read_capped(file, kiln_parser::MAX_DOCKERFILE_SIZE, what)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("{}: the Dockerfile is not UTF-8 text", path.display()))?;
            let display = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            Ok(DockerfileSource {
                path,
                display,
                text,
            })
        }
    }
}

/// `CONTEXT/Dockerfile`, or `CONTEXT/dockerfile` when only that exists (docker's fallback).
fn default_dockerfile(context: &Path) -> PathBuf {
    let upper = context.join("Dockerfile");
    let lower = context.join("dockerfile");
    if std::fs::symlink_metadata(&upper).is_err() && std::fs::symlink_metadata(&lower).is_ok() {
        lower
    } else {
        upper
    }
}

/// `K=V` pairs; a bare `K` takes its value from the environment (skipped when unset).
fn parse_build_args(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            Some(_) => bail!("--build-arg {a:?}: expected KEY=VALUE"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.push((a.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow!("--label {l:?}: expected KEY=VALUE")),
        })
        .collect()
}

fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let mut id = None;
    let mut source = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => source = Some(SecretSource::File(PathBuf::from(v))),
            Some(("env", v)) => source = Some(SecretSource::Env(v.to_string())),
            Some(("type", "file" | "env")) => {}
            _ => bail!("--secret {spec:?}: expected id=ID,src=FILE or id=ID,env=NAME"),
        }
    }
    let id = id.ok_or_else(|| anyhow!("--secret {spec:?}: missing id="))?;
    let source = source.unwrap_or_else(|| SecretSource::Env(id.clone()));
    Ok((id, source))
}

/// `--allow` values.
fn parse_entitlements(allow: &[String]) -> Result<Entitlements> {
    let mut entitlements = Entitlements::default();
    for name in allow {
        let entitlement = name
            .parse::<Entitlement>()
            .map_err(|e| anyhow!("--allow {name}: {e}"))?;
        entitlements.allow(entitlement);
    }
    Ok(entitlements)
}

/// `-t` names, normalized (`app` → `app:latest`).
pub fn parse_tags(tags: &[String]) -> Result<Vec<String>> {
    tags.iter()
        .map(|t| kiln_cache::normalize_ref(t).map_err(|e| anyhow!("-t {t}: {e}")))
        .collect()
}

/// `-o` specs.
pub fn parse_outputs(outputs: &[String]) -> Result<Vec<outputs::OutputSpec>> {
    outputs
        .iter()
        .map(|o| outputs::OutputSpec::parse(o))
        .collect()
}

/// Parses and lowers the Dockerfile, with base images looked up in `store`.
fn lower(
    df: &DockerfileSource,
    build_args: Vec<(String, String)>,
    target: Option<String>,
    resolver: &dyn BaseResolver,
) -> Result<kiln_parser::BuildGraph> {
    let ast = kiln_parser::parse(&df.text).map_err(|e| anyhow!(e.render(&df.display, &df.text)))?;
    let opts = LowerOptions {
        build_args,
        target,
        platform: None,
    };
    kiln_parser::lower(&ast, &opts, resolver).map_err(|e| anyhow!(e.render(&df.display, &df.text)))
}

/// Base images for lowering come from the store; a missing one (or every one, with
/// `--pull`) is pulled from its registry first, so the solver finds it there.
struct StoreResolver {
    store: Store,
    pull: bool,
    registry: kiln_registry::RegistryOptions,
}

impl BaseResolver for StoreResolver {
    fn resolve(&self, reference: &str) -> Result<BaseImage, String> {
        let name = kiln_cache::normalize_ref(reference).map_err(|e| e.to_string())?;
        let mut found = self.store.get_ref(&name).map_err(|e| e.to_string())?;
        if found.is_none() || self.pull {
            let pulled = kiln_registry::pull_into_store(&self.store, reference, &self.registry)
                .map_err(|e| format!("pulling {reference}: {e}"))?;
            found = Some(pulled.image);
        }
        let Some(image) = found else {
            return Err(format!("{reference}: not in the store"));
        };
        let (_, config) = kiln_solver::backend::read_image(&self.store, reference, &image)?;
        let state = kiln_solver::image_config::state_from_config(&config);
        Ok(BaseImage {
            env: state.config.env,
            working_dir: state.config.working_dir,
            user: state.config.user,
            shell: state.config.shell.unwrap_or_default(),
            on_build: state.config.on_build,
        })
    }
}

/// The epoch every time in the image is clamped to: `--timestamp keep` keeps real times,
/// else SOURCE_DATE_EPOCH from `--build-arg` or the environment, else 0.
fn source_date_epoch(args: &BuildArgs, build_args: &[(String, String)]) -> Result<Option<i64>> {
    if let Some(t) = &args.timestamp {
        if t == "keep" {
            return Ok(None);
        }
        bail!("--timestamp {t:?}: the only value is `keep`");
    }
    let raw = build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|v| !v.is_empty());
    match raw {
        None => Ok(Some(0)),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
    }
}

pub fn run(root_flag: Option<PathBuf>, args: BuildArgs) -> Result<ExitCode> {
    let context = args.context.clone();
    if !context.is_dir() {
        if std::fs::symlink_metadata(&context).is_err() {
            bail!(
                "build context {}: the path does not exist",
                context.display()
            );
        }
        bail!("build context {}: not a directory", context.display());
    }
    let df = read_dockerfile(&context, args.file.as_deref())?;
    let build_args = parse_build_args(&args.build_args)?;
    let labels = parse_labels(&args.labels)?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<Vec<_>>>()?;
    let tags = parse_tags(&args.tags)?;
    let outputs = parse_outputs(&args.outputs)?;
    let epoch = source_date_epoch(&args, &build_args)?;
    let entitlements = parse_entitlements(&args.allow)?;
    kiln_executor::cgroup::configure(resource_limits(&args)?);
    let cache_from = args
        .cache_from
        .iter()
        .map(|c| cache_io::CacheSpec::parse(c))
        .collect::<Result<Vec<_>>>()?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|c| cache_io::CacheSpec::parse(c))
        .collect::<Result<Vec<_>>>()?;

    // Named in the debug hint of a failed RUN, so the printed command finds the store.
    let root_given = root_flag.clone();
    let store = root::open_store(root_flag)?;
    let _lock = store.lock_shared().context("locking the store")?;
    // Leftovers of killed builds (their scratch lock died with them) go before this one
    // adds its own; a failure here costs disk, not this build.
    match store.reclaim_scratch() {
        Ok(r) if r.entries > 0 => eprintln!(
            "removed {} leftovers of interrupted kiln processes ({})",
            r.entries,
            crate::images::human_size(r.bytes)
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: removing leftovers of interrupted builds: {e}"),
    }
    let host = kiln_parser::lower::host_platform();
    let host_name = match &host.variant {
        Some(v) => format!("{}/{}/{v}", host.os, host.architecture),
        None => format!("{}/{}", host.os, host.architecture),
    };
    if let Some(p) = &args.platform
        && p != &host_name
        && p != &format!("{}/{}", host.os, host.architecture)
    {
        bail!("--platform {p}: kiln builds for this machine's platform ({host_name}) only");
    }
    let registry = kiln_registry::RegistryOptions {
        insecure_registries: args.insecure_registries.clone(),
        platform: Some(host_name),
        ..kiln_registry::RegistryOptions::default()
    };
    let resolver = StoreResolver {
        store: store.clone(),
        pull: args.pull,
        registry: registry.clone(),
    };
    let graph = lower(&df, build_args, args.target.clone(), &resolver)?;
    for spec in &cache_from {
        // A cache that cannot be read costs time, not correctness: warn and build.
        match cache_io::import(&store, spec, &registry) {
            Ok(n) => eprintln!("imported {n} cache records from {spec:?}"),
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }

    let options = SolveOptions {
        context_dir: context.clone(),
        dockerfile: df.path.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        compression: match args.compression {
            CompressionArg::Gzip => kiln_image::Compression::Gzip,
            CompressionArg::Zstd => kiln_image::Compression::Zstd,
            CompressionArg::None => kiln_image::Compression::None,
        },
        source_date_epoch: epoch,
        network: match args.network {
            NetworkArg::Default | NetworkArg::Host => NetworkDefault::Host,
            NetworkArg::None => NetworkDefault::None,
        },
        entitlements,
        snapshotter: match args.snapshotter {
            SnapshotterArg::Overlay => Some(Snapshotter::Overlay),
            SnapshotterArg::Copy => Some(Snapshotter::Copy),
            SnapshotterArg::Auto => None,
        },
        secrets,
        explain_cache: args.explain_cache,
        platform: graph.platform.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let backend = Arc::new(Backend::new(store.clone(), options).map_err(|e| anyhow!(e.message))?);
    let mode = render::resolve_mode(args.progress);
    let result = runtime.block_on(async {
        let (progress, rx) = Progress::channel();
        let renderer = tokio::spawn(render::render(mode, rx));
        let result = kiln_solver::build(backend, graph, labels, progress).await;
        let _ = renderer.await;
        result
    });
    let image = match result {
        Ok(image) => image,
        Err(e) => {
            eprint!("{}", render_solve_error(&e, &df));
            if let Some(id) = &e.debug_image {
                let root = match &root_given {
                    Some(dir) => format!(" --root {}", shell_word(&dir.display().to_string())),
                    None => String::new(),
                };
                eprintln!("to debug: kiln{root} run --rm -it {id} sh");
            }
            return Ok(ExitCode::FAILURE);
        }
    };

    for tag in &tags {
        store
            .set_ref(
                tag,
                kiln_cache::ImageRef {
                    config: image.config_digest.clone(),
                    manifest: image.manifest_digest.clone(),
                },
            )
            .with_context(|| format!("naming the image {tag}"))?;
    }
    if tags.is_empty() {
        // Listed as `<none>` by `kiln images`, as docker lists an unnamed build.
        store
            .record_untagged(kiln_cache::ImageRef {
                config: image.config_digest.clone(),
                manifest: image.manifest_digest.clone(),
            })
            .context("recording the untagged image")?;
    }
    for output in &outputs {
        output.write(
            &store,
            &image.manifest_digest,
            tags.first().map(String::as_str),
        )?;
    }
    for spec in &cache_to {
        let keys = if spec.max() {
            &image.all_keys
        } else {
            &image.image_keys
        };
        let n = cache_io::export(&store, spec, keys, &registry)?;
        eprintln!("exported {n} cache records to {spec:?}");
    }
    if args.push || outputs.contains(&outputs::OutputSpec::Registry) {
        if tags.is_empty() {
            bail!("--push needs a name: add -t REGISTRY/NAME:TAG");
        }
        for tag in &tags {
            let pushed = kiln_registry::push_from_store(&store, tag, tag, &registry)
                .with_context(|| format!("pushing {tag}"))?;
            eprintln!("pushed {}: digest {}", pushed.reference, pushed.digest);
        }
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &image.config_digest)
            .with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    match mode {
        ProgressMode::Quiet => println!("{}", image.config_digest),
        ProgressMode::Json => {
            let done = serde_json::json!({
                "event": "image",
                "id": image.config_digest,
                "manifest": image.manifest_digest,
                "tags": tags,
            });
            println!("{done}");
        }
        _ => {
            eprintln!("writing image {}", image.config_digest);
            for tag in &tags {
                eprintln!("naming to {tag}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// BuildKit-style failure report: the Dockerfile lines around the step, then the error.
fn render_solve_error(e: &SolveError, df: &DockerfileSource) -> String {
    let mut out = String::new();
    if let Some(span) = e.span {
        let lines: Vec<&str> = df.text.lines().collect();
        out.push_str(&format!(
            "{}:{}\n--------------------\n",
            df.display, span.line
        ));
        let first = span.line.saturating_sub(2).max(1);
        let last = span.end_line.max(span.line).min(lines.len());
        for n in first..=last {
            let marker = if n >= span.line { ">>>" } else { "   " };
            let text = lines.get(n - 1).copied().unwrap_or("");
            out.push_str(&format!(" {n:>4} | {marker} {text}\n"));
        }
        out.push_str("--------------------\n");
    }
    if !e.output_tail.is_empty() {
        out.push_str("last output:\n");
        for line in &e.output_tail {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("ERROR: failed to solve: {}\n", e.message));
    // A RUN that switches users or chowns fails in its own words (EINVAL, "invalid user"):
    // say what kiln knows about the cause.
    if kiln_executor::userns::only_own_id_mapped() && !e.message.contains("is not mapped") {
        out.push_str(&format!(
            "hint: {}\n",
            kiln_executor::userns::single_id_hint()
        ));
    }
    out
}

pub fn graph(args: GraphArgs) -> Result<ExitCode> {
    let df = read_dockerfile(&args.context, args.file.as_deref())?;
    let build_args = parse_build_args(&args.build_args)?;
    let graph = lower(&df, build_args, args.target, &kiln_parser::EmptyResolver)?;
    print!("{}", kiln_parser::to_dot(&graph));
    Ok(ExitCode::SUCCESS)
}

pub fn debug_parse(file: &Path) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    // BuildKit's parser stage only: unknown flags and instructions are dumped, not judged.
    let ast = kiln_parser::parse_syntax(&text).map_err(|e| anyhow!(e.render(&name, &text)))?;
    print!("{}", kiln_parser::dump_ast(&ast));
    Ok(ExitCode::SUCCESS)
}

/// `--memory`, `--cpus`, `--pids-limit` → the limits every RUN gets.
fn resource_limits(args: &BuildArgs) -> Result<kiln_executor::cgroup::Limits> {
    let mut l = kiln_executor::cgroup::Limits::default();
    if let Some(m) = &args.memory {
        l.memory = Some(crate::images::parse_size("--memory", m)?);
    }
    if let Some(c) = args.cpus {
        if !(c.is_finite() && c > 0.0) {
            bail!("--cpus {c}: must be a positive number of CPUs");
        }
        l.cpus = Some(c);
    }
    match args.pids_limit {
        None => {}
        Some(n) if n < 0 => l.pids = None,
        Some(0) => bail!("--pids-limit 0: a RUN needs at least one process (-1: no limit)"),
        Some(n) => l.pids = Some(n as u64),
    }
    Ok(l)
}
