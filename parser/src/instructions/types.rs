//! The typed Dockerfile: stages, instructions and each command's fields, values still as
//! written (expansion happens during lowering).

use crate::graph::Span;
use crate::syntax::{Ast, Heredoc, RawFlag};

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
