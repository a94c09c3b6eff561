//! One directory of the context, read relative to its open fd: its names by `getdents64`
//! into one buffer, each entry's stat by `statx` on the directory fd with the name alone.
//!
//! Why not `std::fs::read_dir`: a no-op rebuild of a 20,000-file context is its stat
//! calls, and std's listing allocated per entry (a `DirEntry` holding an `Arc` of the
//! directory, an `OsString` per name, a full `Metadata`), which with the page faults of
//! that memory cost about a quarter of the walk. rustix gives the raw syscalls (no libc
//! wrapper, no per-entry allocation) with typed errors, which hand-written `libc` calls
//! would have to re-create with `unsafe`.
//!
//! Everything is fd-relative: a subdirectory is opened with `O_NOFOLLOW | O_DIRECTORY`
//! from its parent's fd (a symlink planted there fails instead of leading out of the
//! context), and deep directories whose parents' fds were let go are reopened from the
//! context root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir, ResolveFlags, StatxFlags};
use rustix::io::Errno;

use super::ContextFileType;
use crate::statcache::StatKey;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What the walk needs of an entry's stat.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stat {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub size: u64,
    pub key: StatKey,
    /// More than one name links to it (`st_nlink` > 1).
    pub linked: bool,
}

impl Stat {
    pub(super) fn from_meta(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            mode: m.mode(),
            size: m.size(),
            key: StatKey::from_meta(m),
            linked: m.nlink() > 1,
        }
    }

    fn from_statx(x: &rustix::fs::Statx) -> Stat {
        let ns = |t: &rustix::fs::StatxTimestamp| {
            t.tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.tv_nsec))
        };
        let mode = u32::from(x.stx_mode);
        Stat {
            mode,
            size: x.stx_size,
            linked: x.stx_nlink > 1,
            key: StatKey {
                size: x.stx_size,
                mtime_ns: ns(&x.stx_mtime),
                ctime_ns: ns(&x.stx_ctime),
                ino: x.stx_ino,
                mode,
            },
        }
    }

    pub(super) fn kind(&self) -> ContextFileType {
        match self.mode & libc_s::IFMT {
            libc_s::IFDIR => ContextFileType::Dir,
            libc_s::IFREG => ContextFileType::File,
            libc_s::IFLNK => ContextFileType::Symlink,
            _ => ContextFileType::Other,
        }
    }
}

/// The `S_IF*` type bits (the same on every Linux architecture).
mod libc_s {
    pub const IFMT: u32 = 0o170000;
    pub const IFDIR: u32 = 0o040000;
    pub const IFREG: u32 = 0o100000;
    pub const IFLNK: u32 = 0o120000;
}

/// The names of one directory, sorted by their bytes, `.` and `..` left out.
pub(super) struct Listing {
    /// The names back to back, each with its NUL.
    names: Vec<u8>,
    /// (start, length without the NUL) of each name in `names`, in sorted order.
    order: Vec<(u32, u32)>,
}

impl Listing {
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &CStr> {
        self.order.iter().map(|&(start, len)| {
            let (start, len) = (start as usize, len as usize);
            CStr::from_bytes_with_nul(&self.names[start..=start + len])
                .expect("each name is stored with its NUL and none inside")
        })
    }
}

/// Reads the directory `dir` whole.
pub(super) fn list(dir: BorrowedFd<'_>) -> io::Result<Listing> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut raw = RawDir::new(dir, &mut buf);
    let mut names = Vec::with_capacity(4096);
    let mut order = Vec::new();
    while let Some(entry) = raw.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        // A name is at most 255 bytes, so only the total can overflow u32.
        let start = u32::try_from(names.len()).map_err(|_| io::Error::from(Errno::NOMEM))?;
        names.extend_from_slice(name);
        names.push(0);
        order.push((start, name.len() as u32));
    }
    order.sort_unstable_by(|a, b| {
        let name = |&(s, l): &(u32, u32)| &names[s as usize..(s + l) as usize];
        name(a).cmp(name(b))
    });
    Ok(Listing { names, order })
}

/// The entry `name` of `dir`, not following a symlink.
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let mask = StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::INO
        | StatxFlags::SIZE
        | StatxFlags::NLINK
        | StatxFlags::MTIME
        | StatxFlags::CTIME;
    let x = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, mask)?;
    Ok(Stat::from_statx(&x))
}

/// The target of the symlink `name` of `dir`.
pub(super) fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Opens the subdirectory `name` of `dir`; a symlink there is refused (ELOOP).
pub(super) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Opens the context root `root` (canonical: no symlink in it).
pub(super) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(root, DIR_FLAGS, Mode::empty())?)
}

/// How many times to retry `openat2` when the kernel could not rule out an escape (EAGAIN:
/// a rename, or a mount or unmount anywhere on the machine, during the walk).
const EAGAIN_RETRIES: usize = 64;

/// Opens the directory `rel` (relative, `.`-free, empty for the root) below `root`
/// without following any symlink or leaving `root`.
pub(super) fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, rel, DIR_FLAGS, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            // Kernels before 5.6 lack openat2: the same walk one component at a time.
            Err(Errno::NOSYS) => return open_by_components(root, rel),
            other => return Ok(other?),
        }
    }
}

fn open_by_components(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())?;
    for comp in rel.components() {
        match comp {
            Component::CurDir => {}
            Component::Normal(name) => {
                cur = rustix::fs::openat(cur.as_fd(), name, DIR_FLAGS, Mode::empty())?;
            }
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::from(Errno::XDEV));
            }
        }
    }
    Ok(cur)
}
