//! Lowering of single instructions within a stage: expansion of their values, the ops
//! they become and the history text BuildKit writes for each (`created_by`). Expansions
//! note the variables they look up, and WORKDIR, EXPOSE and COPY/ADD hand their expanded
//! values to the build checks ([`crate::lint::dispatch`]).
//!
//! Its length (over 600 lines) is one function per instruction kind, each op beside the
//! history text it gets, as BuildKit's `dispatch.go` keeps them; RUN's mounts and COPY's
//! sources are the largest.

use crate::chmod::ModeSpec;
use crate::copy_rules::{self, SourceKind};
use std::collections::{BTreeSet, HashMap};

use super::{Ctx, FromRef, StageResult, at, build_arg, normalize_workdir};
use crate::expand::{Env, Lexer};
use crate::goformat::{plain_list, quote_list};
use crate::graph::*;
use crate::history::{healthcheck_string, run_command_string};
use crate::instruction_values::{parse_port_spec, valid_signal};
use crate::instructions::{Command, CopyCommand, Instruction, RunCommand};
use crate::lint::dispatch::{self, UsedOnce};
use crate::lint::vars::{Lookups, Recorder};
use crate::lower::LowerError;
use crate::mount::{RawMount, parse_mount};
use crate::syntax::{chomp_heredoc_content, parse_heredoc};
use kiln_base::gopath::clean as clean_path;

pub(super) struct StageLowering<'c, 'a> {
    pub(super) ctx: &'c mut Ctx<'a>,
    /// Position of the stage among all stages (before pruning).
    pub(super) index: usize,
    /// ENV/ARG/WORKDIR/USER/SHELL as the instructions so far left them.
    pub(super) state: StageResult,
    /// Old stage index → index in the pruned graph.
    pub(super) remap: &'c HashMap<usize, usize>,
    pub(super) ssh_count: usize,
    /// The variables the current instruction's expansions looked up (UndefinedVar).
    pub(super) lookups: std::cell::RefCell<Lookups>,
    /// CMD, ENTRYPOINT and HEALTHCHECK seen in this stage (MultipleInstructionsDisallowed).
    pub(super) used_once: UsedOnce,
}

impl StageLowering<'_, '_> {
    fn expand(&self, word: &str, span: Span) -> Result<String, LowerError> {
        self.expand_with(self.ctx.lexer, word, span)
    }

    /// Expands with the stage's environment, noting the variables looked up; the value is
    /// what expanding without the notes gives.
    fn expand_with(&self, lexer: Lexer, word: &str, span: Span) -> Result<String, LowerError> {
        let recorder = Recorder::new(&self.state.env);
        let r = lexer.process_word(word, &recorder);
        self.note(recorder.into_lookups());
        r.map_err(|e| at(span, e.to_string()))
    }

    fn note(&self, l: Lookups) {
        let mut seen = self.lookups.borrow_mut();
        seen.matched.extend(l.matched);
        seen.unmatched.extend(l.unmatched);
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

    /// An image is resolved as a FROM is (the resolver may fetch it), so a missing one is
    /// found or pulled before the build starts.
    fn source_ref(&mut self, r: FromRef, span: Span) -> Result<Source, LowerError> {
        Ok(match r {
            FromRef::Stage(j) => Source::Stage(self.remap[&j]),
            FromRef::Image(s) => {
                self.ctx.image(&s, self.index, span)?;
                Source::Image(s)
            }
            FromRef::Named(key) => Source::Named(key),
        })
    }

    pub(super) fn lower_instruction(&mut self, ins: &Instruction) -> Result<Step, LowerError> {
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
                        self.ctx.findings.extend(dispatch::expose(&w, span.line));
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
                if let Some(f) = dispatch::workdir_relative(&p, self.state.workdir_set, span.line) {
                    self.ctx.findings.push(f);
                }
                self.state.workdir_set = true;
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
        // BuildKit numbers a RUN's ssh mounts from 0, each RUN on its own.
        self.ssh_count = 0;
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
        // Whether the build may use `insecure` is the command line's decision (an
        // entitlement), checked by the solver.
        let security = match r.security.as_deref() {
            None | Some("sandbox") => SecurityMode::Sandbox,
            Some("insecure") => SecurityMode::Insecure,
            Some(other) => {
                return Err(at(
                    span,
                    format!(
                        "unsupported security mode {}",
                        crate::goformat::quote(other)
                    ),
                ));
            }
        };
        let mut raws = Vec::with_capacity(r.mounts.len());
        {
            let recorder = Recorder::new(&self.state.env);
            let lexer = self.ctx.lexer;
            let mut ex = |w: &str| lexer.process_word(w, &recorder).map_err(|e| e.to_string());
            for (m, mspan) in &r.mounts {
                let parsed = parse_mount(m, &mut ex).map_err(|e| at(*mspan, e));
                match parsed {
                    Ok(p) => raws.push((p, *mspan)),
                    Err(e) => {
                        self.note(recorder.into_lookups());
                        return Err(e);
                    }
                }
            }
            self.note(recorder.into_lookups());
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
            security,
            mounts,
            files,
            proxy_env: self.proxy_env(),
        });
        Ok((op, h))
    }

    /// The proxy args given on the command line that no ARG in scope declares (a declared
    /// one is in the environment already, and in the key and history like any ARG).
    fn proxy_env(&self) -> Vec<(String, String)> {
        PROXY_ARGS
            .iter()
            .filter(|k| !self.state.build_args.iter().any(|(d, _)| d == *k))
            .filter_map(|k| build_arg(self.ctx.opts, k).map(|v| (k.to_string(), v)))
            .collect()
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
            Some(self.source_ref(r, span)?)
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
                // The index counts every ssh mount of the RUN, targets given or not.
                let index = self.ssh_count;
                self.ssh_count += 1;
                let target = if m.target.is_empty() {
                    format!("/run/buildkit/ssh_agent.{index}")
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

    /// ADD's git source `s`, with the instruction's `--keep-git-dir` and `--checksum`,
    /// which must agree with the URL's own (BuildKit's texts).
    fn git_source(
        &self,
        s: &str,
        c: &CopyCommand,
        checksum: Option<&str>,
        span: Span,
    ) -> Result<CopySource, LowerError> {
        let mut git = crate::git_ref::parse_git_ref(s)
            .map_err(|e| at(span, e.to_string()))?
            .ok_or_else(|| at(span, format!("{s}: not a git reference")))?;
        if let (Some(flag), Some(query)) = (c.keep_git_dir, git.keep_git_dir)
            && flag != query
        {
            return Err(at(span, "inconsistent keep-git-dir configuration"));
        }
        git.keep_git_dir = Some(git.keep_git_dir.or(c.keep_git_dir).unwrap_or(false));
        if let Some(flag) = checksum {
            if !git.checksum.is_empty() && git.checksum != flag {
                return Err(at(
                    span,
                    format!("checksum mismatch {flag:?} != {:?}", git.checksum),
                ));
            }
            git.checksum = flag.to_string();
        }
        Ok(CopySource::Git {
            source: s.to_string(),
            git,
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
                self.source_ref(r, span)?
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
            ModeSpec::parse(m).map_err(|e| at(span, e.lowering_message()))?;
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
        let kinds: Vec<SourceKind> = srcs.iter().map(|s| SourceKind::of(s)).collect();
        if let (Source::Context, Some(ignore)) = (&from, self.ctx.ignore) {
            for (s, kind) in srcs.iter().zip(&kinds) {
                if *kind == SourceKind::Path
                    && let Some(f) = dispatch::copy_ignored(c.add, s, ignore, span.line)
                {
                    self.ctx.findings.push(f);
                }
            }
        }
        copy_rules::check_sources(c.add, checksum.is_some(), &kinds)
            .map_err(|e| at(span, e.to_string()))?;
        let mut sources = Vec::with_capacity(srcs.len());
        for (s, kind) in srcs.iter().zip(&kinds) {
            sources.push(match kind {
                SourceKind::Url => CopySource::Url(s.clone()),
                SourceKind::Path => CopySource::Path(s.clone()),
                SourceKind::Git => {
                    if srcs.len() + c.contents.len() > 1 {
                        return Err(at(span, "a git source must be the only source of its ADD"));
                    }
                    self.git_source(s, c, checksum.as_deref(), span)?
                }
            });
        }
        for content in &c.contents {
            let data = if content.expand {
                let mut lex = Lexer::new('\\');
                lex.skip_process_quotes = true;
                self.expand_with(lex, &content.data, span)?
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
