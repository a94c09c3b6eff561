//! kiln's executor: where steps touch files and processes.
//!
//! Owns the rootless sandbox that runs `RUN` (user, mount, pid, ipc, uts and optional
//! network namespaces, entered through a single-threaded helper that a re-exec'd zygote
//! forks per RUN, with Docker's seccomp profile and a cgroup per RUN: `sandbox`,
//! `cgroup`), rootfs snapshots (overlayfs,
//! with a copy fallback), turning a snapshot's changes into a layer directory (`layer_dir`:
//! the layer directory format, read merged and written as the difference to its lowers;
//! cleaned up fd-relative, never through a symlink: `beneath`), the merged read-only view
//! of a layer stack (`layered`), applying `COPY`/`ADD` into a new layer, making
//! WORKDIR's directory (`workdir`), and committing a step's layer into the store, blob and
//! snapshot ([`commit::commit_layer`], the one owner of the COPY staging on a tmpfs), and
//! whether RUN can execute for a foreign platform here ([`binfmt`]).
//!
//! It knows nothing of Dockerfile syntax or registries: it receives expanded operations from
//! the solver.

mod beneath;
pub mod binfmt;
pub mod cgroup;
pub mod commit;
pub mod layer_dir;
pub mod output_gate;
pub mod sandbox;
pub mod snapshot;
pub mod userns;

pub mod copy;
pub mod layered;
pub mod runc_compat;
pub mod staged;
pub mod workdir;

pub use copy::{CopyError, CopyReport, CopyRequest, SourceRoot, SourceSpec, copy_into_layer};
pub use layered::{Entry, FileKind, LayeredFs};
