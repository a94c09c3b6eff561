//! ADD's local archives: detection by content and confined extraction.
//!
//! A file is an archive when it decompresses (gzip, bzip2, xz, zstd, or none) and its first
//! tar header parses: the name never matters (BuildKit's `isArchivePath`). Extraction merges
//! the tar into the destination like `tar -x`, through the layer writer, and refuses the
//! whole archive when an entry would land outside the destination: absolute names, `..`
//! components, a path through a symlink the archive itself created, or a hardlink to
//! anything that is not a file extracted earlier from the same archive.

use kiln_base::compression::{Compression, SNIFF_LEN, sniff};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_image::limits::TarGuard;

use super::owner::Owner;
use super::writer::{LayerWriter, io_at};
use super::{CopyError, meta};
use crate::layered::{LayeredError, components, join_components};

/// Why an archive could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("refusing to extract archive {archive}: entry {entry:?} {reason}")]
    Unsafe {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("reading archive {archive}: {source}")]
    Read { archive: PathBuf, source: io::Error },
    /// A small archive can decompress to far more than the disk holds (a zstd file of
    /// 33 KB held 1 GiB of zeros): extraction stops while DISK_RESERVE is still free, as
    /// downloads do.
    #[error(
        "extracting archive {archive}: stopped after {written} bytes: the filesystem has only {free} bytes left (kiln keeps {reserve} free)",
        reserve = super::http::DISK_RESERVE
    )]
    DiskFull {
        archive: PathBuf,
        written: u64,
        free: u64,
    },
}

/// Most memory the xz decoder of an ADD archive may use: four times what `xz -9` needs
/// (a 64 MiB dictionary, 65 MiB to decode). An archive made with a bigger dictionary is
/// refused with liblzma's "memory usage limit reached".
pub const MAX_XZ_DECODER_MEMORY: u64 = 256 << 20;

/// Opens `path` and returns a reader of the decompressed bytes.
pub fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut f = File::open(path)?;
    let mut head = [0u8; SNIFF_LEN];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let f = BufReader::new(File::open(path)?);
    Ok(match sniff(&head[..n]) {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        Compression::Xz => {
            // liblzma's default has no memory limit, and an .xz header may ask for a
            // 1.5 GiB dictionary that decompression then fills.
            let stream = liblzma::stream::Stream::new_stream_decoder(
                MAX_XZ_DECODER_MEMORY,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(liblzma::read::XzDecoder::new_stream(f, stream))
        }
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
    })
}

/// True when `path` is a regular file holding a (possibly compressed) tar archive.
pub fn is_archive(path: &Path) -> Result<bool, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        archive: path.to_path_buf(),
        source,
    };
    let m = fs::symlink_metadata(path).map_err(read_err)?;
    if !m.is_file() {
        return Ok(false);
    }
    let Ok(r) = open_decompressed(path) else {
        return Ok(false);
    };
    let mut ar = tar::Archive::new(TarGuard::new(r));
    let Ok(mut entries) = ar.entries() else {
        return Ok(false);
    };
    Ok(matches!(entries.next(), Some(Ok(_))))
}

/// Checks an entry name and returns its components below the destination (empty for the
/// destination itself).
fn safe_components(archive: &Path, name: &str) -> Result<Vec<String>, ArchiveError> {
    let unsafe_entry = |reason: &str| ArchiveError::Unsafe {
        archive: archive.to_path_buf(),
        entry: name.to_string(),
        reason: reason.to_string(),
    };
    if name.starts_with('/') {
        return Err(unsafe_entry("has an absolute path"));
    }
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(unsafe_entry(
                    "has a '..' component that could leave the destination",
                ));
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Extracts the archive at `archive` into the resolved view directory `dst` (which exists
/// in the layer). Owners come from the archive unless `chown` is set. Returns the bytes of
/// regular files written.
pub(crate) fn extract(
    archive: &Path,
    w: &mut LayerWriter,
    dst: &str,
    chown: Option<Owner>,
) -> Result<u64, CopyError> {
    let read_err = |source| ArchiveError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let r = open_decompressed(archive).map_err(read_err)?;
    let mut ar = tar::Archive::new(TarGuard::new(r));
    let top = w.view().layers().len() - 1;
    // Archive-relative path → host path of regular files extracted, for hardlinks.
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut bytes = 0u64;
    let mut next_check = super::http::DISK_CHECK_EVERY;
    for entry in ar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let comps = safe_components(archive, &name)?;
        let kind = entry.header().entry_type();
        if comps.is_empty() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let unsafe_entry = |reason: String| ArchiveError::Unsafe {
            archive: archive.to_path_buf(),
            entry: name.clone(),
            reason,
        };
        // Resolve the parent inside the image; a symlink this step wrote is never followed.
        let parent_view = join_components(&{
            let mut p = components(dst);
            p.extend(comps[..comps.len() - 1].iter().cloned());
            p
        });
        let parent = match w.view().resolve_avoiding(&parent_view, true, top) {
            Ok(p) => p,
            Err(LayeredError::SymlinkInLayer { path }) => {
                return Err(unsafe_entry(format!(
                    "would be written through the symlink {path} it created"
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let parent = w.ensure_dir(&parent)?;
        let base = &comps[comps.len() - 1];
        let vpath = join_components(&{
            let mut p = components(&parent);
            p.push(base.clone());
            p
        });
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = match chown {
            Some(o) => (o.uid, o.gid),
            // Like Go's tar reader, an empty numeric field reads as 0.
            None => (
                h.uid().ok().and_then(|v| v.try_into().ok()).unwrap_or(0),
                h.gid().ok().and_then(|v| v.try_into().ok()).unwrap_or(0),
            ),
        };
        let mtime = FileTime::from_unix_time(h.mtime().unwrap_or(0) as i64, 0);
        let link_name = entry
            .link_name()
            .map_err(read_err)?
            .map(|p| p.to_string_lossy().into_owned());
        let want_dir = kind.is_dir();
        let host = w.prepare_replace(&vpath, want_dir)?;
        match kind {
            k if k.is_dir() => {
                w.defer_dir_time(host.clone(), mtime, mtime);
            }
            k if k.is_file()
                || k == tar::EntryType::Continuous
                || k == tar::EntryType::GNUSparse =>
            {
                let mut f = File::create(&host).map_err(io_at("create", &host))?;
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = entry.read(&mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&buf[..n]).map_err(io_at("write", &host))?;
                    bytes += n as u64;
                    if bytes >= next_check {
                        next_check = bytes.saturating_add(super::http::DISK_CHECK_EVERY);
                        let free = super::http::free_space(&f).map_err(io_at("statvfs", &host))?;
                        if free < super::http::DISK_RESERVE {
                            return Err(ArchiveError::DiskFull {
                                archive: archive.to_path_buf(),
                                written: bytes,
                                free,
                            }
                            .into());
                        }
                    }
                }
                files.insert(comps.join("/"), host.clone());
            }
            k if k.is_symlink() => {
                let target = link_name
                    .ok_or_else(|| unsafe_entry("is a symlink without a target".into()))?;
                std::os::unix::fs::symlink(&target, &host).map_err(io_at("symlink", &host))?;
            }
            k if k.is_hard_link() => {
                let target = link_name
                    .ok_or_else(|| unsafe_entry("is a hardlink without a target".into()))?;
                let tcomps = safe_components(archive, &target).map_err(|_| {
                    unsafe_entry(format!(
                        "is a hardlink to {target:?}, outside the destination"
                    ))
                })?;
                let Some(first) = files.get(&tcomps.join("/")) else {
                    return Err(unsafe_entry(format!(
                        "is a hardlink to {target:?}, which is not a file extracted earlier from this archive"
                    ))
                    .into());
                };
                fs::hard_link(first, &host).map_err(io_at("hardlink", &host))?;
                files.insert(comps.join("/"), host.clone());
                continue;
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                let ft = if k.is_character_special() {
                    libc::S_IFCHR
                } else if k.is_block_special() {
                    libc::S_IFBLK
                } else {
                    libc::S_IFIFO
                };
                let major = h.device_major().map_err(read_err)?.unwrap_or(0);
                let minor = h.device_minor().map_err(read_err)?.unwrap_or(0);
                let dev = libc::makedev(major, minor);
                meta::mknod_raw(&host, ft, mode, dev).map_err(io_at("mknod", &host))?;
            }
            _ => {
                // Unknown entry types carry nothing to write; BuildKit skips them too.
                continue;
            }
        }
        meta::set_owner(&host, uid, gid).map_err(io_at("chown", &host))?;
        if !kind.is_symlink() {
            meta::set_mode(&host, mode).map_err(io_at("chmod", &host))?;
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(key) = ext.key()
                    && let Some(xname) = key.strip_prefix("SCHILY.xattr.")
                    && !meta::is_overlay_xattr(xname)
                {
                    let _ = xattr::set(&host, xname, ext.value_bytes());
                }
            }
        }
        if !kind.is_dir() {
            meta::set_mtime(&host, mtime).map_err(io_at("set times of", &host))?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_confined() {
        let a = Path::new("a.tar");
        assert_eq!(safe_components(a, "./x/y").unwrap(), vec!["x", "y"]);
        assert!(safe_components(a, "/etc/passwd").is_err());
        assert!(safe_components(a, "x/../../y").is_err());
        assert!(safe_components(a, "..").is_err());
    }
}
