//! `kiln build`, `kiln graph` and `kiln debug parse`: flags into a
//! [`kiln_build::BuildRequest`], then the facade's result rendered (its notices, a failed
//! step with its Dockerfile lines, the image ID and names).

use crate::cli::{BuildArgs, CompressionArg, GraphArgs, NetworkArg, ProgressMode, SnapshotterArg};
use crate::{render, root, sizes};
use anyhow::{Context, Result, anyhow, bail};
use kiln_build::verify::Verdict;
use kiln_build::{BuildError, BuildRequest, Dockerfile, Exports, Notice};
use kiln_executor::snapshot::Snapshotter;
use kiln_solver::progress::Progress;
use kiln_solver::{Entitlement, Entitlements, NetworkDefault, SecretSource, SolveError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

/// `--memory`, `--cpus`, `--pids-limit` → the limits every RUN gets.
fn resource_limits(args: &BuildArgs) -> Result<kiln_executor::cgroup::Limits> {
    let mut l = kiln_executor::cgroup::Limits::default();
    if let Some(m) = &args.memory {
        l.memory = Some(sizes::parse_size("--memory", m)?);
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

/// The flags of `kiln build` as a request and what to do with its image, checked in the
/// order the flags' errors have always been reported.
fn request(args: &BuildArgs) -> Result<(BuildRequest, Exports)> {
    let dockerfile = Dockerfile::read_for_build(&args.context, args.file.as_deref())?;
    let build_args = parse_build_args(&args.build_args)?;
    let labels = parse_labels(&args.labels)?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<Vec<_>>>()?;
    let tags = args
        .tags
        .iter()
        .map(|t| kiln_store::normalize_ref(t).map_err(|e| anyhow!("-t {t}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let outputs = args
        .outputs
        .iter()
        .map(|o| o.parse())
        .collect::<Result<Vec<_>, BuildError>>()?;
    let keep = match args.timestamp.as_deref() {
        None => false,
        Some("keep") => true,
        Some(t) => bail!("--timestamp {t:?}: the only value is `keep`"),
    };
    let source_date_epoch = kiln_build::source_date_epoch(keep, &build_args)?;
    let entitlements = parse_entitlements(&args.allow)?;
    let limits = resource_limits(args)?;
    let cache_specs = |specs: &[String]| {
        specs
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<_>, BuildError>>()
    };
    let cache_from = cache_specs(&args.cache_from)?;
    let cache_to = cache_specs(&args.cache_to)?;
    let request = BuildRequest {
        context: args.context.clone(),
        dockerfile,
        build_args,
        target: args.target.clone(),
        labels,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        compression: match args.compression {
            CompressionArg::Gzip => kiln_image::Compression::Gzip,
            CompressionArg::Zstd => kiln_image::Compression::Zstd,
            CompressionArg::None => kiln_image::Compression::None,
        },
        source_date_epoch,
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
        limits,
        platform: args.platform.clone(),
        pull: args.pull,
        insecure_registries: args.insecure_registries.clone(),
        cache_from,
    };
    let exports = Exports {
        tags,
        outputs,
        cache_to,
        push: args.push,
        iidfile: args.iidfile.clone(),
    };
    Ok((request, exports))
}

/// What the facade did, in kiln's words on stderr.
fn say(notice: Notice) {
    match notice {
        Notice::Reclaimed(r) => eprintln!(
            "removed {} leftovers of interrupted kiln processes ({})",
            r.entries,
            sizes::human_size(r.bytes)
        ),
        Notice::ReclaimFailed(e) => {
            eprintln!("warning: removing leftovers of interrupted builds: {e}")
        }
        Notice::CacheImported { spec, records } => {
            eprintln!("imported {records} cache records from {spec:?}")
        }
        Notice::CacheImportFailed(e) => eprintln!("warning: {:#}", anyhow::Error::from(e)),
        Notice::OutputWritten(kiln_build::OutputSpec::Oci { dest, tar: false }) => {
            eprintln!("exported an OCI layout directory to {}", dest.display())
        }
        Notice::OutputWritten(kiln_build::OutputSpec::Oci { dest, tar: true }) => eprintln!(
            "exported an OCI archive (tar) to {}; add tar=false for an OCI layout directory",
            dest.display()
        ),
        Notice::OutputWritten(kiln_build::OutputSpec::Docker { dest }) => eprintln!(
            "exported a docker archive (for docker load) to {}",
            dest.display()
        ),
        Notice::OutputWritten(kiln_build::OutputSpec::Registry) => {}
        Notice::CacheExported { spec, records } => {
            eprintln!("exported {records} cache records to {spec:?}")
        }
        Notice::Pushed { reference, digest } => eprintln!("pushed {reference}: digest {digest}"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `kiln build`: `--verify-reproducible` checks before anything is named.
pub fn run(root_flag: Option<PathBuf>, args: BuildArgs) -> Result<ExitCode> {
    let (request, exports) = request(&args)?;
    // Named in the debug hint of a failed RUN, so the printed command finds the store.
    let root_given = root_flag.clone();
    let store = root::open_store(root_flag)?;
    let _lock = store.lock_shared().context("locking the store")?;
    let mode = render::resolve_mode(args.progress);
    if args.verify_reproducible {
        return verify(&store, &request, &exports, mode);
    }
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let (progress, rx) = Progress::channel();
        let renderer = tokio::spawn(render::render(mode, rx));
        let result = kiln_build::build(&store, &request, progress, &say).await;
        let _ = renderer.await;
        result
    });
    let image = match result {
        Ok(image) => image,
        Err(BuildError::Solve(e)) => {
            eprint!("{}", render_solve_error(&e, &request.dockerfile));
            if let Some(id) = &e.debug_image {
                let root = match &root_given {
                    Some(dir) => format!(" --root {}", shell_word(&dir.display().to_string())),
                    None => String::new(),
                };
                eprintln!("to debug: kiln{root} run --rm -it {id} sh");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let registry = request.registry_options()?;
    kiln_build::export(&store, &store, &image, &exports, &registry, &say)?;
    match mode {
        ProgressMode::Quiet => println!("{}", image.config_digest),
        ProgressMode::Json => {
            let done = serde_json::json!({
                "event": "image",
                "id": image.config_digest,
                "manifest": image.manifest_digest,
                "tags": exports.tags,
            });
            println!("{done}");
        }
        _ => {
            eprintln!("writing image {}", image.config_digest);
            for tag in &exports.tags {
                eprintln!("naming to {tag}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln build --verify-reproducible`: different builds print their differences (as
/// `kiln diff` does) and exit 1; the same image is named and exported as a plain build's.
fn verify(
    store: &kiln_store::Store,
    request: &BuildRequest,
    exports: &Exports,
    mode: ProgressMode,
) -> Result<ExitCode> {
    eprintln!("verify-reproducible: building twice with --no-cache in scratch stores");
    let verdict = runtime()?.block_on(kiln_build::verify::verify(store, request, exports, &say))?;
    match verdict {
        Verdict::Failed {
            build,
            events,
            error,
        } => {
            render::replay_plain(events);
            match error {
                BuildError::Solve(e) => eprint!("{}", render_solve_error(&e, &request.dockerfile)),
                e => eprintln!("error: {:#}", anyhow::Error::from(e)),
            }
            eprintln!("verify-reproducible: build {build} of 2 failed");
            Ok(ExitCode::FAILURE)
        }
        Verdict::Differs {
            comparison,
            manifests: [a, b],
        } => {
            print!("{}", comparison.render_text());
            eprintln!(
                "verify-reproducible: not reproducible: two --no-cache builds gave manifests {a} and {b}"
            );
            Ok(ExitCode::from(crate::diff_cmd::DIFFERENT))
        }
        Verdict::Reproducible(image) => {
            match mode {
                ProgressMode::Quiet => println!("{}", image.config_digest),
                ProgressMode::Json => {}
                _ => {
                    eprintln!(
                        "verify-reproducible: both builds gave the same manifest digest {}",
                        image.manifest_digest
                    );
                    eprintln!(
                        "writing image {} (image ID: its config digest)",
                        image.config_digest
                    );
                    for tag in &exports.tags {
                        eprintln!("naming to {tag}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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
fn render_solve_error(e: &SolveError, df: &Dockerfile) -> String {
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
    let df = Dockerfile::read(&args.context, args.file.as_deref())?;
    let build_args = parse_build_args(&args.build_args)?;
    let graph = df.lower(build_args, args.target, &kiln_parser::EmptyResolver)?;
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
