//! Syntax nodes → typed instructions (BuildKit `instructions.Parse`).
//!
//! Owns the flags each instruction accepts and their types (bool, string, repeatable
//! list), argument-count rules, HEALTHCHECK options, COPY/ADD heredoc sources, ONBUILD
//! trigger checks, stage names, and splitting the file into global ARGs and stages.
//! Values are still as written: expansion happens during lowering.

use crate::error::{ParseError, with_suggestion};
use crate::goformat::{parse_duration, quote};
use crate::graph::Span;
use crate::syntax::{Ast, Heredoc, Node, RawFlag, chomp_heredoc_content, parse_heredoc};

/// A parsed Dockerfile: the syntax tree and the typed instructions.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    pub ast: Ast,
    /// `\` or the backtick.
    pub escape: char,
    /// ARGs before the first FROM.
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<StageDecl>,
}

/// A `FROM` and its instructions, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDecl {
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    /// Base as written (may contain `$VARS`).
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    pub span: Span,
    /// `FROM ...` trimmed.
    pub source: String,
    pub instructions: Vec<Instruction>,
}

/// One typed instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub span: Span,
    /// The logical line as written.
    pub source: String,
    /// Every flag with its span (for error positions).
    pub flags: Vec<RawFlag>,
    pub command: Command,
}

/// What an instruction says, unexpanded.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(RunCommand),
    /// COPY and ADD.
    Copy(CopyCommand),
    Cmd(ShellCommandLine),
    Entrypoint(ShellCommandLine),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Arg(Vec<ArgDecl>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Healthcheck(HealthcheckCommand),
    Shell(Vec<String>),
    /// The trigger text stored in the config (`RUN echo hi`), heredoc bodies appended.
    OnBuild(String),
    Maintainer(String),
}

/// `k=v` of ENV/LABEL; `legacy` for the `ENV k v` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub legacy: bool,
}

/// `NAME[=default]` of ARG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    pub value: Option<String>,
}

/// A command line of RUN/CMD/ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommandLine {
    /// Shell form: one string; exec form: the argv.
    pub args: Vec<String>,
    /// Shell form (wrapped in the SHELL when lowered).
    pub prepend_shell: bool,
    /// Heredoc files (RUN).
    pub files: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    pub cmd: ShellCommandLine,
    /// Raw `--mount` values with their flag spans, parsed while lowering.
    pub mounts: Vec<(String, Span)>,
    pub network: Option<String>,
    pub security: Option<String>,
    pub devices: Vec<String>,
}

/// A COPY/ADD heredoc source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    pub name: String,
    pub data: String,
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    pub add: bool,
    pub sources: Vec<String>,
    pub contents: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub keep_git_dir: Option<bool>,
    /// Exec (JSON) form.
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCommand {
    pub test: Vec<String>,
    /// Nanoseconds; 0 = runtime default.
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

/// Every instruction keyword, for suggestions.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

#[derive(Clone, Copy, PartialEq)]
enum FlagType {
    Bool,
    Str,
    List,
}

/// The values of the flags of one instruction after type checks.
struct Flags {
    defs: Vec<(&'static str, FlagType)>,
    bools: Vec<(&'static str, bool)>,
    strs: Vec<(&'static str, String)>,
    lists: Vec<(&'static str, Vec<(String, Span)>)>,
}

impl Flags {
    fn parse(raw: &[RawFlag], defs: &[(&'static str, FlagType)]) -> Result<Flags, ParseError> {
        let mut f = Flags {
            defs: defs.to_vec(),
            bools: Vec::new(),
            strs: Vec::new(),
            lists: Vec::new(),
        };
        let mut used: Vec<&str> = Vec::new();
        for flag in raw {
            let err = |m: String| ParseError::new(flag.span.line, flag.span.column, m);
            let Some(body) = flag.text.strip_prefix("--") else {
                return Err(err(format!("arg should start with -- : {}", flag.text)));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(def_name, ty)) = f.defs.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = f.defs.iter().map(|(n, _)| *n).collect();
                return Err(err(with_suggestion(
                    format!("unknown flag: {name}"),
                    name,
                    &names,
                    true,
                )));
            };
            if used.contains(&def_name) && ty != FlagType::List {
                return Err(err(format!("duplicate flag specified: {name}")));
            }
            used.push(def_name);
            match ty {
                FlagType::Bool => {
                    let v = match value {
                        Some("") => return Err(err(format!("missing a value on flag: {name}"))),
                        None => true,
                        Some(v) => match v.to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => {
                                return Err(err(format!(
                                    "expecting boolean value for flag {name}, not: {v}"
                                )));
                            }
                        },
                    };
                    f.bools.push((def_name, v));
                }
                FlagType::Str => {
                    let Some(v) = value else {
                        return Err(err(format!("missing a value on flag: {name}")));
                    };
                    f.strs.push((def_name, v.to_string()));
                }
                FlagType::List => {
                    let Some(v) = value else {
                        return Err(err(format!("missing a value on flag: {name}")));
                    };
                    match f.lists.iter_mut().find(|(n, _)| *n == def_name) {
                        Some((_, l)) => l.push((v.to_string(), flag.span)),
                        None => f.lists.push((def_name, vec![(v.to_string(), flag.span)])),
                    }
                }
            }
        }
        Ok(f)
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.bools.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
    fn str(&self, name: &str) -> Option<String> {
        self.strs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
    fn list(&self, name: &str) -> Vec<(String, Span)> {
        self.lists
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

use FlagType::{Bool, List, Str};

/// Parses text into a typed Dockerfile: syntax errors and instruction errors both fail.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    let ast = crate::syntax::parse_syntax(source)?;
    from_ast(ast, source)
}

/// Types the instructions of an already parsed syntax tree.
pub fn from_ast(ast: Ast, source: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = source
        .strip_prefix('\u{FEFF}')
        .unwrap_or(source)
        .split_inclusive('\n')
        .collect();
    let mut meta_args = Vec::new();
    let mut stages: Vec<StageDecl> = Vec::new();
    for node in &ast.nodes {
        let attach = |e: ParseError| {
            let l = lines.get(e.line.saturating_sub(1)).copied();
            e.with_source_line(l)
        };
        match node.name().as_str() {
            "from" => stages.push(parse_from(node).map_err(attach)?),
            _ => {
                let ins = parse_instruction(node).map_err(attach)?;
                match stages.last_mut() {
                    Some(stage) => stage.instructions.push(ins),
                    None if matches!(ins.command, Command::Arg(_)) => meta_args.push(ins),
                    None => {
                        return Err(attach(ParseError::new(
                            node.span.line,
                            node.span.column,
                            "no build stage in current context",
                        )));
                    }
                }
            }
        }
    }
    Ok(Dockerfile {
        escape: ast.escape,
        ast,
        meta_args,
        stages,
    })
}

fn node_err(node: &Node, msg: impl Into<String>) -> ParseError {
    ParseError::new(node.span.line, node.span.column, msg).with_end_line(node.span.end_line)
}

fn parse_from(node: &Node) -> Result<StageDecl, ParseError> {
    let args = &node.args;
    let name = if args.len() == 3 && args[1].eq_ignore_ascii_case("as") {
        let name = args[2].to_ascii_lowercase();
        if !valid_stage_name(&name) {
            return Err(node_err(
                node,
                format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    quote(&args[2])
                ),
            ));
        }
        Some(name)
    } else if args.len() != 1 {
        return Err(node_err(
            node,
            "FROM requires either one or three arguments",
        ));
    } else {
        None
    };
    let flags = Flags::parse(&node.flags, &[("platform", Str)])?;
    Ok(StageDecl {
        name,
        base: args[0].clone(),
        platform: flags.str("platform"),
        span: node.span,
        source: node.original.trim().to_string(),
        instructions: Vec::new(),
    })
}

fn valid_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// Types one non-FROM node.
pub fn parse_instruction(node: &Node) -> Result<Instruction, ParseError> {
    let command = parse_command(node)?;
    Ok(Instruction {
        span: node.span,
        source: node.original.trim().to_string(),
        flags: node.flags.clone(),
        command,
    })
}

fn kvps(node: &Node, cmd: &str) -> Result<Vec<KeyValue>, ParseError> {
    if node.args.is_empty() {
        return Err(node_err(
            node,
            format!("{cmd} requires at least one argument"),
        ));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(node_err(
            node,
            format!("Bad input to {cmd}, too many arguments"),
        ));
    }
    let mut out = Vec::new();
    for c in node.args.chunks(3) {
        if c[0].is_empty() {
            return Err(node_err(node, format!("{cmd} names can not be blank")));
        }
        out.push(KeyValue {
            key: c[0].clone(),
            value: c[1].clone(),
            legacy: c[2].is_empty(),
        });
    }
    Ok(out)
}

fn exactly_one(node: &Node, cmd: &str) -> Result<String, ParseError> {
    if node.args.len() != 1 {
        return Err(node_err(
            node,
            format!("{cmd} requires exactly one argument"),
        ));
    }
    Ok(node.args[0].clone())
}

fn command_line(node: &Node, empty_as_nil: bool) -> ShellCommandLine {
    let args = if !node.json && !node.args.is_empty() {
        // Shell form keeps the raw text as a single argument.
        vec![node.args.join(" ")]
    } else {
        node.args.clone()
    };
    let _ = empty_as_nil;
    ShellCommandLine {
        args,
        prepend_shell: !node.json,
        files: node.heredocs.clone(),
    }
}

fn parse_command(node: &Node) -> Result<Command, ParseError> {
    let name = node.name();
    let no_flags = |node: &Node| Flags::parse(&node.flags, &[]).map(|_| ());
    Ok(match name.as_str() {
        "env" => {
            no_flags(node)?;
            Command::Env(kvps(node, "ENV")?)
        }
        "label" => {
            no_flags(node)?;
            Command::Label(kvps(node, "LABEL")?)
        }
        "maintainer" => {
            let v = exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Command::Maintainer(v)
        }
        "add" | "copy" => Command::Copy(parse_copy(node, name == "add")?),
        "onbuild" => {
            let Some(child) = &node.child else {
                return Err(node_err(node, "ONBUILD requires at least one argument"));
            };
            no_flags(node)?;
            let trigger = child.keyword.trim().to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(node_err(
                        node,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(node_err(
                        node,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                _ => {}
            }
            let mut expr = strip_onbuild(&node.original);
            for doc in &node.heredocs {
                expr.push('\n');
                expr.push_str(&doc.content);
                expr.push_str(&doc.name);
            }
            Command::OnBuild(expr)
        }
        "workdir" => {
            let v = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Command::Workdir(v)
        }
        "run" => {
            let f = Flags::parse(
                &node.flags,
                &[
                    ("mount", List),
                    ("network", Str),
                    ("security", Str),
                    ("device", List),
                ],
            )?;
            Command::Run(RunCommand {
                cmd: command_line(node, false),
                mounts: f.list("mount"),
                network: f.str("network"),
                security: f.str("security"),
                devices: f.list("device").into_iter().map(|(v, _)| v).collect(),
            })
        }
        "cmd" => {
            no_flags(node)?;
            Command::Cmd(command_line(node, false))
        }
        "entrypoint" => {
            no_flags(node)?;
            Command::Entrypoint(command_line(node, true))
        }
        "healthcheck" => Command::Healthcheck(parse_healthcheck(node)?),
        "expose" => {
            if node.args.is_empty() {
                return Err(node_err(node, "EXPOSE requires at least one argument"));
            }
            no_flags(node)?;
            Command::Expose(node.args.clone())
        }
        "user" => {
            let v = exactly_one(node, "USER")?;
            no_flags(node)?;
            Command::User(v)
        }
        "volume" => {
            if node.args.is_empty() {
                return Err(node_err(node, "VOLUME requires at least one argument"));
            }
            no_flags(node)?;
            let mut vols = Vec::new();
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(node_err(
                        node,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        "stopsignal" => {
            let v = exactly_one(node, "STOPSIGNAL")?;
            no_flags(node)?;
            Command::StopSignal(v)
        }
        "arg" => {
            if node.args.is_empty() {
                return Err(node_err(node, "ARG requires at least one argument"));
            }
            no_flags(node)?;
            let mut decls = Vec::new();
            for a in &node.args {
                match a.split_once('=') {
                    Some((k, v)) => {
                        if k.is_empty() {
                            return Err(node_err(node, "ARG names can not be blank"));
                        }
                        decls.push(ArgDecl {
                            key: k.to_string(),
                            value: Some(v.to_string()),
                        });
                    }
                    None => decls.push(ArgDecl {
                        key: a.clone(),
                        value: None,
                    }),
                }
            }
            Command::Arg(decls)
        }
        "shell" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(node_err(node, "SHELL requires at least one argument"));
            }
            if !node.json {
                return Err(node_err(
                    node,
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            Command::Shell(node.args.clone())
        }
        _ => {
            return Err(node_err(
                node,
                with_suggestion(
                    format!("unknown instruction: {}", node.keyword),
                    &node.keyword,
                    INSTRUCTIONS,
                    false,
                ),
            ));
        }
    })
}

/// `(?i)^\s*ONBUILD\s*` removed from the original line.
fn strip_onbuild(original: &str) -> String {
    let t = original.trim_start();
    if t.len() >= 7 && t[..7].eq_ignore_ascii_case("onbuild") {
        t[7..].trim_start().to_string()
    } else {
        t.to_string()
    }
}

fn parse_copy(node: &Node, add: bool) -> Result<CopyCommand, ParseError> {
    let cmd = if add { "ADD" } else { "COPY" };
    if node.args.len() < 2 {
        return Err(node_err(
            node,
            format!(
                "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
        ));
    }
    let f = if add {
        Flags::parse(
            &node.flags,
            &[
                ("chown", Str),
                ("chmod", Str),
                ("link", Bool),
                ("keep-git-dir", Bool),
                ("checksum", Str),
                ("unpack", Bool),
                ("exclude", List),
            ],
        )?
    } else {
        Flags::parse(
            &node.flags,
            &[
                ("chown", Str),
                ("from", Str),
                ("chmod", Str),
                ("link", Bool),
                ("parents", Bool),
                ("exclude", List),
            ],
        )?
    };
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    if !node.json && parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(node_err(
            node,
            format!("{cmd} cannot accept a heredoc as a destination"),
        ));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    for s in srcs {
        match (!node.json)
            .then(|| parse_heredoc(s).ok().flatten())
            .flatten()
        {
            Some(doc) => {
                let found = node.heredocs.iter().find(|h| h.name == doc.name);
                let mut data = found.map(|h| h.content.clone()).unwrap_or_default();
                if doc.chomp {
                    data = chomp_heredoc_content(&data);
                }
                contents.push(InlineSource {
                    name: doc.name,
                    data,
                    expand: doc.expand,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    Ok(CopyCommand {
        add,
        sources,
        contents,
        dest,
        from: f.str("from"),
        chown: f.str("chown"),
        chmod: f.str("chmod"),
        link: f.bool("link").unwrap_or(false),
        parents: f.bool("parents").unwrap_or(false),
        exclude: f.list("exclude").into_iter().map(|(v, _)| v).collect(),
        checksum: f.str("checksum"),
        unpack: f.bool("unpack"),
        keep_git_dir: f.bool("keep-git-dir"),
        json: node.json,
    })
}

fn parse_healthcheck(node: &Node) -> Result<HealthcheckCommand, ParseError> {
    if node.args.is_empty() {
        return Err(node_err(node, "HEALTHCHECK requires at least one argument"));
    }
    let typ = node.args[0].to_ascii_uppercase();
    let args = &node.args[1..];
    let mut hc = HealthcheckCommand {
        test: Vec::new(),
        interval: 0,
        timeout: 0,
        start_period: 0,
        start_interval: 0,
        retries: 0,
    };
    if typ == "NONE" {
        if !args.is_empty() {
            return Err(node_err(node, "HEALTHCHECK NONE takes no arguments"));
        }
        hc.test = vec![typ];
        return Ok(hc);
    }
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(node_err(
            node,
            format!("Unknown type {} in HEALTHCHECK (try CMD)", quote(&typ)),
        ));
    }
    let cmd: Vec<String> = if node.json {
        args.to_vec()
    } else if args.is_empty() {
        Vec::new()
    } else {
        vec![args.join(" ")]
    };
    if cmd.is_empty() {
        return Err(node_err(node, "Missing command after HEALTHCHECK CMD"));
    }
    let t = if node.json { "CMD" } else { "CMD-SHELL" };
    hc.test = std::iter::once(t.to_string()).chain(cmd).collect();
    let interval = |name: &str| -> Result<i64, ParseError> {
        let Some(v) = f.str(name) else { return Ok(0) };
        if v.is_empty() {
            return Ok(0);
        }
        let d = parse_duration(&v).map_err(|e| node_err(node, e))?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(node_err(
                node,
                format!("Interval {} cannot be less than 1ms", quote(name)),
            ));
        }
        Ok(d)
    };
    hc.interval = interval("interval")?;
    hc.timeout = interval("timeout")?;
    hc.start_period = interval("start-period")?;
    hc.start_interval = interval("start-interval")?;
    if let Some(r) = f.str("retries").filter(|r| !r.is_empty()) {
        let n: i64 = r.parse().map_err(|_| {
            node_err(
                node,
                format!("strconv.ParseInt: parsing {}: invalid syntax", quote(&r)),
            )
        })?;
        if n < 0 {
            return Err(node_err(
                node,
                format!("--retries cannot be negative ({n})"),
            ));
        }
        hc.retries = n;
    }
    Ok(hc)
}
