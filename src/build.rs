//! `kiln build`, `kiln graph` and `kiln debug parse`: flags into a
//! [`kiln_build::BuildRequest`], then the facade's result rendered (its notices, a failed
//! step with its Dockerfile lines, the image ID and names); `kiln build --check` renders
//! the build checks' findings alone.

use crate::cli::{BuildArgs, CompressionArg, GraphArgs, NetworkArg, ProgressArg, SnapshotterArg};
use anyhow::{Context, Result, anyhow};
use kiln_build::git_context::{self, GitContext};
use kiln_build::verify::Verdict;
use kiln_build::{BuildError, BuildRequest, Dockerfile, Exports, Notice, flags, report};
use kiln_executor::sandbox::RunOptions;
use kiln_executor::snapshot::Snapshotter;
use kiln_progressui::ProgressMode;
use kiln_solver::NetworkDefault;
use kiln_solver::progress::Progress;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The flags of `kiln build` as a request and what to do with its image, checked in the
/// order the flags' errors have always been reported.
/// A git URL context comes checked out (`git`): its directory is the context.
fn request(args: &BuildArgs, git: Option<GitContext>) -> Result<(BuildRequest, Exports)> {
    let dockerfile = match &git {
        Some(g) => {
            Dockerfile::read_for_build(&g.dir, g.dockerfile(args.file.as_deref()).as_deref())?
        }
        None => Dockerfile::read_for_build(&args.context, args.file.as_deref())?,
    };
    let context = git
        .as_ref()
        .map_or_else(|| args.context.clone(), |g| g.dir.clone());
    let build_args = flags::build_args(&args.build_args)?;
    let labels = flags::labels(&args.labels)?;
    let secrets = args.secrets.iter().map(|s| flags::secret(s));
    let secrets = secrets.collect::<Result<Vec<_>, _>>()?;
    let ssh = args.ssh.iter().map(|s| flags::ssh(s));
    let ssh = ssh.collect::<Result<Vec<_>, _>>()?;
    let tags = args
        .tags
        .iter()
        .map(|t| kiln_store::normalize_ref(t).map_err(|e| anyhow!("-t {t}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let outputs = parse_all(&args.outputs)?;
    let keep = flags::keep_timestamps(args.timestamp.as_deref())?;
    let source_date_epoch = kiln_build::source_date_epoch(keep, &build_args)?;
    let entitlements = flags::entitlements(&args.allow)?;
    let limits = flags::limits(args.memory.as_deref(), args.cpus, args.pids_limit)?;
    let run_options = RunOptions {
        extra_hosts: flags::extra_hosts(&args.add_hosts)?,
        ulimits: flags::ulimits(&args.ulimits)?,
        shm_size: args.shm_size.as_deref().map(flags::shm_size).transpose()?,
    };
    let cache_from = parse_all(&args.cache_from)?;
    let cache_to = parse_all(&args.cache_to)?;
    let named_contexts = args.build_contexts.iter();
    let named_contexts = named_contexts
        .map(|c| kiln_build::contexts::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let request = BuildRequest {
        context,
        git_context: git.map(std::sync::Arc::new),
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
        ssh,
        explain_cache: args.explain_cache,
        limits,
        cgroup_parent: args
            .cgroup_parent
            .as_deref()
            .map(flags::cgroup_parent)
            .transpose()?,
        run_options,
        platform: args.platform.clone(),
        pull: args.pull,
        insecure_registries: args.insecure_registries.clone(),
        cache_from,
        remote: args
            .remote
            .as_deref()
            .map(kiln_build::farm::parse_endpoint)
            .transpose()?,
        named_contexts,
    };
    let exports = Exports {
        tags,
        outputs,
        cache_to,
        push: args.push,
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
    };
    Ok((request, exports))
}

/// What the facade did, in its words, on stderr.
fn say(notice: Notice) {
    if let Some(line) = notice.message() {
        eprintln!("{line}");
    }
}

/// [`say`] for a build shown in `mode`: with `--progress json` a notice that is data (a
/// build check's finding) is an event on stdout, with the other events.
fn sayer(mode: ProgressMode) -> impl Fn(Notice) + Sync {
    move |notice| match notice.json_event() {
        Some(event) if mode == ProgressMode::Json => println!("{event}"),
        _ => say(notice),
    }
}

/// The progress library's mode for the `--progress` flag's value.
fn progress_mode(flag: ProgressArg) -> ProgressMode {
    match flag {
        ProgressArg::Auto => ProgressMode::Auto,
        ProgressArg::Tty => ProgressMode::Tty,
        ProgressArg::Plain => ProgressMode::Plain,
        ProgressArg::Json => ProgressMode::Json,
        ProgressArg::Quiet => ProgressMode::Quiet,
    }
}

/// Each spec parsed (`-o`, `--cache-from`, `--cache-to`).
fn parse_all<T: std::str::FromStr<Err = BuildError>>(specs: &[String]) -> Result<Vec<T>> {
    Ok(specs.iter().map(|s| s.parse()).collect::<Result<_, _>>()?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `kiln build`: `--verify-reproducible` checks before anything is named.
pub fn run(root_flag: Option<PathBuf>, args: BuildArgs) -> Result<ExitCode> {
    // Named in the debug hint of a failed RUN, so the printed command finds the store.
    let root_given = root_flag.clone();
    // A git URL context is checked out (into the store's scratch, through its git cache)
    // before the flags are read; a local one keeps the order its errors always had.
    let (request, exports, store, _lock) = match git_context::parse(&args.context)? {
        Some(git) => {
            let store = kiln_build::open_store(root_flag)?;
            let lock = store.lock_shared().context("locking the store")?;
            // Its ssh agent, for a remote over ssh, is `--ssh default`'s.
            let ssh = args.ssh.iter().map(|s| flags::ssh(s));
            let ssh = ssh.collect::<Result<Vec<_>, _>>()?;
            let checkout = GitContext::checkout(&store, &git, &ssh)?;
            let (request, exports) = request(&args, Some(checkout))?;
            (request, exports, store, lock)
        }
        None => {
            let phase = kiln_base::phase::start("read Dockerfile, flags");
            let (request, exports) = request(&args, None)?;
            phase.end();
            let phase = kiln_base::phase::start("open and lock store");
            let store = kiln_build::open_store(root_flag)?;
            let lock = store.lock_shared().context("locking the store")?;
            phase.end();
            (request, exports, store, lock)
        }
    };
    let mode = kiln_progressui::resolve_mode(progress_mode(args.progress));
    if args.check {
        return check(&store, &request, mode);
    }
    if args.verify_reproducible {
        return verify(&store, &request, &exports, mode);
    }
    let say = sayer(mode);
    let phase = kiln_base::phase::start("start async runtime");
    let runtime = runtime()?;
    phase.end();
    let result = runtime.block_on(async {
        let (progress, rx) = Progress::channel();
        let renderer = tokio::spawn(kiln_progressui::render(mode, rx));
        let result = kiln_build::build(&store, &request, progress, &say).await;
        let _ = renderer.await;
        result
    });
    let image = match result {
        Ok(image) => image,
        Err(BuildError::Solve(e)) => {
            eprint!("{}", report::failed_step(&e, &request.dockerfile));
            if let Some(line) = report::debug_command(&e, root_given.as_deref()) {
                eprintln!("{line}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let registry = request.registry_options(None);
    let phase = kiln_base::phase::start("export (name the image)");
    kiln_build::export(&store, &store, &image, &exports, &registry, &say)?;
    phase.end();
    match mode {
        ProgressMode::Quiet => println!("{}", image.id()),
        ProgressMode::Json => {
            let done = serde_json::json!({
                "event": "image",
                "id": image.id(),
                "manifest": image.manifest_digest,
                "tags": exports.tags,
            });
            println!("{done}");
        }
        _ => {
            match &image.index {
                Some(index) => eprintln!("writing image index {index}"),
                None => eprintln!("writing image {}", image.config_digest),
            }
            for tag in &exports.tags {
                eprintln!("naming to {tag}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln build --check`: the findings (as a build's warnings), then a count; exit 1 when
/// there are any, and the lowering's error when the Dockerfile would not build.
fn check(
    store: &kiln_store::Store,
    request: &BuildRequest,
    mode: ProgressMode,
) -> Result<ExitCode> {
    let say = sayer(mode);
    let (report, error) = kiln_build::check(store, request, &say)?;
    for finding in &report.findings {
        say(Notice::Check {
            file: request.dockerfile.display.clone(),
            finding: finding.clone(),
        });
    }
    if let Some(e) = error {
        return Err(e.into());
    }
    if mode != ProgressMode::Json && mode != ProgressMode::Quiet {
        eprintln!("{}", report.summary());
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
            kiln_progressui::replay_plain(events);
            match error {
                BuildError::Solve(e) => eprint!("{}", report::failed_step(&e, &request.dockerfile)),
                e => eprintln!("error: {:#}", anyhow::Error::from(e)),
            }
            eprintln!("verify-reproducible: build {build} of 2 failed");
            Ok(ExitCode::FAILURE)
        }
        Verdict::Differs {
            diff,
            digests: [a, b],
        } => {
            print!("{}", diff.render_text());
            let platforms = diff.differing_platforms();
            if platforms.is_empty() {
                eprintln!(
                    "verify-reproducible: not reproducible: two --no-cache builds gave manifests {a} and {b}"
                );
            } else {
                eprintln!(
                    "verify-reproducible: not reproducible on {}: two --no-cache builds gave indexes {a} and {b}",
                    kiln_build::index::platform_list(platforms)
                );
            }
            Ok(ExitCode::from(crate::diff_cmd::DIFFERENT))
        }
        Verdict::Reproducible(image) => {
            match mode {
                ProgressMode::Quiet => println!("{}", image.id()),
                ProgressMode::Json => {}
                _ => {
                    match &image.index {
                        Some(index) => {
                            eprintln!(
                                "verify-reproducible: both builds gave the same index digest {index}"
                            );
                            eprintln!("writing image index {index}");
                        }
                        None => {
                            eprintln!(
                                "verify-reproducible: both builds gave the same manifest digest {}",
                                image.manifest_digest
                            );
                            eprintln!(
                                "writing image {} (image ID: its config digest)",
                                image.config_digest
                            );
                        }
                    }
                    for tag in &exports.tags {
                        eprintln!("naming to {tag}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn graph(args: GraphArgs) -> Result<ExitCode> {
    let df = Dockerfile::read(&args.context, args.file.as_deref())?;
    let build_args = flags::build_args(&args.build_args)?;
    // `kiln graph` prints the graph and nothing else, as before the warning existed.
    let opts = kiln_parser::LowerOptions {
        build_args,
        target: args.target,
        ..Default::default()
    };
    let graph = df.lower(opts, &kiln_parser::EmptyResolver, None, &|_| {})?;
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
