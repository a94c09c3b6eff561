//! Turning a metadata tree (a COPY staged with placeholders, see
//! [`kiln_image::layer::external`]) into a real layer directory, for [`crate::commit`]
//! (which decides when a COPY is staged so).
//!
//! The tree is copied entry by entry: directories, symlinks and devices as they are,
//! regular files with their bytes from the placeholder's source (or from the file itself
//! when it holds them), hardlinks between the tree's files kept. Owners, modes, xattrs and
//! times are the tree's. Files are written in parallel after a sequential walk, like the
//! copier's; directory times are set last, deepest first.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::ExternalContent;
use kiln_image::layer::external::copy_content;
use rayon::prelude::*;

use crate::copy::meta;
use crate::layered::FileKind;

/// Why a metadata tree could not be materialized.
#[derive(Debug, thiserror::Error)]
#[error("materializing {path}: {source}")]
pub struct MaterializeError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> MaterializeError + '_ {
    move |source| MaterializeError {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the tree under `staged` into the existing empty directory `dest` (its own mode
/// and owner kept), reading
/// placeholders' bytes through `content`. Returns the regular-file bytes written.
pub fn materialize(
    staged: &Path,
    content: &ExternalContent,
    dest: &Path,
) -> Result<u64, MaterializeError> {
    // `dest` keeps its own owner and mode: a layer's root is no entry of its tar, and the
    // tree's root is a private staging directory (0700) whose mode must not reach the
    // overlay's `/`.
    let root = fs::symlink_metadata(staged).map_err(at(staged))?;
    let mut files: Vec<(PathBuf, PathBuf, Metadata)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_name: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, Metadata)> = vec![(dest.to_path_buf(), root)];
    let mut stack = vec![(staged.to_path_buf(), dest.to_path_buf())];
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for entry in fs::read_dir(&src_dir).map_err(at(&src_dir))? {
            let entry = entry.map_err(at(&src_dir))?;
            let src = entry.path();
            let dst = dst_dir.join(entry.file_name());
            let m = fs::symlink_metadata(&src).map_err(at(&src))?;
            match FileKind::of(&m) {
                FileKind::Dir => {
                    fs::create_dir(&dst).map_err(at(&dst))?;
                    apply_meta(&src, &m, &dst)?;
                    stack.push((src, dst.clone()));
                    dirs.push((dst, m));
                }
                FileKind::File => {
                    if m.nlink() > 1 {
                        let key = (m.dev(), m.ino());
                        if let Some(first) = first_name.get(&key) {
                            links.push((first.clone(), dst));
                            continue;
                        }
                        first_name.insert(key, dst.clone());
                    }
                    files.push((src, dst, m));
                }
                FileKind::Symlink => {
                    let target = fs::read_link(&src).map_err(at(&src))?;
                    std::os::unix::fs::symlink(&target, &dst).map_err(at(&dst))?;
                    apply_meta(&src, &m, &dst)?;
                    meta::set_times(&dst, &m).map_err(at(&dst))?;
                }
                FileKind::Other => {
                    meta::mknod_like(&dst, &m).map_err(at(&dst))?;
                    apply_meta(&src, &m, &dst)?;
                    meta::set_times(&dst, &m).map_err(at(&dst))?;
                }
            }
        }
    }
    let bytes: u64 = files
        .par_iter()
        .map(|(src, dst, m)| {
            let n = copy_content(content, src, m, dst).map_err(at(dst))?;
            apply_meta(src, m, dst)?;
            meta::set_times(dst, m).map_err(at(dst))?;
            Ok(n)
        })
        .collect::<Result<Vec<u64>, MaterializeError>>()?
        .iter()
        .sum();
    for (first, dst) in links {
        fs::hard_link(&first, &dst).map_err(at(&dst))?;
    }
    // Creating children moved every directory's mtime: restore them, deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, m) in dirs {
        meta::set_times(&p, &m).map_err(at(&p))?;
    }
    Ok(bytes)
}

/// Owner, mode and xattrs of `src` onto `dst`.
fn apply_meta(src: &Path, m: &Metadata, dst: &Path) -> Result<(), MaterializeError> {
    meta::apply_owner_mode(dst, m).map_err(at(dst))?;
    meta::copy_xattrs(src, dst).map_err(at(dst))
}
