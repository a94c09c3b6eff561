//! Typed Dockerfile → [`BuildGraph`] (BuildKit `dockerfile2llb/convert.go`, minus LLB).
//!
//! Owns stage resolution (names case-insensitive, indexes, images), global and stage ARG
//! scoping with `--build-arg` precedence and the automatic platform ARGs, ENV/WORKDIR/
//! USER/SHELL inheritance, which values are expanded, ONBUILD triggers, `--target`
//! selection and pruning, and the history text of every step.

use std::collections::{BTreeSet, HashMap};

use thiserror::Error;

use crate::error::{ParseError, render_at, with_suggestion};
use crate::expand::{EnvList, Lexer};
use crate::graph::*;
use crate::instructions::{Command, Dockerfile, Instruction, StageDecl};
use crate::mount::split_csv;
use kiln_base::gopath::clean as clean_path;

mod steps;
use steps::StageLowering;

/// Why a Dockerfile could not be lowered.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LowerError {
    /// An instruction could not be lowered (bad expansion, bad reference, bad value).
    #[error("line {}: {message}", span.line)]
    Instruction { span: Span, message: String },
    /// The file has no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `--target` names no stage.
    #[error("{message}")]
    UnknownTarget { target: String, message: String },
    /// The resolver could not describe a base image.
    #[error("line {}: failed to resolve base image {reference}: {message}", span.line)]
    Resolve {
        span: Span,
        reference: String,
        message: String,
    },
    /// An ONBUILD trigger of a base did not parse.
    #[error("line {}: invalid ONBUILD trigger: {source}", span.line)]
    Trigger { span: Span, source: ParseError },
}

impl LowerError {
    /// Where in the Dockerfile, when the error has a place.
    pub fn span(&self) -> Option<Span> {
        match self {
            LowerError::Instruction { span, .. }
            | LowerError::Resolve { span, .. }
            | LowerError::Trigger { span, .. } => Some(*span),
            _ => None,
        }
    }

    /// `Dockerfile:LINE:COL: message` plus the line and a caret, like [`ParseError::render`].
    pub fn render(&self, file_name: &str, source: &str) -> String {
        match self.span() {
            Some(span) => {
                let msg = self.to_string();
                let msg = msg
                    .strip_prefix(&format!("line {}: ", span.line))
                    .unwrap_or(&msg)
                    .to_string();
                render_at(file_name, source, span.line, span.column, &msg, None)
            }
            None => format!("{file_name}: {self}\n"),
        }
    }
}

fn at(span: Span, message: impl Into<String>) -> LowerError {
    LowerError::Instruction {
        span,
        message: message.into(),
    }
}

/// Largest environment (ENV and ARG keys and values, in bytes) a stage may build up. Every
/// RUN gets it as its process environment, which Linux caps at ~2 MiB with the arguments
/// (ARG_MAX); 4 MiB refuses nothing a RUN could use, and stops `ARG B1=$BIG ...` lines
/// from turning a few bytes of Dockerfile into megabytes each.
const MAX_STAGE_ENV_BYTES: usize = 4 << 20;

/// Each step keeps a copy of its stage's environment: the sum over every step of the
/// Dockerfile is bounded too, or a large environment times thousands of `RUN true` lines
/// still takes gigabytes. Real Dockerfiles carry a few KiB per step.
const MAX_CARRIED_ENV_BYTES: usize = 256 << 20;

/// The error for an environment over [`MAX_STAGE_ENV_BYTES`].
fn env_too_large(span: Span) -> LowerError {
    at(
        span,
        format!("the environment (ENV and ARG values) exceeds {MAX_STAGE_ENV_BYTES} bytes"),
    )
}

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
}

/// A resolved `--from`/`from=`.
#[derive(Clone, Debug)]
enum FromRef {
    Stage(usize),
    Image(String),
}

/// What a stage hands to stages built FROM it.
#[derive(Clone, Debug, Default)]
struct StageResult {
    env: EnvList,
    workdir: String,
    user: String,
    shell: Vec<String>,
    build_args: Vec<(String, Option<String>)>,
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
}

/// Lowers a parsed Dockerfile into the graph for `opts.target` (the last stage if none).
pub fn lower(
    df: &Dockerfile,
    opts: &LowerOptions,
    resolver: &dyn BaseResolver,
) -> Result<BuildGraph, LowerError> {
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
    };
    ctx.resolve_bases()?;

    // Reachability from the target, ONBUILD triggers included.
    let mut reachable = BTreeSet::new();
    let mut work = vec![target_idx];
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
    Ok(BuildGraph {
        target: remap[&target_idx],
        stages,
        platform: target_platform,
    })
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
    /// Expands every FROM with the global ARGs and decides what each stage starts from.
    fn resolve_bases(&mut self) -> Result<(), LowerError> {
        for (i, st) in self.df.stages.iter().enumerate() {
            let base = self
                .lexer
                .process_word(&st.base, &self.global)
                .map_err(|e| at(st.span, e.to_string()))?;
            if base.is_empty() {
                return Err(at(
                    st.span,
                    format!("base name ({}) should not be blank", st.base),
                ));
            }
            let platform = match &st.platform {
                Some(p) => {
                    let v = self.lexer.process_word(p, &self.global).map_err(|e| {
                        at(
                            st.span,
                            format!("failed to process arguments for platform: {e}"),
                        )
                    })?;
                    if v.is_empty() {
                        return Err(at(
                            st.span,
                            format!("empty platform value from expression {p}"),
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            let lower = base.to_ascii_lowercase();
            let earlier = self.df.stages[..i]
                .iter()
                .rposition(|s| s.name.as_deref() == Some(lower.as_str()));
            let r = if let Some(j) = earlier {
                BaseRef::Stage(j)
            } else if self.df.stages[i..]
                .iter()
                .any(|s| s.name.as_deref() == Some(lower.as_str()))
            {
                return Err(at(
                    st.span,
                    format!(
                        "stage {} needs to be defined before it is used as a base (FROM {base})",
                        crate::goformat::quote(&lower)
                    ),
                ));
            } else if base == "scratch" {
                BaseRef::Scratch
            } else {
                BaseRef::Image(base)
            };
            self.bases.push(r);
            self.platforms.push(platform);
        }
        Ok(())
    }

    fn stage_label(&self, i: usize) -> String {
        self.df.stages[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{i}"))
    }

    /// Resolves a `--from`/`from=` reference seen in stage `current`.
    fn resolve_from(
        &self,
        name: &str,
        current: usize,
        span: Span,
        what: &str,
    ) -> Result<FromRef, LowerError> {
        let lower = name.to_ascii_lowercase();
        let found = self
            .df
            .stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lower.as_str()));
        let idx = match found {
            Some(j) => Some(j),
            None => match name.parse::<usize>() {
                Ok(j) if j < self.df.stages.len() => Some(j),
                Ok(j) => return Err(at(span, format!("invalid stage index {j}"))),
                Err(_) => None,
            },
        };
        match idx {
            Some(j) if j >= current => {
                // A later one with the same name may shadow an earlier one; prefer earlier.
                if let Some(e) = self.df.stages[..current]
                    .iter()
                    .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
                {
                    return Ok(FromRef::Stage(e));
                }
                if j == current {
                    Err(at(
                        span,
                        format!(
                            "circular dependency detected on stage: {} ({what} refers to its own stage)",
                            self.stage_label(current)
                        ),
                    ))
                } else {
                    Err(at(
                        span,
                        format!(
                            "cannot {what} from stage {}, it needs to be defined before current stage {}",
                            crate::goformat::quote(name),
                            crate::goformat::quote(&self.stage_label(current))
                        ),
                    ))
                }
            }
            Some(j) => Ok(FromRef::Stage(j)),
            None => Ok(FromRef::Image(name.to_string())),
        }
    }

    fn image(&mut self, reference: &str, span: Span) -> Result<BaseImage, LowerError> {
        if let Some(img) = self.images.get(reference) {
            return Ok(img.clone());
        }
        let img = self
            .resolver
            .resolve(reference)
            .map_err(|message| LowerError::Resolve {
                span,
                reference: reference.to_string(),
                message,
            })?;
        self.images.insert(reference.to_string(), img.clone());
        Ok(img)
    }

    /// ONBUILD triggers a stage runs first: its base stage's ONBUILD lines or its base
    /// image's config.
    fn triggers(&mut self, i: usize) -> Result<Vec<Instruction>, LowerError> {
        let st = &self.df.stages[i];
        let span = st.span;
        let exprs: Vec<String> = match self.bases[i].clone() {
            BaseRef::Scratch => Vec::new(),
            BaseRef::Stage(j) => self.df.stages[j]
                .instructions
                .iter()
                .filter_map(|ins| match &ins.command {
                    Command::OnBuild(e) => Some(e.clone()),
                    _ => None,
                })
                .collect(),
            BaseRef::Image(r) => self.image(&r, span)?.on_build,
        };
        let mut out = Vec::new();
        for e in exprs {
            let trig = |source: ParseError| LowerError::Trigger { span, source };
            let ast = crate::syntax::parse_syntax(&e).map_err(trig)?;
            if ast.nodes.len() != 1 {
                return Err(at(span, "onbuild trigger should be a single expression"));
            }
            let mut ins = crate::instructions::parse_instruction(&ast.nodes[0]).map_err(trig)?;
            ins.span = span;
            ins.source = e.clone();
            for f in &mut ins.flags {
                f.span = span;
            }
            if let Command::Run(r) = &mut ins.command {
                for m in &mut r.mounts {
                    m.1 = span;
                }
            }
            out.push(ins);
        }
        Ok(out)
    }

    /// Stages that stage `i` reads from (base, --from, mount from=, triggers').
    fn stage_deps(&mut self, i: usize) -> Result<Vec<usize>, LowerError> {
        let mut deps = Vec::new();
        if let BaseRef::Stage(j) = self.bases[i] {
            deps.push(j);
        }
        let triggers = self.triggers(i)?;
        let df = self.df;
        for ins in triggers.iter().chain(df.stages[i].instructions.iter()) {
            for name in from_refs(ins) {
                if let FromRef::Stage(j) = self.resolve_from(&name.0, i, name.1, name.2)? {
                    deps.push(j);
                }
            }
        }
        Ok(deps)
    }

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
                let img = self.image(&r, span)?;
                let mut env = EnvList::new();
                for (k, v) in &img.env {
                    env.set(k, v);
                }
                let workdir = if img.working_dir.is_empty() {
                    String::new()
                } else {
                    normalize_workdir("", &img.working_dir)
                };
                (
                    Base::Image(r),
                    StageResult {
                        env,
                        workdir,
                        user: img.user.clone(),
                        shell: img.shell.clone(),
                        build_args: Vec::new(),
                    },
                )
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
        };
        let mut steps = Vec::new();
        for ins in triggers.iter().chain(decl.instructions.iter()) {
            steps.push(lw.lower_instruction(ins)?);
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

/// Every stage reference of an instruction: (name, span, verb for messages).
fn from_refs(ins: &Instruction) -> Vec<(String, Span, &'static str)> {
    let mut out = Vec::new();
    match &ins.command {
        Command::Copy(c) => {
            if let Some(f) = &c.from {
                let span = ins
                    .flags
                    .iter()
                    .find(|f| f.text.starts_with("--from"))
                    .map_or(ins.span, |f| f.span);
                out.push((f.clone(), span, "copy"));
            }
        }
        Command::Run(r) => {
            for (m, span) in &r.mounts {
                let Ok(fields) = split_csv(m) else { continue };
                let mut from = None;
                let mut secretish = false;
                for f in fields {
                    if let Some((k, v)) = f.split_once('=') {
                        match k.to_ascii_lowercase().as_str() {
                            "from" => from = Some(v.to_string()),
                            "type" => {
                                secretish = matches!(
                                    v.to_ascii_lowercase().as_str(),
                                    "secret" | "ssh" | "tmpfs"
                                )
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(f) = from.filter(|f| !f.is_empty() && !secretish) {
                    out.push((f, *span, "mount"));
                }
            }
        }
        _ => {}
    }
    out
}

/// `system.NormalizeWorkdir`: relative paths join the current one; the result is clean.
fn normalize_workdir(current: &str, requested: &str) -> String {
    if requested.starts_with('/') {
        clean_path(requested)
    } else {
        clean_path(&format!("/{current}/{requested}"))
    }
}
