//! What a RUN asks of the sandbox and what it gets back: the [`RunSpec`] with its mounts,
//! network and stdio, the output lines and [`RunOutcome`], and [`SandboxError`]. The
//! helper's modules read these types too, so they live below everything that uses them.

use super::options::RunOptions;
use crate::snapshot::Snapshotter;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Network mode of a RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (BuildKit's default for RUN).
    Host,
    /// A network namespace with only `lo`, up, that no other RUN uses at the same time
    /// (one of the zygote's pool, module `zygote`).
    None,
}

/// One extra mount of a RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub target: String,
    pub kind: MountKind,
}

/// What is mounted at a [`MountSpec::target`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host file or directory. Writable binds write through to `host`.
    Bind { host: PathBuf, readonly: bool },
    /// A merged stack of layer directories (bottom first), e.g. another stage's rootfs.
    /// When writable, writes go to a throwaway tmpfs and are discarded.
    Layers {
        lowers: Vec<PathBuf>,
        readonly: bool,
    },
    /// A fresh tmpfs, optionally limited to `size` bytes.
    Tmpfs { size: Option<u64> },
    /// A persistent cache directory (prepared by the caller with its mode and owner).
    Cache { host: PathBuf },
    /// A secret file, copied into a private tmpfs and shown read-only with this mode/owner.
    Secret {
        host: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Everything one RUN needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The command; argv[0] is looked up in the container's PATH.
    pub argv: Vec<String>,
    /// Environment, in order; a later duplicate wins. PATH defaults to [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Working directory inside the container; must exist ("" = `/`).
    pub cwd: String,
    /// `""` (root), `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    /// Hostname inside the sandbox ("" keeps the host's).
    pub hostname: String,
    pub network: Network,
    /// Layer directories of the rootfs, bottom first.
    pub lowers: Vec<PathBuf>,
    /// An empty directory: becomes this RUN's layer directory.
    pub upper: PathBuf,
    /// An empty scratch directory on the same filesystem as `upper`; the caller removes it.
    pub work: PathBuf,
    pub mounts: Vec<MountSpec>,
    /// Files shown in the sandbox but never committed: (path, content, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub snapshotter: Snapshotter,
    /// `RUN --security=insecure` (entitled by `--allow security.insecure`): every
    /// capability, no seccomp filter, no masked paths. Still inside the build's own user
    /// namespace, so no more power over the host than a rootless build's.
    pub insecure: bool,
    /// What the command line adds to the RUN's environment (extra hosts); the default
    /// adds nothing.
    pub options: RunOptions,
}

/// Where the process's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessIo {
    /// RUN: stdin is `/dev/null`, stdout and stderr come back line by line to the caller.
    #[default]
    Pipe,
    /// `kiln run`: stdout and stderr are the caller's own (a terminal, if it has one), so
    /// output arrives unchanged and unbuffered; stdin is the caller's with `stdin`, else
    /// `/dev/null`. The process still starts a session of its own, so an inherited
    /// terminal is never its controlling terminal (no TIOCSTI into the caller's shell).
    Inherit { stdin: bool },
    /// `kiln run -t`: a new pseudo-terminal is the process's stdin, stdout, stderr and
    /// controlling terminal; kiln relays its own stdout to it, and its stdin with `stdin`
    /// (module `terminal`).
    Terminal { stdin: bool },
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of the process's output, without its `\n` (a last line without one is still
/// delivered). Bytes, not text: output is not always UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub line: Vec<u8>,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// The exit status; 128+N when killed by signal N.
    pub exit_code: i32,
    pub signal: Option<i32>,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none()
    }
}

/// Why a RUN could not be carried out (a non-zero exit is not an error: see [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the sandbox helper {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("sandbox helper protocol: {0}")]
    Protocol(String),
    #[error("sandbox setup failed ({step}): {message}")]
    Setup { step: String, message: String },
    #[error("sandbox helper exited without a result ({0})")]
    HelperDied(String),
    /// The `--cgroup-parent` asked for cannot be used (the sentence names the flag).
    #[error("{0}")]
    Cgroup(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Diff(#[from] crate::layer_dir::LayerDirError),
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}
