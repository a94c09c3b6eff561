//! Handing a `--secret` to the sandbox without it touching a disk or outliving kiln.
//!
//! The secret is a sealed memfd, which the sandbox helper opens as
//! `/proc/<kiln's pid>/fd/<N>` (still in kiln's user namespace, before it makes its own; see
//! `kiln_executor::sandbox`) and copies into the RUN's private tmpfs. A memfd has no name in
//! any filesystem and lives exactly as long as a descriptor of it does: when kiln ends, even
//! by `kill -9`, the kernel frees it and nothing is left to sweep.

use rustix::fs::{MemfdFlags, SealFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A secret's bytes where the sandbox helper can read them; dropping it frees them.
#[derive(Debug)]
pub(crate) struct SecretFile(OwnedFd);

/// Why a secret could not be staged (never with its value).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("creating a memory file: {0}")]
    Create(#[source] std::io::Error),
    #[error("writing the secret: {0}")]
    Write(#[source] std::io::Error),
    #[error("sealing the memory file: {0}")]
    Seal(#[source] std::io::Error),
}

impl SecretFile {
    /// `value` staged for the helper of this process's sandboxes.
    pub(crate) fn new(value: &[u8]) -> Result<SecretFile, SecretError> {
        SecretFile::in_memory(value)
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
        Ok(SecretFile(fd))
    }

    /// The path the sandbox helper opens the secret by.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.0.as_raw_fd()
        ))
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
}
