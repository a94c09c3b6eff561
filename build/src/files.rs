//! Files kiln writes for the user (`-o` archives, `kiln save`, local cache blobs): whole
//! or not at all, with the user's umask.

use crate::BuildError;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// Writes `dest` through a temporary file beside it, renamed into place only when complete.
pub fn write_file(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), BuildError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Created 0666 less the umask, as `docker save` and any shell redirect would (a bare
    // NamedTempFile is 0600, and the rename would keep that).
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(BuildError::io(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
    let writing = || format!("writing {}", dest.display());
    let mut out = BufWriter::new(tmp.reopen().map_err(BuildError::io(writing()))?);
    fill(&mut out).map_err(BuildError::io(writing()))?;
    let file = out
        .into_inner()
        .map_err(|e| BuildError::io(writing())(e.into_error()))?;
    file.sync_all().map_err(BuildError::io(writing()))?;
    tmp.persist(dest)
        .map_err(|e| BuildError::io(format!("renaming into {}", dest.display()))(e.error))?;
    Ok(())
}
