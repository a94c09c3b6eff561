//! The one tar entry format kiln writes: ustar headers with PAX extended
//! records where ustar cannot hold a value (long names and link targets,
//! large ids, sizes or times) and for xattrs (`SCHILY.xattr.*`). No
//! uname/gname, no atime/ctime, mode limited to permission and special bits.
//! Layers and archives both go through [`TarEntryWriter`], so every tar kiln
//! emits has the same, fixed shape.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// What kind of tar entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEntryKind {
    /// A directory; its name gets a trailing `/`.
    Directory,
    /// A regular file of this many bytes (the reader must supply exactly that).
    File { size: u64 },
    /// A symbolic link to `target` (any bytes; never followed).
    Symlink { target: Vec<u8> },
    /// A hard link to an earlier entry of the same tar (`target` is its name).
    Hardlink { target: Vec<u8> },
    /// A character device.
    CharDevice { major: u32, minor: u32 },
    /// A block device.
    BlockDevice { major: u32, minor: u32 },
    /// A named pipe.
    Fifo,
}

/// Metadata recorded for an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryMeta {
    /// Permission bits plus setuid/setgid/sticky (`& 0o7777` is applied).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

const USTAR_NUMERIC_MAX_7: u64 = 0o7777777;
const USTAR_NUMERIC_MAX_11: u64 = 0o77777777777;

/// Writes deterministic tar entries into `W` and ends the archive with two
/// zero blocks (1024 bytes; no padding to a 10 KiB record, like Go's tar).
pub struct TarEntryWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> std::fmt::Debug for TarEntryWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarEntryWriter").finish_non_exhaustive()
    }
}

impl<W: Write> TarEntryWriter<W> {
    /// Starts a tar stream on `out`.
    pub fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Deterministic);
        Self { builder }
    }

    /// The underlying writer (e.g. to read a running byte count).
    pub fn get_ref(&self) -> &W {
        self.builder.get_ref()
    }

    /// The underlying writer, between entries.
    pub(crate) fn get_mut(&mut self) -> &mut W {
        self.builder.get_mut()
    }

    /// Appends one entry. `name` is relative, `/`-separated, without a
    /// leading `./`; a trailing `/` is added for directories. `data` is read
    /// only for files and must yield exactly `size` bytes.
    pub fn append(
        &mut self,
        name: &[u8],
        kind: &TarEntryKind,
        meta: &EntryMeta,
        data: impl Read,
    ) -> io::Result<()> {
        let header = self.header(name, kind, meta)?;
        match kind {
            TarEntryKind::File { size } => {
                let mut exact = ExactReader {
                    inner: data,
                    left: *size,
                };
                self.builder.append(&header, &mut exact)?;
                if exact.left != 0 {
                    return Err(shrank(exact.left));
                }
                Ok(())
            }
            _ => self.builder.append(&header, io::empty()),
        }
    }

    /// Appends a regular file of `size` bytes whose content `fill` writes straight into
    /// the output (see `hasher::FillFrom`), returning how many bytes it wrote: fewer than
    /// `size` is an error (the file shrank), and it must never write more.
    pub(crate) fn append_filled(
        &mut self,
        name: &[u8],
        size: u64,
        meta: &EntryMeta,
        fill: impl FnOnce(&mut W) -> io::Result<u64>,
    ) -> io::Result<()> {
        let header = self.header(name, &TarEntryKind::File { size }, meta)?;
        // What `tar::Builder::append` writes: the header, the content, zeros to a block.
        let out = self.builder.get_mut();
        out.write_all(header.as_bytes())?;
        let wrote = fill(out)?;
        if wrote != size {
            return Err(shrank(size.saturating_sub(wrote)));
        }
        let pad = (512 - size % 512) % 512;
        out.write_all(&[0; 512][..pad as usize])
    }

    /// Writes the PAX records an entry needs and returns its ustar header.
    fn header(
        &mut self,
        name: &[u8],
        kind: &TarEntryKind,
        meta: &EntryMeta,
    ) -> io::Result<tar::Header> {
        let mut name = name.to_vec();
        if *kind == TarEntryKind::Directory && !name.ends_with(b"/") {
            name.push(b'/');
        }
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut header = tar::Header::new_ustar();
        let (entry_type, size) = match kind {
            TarEntryKind::Directory => (tar::EntryType::Directory, 0),
            TarEntryKind::File { size } => (tar::EntryType::Regular, *size),
            TarEntryKind::Symlink { .. } => (tar::EntryType::Symlink, 0),
            TarEntryKind::Hardlink { .. } => (tar::EntryType::Link, 0),
            TarEntryKind::CharDevice { .. } => (tar::EntryType::Char, 0),
            TarEntryKind::BlockDevice { .. } => (tar::EntryType::Block, 0),
            TarEntryKind::Fifo => (tar::EntryType::Fifo, 0),
        };
        header.set_entry_type(entry_type);
        header.set_mode(meta.mode & 0o7777);
        set_numeric(&mut header, &mut pax, "uid", meta.uid, USTAR_NUMERIC_MAX_7);
        set_numeric(&mut header, &mut pax, "gid", meta.gid, USTAR_NUMERIC_MAX_7);
        set_numeric(&mut header, &mut pax, "size", size, USTAR_NUMERIC_MAX_11);
        if meta.mtime >= 0 && (meta.mtime as u64) <= USTAR_NUMERIC_MAX_11 {
            header.set_mtime(meta.mtime as u64);
        } else {
            header.set_mtime(0);
            pax.insert("mtime".into(), meta.mtime.to_string().into_bytes());
        }
        {
            let ustar = header
                .as_ustar_mut()
                .ok_or_else(|| io::Error::other("not ustar"))?;
            put_long(&mut ustar.name, &mut pax, "path", &name);
            if let TarEntryKind::Symlink { target } | TarEntryKind::Hardlink { target } = kind {
                put_long(&mut ustar.linkname, &mut pax, "linkpath", target);
            }
        }
        if let TarEntryKind::CharDevice { major, minor }
        | TarEntryKind::BlockDevice { major, minor } = kind
        {
            header.set_device_major(*major)?;
            header.set_device_minor(*minor)?;
        }
        for (key, value) in &meta.xattrs {
            pax.insert(format!("SCHILY.xattr.{key}"), value.clone());
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        header.set_cksum();
        Ok(header)
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// The error of a file that ended `missing` bytes before the size it was archived with.
fn shrank(missing: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file shrank while being archived ({missing} bytes missing)"),
    )
}

/// Sets a numeric header field, moving it to a PAX record when ustar's octal
/// field cannot hold it.
fn set_numeric(
    header: &mut tar::Header,
    pax: &mut BTreeMap<String, Vec<u8>>,
    key: &str,
    value: u64,
    max: u64,
) {
    let fits = value <= max;
    if !fits {
        pax.insert(key.into(), value.to_string().into_bytes());
    }
    let v = if fits { value } else { 0 };
    match key {
        "uid" => header.set_uid(v),
        "gid" => header.set_gid(v),
        _ => header.set_size(v),
    }
}

/// Puts `value` in a fixed ustar field, or a PAX record (with the field
/// holding the truncated value) when it does not fit.
fn put_long(field: &mut [u8], pax: &mut BTreeMap<String, Vec<u8>>, key: &str, value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    if value.len() > field.len() {
        pax.insert(key.into(), value.to_vec());
    }
}

/// Yields at most `left` bytes of `inner`; records how many were missing.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}
