//! What compression a stream is in, from its first bytes.
//!
//! ADD unpacks local archives (gzip, bzip2, xz, zstd or plain tar, as BuildKit's
//! `archive.DecompressStream`), and layers, `kiln import` and `kiln load` take gzip, zstd
//! or plain: all of them tell the formats apart by the same magic numbers, from here.
//! Which of these a reader then accepts is its own business.

/// A stream's compression, as its magic number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No known magic: taken as uncompressed.
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// How many leading bytes [`sniff`] needs to tell every format apart.
pub const SNIFF_LEN: usize = 6;

/// The compression of a stream starting with `head` (at least [`SNIFF_LEN`] bytes, or
/// the whole stream if shorter).
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_name_the_format() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Compression::Xz);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"ustar"), Compression::None);
        assert_eq!(sniff(&[0x1f]), Compression::None);
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z']), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }
}
