//! The build graph: what lowering produces and the solver walks.
//!
//! Every value here is final: variables are expanded, paths resolved against WORKDIR,
//! shell-form commands wrapped in the SHELL, stage references turned into indexes. The
//! solver never looks at Dockerfile syntax; it reads these types, hashes them (they are
//! `Serialize`, with `Vec`s rather than maps so the bytes are stable) and executes them.

pub use crate::git_ref::GitRef;
use serde::Serialize;

/// Where an instruction or flag stands in the Dockerfile, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    /// First physical line of the instruction.
    pub line: usize,
    /// Column (in characters) where it starts on that line.
    pub column: usize,
    /// Last physical line (continuations and heredoc bodies included).
    pub end_line: usize,
}

/// A whole build: the stages the target needs, in Dockerfile order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildGraph {
    /// Reachable stages only; stages the target does not need are pruned and absent.
    /// A stage's dependencies always come earlier in this list.
    pub stages: Vec<Stage>,
    /// Index into `stages` of the stage whose result is the image.
    pub target: usize,
    /// The platform the build is for (the host's).
    pub platform: Platform,
}

pub use kiln_base::platform::Platform;

/// One `FROM` and the instructions under it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    /// Index of this stage among all stages of the Dockerfile (before pruning).
    pub position: usize,
    pub base: Base,
    /// `FROM --platform=` after expansion, if given.
    pub platform: Option<String>,
    /// Span of the `FROM` instruction.
    pub span: Span,
    /// `FROM ...` as written, continuations joined; shown in progress output.
    pub source: String,
    /// The instructions that act, in order (ONBUILD triggers of the base first).
    pub steps: Vec<Step>,
}

impl Stage {
    /// The name BuildKit shows in progress lines: the `AS` name or `stage-N`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("stage-{}", self.position),
        }
    }

    /// Indexes (into [`BuildGraph::stages`]) of every stage this one reads from:
    /// its base, `COPY --from`, `RUN --mount from=`. Sorted, without repeats.
    pub fn dependencies(&self) -> Vec<usize> {
        let mut deps = Vec::new();
        if let Base::Stage(i) = self.base {
            deps.push(i);
        }
        for step in &self.steps {
            match &step.op {
                Op::Copy(copy) => {
                    if let Source::Stage(i) = copy.from {
                        deps.push(i);
                    }
                }
                Op::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(Source::Stage(i)) = mount.from {
                            deps.push(i);
                        }
                    }
                }
                _ => {}
            }
        }
        deps.sort_unstable();
        deps.dedup();
        deps
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Base {
    /// `FROM scratch`: an empty rootfs and an empty config.
    Scratch,
    /// An image reference, expanded with global ARGs (`busybox`, `reg:5000/a/b:1`, `x@sha256:...`).
    Image(String),
    /// An earlier stage, by index into [`BuildGraph::stages`].
    Stage(usize),
    /// A named build context the build holds as an image (`--build-context
    /// NAME=oci-layout://...`), by its name ([`context_name`]); the solver finds it by name.
    Named(String),
}

/// Where files for a COPY or a mount come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    /// The build context.
    Context,
    /// The result of a stage, by index into [`BuildGraph::stages`].
    Stage(usize),
    /// An image reference (`COPY --from=busybox:1.36`).
    Image(String),
    /// A named build context that is not an image reference (`--build-context NAME=DIR`,
    /// `NAME=oci-layout://...`), by its name ([`context_name`]); the solver finds what it
    /// is (a directory, an image) by name.
    Named(String),
}

/// One instruction that acts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub span: Span,
    /// The instruction as written, continuations joined (`COPY src/ ./`).
    pub source: String,
    /// The history `created_by` text, as BuildKit writes it (`RUN /bin/sh -c make # buildkit`).
    /// Empty for ONBUILD, which BuildKit records no history entry for.
    pub created_by: String,
    pub op: Op,
}

impl Step {
    /// Whether BuildKit records this step with `empty_layer: true` (config only).
    pub fn is_metadata_only(&self) -> bool {
        !matches!(self.op, Op::Run(_) | Op::Copy(_) | Op::Workdir(_))
    }
}

/// What an instruction does, fully expanded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Op {
    Run(RunOp),
    /// COPY and ADD (see [`CopyOp::add`]).
    Copy(CopyOp),
    /// Creates the directory (as its own layer, like BuildKit) and sets the working dir.
    Workdir(WorkdirOp),
    /// Sets variables in the image config, in order.
    Env(Vec<(String, String)>),
    /// Only recorded in history; the values already shaped later steps' expansion and env.
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    /// Normalized `port/proto` (`80/tcp`).
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    /// Final argv as stored in the config (shell form already wrapped in the SHELL).
    Cmd(Vec<String>),
    /// Final argv; resets an inherited CMD unless the same stage sets CMD.
    Entrypoint(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
    /// A trigger stored in the config's `OnBuild`, as written.
    OnBuild(String),
    Maintainer(String),
}

/// `RUN`, ready to execute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOp {
    /// The process argv: exec form as written, or SHELL + the command string.
    pub argv: Vec<String>,
    /// Whether the command was written in shell form.
    pub shell_form: bool,
    /// The process environment in order: image ENV, then ARGs in scope not shadowed by ENV.
    pub env: Vec<(String, String)>,
    /// Absolute working directory.
    pub workdir: String,
    /// `USER` as written after expansion (`""` means root); resolved by the executor.
    pub user: String,
    pub network: NetworkMode,
    /// Left out of the serialized op when `sandbox`, so the cache keys of every RUN written
    /// before this field existed stay the same.
    #[serde(skip_serializing_if = "SecurityMode::is_sandbox")]
    pub security: SecurityMode,
    pub mounts: Vec<Mount>,
    /// Files to place in the sandbox (heredoc scripts, e.g. under `/dev/pipes/`); never committed.
    pub files: Vec<InlineFile>,
    /// The predefined proxy args given as build args and not declared with ARG
    /// ([`PROXY_ARGS`]): set in the process environment after `env`, but kept out of the
    /// cache key and the history, as BuildKit's `ProxyEnv` is (a proxy is how this machine
    /// reaches the network, not what the step makes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_env: Vec<(String, String)>,
}

/// The build args a RUN sees without an `ARG` (BuildKit's predefined proxy args).
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `RUN --security`. `insecure` needs the `security.insecure` entitlement, which the
/// solver checks before anything runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

impl SecurityMode {
    pub fn is_sandbox(&self) -> bool {
        *self == SecurityMode::Sandbox
    }
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetworkMode {
    /// Whatever the build was started with (`kiln build --network`).
    Default,
    None,
    Host,
}

/// One `RUN --mount=...`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Absolute path in the sandbox. Empty only for a secret exposed solely as `env=`.
    pub target: String,
    /// Path inside `from` (bind, cache) or the secret's file.
    pub source: Option<String>,
    /// `from=` for bind and cache mounts; `None` means the context (bind) or empty (cache).
    pub from: Option<Source>,
    pub readonly: bool,
    /// Set (with BuildKit's defaults filled in: cache 0755, secret 0400, ssh 0600) for the
    /// kinds that take file info; `None` for bind and tmpfs.
    pub mode: Option<u32>,
    /// Like `mode`: `Some` (default 0) for cache/secret/ssh, `None` otherwise.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The kind of a [`Mount`] and its own options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MountKind {
    Bind,
    Cache {
        id: String,
        sharing: CacheSharing,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret {
        id: String,
        env: Option<String>,
        required: bool,
    },
    Ssh {
        id: String,
        required: bool,
    },
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// A file written into a sandbox or a layer from Dockerfile text (heredocs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
}

/// `COPY` or `ADD`, expanded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyOp {
    /// `ADD` (archives auto-extracted, URLs allowed) rather than `COPY`.
    pub add: bool,
    pub from: Source,
    pub sources: Vec<CopySource>,
    /// Destination as written after expansion; a trailing `/` is kept because it matters.
    pub dest: String,
    /// Absolute working directory a relative `dest` is taken from.
    pub workdir: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD `--checksum=sha256:...`.
    pub checksum: Option<String>,
    /// ADD `--unpack`: `None` means by content for local archives.
    pub unpack: Option<bool>,
    pub keep_git_dir: bool,
}

/// One source of a COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CopySource {
    /// A path or wildcard pattern in `from`.
    Path(String),
    /// An `http(s)://` URL (ADD only).
    Url(String),
    /// A git repository (ADD only, and then its only source): `source` as written after
    /// expansion, `git` parsed, with `--keep-git-dir` and `--checksum` merged into it.
    Git { source: String, git: GitRef },
    /// A heredoc (`COPY <<EOF /dest`): the file named `name` with this content, mode 0644.
    Heredoc { name: String, content: String },
}

/// `WORKDIR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkdirOp {
    /// Absolute, cleaned path.
    pub path: String,
    /// The USER in effect, who owns a newly created directory.
    pub user: String,
}

/// `HEALTHCHECK`, in the config's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "cmd"]`.
    pub test: Vec<String>,
    /// Durations in nanoseconds; 0 means the runtime default.
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// Facts about a base image that lowering needs (its config), supplied by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub user: String,
    pub shell: Vec<String>,
    pub on_build: Vec<String>,
    /// The platform its config names, when known (InvalidBaseImagePlatform).
    pub platform: Option<Platform>,
}

/// Looks up base images for lowering; the CLI implements it over the store / registry.
/// Asked once per image: for every FROM image and every image a `COPY --from` or a
/// `RUN --mount from=` reads (only the config of a FROM matters to lowering; the others
/// are asked so that a resolver that pulls fetches them before the build starts).
pub trait BaseResolver {
    /// The config of `reference` (as written after expansion), or a message why not.
    fn resolve(&self, reference: &str) -> Result<BaseImage, String>;

    /// [`BaseResolver::resolve`] for a stage with its own platform (`FROM --platform=`),
    /// when it differs from the build's: a resolver over several platforms' images gives
    /// that platform's. By default the same as `resolve`.
    fn resolve_for(&self, reference: &str, platform: &Platform) -> Result<BaseImage, String> {
        let _ = platform;
        self.resolve(reference)
    }
}

/// A resolver for builds without image bases: every image is empty.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyResolver;

impl BaseResolver for EmptyResolver {
    fn resolve(&self, _reference: &str) -> Result<BaseImage, String> {
        Ok(BaseImage::default())
    }
}

/// What a named build context (`--build-context NAME=VALUE`) is, as lowering needs to know
/// it: whether a stage may start from it, and with which config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A tree of files the solver reads by the context's name (a local directory): `COPY
    /// --from` and `RUN --mount from=` read it; a stage cannot start from it.
    Files,
    /// An image reference (`docker-image://REF`), looked up or pulled as a FROM image is:
    /// lowering writes REF where the name stood.
    Image(String),
    /// An image the build already holds (`oci-layout://`), with its config; lowering writes
    /// [`Base::Named`] / [`Source::Named`] and the solver finds it by the name.
    Held(BaseImage),
}

/// What lowering is told besides the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// `--build-arg K=V`, in order; taken literally.
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage name (case-insensitive) or index; the last stage when `None`.
    pub target: Option<String>,
    /// The platform to build for; the host's when `None`.
    pub platform: Option<Platform>,
    /// `--build-context`s, by name as [`context_name`] gives it. As in BuildKit, one
    /// replaces the stage of its name (wherever that stage is read) and the image of its
    /// name (`FROM`, `COPY --from`, `RUN --mount from=`); one nothing names is ignored.
    pub named_contexts: Vec<(String, NamedContext)>,
}

/// The name a named build context is looked up by, BuildKit's (`NamedContext`): the
/// reference's familiar form without `:latest`. `docker.io/library/alpine:latest`,
/// `alpine:latest` and `alpine` are all `alpine`; `alpine:3.19` stays itself; a stage name is
/// its own name. `None` when `name` is no valid reference (then nothing can match it).
pub fn context_name(name: &str) -> Option<String> {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    // The domain as Docker's `splitDockerDomain` finds it: a first component with `.` or
    // `:`, or `localhost`; else Docker Hub, whose familiar form drops `docker.io/` and
    // `library/`.
    let (domain, remainder) = match path.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first != first.to_ascii_lowercase() =>
        {
            (Some(first), rest)
        }
        _ => (None, path),
    };
    let domain = match domain {
        Some("index.docker.io" | "docker.io") | None => None,
        Some(d) => Some(d),
    };
    let remainder = match (domain, remainder.strip_prefix("library/")) {
        (None, Some(short)) if !short.contains('/') => short,
        _ => remainder,
    };
    if !remainder.split('/').all(valid_path_component) {
        return None;
    }
    if let Some(t) = tag
        && (t.is_empty()
            || t.len() > 128
            || t.starts_with(['.', '-'])
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
    {
        return None;
    }
    let mut out = match domain {
        Some(d) => format!("{d}/{remainder}"),
        None => remainder.to_string(),
    };
    if let Some(t) = tag.filter(|t| *t != "latest" || digest.is_some()) {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Some(out)
}

/// One path component of a reference: lower-case letters and digits, separated by `.`,
/// `_`, `__` or dashes (Docker's grammar). The build checks judge references by it too.
pub(crate) fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if !b.first().copied().is_some_and(alnum) || !b.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}
