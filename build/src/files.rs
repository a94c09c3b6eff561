//! Files kiln writes for the user (`-o` archives, `kiln save`, local cache blobs): whole
//! or not at all, with the user's umask.

use crate::BuildError;
use kiln_base::atomic::AtomicFile;
use std::io::BufWriter;
use std::path::Path;

/// Writes `dest` through a temporary file beside it, renamed into place only when complete
/// ([`AtomicFile`]: the file and the directory fsynced). Created 0666 less the umask, as
/// `docker save` and any shell redirect would.
pub fn write_file(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<AtomicFile>) -> std::io::Result<()>,
) -> Result<(), BuildError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = AtomicFile::create(dest, 0o666).map_err(BuildError::io(format!(
        "creating a temporary file in {}",
        dir.display()
    )))?;
    let writing = || format!("writing {}", dest.display());
    let mut out = BufWriter::new(tmp);
    fill(&mut out).map_err(BuildError::io(writing()))?;
    let file = out
        .into_inner()
        .map_err(|e| BuildError::io(writing())(e.into_error()))?;
    file.commit()
        .map_err(BuildError::io(format!("renaming into {}", dest.display())))?;
    Ok(())
}
