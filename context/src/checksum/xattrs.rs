//! The xattrs an entry's digest covers, as BuildKit's content hash selects them: every
//! name but `system.*` (ACLs) and `security.*` other than `security.capability`, and never
//! overlayfs's own markers, which a COPY does not copy either. A file given a capability
//! (`setcap`) or a `user.*` attribute is then a changed file, and its COPY runs again to
//! copy it, as a build from scratch would.
//!
//! Read on the entry itself (a final symlink is not followed). A value that changes while
//! it is read is read again a few times, then the read fails: the walk reports the file.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

/// Reads of a list or value that grew between its size and its bytes before giving up.
const RETRIES: usize = 4;

/// Whether the attribute `name` counts.
fn counts(name: &[u8]) -> bool {
    if name.starts_with(b"system.") {
        return false;
    }
    if name.starts_with(b"security.") {
        return name == b"security.capability";
    }
    std::str::from_utf8(name).map_or(true, |n| !kiln_base::whiteout::is_overlay_xattr(n))
}

/// The digest of the attributes of `path` that count, `None` when it has none (or its
/// filesystem has no xattrs at all, as the copy and the layer writer take it).
pub(super) fn digest(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let listed = read_sized(|buf| match buf {
        None => rustix::fs::llistxattr_query(path),
        Some(buf) => rustix::fs::llistxattr(path, buf),
    });
    let list = match listed {
        Ok(Some(list)) => list,
        Ok(None) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(Errno::NOTSUP.raw_os_error()) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names: Vec<&[u8]> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && counts(n))
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    names.sort_unstable();
    names.dedup();
    let mut h = Sha256::new();
    h.update(b"kiln-xattrs-v1\0");
    let mut any = false;
    for name in names {
        let name_os = OsStr::from_bytes(name);
        let value = read_sized(|buf| match buf {
            None => rustix::fs::lgetxattr_query(path, name_os),
            Some(buf) => rustix::fs::lgetxattr(path, name_os, buf),
        });
        let value = match value {
            Ok(v) => v.unwrap_or_default(),
            // Removed since the list was read: as if it had not been listed.
            Err(e) if e.raw_os_error() == Some(Errno::NODATA.raw_os_error()) => continue,
            Err(e) => return Err(e),
        };
        any = true;
        for field in [name, &value[..]] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field);
        }
    }
    Ok(any.then(|| h.finalize().into()))
}

/// The digest a file's entry gets: its content's, with its attributes' folded in when it
/// has any (a file without attributes keeps the plain content digest, and so its keys).
pub(super) fn with_content(content: [u8; 32], xattrs: Option<[u8; 32]>) -> [u8; 32] {
    match xattrs {
        None => content,
        Some(x) => {
            let mut h = Sha256::new();
            h.update(b"kiln-file-xattrs-v1\0");
            h.update(content);
            h.update(x);
            h.finalize().into()
        }
    }
}

/// Bytes of a list or value read by `read` (asked first for its size with `None`):
/// `None` when empty. Read again when it grew in between.
fn read_sized(
    mut read: impl FnMut(Option<&mut [u8]>) -> rustix::io::Result<usize>,
) -> io::Result<Option<Vec<u8>>> {
    for _ in 0..RETRIES {
        let size = read(None)?;
        if size == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; size];
        match read(Some(&mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Ok((n > 0).then_some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "its extended attributes kept changing while read",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_is_buildkits_without_overlay_markers() {
        for (name, counted) in [
            ("user.mime_type", true),
            ("trusted.md5", true),
            ("security.capability", true),
            ("security.selinux", false),
            ("security.ima", false),
            ("system.posix_acl_access", false),
            ("user.overlay.opaque", false),
            ("trusted.overlay.redirect", false),
        ] {
            assert_eq!(counts(name.as_bytes()), counted, "{name}");
        }
    }

    #[test]
    fn a_file_has_a_digest_of_its_attributes_only_when_it_has_some() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(digest(&f).unwrap(), None);
        let set = |name: &str, value: &[u8]| {
            rustix::fs::setxattr(&f, name, value, rustix::fs::XattrFlags::empty()).unwrap()
        };
        set("user.b", b"2");
        let one = digest(&f).unwrap().expect("a digest");
        set("user.a", b"1");
        let two = digest(&f).unwrap().expect("a digest");
        assert_ne!(one, two);
        set("user.a", b"one");
        let three = digest(&f).unwrap().expect("a digest");
        assert_ne!(two, three);
        rustix::fs::removexattr(&f, "user.a").unwrap();
        assert_eq!(digest(&f).unwrap(), Some(one));
        let content = [7u8; 32];
        assert_eq!(with_content(content, None), content);
        assert_ne!(with_content(content, Some(one)), content);
        assert_ne!(
            with_content(content, Some(one)),
            with_content(content, Some(two))
        );
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        rustix::fs::setxattr(&f, "user.a", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink("f", &link).unwrap();
        assert_eq!(digest(&link).unwrap(), None);
    }
}
