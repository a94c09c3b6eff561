//! kiln-base: the few small rules every other kiln crate needs, written once.
//!
//! Each of these used to be written again in the crate that needed it, and the copies
//! drifted apart (one matcher escaped `\`, the other did not; one atomic write skipped the
//! fsync; one host platform had arm's variant, the other not). This crate is the lowest in
//! the workspace: it depends on no other kiln crate, does no I/O beyond what [`atomic`],
//! [`write_behind`] and [`writeback`] are for (and [`phase`]'s lines on stderr), and knows nothing of Dockerfiles, stores or sandboxes.
//!
//! - [`digest`]: `sha256:<hex>` digests: the [`digest::Digest`] type (validated once),
//!   hashing, validation, the hex part.
//! - [`canonical_json`]: the JSON bytes kiln hashes (keys sorted, no whitespace).
//! - [`gopath`]: Go's `path.Clean` and `filepath.Match` (Unix: `\` escapes), and
//!   BuildKit's rule for which sources are wildcards.
//! - [`whiteout`]: deletions and opaque directories, as tar markers and as overlayfs
//!   devices and xattrs.
//! - [`atomic`]: replacing a file so that a crash leaves the old one or the new one.
//! - [`platform`]: `os/arch[/variant]` and this machine's, with containerd's names.
//! - [`compression`]: gzip, zstd, bzip2, xz or none, by magic number.
//! - [`passwd`]: `/etc/passwd` and `/etc/group` entries.
//! - [`phase`]: phase timings to stderr under `KILN_TRACE_PHASES=1`, for profiling.
//! - [`worker`]: a thread started on first use that runs the jobs sent to it.
//! - [`write_behind`]: a stream's writes carried out by a thread of its own.
//! - [`writeback`]: starting a file's writeback early, so the build's one sync waits less.
//! - [`size`]: sizes in flags and columns (`10GB` in, `1.5MB` out), in docker's decimal
//!   units.

pub mod atomic;
pub mod canonical_json;
pub mod compression;
pub mod digest;
pub mod gopath;
pub mod passwd;
pub mod phase;
pub mod platform;
pub mod size;
pub mod whiteout;
pub mod worker;
pub mod write_behind;
pub mod writeback;
