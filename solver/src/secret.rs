//! Handing a `--secret` to the sandbox without it touching a disk or outliving kiln.
//!
//! The sandbox helper is a separate process that is told, by path, which file to copy into
//! the RUN's private tmpfs. Two ways to give it that path:
//!
//! - A sealed memfd, opened by the helper as `/proc/<kiln's pid>/fd/<N>`. A memfd has no
//!   name in any filesystem and lives exactly as long as a descriptor of it does: when kiln
//!   ends, even by `kill -9`, the kernel frees it and nothing is left to sweep. procfs lets
//!   a process open another's descriptors only from the same user namespace (or with
//!   CAP_SYS_PTRACE over it), which holds when kiln runs unprivileged: kiln is already in
//!   its own user namespace and the helper stays in it.
//! - As real root the helper enters a user namespace of its own and cannot open kiln's
//!   descriptors, so the secret goes in a file in a private (0700) staging directory on a
//!   tmpfs (memory, never a disk), watched with inotify: the moment the helper opens it,
//!   kiln unlinks it, so it exists only while the sandbox is being set up. If kiln is
//!   killed in that instant, the directory is a staging directory of a dead process, which
//!   the next kiln removes.

use kiln_cache::{StagingDir, Store};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{MemfdFlags, SealFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A secret's bytes where the sandbox helper can read them; dropping it frees them.
#[derive(Debug)]
pub(crate) enum SecretFile {
    Memory(OwnedFd),
    Tmpfs {
        file: PathBuf,
        /// Removes the directory when dropped (after `file`'s own unlink).
        _dir: StagingDir,
    },
}

/// Why a secret could not be staged (never with its value).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("creating a memory file: {0}")]
    Create(#[source] std::io::Error),
    #[error("writing the secret: {0}")]
    Write(#[source] std::io::Error),
    #[error("sealing the memory file: {0}")]
    Seal(#[source] std::io::Error),
    #[error("no private tmpfs for the secret ($XDG_RUNTIME_DIR or /dev/shm)")]
    NoTmpfs,
    #[error("staging the secret on a tmpfs: {0}")]
    Staging(String),
    #[error("watching the secret file: {0}")]
    Watch(#[source] std::io::Error),
}

impl SecretFile {
    /// `value` staged for the helper of this process's sandboxes.
    pub(crate) fn new(store: &Store, value: &[u8]) -> Result<SecretFile, SecretError> {
        if in_initial_user_namespace() {
            SecretFile::on_tmpfs(store, value)
        } else {
            SecretFile::in_memory(value)
        }
    }

    /// `value` in a new memfd, sealed so that nothing can change it any more.
    fn in_memory(value: &[u8]) -> Result<SecretFile, SecretError> {
        let fd = rustix::fs::memfd_create(
            "kiln-secret",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| SecretError::Create(e.into()))?;
        write_all(&fd, value)?;
        rustix::fs::fcntl_add_seals(
            &fd,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )
        .map_err(|e| SecretError::Seal(e.into()))?;
        Ok(SecretFile::Memory(fd))
    }

    /// `value` in a file on a tmpfs that is unlinked as soon as someone opens it.
    fn on_tmpfs(store: &Store, value: &[u8]) -> Result<SecretFile, SecretError> {
        let dir = store
            .tmpfs_staging()
            .map_err(|e| SecretError::Staging(e.to_string()))?
            .ok_or(SecretError::NoTmpfs)?;
        let file = dir.path().join("secret");
        let fd = rustix::fs::open(
            &file,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::EXCL,
            rustix::fs::Mode::from_raw_mode(0o400),
        )
        .map_err(|e| SecretError::Write(e.into()))?;
        write_all(&fd, value)?;
        drop(fd);
        unlink_when_opened(&file)?;
        Ok(SecretFile::Tmpfs { file, _dir: dir })
    }

    /// The path the sandbox helper opens the secret by.
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            SecretFile::Memory(fd) => PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                fd.as_raw_fd()
            )),
            SecretFile::Tmpfs { file, .. } => file.clone(),
        }
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if let SecretFile::Tmpfs { file, .. } = self {
            // Also ends the watcher when nobody opened the file (its watch goes away).
            let _ = std::fs::remove_file(file);
        }
    }
}

fn write_all(fd: &OwnedFd, value: &[u8]) -> Result<(), SecretError> {
    let mut rest = value;
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(0) => return Err(SecretError::Write(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SecretError::Write(e.into())),
        }
    }
    Ok(())
}

/// Unlinks `file` from a thread the moment it is opened (or stops when it is deleted).
fn unlink_when_opened(file: &Path) -> Result<(), SecretError> {
    let watch = |e: rustix::io::Errno| SecretError::Watch(e.into());
    let inotify = inotify::init(CreateFlags::CLOEXEC).map_err(watch)?;
    inotify::add_watch(&inotify, file, WatchFlags::OPEN | WatchFlags::DELETE_SELF)
        .map_err(watch)?;
    let file = file.to_path_buf();
    std::thread::Builder::new()
        .name("kiln-secret-unlink".into())
        .spawn(move || {
            let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
            let mut events = inotify::Reader::new(&inotify, &mut buf);
            loop {
                match events.next() {
                    Ok(event)
                        if event.events().intersects(
                            ReadFlags::OPEN | ReadFlags::DELETE_SELF | ReadFlags::IGNORED,
                        ) =>
                    {
                        break;
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
            }
            let _ = std::fs::remove_file(&file);
        })
        .map_err(SecretError::Watch)?;
    Ok(())
}

/// Whether this process is in the initial user namespace (the full identity mapping):
/// real root, whose sandbox helper makes a user namespace of its own.
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_secret_reads_back_by_its_path_and_cannot_be_changed() {
        let secret = SecretFile::in_memory(b"s3cr3t\0value").expect("memfd");
        let path = secret.path();
        assert_eq!(std::fs::read(&path).expect("read"), b"s3cr3t\0value");
        let writer = std::fs::OpenOptions::new().append(true).open(&path);
        let wrote = writer.and_then(|mut f| std::io::Write::write_all(&mut f, b"more"));
        assert!(wrote.is_err(), "sealed against writes");
        assert_eq!(std::fs::read(&path).expect("read"), b"s3cr3t\0value");
        let empty = SecretFile::in_memory(b"").expect("memfd");
        assert_eq!(std::fs::read(empty.path()).expect("read"), b"");
    }

    #[test]
    fn a_tmpfs_secret_is_unlinked_once_opened() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = Store::open(tmp.path()).expect("store");
        let secret = match SecretFile::on_tmpfs(&store, b"s3cr3t") {
            Ok(s) => s,
            Err(SecretError::NoTmpfs) => return,
            Err(e) => panic!("{e}"),
        };
        let path = secret.path();
        let mut opened = std::fs::File::open(&path).expect("open");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while path.exists() {
            assert!(std::time::Instant::now() < deadline, "still linked");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut opened, &mut read).expect("read");
        assert_eq!(read, b"s3cr3t", "the opener reads it whole");
        let dir = path.parent().map(Path::to_path_buf);
        drop(secret);
        assert!(dir.is_some_and(|d| !d.exists()), "its directory is gone");
    }
}
