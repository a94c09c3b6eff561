//! Deletions and opaque directories in layers: the tar markers and the overlayfs forms.
//!
//! A layer says "this path is gone" and "hide everything below this directory" in two
//! encodings that kiln converts between: in a layer tar, an empty entry `dir/.wh.NAME` and
//! `dir/.wh..wh..opq` (the OCI image spec's whiteouts); in a layer directory (an overlayfs
//! upperdir), a 0:0 character device `dir/NAME` and the xattr `user.overlay.opaque=y` on
//! `dir` (`trusted.overlay.opaque` where overlayfs runs without `userxattr`). The writer,
//! the unpacker, the merged view, the diff and `kiln diff` all read them by these rules.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Prefix of a whiteout entry's name in a layer tar (`.wh.NAME` deletes `NAME`).
pub const PREFIX: &str = ".wh.";
/// Prefix of aufs metadata entries (`.wh..wh.plnk`...): no deletion, skipped.
pub const META_PREFIX: &str = ".wh..wh.";
/// Name of the opaque-directory marker entry in a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The opaque-directory xattr kiln writes (overlayfs mounted with `userxattr`).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// Every xattr that marks an opaque directory, in the order checked.
pub const OPAQUE_XATTRS: [&str; 2] = [OPAQUE_XATTR, "trusted.overlay.opaque"];
/// The value of an opaque xattr that makes the directory opaque.
pub const OPAQUE_VALUE: &[u8] = b"y";

/// What the last component of a layer tar entry's name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// `.wh..wh..opq`: the directory holding it hides what lower layers have in it.
    Opaque,
    /// `.wh.NAME`: `NAME` (never empty; may be `.` or `..`, which a caller must refuse)
    /// and everything below it is deleted.
    Whiteout(&'a [u8]),
    /// `.wh.` alone or aufs metadata (`.wh..wh.plnk`): a marker that deletes nothing.
    Ignored,
}

/// The marker `name` (a last path component) is, or `None` for an ordinary entry.
pub fn classify(name: &[u8]) -> Option<Marker<'_>> {
    if name == OPAQUE_MARKER.as_bytes() {
        return Some(Marker::Opaque);
    }
    let hidden = name.strip_prefix(PREFIX.as_bytes())?;
    if hidden.is_empty() || name.starts_with(META_PREFIX.as_bytes()) {
        return Some(Marker::Ignored);
    }
    Some(Marker::Whiteout(hidden))
}

/// The tar entry name (last component) that deletes `name`: `.wh.NAME`.
pub fn whiteout_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + name.len());
    out.extend_from_slice(PREFIX.as_bytes());
    out.extend_from_slice(name);
    out
}

/// Is this entry of a layer directory an overlayfs whiteout (a 0:0 character device)?
pub fn is_whiteout_device(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Is `name` an overlayfs bookkeeping xattr (`user.overlay.*`, `trusted.overlay.*`)? They
/// are layer structure or machine-local state, never file content.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("user.overlay.") || name.starts_with("trusted.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_classified_like_containerd_apply() {
        assert_eq!(classify(b".wh..wh..opq"), Some(Marker::Opaque));
        assert_eq!(classify(b".wh.a"), Some(Marker::Whiteout(b"a")));
        assert_eq!(classify(b".wh..a"), Some(Marker::Whiteout(b".a")));
        assert_eq!(classify(b".wh.."), Some(Marker::Whiteout(b".")));
        assert_eq!(classify(b".wh..wh.plnk"), Some(Marker::Ignored));
        assert_eq!(classify(b".wh."), Some(Marker::Ignored));
        assert_eq!(classify(b"a.wh.b"), None);
        assert_eq!(classify(b".wh"), None);
        assert_eq!(whiteout_name(b"x"), b".wh.x");
    }

    #[test]
    fn overlay_xattrs_are_both_namespaces_and_only_them() {
        assert!(is_overlay_xattr("user.overlay.opaque"));
        assert!(is_overlay_xattr("trusted.overlay.redirect"));
        assert!(!is_overlay_xattr("user.overlayx"));
        assert!(!is_overlay_xattr("security.capability"));
        assert!(OPAQUE_XATTRS.iter().all(|x| is_overlay_xattr(x)));
    }

    #[test]
    fn only_a_zero_char_device_is_a_whiteout() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"").unwrap();
        assert!(!is_whiteout_device(&std::fs::symlink_metadata(&f).unwrap()));
        // /dev/null is a char device, but 1:3.
        if let Ok(m) = std::fs::symlink_metadata("/dev/null") {
            assert!(!is_whiteout_device(&m));
        }
    }
}
