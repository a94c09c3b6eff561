//! Typed Dockerfile → [`BuildGraph`] (BuildKit `dockerfile2llb/convert.go`, minus LLB).
//!
//! Owns stage resolution (names case-insensitive, indexes, images), global and stage ARG
//! scoping with `--build-arg` precedence and the automatic platform ARGs, ENV/WORKDIR/
//! USER/SHELL inheritance, which values are expanded, ONBUILD triggers, `--target`
//! selection and pruning, and the history text of every step.

use std::collections::{BTreeSet, HashMap};

use thiserror::Error;

use crate::error::{ParseError, render_at, with_suggestion};
use crate::expand::{Env, EnvList, Lexer};
use crate::goformat::{clean_path, plain_list, quote_list};
use crate::graph::*;
use crate::history::{
    healthcheck_string, parse_port_spec, run_command_string, valid_chmod, valid_signal,
};
use crate::instructions::{Command, CopyCommand, Dockerfile, Instruction, RunCommand, StageDecl};
use crate::mount::{RawMount, parse_mount, split_csv};
use crate::syntax::{chomp_heredoc_content, parse_heredoc};

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

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The platform of this machine, with Go's architecture names.
pub fn host_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "loongarch64" => ("loong64", None),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
        other => (other, None),
    };
    Platform {
        os: std::env::consts::OS.to_string(),
        architecture: arch.to_string(),
        variant: variant.map(str::to_string),
    }
}

fn format_platform(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
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
        ("BUILDPLATFORM", format_platform(&build_platform)),
        ("BUILDOS", build_platform.os.clone()),
        ("BUILDARCH", build_platform.architecture.clone()),
        (
            "BUILDVARIANT",
            build_platform.variant.clone().unwrap_or_default(),
        ),
        ("TARGETPLATFORM", format_platform(&target_platform)),
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
        }
        let state = lw.state;
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

struct StageLowering<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    index: usize,
    state: StageResult,
    remap: &'c HashMap<usize, usize>,
    ssh_count: usize,
}

impl StageLowering<'_, '_> {
    fn expand(&self, word: &str, span: Span) -> Result<String, LowerError> {
        self.ctx
            .lexer
            .process_word(word, &self.state.env)
            .map_err(|e| at(span, e.to_string()))
    }

    fn with_shell(&self, args: &[String]) -> Vec<String> {
        let mut argv = if self.state.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            self.state.shell.clone()
        };
        argv.push(args.join(" "));
        argv
    }

    fn source_ref(&self, r: FromRef) -> Source {
        match r {
            FromRef::Stage(j) => Source::Stage(self.remap[&j]),
            FromRef::Image(s) => Source::Image(s),
        }
    }

    fn lower_instruction(&mut self, ins: &Instruction) -> Result<Step, LowerError> {
        let span = ins.span;
        let (op, created_by) = match &ins.command {
            Command::Run(r) => self.lower_run(r, span)?,
            Command::Copy(c) => self.lower_copy(c, ins)?,
            Command::Cmd(c) => {
                let argv = if c.prepend_shell {
                    self.with_shell(&c.args)
                } else {
                    c.args.clone()
                };
                let h = format!("CMD {}", quote_list(&argv));
                (Op::Cmd(argv), h)
            }
            Command::Entrypoint(c) => {
                let argv = if c.prepend_shell {
                    self.with_shell(&c.args)
                } else {
                    c.args.clone()
                };
                let h = format!("ENTRYPOINT {}", quote_list(&argv));
                (Op::Entrypoint(argv), h)
            }
            Command::Env(kvs) => {
                // Every value sees the environment from before the instruction.
                let mut pairs = Vec::with_capacity(kvs.len());
                for kv in kvs {
                    pairs.push((self.expand(&kv.key, span)?, self.expand(&kv.value, span)?));
                }
                let mut h = String::from("ENV");
                for (k, v) in &pairs {
                    h.push_str(&format!(" {k}={v}"));
                    self.state.env.set(k, v);
                }
                (Op::Env(pairs), h)
            }
            Command::Label(kvs) => {
                let mut pairs = Vec::with_capacity(kvs.len());
                for kv in kvs {
                    pairs.push((self.expand(&kv.key, span)?, self.expand(&kv.value, span)?));
                }
                let mut h = String::from("LABEL");
                for (k, v) in &pairs {
                    h.push_str(&format!(" {k}={v}"));
                }
                (Op::Label(pairs), h)
            }
            Command::Arg(decls) => {
                let mut out = Vec::new();
                let mut parts = Vec::new();
                for d in decls {
                    let given = build_arg(self.ctx.opts, &d.key);
                    let value = match (given, &d.value) {
                        (Some(v), _) => Some(v),
                        (None, Some(def)) => Some(self.expand(def, span)?),
                        (None, None) => self.ctx.global.get(&d.key).map(str::to_string),
                    };
                    if let Some(v) = &value
                        && !matches!(
                            d.key.as_str(),
                            "BUILDKIT_SBOM_SCAN_CONTEXT" | "BUILDKIT_SBOM_SCAN_STAGE"
                        )
                    {
                        self.state.env.set(&d.key, v);
                    }
                    // Repeats keep their first position (BuildKit's history dedup).
                    match self.state.build_args.iter_mut().find(|(k, _)| *k == d.key) {
                        Some(e) => e.1 = value.clone(),
                        None => self.state.build_args.push((d.key.clone(), value.clone())),
                    }
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", d.key),
                        None => d.key.clone(),
                    });
                    out.push((d.key.clone(), value));
                }
                (Op::Arg(out), format!("ARG {}", parts.join(" ")))
            }
            Command::Expose(ports) => {
                let mut all = BTreeSet::new();
                for p in ports {
                    let words = self
                        .ctx
                        .lexer
                        .process_words(p, &self.state.env)
                        .map_err(|e| at(span, e.to_string()))?;
                    for w in words {
                        for spec in parse_port_spec(&w).map_err(|e| at(span, e))? {
                            all.insert(spec);
                        }
                    }
                }
                let list: Vec<String> = all.into_iter().collect();
                let map: Vec<String> = list.iter().map(|p| format!("{p}:{{}}")).collect();
                let h = format!("EXPOSE map[{}]", map.join(" "));
                (Op::Expose(list), h)
            }
            Command::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let e = self.expand(v, span)?;
                    if e.is_empty() {
                        return Err(at(span, "VOLUME specified can not be an empty string"));
                    }
                    out.push(e);
                }
                let h = format!("VOLUME {}", plain_list(&out));
                (Op::Volume(out), h)
            }
            Command::User(u) => {
                let u = self.expand(u, span)?;
                self.state.user = u.clone();
                (Op::User(u.clone()), format!("USER {u}"))
            }
            Command::Workdir(p) => {
                let p = self.expand(p, span)?;
                let wd = normalize_workdir(&self.state.workdir, &p);
                self.state.workdir = wd.clone();
                let h = format!("WORKDIR {wd}");
                (
                    Op::Workdir(WorkdirOp {
                        path: wd,
                        user: self.state.user.clone(),
                    }),
                    h,
                )
            }
            Command::StopSignal(s) => {
                let s = self.expand(s, span)?;
                if !valid_signal(&s) {
                    return Err(at(span, format!("Invalid signal: {s}")));
                }
                (Op::StopSignal(s.clone()), format!("STOPSIGNAL {s}"))
            }
            Command::Healthcheck(h) => {
                let hc = Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval as u64,
                    timeout: h.timeout as u64,
                    start_period: h.start_period as u64,
                    start_interval: h.start_interval as u64,
                    retries: h.retries as u32,
                };
                let text = healthcheck_string(&hc);
                (Op::Healthcheck(hc), text)
            }
            Command::Shell(s) => {
                self.state.shell = s.clone();
                (Op::Shell(s.clone()), format!("SHELL {}", plain_list(s)))
            }
            Command::OnBuild(e) => (Op::OnBuild(e.clone()), String::new()),
            Command::Maintainer(m) => (Op::Maintainer(m.clone()), format!("MAINTAINER {m}")),
        };
        Ok(Step {
            span,
            source: ins.source.clone(),
            created_by,
            op,
        })
    }

    fn lower_run(&mut self, r: &RunCommand, span: Span) -> Result<(Op, String), LowerError> {
        let mut args = r.cmd.args.clone();
        let mut files = Vec::new();
        if !r.cmd.files.is_empty() {
            if args.len() != 1 || !r.cmd.prepend_shell {
                return Err(at(
                    span,
                    format!("parsing produced an invalid run command: {args:?}"),
                ));
            }
            let single = parse_heredoc(&args[0]).ok().flatten().is_some();
            if single {
                let f = &r.cmd.files[0];
                let data = if f.chomp {
                    chomp_heredoc_content(&f.content)
                } else {
                    f.content.clone()
                };
                if data.starts_with("#!") {
                    let path = format!("/dev/pipes/{}", f.name);
                    files.push(InlineFile {
                        path: path.clone(),
                        content: data,
                        mode: 0o755,
                    });
                    args = vec![path];
                } else {
                    args = vec![data];
                }
            } else {
                let mut b = args[0].clone();
                for f in &r.cmd.files {
                    b.push('\n');
                    b.push_str(&f.content);
                    b.push_str(&f.name);
                }
                args = vec![b];
            }
        }
        let argv = if r.cmd.prepend_shell {
            self.with_shell(&args)
        } else {
            args
        };
        let network = match r.network.as_deref() {
            None | Some("default") => NetworkMode::Default,
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            Some(other) => {
                return Err(at(
                    span,
                    format!("unsupported network mode {}", crate::goformat::quote(other)),
                ));
            }
        };
        match r.security.as_deref() {
            None | Some("sandbox") => {}
            Some("insecure") => {
                return Err(at(
                    span,
                    "RUN --security=insecure needs the security.insecure entitlement, which kiln does not grant",
                ));
            }
            Some(other) => {
                return Err(at(
                    span,
                    format!(
                        "unsupported security mode {}",
                        crate::goformat::quote(other)
                    ),
                ));
            }
        }
        let mut raws = Vec::with_capacity(r.mounts.len());
        {
            let env = &self.state.env;
            let lexer = self.ctx.lexer;
            let mut ex = |w: &str| lexer.process_word(w, env).map_err(|e| e.to_string());
            for (m, mspan) in &r.mounts {
                raws.push((parse_mount(m, &mut ex).map_err(|e| at(*mspan, e))?, *mspan));
            }
        }
        let mut mounts = Vec::with_capacity(raws.len());
        for (raw, mspan) in raws {
            mounts.push(self.lower_mount(raw, mspan)?);
        }
        let mut h = String::from("RUN ");
        h.push_str(&run_command_string(
            &argv,
            &self.state.build_args,
            &self.state.env,
        ));
        h.push_str(" # buildkit");
        let op = Op::Run(RunOp {
            argv,
            shell_form: r.cmd.prepend_shell,
            env: self.state.env.entries().to_vec(),
            workdir: self.state.workdir.clone(),
            user: self.state.user.clone(),
            network,
            mounts,
            files,
        });
        Ok((op, h))
    }

    fn lower_mount(&mut self, m: RawMount, span: Span) -> Result<Mount, LowerError> {
        let abs = |t: &str, wd: &str| {
            if t.starts_with('/') {
                clean_path(t)
            } else {
                clean_path(&format!("{wd}/{t}"))
            }
        };
        let wd = self.state.workdir.clone();
        let from = if m.from.is_empty() || !matches!(m.kind.as_str(), "bind" | "cache") {
            None
        } else {
            let r = self.ctx.resolve_from(&m.from, self.index, span, "mount")?;
            Some(self.source_ref(r))
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (kind, target, mode) = match m.kind.as_str() {
            "cache" => {
                let target = abs(&m.target, &wd);
                let id = if m.id.is_empty() {
                    target.clone()
                } else {
                    m.id.clone()
                };
                let sharing = match m.sharing.as_str() {
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => CacheSharing::Shared,
                };
                (
                    MountKind::Cache { id, sharing },
                    target,
                    Some(m.mode.unwrap_or(0o755)),
                )
            }
            "tmpfs" => (MountKind::Tmpfs { size: m.size }, abs(&m.target, &wd), None),
            "secret" => {
                let id = if !m.id.is_empty() {
                    m.id.clone()
                } else if !m.source.is_empty() {
                    m.source.clone()
                } else {
                    m.target.rsplit('/').next().unwrap_or_default().to_string()
                };
                let target = if !m.target.is_empty() {
                    abs(&m.target, &wd)
                } else if m.env.is_some() {
                    String::new()
                } else {
                    format!("/run/secrets/{id}")
                };
                (
                    MountKind::Secret {
                        id,
                        env: m.env.clone(),
                        required: m.required,
                    },
                    target,
                    Some(m.mode.unwrap_or(0o400)),
                )
            }
            "ssh" => {
                let id = if m.id.is_empty() {
                    "default".to_string()
                } else {
                    m.id.clone()
                };
                let target = if m.target.is_empty() {
                    let t = format!("/run/buildkit/ssh_agent.{}", self.ssh_count);
                    self.ssh_count += 1;
                    t
                } else {
                    abs(&m.target, &wd)
                };
                (
                    MountKind::Ssh {
                        id,
                        required: m.required,
                    },
                    target,
                    Some(m.mode.unwrap_or(0o600)),
                )
            }
            // An empty target mounts at the working directory, as in BuildKit.
            _ => (MountKind::Bind, abs(&m.target, &wd), None),
        };
        let file_info = mode.is_some();
        Ok(Mount {
            kind,
            target,
            source: if matches!(m.kind.as_str(), "bind" | "cache") {
                opt(&m.source)
            } else {
                None
            },
            from,
            readonly: m.readonly,
            mode,
            uid: if file_info {
                Some(m.uid.unwrap_or(0))
            } else {
                None
            },
            gid: if file_info {
                Some(m.gid.unwrap_or(0))
            } else {
                None
            },
        })
    }

    fn lower_copy(
        &mut self,
        c: &CopyCommand,
        ins: &Instruction,
    ) -> Result<(Op, String), LowerError> {
        let span = ins.span;
        let verb = if c.add { "ADD" } else { "COPY" };
        let from = match &c.from {
            None => Source::Context,
            Some(f) => {
                let empty: Vec<(String, String)> = Vec::new();
                let plain = self
                    .ctx
                    .lexer
                    .process_word(f, &empty)
                    .map_err(|e| at(span, e.to_string()))?;
                if plain != *f {
                    return Err(at(
                        span,
                        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    ));
                }
                let r = self.ctx.resolve_from(f, self.index, span, "copy")?;
                self.source_ref(r)
            }
        };
        let chown = c
            .chown
            .as_ref()
            .map(|v| self.expand(v, span))
            .transpose()?
            .filter(|v| !v.is_empty());
        let chmod = c
            .chmod
            .as_ref()
            .map(|v| self.expand(v, span))
            .transpose()?
            .filter(|v| !v.is_empty());
        if let Some(m) = &chmod {
            valid_chmod(m).map_err(|e| at(span, e))?;
        }
        let checksum = c
            .checksum
            .as_ref()
            .map(|v| self.expand(v, span))
            .transpose()?
            .filter(|v| !v.is_empty());
        let mut srcs = Vec::new();
        for s in &c.sources {
            srcs.push(self.expand(s, span)?);
        }
        let dest = self.expand(&c.dest, span)?;
        let mut sources = Vec::new();
        for s in &srcs {
            let is_url = s.starts_with("http://") || s.starts_with("https://");
            if is_url && !c.add {
                return Err(at(span, "source can't be a URL for COPY"));
            }
            sources.push(if is_url {
                CopySource::Url(s.clone())
            } else {
                CopySource::Path(s.clone())
            });
        }
        if let Some(sum) = &checksum {
            if srcs.len() != 1 {
                return Err(at(span, "checksum can't be specified for multiple sources"));
            }
            if !srcs[0].starts_with("http://") && !srcs[0].starts_with("https://") {
                return Err(at(span, "checksum requires HTTP(S) or Git sources"));
            }
            let _ = sum;
        }
        for content in &c.contents {
            let data = if content.expand {
                let mut lex = Lexer::new('\\');
                lex.skip_process_quotes = true;
                lex.process_word(&content.data, &self.state.env)
                    .map_err(|e| at(span, e.to_string()))?
            } else {
                content.data.clone()
            };
            sources.push(CopySource::Heredoc {
                name: content.name.clone(),
                content: data,
            });
        }
        let mut h = String::from(verb);
        if c.parents {
            h.push_str(" --parents");
        }
        if let Some(v) = &chown {
            h.push_str(&format!(" --chown={v}"));
        }
        if let Some(v) = &chmod {
            h.push_str(&format!(" --chmod={v}"));
        }
        for s in &srcs {
            h.push(' ');
            h.push_str(s);
        }
        for content in &c.contents {
            h.push_str(&format!(" <<{}", content.name));
        }
        h.push(' ');
        h.push_str(&dest);
        h.push_str(" # buildkit");
        let op = Op::Copy(CopyOp {
            add: c.add,
            from,
            sources,
            dest,
            workdir: self.state.workdir.clone(),
            chown,
            chmod,
            link: c.link,
            parents: c.parents,
            exclude: c.exclude.clone(),
            checksum,
            unpack: c.unpack,
            keep_git_dir: c.keep_git_dir.unwrap_or(false),
        });
        Ok((op, h))
    }
}
