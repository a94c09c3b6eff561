//! The command line: every subcommand and flag, as clap types. No behaviour lives here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// kiln: build container images from Dockerfiles, without a daemon and without root.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// Store directory (blobs, snapshots, cache, image refs).
    /// Default: $KILN_ROOT, else $XDG_DATA_HOME/kiln, else ~/.local/share/kiln.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<BuildArgs>),
    /// Print the build graph as Graphviz DOT.
    Graph(GraphArgs),
    /// List images in the store.
    Images,
    /// Print an image's config and manifest as JSON (for an image of several platforms,
    /// its index and each platform's digests too).
    Inspect {
        /// Image reference (name:tag).
        reference: String,
        /// The image of this platform (os/arch[/variant]) of an image of several.
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
    },
    /// Show an image's history, newest step first.
    History {
        /// Image reference (name:tag).
        reference: String,
        /// The history of this platform's image (os/arch[/variant]) of an image of
        /// several; by default this machine's, else the first.
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
    },
    /// Give an image another name.
    Tag {
        /// Existing image reference.
        source: String,
        /// New name:tag.
        target: String,
    },
    /// Remove image names (blobs go with `kiln prune`).
    Rmi {
        /// Image references to untag.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Write images to an archive (`docker load` format by default).
    Save(SaveArgs),
    /// Load images from a docker-archive, OCI archive or OCI layout directory.
    Load {
        /// Archive file or OCI layout directory.
        #[arg(short, long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Make a one-layer image from a root filesystem tarball (as `docker import`).
    Import(ImportArgs),
    /// Run a command in an image, in the build's rootless sandbox; its changes are thrown
    /// away. Exits with the command's status.
    Run(RunArgs),
    /// Remove blobs, snapshots and cache records that nothing uses.
    Prune(PruneArgs),
    /// Fetch an image from a registry into the store.
    Pull(PullArgs),
    /// Upload an image from the store to a registry.
    Push(PushArgs),
    /// Save registry credentials (in ~/.docker/config.json, like docker login).
    Login(LoginArgs),
    /// Remove saved registry credentials.
    Logout(LogoutArgs),
    /// Compare two images: files (whiteouts applied), config and history.
    /// Exit status 0 identical, 1 different, 2 error.
    Diff(DiffArgs),
    /// Serve a REAPI farm as a kiln worker: take the RUN steps `kiln build --remote` sends
    /// through its scheduler and run them in this store's sandbox, until the farm goes away.
    Worker(WorkerArgs),
    /// Developer tools.
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's AST in BuildKit's parser test format.
    Parse {
        /// The Dockerfile.
        file: PathBuf,
    },
}

/// How build progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// tty when stderr is a terminal, else plain.
    Auto,
    /// Live steps with spinners.
    Tty,
    /// Numbered lines like BuildKit's `--progress=plain`.
    Plain,
    /// One JSON event per line.
    Json,
    /// Only the image ID on stdout.
    Quiet,
}

/// Network for RUN steps that do not choose one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// The host's network (BuildKit's default).
    Default,
    Host,
    /// Only a loopback interface.
    None,
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

/// Snapshotter for RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotterArg {
    Auto,
    Overlay,
    Copy,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, or a git URL (`https://host/repo.git#ref:subdir`).
    pub context: PathBuf,
    /// Dockerfile path (default: CONTEXT/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Name the result (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// Set a build-time variable (repeatable). `--build-arg K` takes K from the environment.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build this stage and what it needs, not the last one.
    #[arg(long)]
    pub target: Option<String>,
    /// A named context (repeatable): NAME=DIR, NAME=docker-image://REF,
    /// NAME=oci-layout://DIR[:TAG|@DIGEST], NAME=GIT-URL or NAME=URL (one file); it stands
    /// in for the stage or image NAME in FROM, COPY --from and RUN --mount from=.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Run every step, ignoring the cache (results are still recorded).
    #[arg(long)]
    pub no_cache: bool,
    /// Ignore the cache for these stages only (comma separated, repeatable).
    #[arg(long, value_name = "STAGE,...", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build result's metadata (buildx's keys: containerimage.digest,
    /// containerimage.config.digest, containerimage.descriptor, image.name) to this file
    /// as JSON.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// Network for RUN steps. `none` holds for every RUN, even `RUN --network=host`.
    #[arg(long, value_enum, default_value = "default")]
    pub network: NetworkArg,
    /// Memory limit of each RUN (`512m`, `2g`); needs a cgroup v2 delegated to kiln.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit of each RUN, in CPUs (`1.5`); needs a cgroup v2 delegated to kiln.
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<f64>,
    /// Most processes and threads one RUN may have (default 4096; -1: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Add a line to every RUN's /etc/hosts: HOST:IP or HOST=IP, IPv4 or IPv6 (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// A resource limit of every RUN: NAME=SOFT[:HARD] (nofile, nproc, core, stack, ...;
    /// -1: unlimited), as `docker build --ulimit` (repeatable).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Size of every RUN's /dev/shm (`128m`, `1g`; powers of 1024 as docker's; default 64m).
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Put every RUN's cgroup under this cgroup (a path below /sys/fs/cgroup, made if
    /// missing); a RUN fails where it cannot be used (not delegated, cgroup v1 rootless).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Let the Dockerfile use an entitlement: network.host (`RUN --network=host`) or
    /// security.insecure (`RUN --security=insecure`). Repeatable or comma separated.
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Add a label to the image (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: CompressionArg,
    /// Extra outputs (repeatable): type=oci,dest=FILE writes an OCI archive (a tar, as
    /// buildx); add tar=false (or name an existing directory, or end dest with /) for an OCI
    /// layout directory. type=docker,dest=FILE writes a `docker load` archive; type=registry
    /// pushes the -t names.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Say, for every step that missed the cache, which input changed.
    #[arg(long)]
    pub explain_cache: bool,
    /// Expose a secret to RUN --mount=type=secret: id=X,src=FILE or id=X,env=NAME.
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// Expose an SSH agent to RUN --mount=type=ssh (repeatable): `default` ($SSH_AUTH_SOCK),
    /// ID=SOCKET, or ID=KEYFILE[,KEYFILE] (kiln runs an ssh-agent holding them).
    #[arg(long = "ssh", value_name = "ID[=SOCKET|KEYFILE]")]
    pub ssh: Vec<String>,
    /// Snapshotter for RUN steps.
    #[arg(long, value_enum, default_value = "auto")]
    pub snapshotter: SnapshotterArg,
    /// `keep` keeps real file times instead of clamping them to SOURCE_DATE_EPOCH (default 0).
    #[arg(long, value_name = "keep")]
    pub timestamp: Option<String>,
    /// Target platform (`os/arch[/variant]`, one for now); another architecture's RUN steps
    /// need an emulator registered with binfmt_misc (qemu-user-static).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Pull every base image again, even when the store has it.
    #[arg(long)]
    pub pull: bool,
    /// Push every -t name to its registry after the build.
    #[arg(long)]
    pub push: bool,
    /// Export the build cache: type=registry,ref=R[,mode=min|max], type=local,dest=DIR or
    /// type=reapi,endpoint=grpc[s]://HOST:PORT[,instance=NAME][,mode=min|max].
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache first: type=registry,ref=R or type=local,src=DIR, or ask one
    /// per step: type=reapi,endpoint=grpc[s]://HOST:PORT (repeatable).
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Run RUN steps without mounts on the kiln workers of this REAPI farm:
    /// grpc[s]://HOST:PORT[,instance=NAME][,token-file=F|token-env=VAR]. A farm that is
    /// down or fails costs one warning; the steps then run here.
    #[arg(long, value_name = "ENDPOINT")]
    pub remote: Option<String>,
    /// Allow plain HTTP and unverified TLS to this registry (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Build twice with --no-cache in scratch stores, compare, and fail (exit 1) with the
    /// differences unless both builds give the same image; then tag it as usual.
    #[arg(long)]
    pub verify_reproducible: bool,
    /// Run the build checks only: print what they find, build nothing, and exit 1 when
    /// they find something.
    #[arg(long, conflicts_with = "verify_reproducible")]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Build context directory (only used to find the Dockerfile).
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Target stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Build-time variables (repeatable).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
}

/// Archive formats for `kiln save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// `docker load` format (also a valid OCI layout inside).
    Docker,
    /// OCI image layout as a tar.
    Oci,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Output file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format.
    #[arg(long, value_enum, default_value = "docker")]
    pub format: SaveFormat,
    /// Images to save.
    #[arg(required = true)]
    pub references: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also drop every cache record (the next build runs every step).
    #[arg(long)]
    pub all: bool,
    /// Keep at most this much cache (e.g. 10GB, 512MB), dropping the oldest records first.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
}

/// Output format of `kiln diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One line per difference.
    Text,
    /// One JSON document.
    Json,
}

/// `kiln diff`: compare two images by their final filesystems, config and history.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Compare the images of this platform (os/arch[/variant]) only. Two images of
    /// several platforms are otherwise compared platform by platform.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// First image: a name in the store, oci:DIR, oci-archive:FILE or docker-archive:FILE.
    pub a: String,
    /// Second image, in the same forms.
    pub b: String,
}

/// Network of the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunNetwork {
    /// The host's network (as RUN has by default).
    Host,
    /// Only a loopback interface.
    None,
}

/// `kiln run [FLAGS] IMAGE [COMMAND [ARG...]]`
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Remove the container's changes when it exits: always so (accepted for docker's
    /// command lines).
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open: the process reads kiln's stdin (else /dev/null).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal: a new pty, relayed to kiln's stdio (with -i and a
    /// terminal, kiln's is put in raw mode meanwhile). Without -t the process writes to
    /// kiln's stdout and stderr directly.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (repeatable); `-e K` takes K from kiln's environment.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Bind a host path: HOST:CONTAINER[:ro] (repeatable).
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,
    /// Network of the container.
    #[arg(long, value_enum, default_value = "host")]
    pub network: RunNetwork,
    /// User (name, uid, name:group or uid:gid) instead of the image's.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container (must exist) instead of the image's.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Snapshotter for the container's filesystem.
    #[arg(long, value_enum, default_value = "auto")]
    pub snapshotter: SnapshotterArg,
    /// Image (name, image ID or ID prefix; or the ID a failed build printed), then the
    /// command and its arguments (default: the image's entrypoint and cmd).
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub args: Vec<String>,
}

/// `kiln import ROOTFS.tar[.gz|.zst|-] NAME[:TAG]`
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Root filesystem tarball (plain, gzip or zstd); `-` reads it from stdin.
    pub file: PathBuf,
    /// Name for the image.
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
    /// Apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR (repeatable).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// History comment (default: `Imported from -`, as docker writes).
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
}

/// Flags every registry command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryFlags {
    /// Allow plain HTTP and unverified TLS to this registry (`host[:port]`; repeatable).
    /// Loopback registries (localhost, 127.0.0.0/8, ::1) may use HTTP without it.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `kiln pull REF`
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Image to pull (`busybox`, `registry.example:5000/team/app:1`, `name@sha256:...`).
    pub reference: String,
    /// Platform to choose from a multi-platform image (`os/arch[/variant]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the manifest digest.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln push REF [DEST]`
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Image in the store to push.
    pub source: String,
    /// Where to push it (default: the same name; a name without a registry host goes to
    /// Docker Hub).
    pub dest: Option<String>,
    /// Print only the manifest digest.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln login [-u USER] [--password-stdin] HOST`
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Registry (`host[:port]`; default Docker Hub).
    #[arg(default_value = "docker.io")]
    pub server: String,
    /// User name (asked on stdin when missing).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln logout HOST`
#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// Registry (`host[:port]`; default Docker Hub).
    #[arg(default_value = "docker.io")]
    pub server: String,
}

/// `kiln worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The farm's scheduler: grpc[s]://HOST:PORT[,instance=NAME][,token-file=F|token-env=VAR].
    #[arg(long, value_name = "ENDPOINT")]
    pub endpoint: String,
    /// The bot's name in the farm (default: the host name and the process ID).
    #[arg(long, value_name = "ID")]
    pub bot_id: Option<String>,
}
