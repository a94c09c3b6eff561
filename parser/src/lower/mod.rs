//! Typed Dockerfile → [`BuildGraph`] (BuildKit `dockerfile2llb/convert.go`, minus LLB).
//!
//! Owns stage resolution (names case-insensitive, indexes, images, and the named contexts
//! that replace either: `named`), global and stage ARG scoping with `--build-arg`
//! precedence and the automatic platform ARGs, ENV/WORKDIR/USER/SHELL inheritance, which
//! values are expanded, ONBUILD triggers, `--target` selection and pruning, and the history
//! text of every step. [`lower_checked`] also runs the build checks that need this state
//! (`checks`, over [`crate::lint`]); what they find never changes the graph.

use std::collections::{BTreeSet, HashMap};

use crate::error::with_suggestion;
use crate::expand::{EnvList, Lexer};
use crate::graph::*;
use crate::instructions::{Command, Dockerfile, StageDecl};
use crate::lint::Finding;
use crate::lint::dispatch::IgnoreCheck;
use kiln_base::gopath::clean as clean_path;

mod bases;
mod checks;
mod error;
mod named;
mod steps;
pub use error::LowerError;
use error::{MAX_CARRIED_ENV_BYTES, MAX_STAGE_ENV_BYTES, at, env_too_large};
use steps::StageLowering;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The platform of this machine, with Go's architecture names (BUILDPLATFORM).
pub fn host_platform() -> Platform {
    Platform::host()
}

/// Where a stage starts from, before pruning.
#[derive(Clone, Debug)]
enum BaseRef {
    Scratch,
    Image(String),
    Stage(usize),
    /// A named context the build holds as an image, by name.
    Named(String),
}

/// A resolved `--from`/`from=`.
#[derive(Clone, Debug)]
enum FromRef {
    Stage(usize),
    Image(String),
    /// A named context that is not an image reference, by name.
    Named(String),
}

/// What a stage hands to stages built FROM it.
#[derive(Clone, Debug, Default)]
struct StageResult {
    env: EnvList,
    workdir: String,
    user: String,
    shell: Vec<String>,
    build_args: Vec<(String, Option<String>)>,
    /// A WORKDIR of this stage or a stage it is built from has run (WorkdirRelativePath).
    workdir_set: bool,
}

struct Ctx<'a> {
    df: &'a Dockerfile,
    opts: &'a LowerOptions,
    resolver: &'a dyn BaseResolver,
    lexer: Lexer,
    global: EnvList,
    bases: Vec<BaseRef>,
    platforms: Vec<Option<String>>,
    images: HashMap<String, BaseImage>,
    /// Environment bytes carried by the steps lowered so far ([`MAX_CARRIED_ENV_BYTES`]).
    carried_env: usize,
    /// What the build checks found so far ([`crate::lint`]).
    findings: Vec<Finding>,
    /// The `.dockerignore` judge for CopyIgnoredFile, when the caller has one.
    ignore: Option<&'a dyn IgnoreCheck>,
}

/// What a lowering that also runs the build checks is told.
#[derive(Default, Clone, Copy)]
pub struct CheckOptions<'a> {
    /// Lower every stage, not only those the target needs (`kiln build --check`, as
    /// BuildKit's lint request does); the graph then holds them all.
    pub all_stages: bool,
    /// Judges COPY/ADD sources against the context's `.dockerignore`.
    pub ignore: Option<&'a dyn IgnoreCheck>,
}

/// Lowers a parsed Dockerfile into the graph for `opts.target` (the last stage if none).
pub fn lower(
    df: &Dockerfile,
    opts: &LowerOptions,
    resolver: &dyn BaseResolver,
) -> Result<BuildGraph, LowerError> {
    lower_checked(df, opts, resolver, CheckOptions::default()).map(|(graph, _)| graph)
}

/// [`lower`], also giving the findings of the build checks that BuildKit runs while
/// converting (FROM lines and the instructions of the stages lowered; the file-level
/// ones are [`crate::lint::check_file`]'s), unfiltered and in the order found.
pub fn lower_checked(
    df: &Dockerfile,
    opts: &LowerOptions,
    resolver: &dyn BaseResolver,
    check: CheckOptions<'_>,
) -> Result<(BuildGraph, Vec<Finding>), LowerError> {
    if df.stages.is_empty() {
        return Err(LowerError::NoStages);
    }
    let target_platform = opts.platform.clone().unwrap_or_else(host_platform);
    let build_platform = host_platform();
    let lexer = Lexer::new(df.escape);
    let target_idx = resolve_target(df, opts)?;

    // Automatic platform args, then global ARGs (build args win, defaults are expanded).
    let mut global = EnvList::new();
    let target_name = df.stages[target_idx].name.clone().unwrap_or_default();
    let defaults: [(&str, String); 9] = [
        ("BUILDPLATFORM", build_platform.to_string()),
        ("BUILDOS", build_platform.os.clone()),
        ("BUILDARCH", build_platform.architecture.clone()),
        (
            "BUILDVARIANT",
            build_platform.variant.clone().unwrap_or_default(),
        ),
        ("TARGETPLATFORM", target_platform.to_string()),
        ("TARGETOS", target_platform.os.clone()),
        ("TARGETARCH", target_platform.architecture.clone()),
        (
            "TARGETVARIANT",
            target_platform.variant.clone().unwrap_or_default(),
        ),
        ("TARGETSTAGE", target_name),
    ];
    for (k, v) in defaults {
        let v = build_arg(opts, k).unwrap_or(v);
        global.set(k, &v);
    }
    let automatic = global.clone();
    for ins in &df.meta_args {
        if let Command::Arg(decls) = &ins.command {
            for d in decls {
                let value = match build_arg(opts, &d.key) {
                    Some(v) => Some(v),
                    None => match &d.value {
                        Some(v) => Some(
                            lexer
                                .process_word(v, &global)
                                .map_err(|e| at(ins.span, e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    global.set(&d.key, &v);
                }
            }
            if global.bytes() > MAX_STAGE_ENV_BYTES {
                return Err(env_too_large(ins.span));
            }
        }
    }

    let mut ctx = Ctx {
        df,
        opts,
        resolver,
        lexer,
        global,
        bases: Vec::new(),
        platforms: Vec::new(),
        images: HashMap::new(),
        carried_env: 0,
        findings: Vec::new(),
        ignore: check.ignore,
    };
    ctx.check_default_bases(&automatic);
    ctx.resolve_bases()?;
    if let Some((key, _)) = ctx.stage_override(target_idx) {
        return Err(at(
            df.stages[target_idx].span,
            format!(
                "the target stage {key} is replaced by the build context {key}; kiln builds \
                 stages that read it, not the context itself"
            ),
        ));
    }

    // Reachability from the target, ONBUILD triggers included.
    let mut reachable = BTreeSet::new();
    let mut work = vec![target_idx];
    if check.all_stages {
        work.extend(0..df.stages.len());
    }
    while let Some(i) = work.pop() {
        if !reachable.insert(i) {
            continue;
        }
        for d in ctx.stage_deps(i)? {
            if !reachable.contains(&d) {
                work.push(d);
            }
        }
    }
    let order: Vec<usize> = reachable.iter().copied().collect();
    let remap: HashMap<usize, usize> = order.iter().enumerate().map(|(n, &o)| (o, n)).collect();

    let mut results: HashMap<usize, StageResult> = HashMap::new();
    let mut stages = Vec::with_capacity(order.len());
    for &i in &order {
        let (stage, result) = ctx.lower_stage(i, &results, &remap)?;
        results.insert(i, result);
        stages.push(stage);
    }
    let graph = BuildGraph {
        target: remap[&target_idx],
        stages,
        platform: target_platform,
    };
    Ok((graph, ctx.findings))
}

fn build_arg(opts: &LowerOptions, key: &str) -> Option<String> {
    opts.build_args
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn stage_names(df: &Dockerfile) -> Vec<&str> {
    df.stages.iter().filter_map(|s| s.name.as_deref()).collect()
}

fn resolve_target(df: &Dockerfile, opts: &LowerOptions) -> Result<usize, LowerError> {
    let Some(t) = &opts.target else {
        return Ok(df.stages.len() - 1);
    };
    let lower = t.to_ascii_lowercase();
    if let Some(i) = df
        .stages
        .iter()
        .rposition(|s| s.name.as_deref() == Some(&lower))
    {
        return Ok(i);
    }
    if let Ok(i) = t.parse::<usize>()
        && i < df.stages.len()
    {
        return Ok(i);
    }
    let names = stage_names(df);
    let mut message = with_suggestion(
        format!(
            "target stage {} could not be found",
            crate::goformat::quote(t)
        ),
        t,
        &names,
        false,
    );
    message.push_str(&format!(" (stages: {})", names.join(", ")));
    Err(LowerError::UnknownTarget {
        target: t.clone(),
        message,
    })
}

impl Ctx<'_> {
    fn lower_stage(
        &mut self,
        i: usize,
        results: &HashMap<usize, StageResult>,
        remap: &HashMap<usize, usize>,
    ) -> Result<(Stage, StageResult), LowerError> {
        let decl: &StageDecl = &self.df.stages[i];
        let span = decl.span;
        let (base, mut state) = match self.bases[i].clone() {
            BaseRef::Scratch => (Base::Scratch, StageResult::default()),
            BaseRef::Stage(j) => {
                let r = results.get(&j).cloned().unwrap_or_default();
                (Base::Stage(remap[&j]), r)
            }
            BaseRef::Image(r) => {
                let img = self.image(&r, i, span)?;
                self.check_base_platform(i, &r, &img);
                (Base::Image(r), image_result(&img))
            }
            BaseRef::Named(key) => {
                let img = self.held_image(&key);
                (Base::Named(key), image_result(&img))
            }
        };
        if !state.env.contains("PATH") {
            state.env.set("PATH", DEFAULT_PATH);
        }
        if state.workdir.is_empty() {
            state.workdir = "/".into();
        }
        let triggers = self.triggers(i)?;
        let mut carried = self.carried_env;
        let mut lw = StageLowering {
            ctx: self,
            index: i,
            state,
            remap,
            ssh_count: 0,
            lookups: Default::default(),
            used_once: Default::default(),
        };
        let mut steps = Vec::new();
        for ins in triggers.iter().chain(decl.instructions.iter()) {
            let declared = lw.declared_args();
            steps.push(lw.lower_instruction(ins)?);
            lw.check_instruction(ins, &declared);
            let bytes = lw.state.env.bytes();
            if bytes > MAX_STAGE_ENV_BYTES {
                return Err(env_too_large(ins.span));
            }
            carried = carried.saturating_add(bytes);
            if carried > MAX_CARRIED_ENV_BYTES {
                return Err(at(
                    ins.span,
                    format!(
                        "the steps so far carry more than {MAX_CARRIED_ENV_BYTES} bytes of \
                         environment in all (each step holds a copy of its stage's)"
                    ),
                ));
            }
        }
        let state = lw.state;
        self.carried_env = carried;
        Ok((
            Stage {
                name: decl.name.clone(),
                position: i,
                base,
                platform: self.platforms[i].clone(),
                span,
                source: decl.source.clone(),
                steps,
            },
            state,
        ))
    }
}

/// What a stage starting from image `img` inherits from its config.
fn image_result(img: &BaseImage) -> StageResult {
    let mut env = EnvList::new();
    for (k, v) in &img.env {
        env.set(k, v);
    }
    let workdir = if img.working_dir.is_empty() {
        String::new()
    } else {
        normalize_workdir("", &img.working_dir)
    };
    StageResult {
        env,
        workdir,
        user: img.user.clone(),
        shell: img.shell.clone(),
        build_args: Vec::new(),
        workdir_set: false,
    }
}

/// `system.NormalizeWorkdir`: relative paths join the current one; the result is clean.
fn normalize_workdir(current: &str, requested: &str) -> String {
    if requested.starts_with('/') {
        clean_path(requested)
    } else {
        clean_path(&format!("/{current}/{requested}"))
    }
}
