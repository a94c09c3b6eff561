//! Walking selected sources in sorted order with `.dockerignore` and `--exclude` applied:
//! the top directory levels in parallel, deeper subtrees with an explicit stack, every
//! directory read and stat'ed through its fd (`listing`).

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rayon::prelude::*;

use super::listing::{self, Stat};
use super::select::{Source, join};
use super::{Context, ContextError, ContextFileType, HashedEntry};
use crate::ignore::{IgnoreMatcher, MatchInfo};
use crate::statcache::StatKey;

/// An entry plus what hashing needs and the raw bytes that go into the digest.
pub(super) struct Item {
    pub entry: HashedEntry,
    /// Set only when the name is not valid UTF-8 (then `entry.rel_path` is lossy).
    raw_path: Option<Vec<u8>>,
    pub raw_target: Option<Vec<u8>>,
    pub stat: Option<StatKey>,
    pub sha: Option<[u8; 32]>,
    /// A regular file with other names (a COPY makes the names it copies of one inode hard
    /// links again); its inode is its stat key's.
    pub linked: bool,
}

impl Item {
    /// The path bytes that go into the digest.
    pub(super) fn raw_path(&self) -> &[u8] {
        self.raw_path
            .as_deref()
            .unwrap_or(self.entry.rel_path.as_bytes())
    }
}

/// A walked directory keeps its subtree as a tree until the source is done, so each item
/// is moved a fixed number of times rather than once per ancestor directory.
enum Node {
    Leaf(Item),
    Dir(Item, Vec<Node>),
    /// A subtree below [`PARALLEL_DEPTH`], already flat in pre-order (its directory first).
    Flat(Vec<Item>),
}

/// How many directory levels are walked with one parallel task per subdirectory
/// (recursion: each level costs stack on a rayon thread). Below that a subtree is walked
/// by one task with an explicit stack, so a context nested thousands of directories deep
/// cannot overflow the stack (rayon threads may also run stolen tasks on top of a waiting
/// one, so the margin is wide); the top levels are where the parallel stat calls matter.
const PARALLEL_DEPTH: usize = 16;

/// How many directory fds one [`Context::walk_flat`] keeps open down its stack: below
/// that a directory is opened again from the context root, so a hostile context nested
/// thousands deep cannot exhaust the fd limit.
const FD_DEPTH: usize = 32;

/// Pre-order flattening: a directory, then its subtree. The tree is at most
/// [`PARALLEL_DEPTH`] nodes deep, and so is this recursion.
fn flatten(nodes: Vec<Node>, out: &mut Vec<Item>) {
    for n in nodes {
        match n {
            Node::Leaf(i) => out.push(i),
            Node::Dir(i, children) => {
                out.push(i);
                flatten(children, out);
            }
            Node::Flat(items) => out.extend(items),
        }
    }
}

/// How many items [`flatten`] gives.
fn count(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .map(|n| match n {
            Node::Leaf(_) => 1,
            Node::Dir(_, children) => 1 + count(children),
            Node::Flat(items) => items.len(),
        })
        .sum()
}

/// One entry of a directory listing after ignore matching and stat: a finished item, or a
/// subdirectory to walk.
enum Slot {
    Leaf(Item),
    Dir {
        rel: String,
        abs: std::path::PathBuf,
        /// Its name in its parent, to open it from the parent's fd.
        name: CString,
        meta: Stat,
        info: MatchInfo,
        /// Ignored or excluded itself: kept only if something below is re-included.
        hidden: bool,
    },
}

/// `rel` as an entry names it (`.` for the root); taken by value, so a walk's 20,000
/// entries are not each copied once more.
fn display(rel: String) -> String {
    if rel.is_empty() { ".".to_string() } else { rel }
}

/// Wraps an io error with the path it concerns.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Context {
    /// Appends the entries of one source.
    pub(super) fn collect_source(
        &self,
        pattern: &str,
        src: &Source,
        excludes: Option<&IgnoreMatcher>,
        out: &mut Vec<Item>,
    ) -> Result<(), ContextError> {
        let abs = self.root.join(&src.resolved);
        let meta = Stat::from_meta(&fs::symlink_metadata(&abs).map_err(io_err(&abs))?);
        let ignored = self.is_ignored(&src.resolved) || self.is_ignored(&src.requested);
        if meta.kind() != ContextFileType::Dir {
            if ignored && src.from_wildcard {
                return Ok(());
            }
            if ignored {
                return Err(ContextError::NotFound {
                    pattern: pattern.to_string(),
                });
            }
            let name = Path::new(&src.resolved)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if excludes.is_some_and(|x| x.matches(&name)) {
                return Ok(());
            }
            out.push(self.item(
                src.resolved.clone(),
                || abs.clone(),
                &meta,
                || fs::read_link(&abs).map(|t| t.into_os_string().into_vec()),
            )?);
            return Ok(());
        }
        let dir = listing::open_dir_beneath(self.root_fd.as_fd(), Path::new(&src.resolved))
            .map_err(io_err(&abs))?;
        let info = if self.matcher.is_empty() || src.resolved.is_empty() {
            MatchInfo::default()
        } else {
            self.matcher
                .matches_with_parent(&src.resolved, &MatchInfo::default())
                .1
        };
        let mut children = Vec::new();
        self.walk_dir(
            dir.as_fd(),
            &src.resolved,
            &abs,
            &src.resolved,
            excludes,
            &info,
            0,
            &mut children,
        )?;
        // Flattened straight into `out`, reserved once: each move of 20,000 items (and
        // each doubling of a vector of them) showed up in no-op rebuild profiles.
        let at = out.len();
        out.push(self.item(src.resolved.clone(), || abs.clone(), &meta, no_link)?);
        out.reserve(count(&children));
        flatten(children, out);
        if ignored && out.len() == at + 1 {
            out.pop();
            if src.from_wildcard {
                return Ok(());
            }
            return Err(ContextError::NotFound {
                pattern: pattern.to_string(),
            });
        }
        Ok(())
    }

    /// Pre-order walk of `dir_rel`'s children, sorted by name. Hidden (ignored or
    /// `--exclude`d) directories are entered only if an exception could re-include
    /// something below; they appear only if something below them does.
    ///
    /// Subdirectories are walked in parallel down to [`PARALLEL_DEPTH`] levels below
    /// `depth`, then each remaining subtree by [`Context::walk_flat`].
    #[allow(clippy::too_many_arguments)]
    fn walk_dir(
        &self,
        dir_fd: BorrowedFd<'_>,
        dir_rel: &str,
        dir_abs: &Path,
        src_root: &str,
        excludes: Option<&IgnoreMatcher>,
        dir_info: &MatchInfo,
        depth: usize,
        out: &mut Vec<Node>,
    ) -> Result<(), ContextError> {
        let slots = self.scan_dir(dir_fd, dir_rel, dir_abs, src_root, excludes, dir_info)?;
        // Subdirectories in parallel (stat calls dominate a no-op rebuild), stitched back
        // in sorted order.
        let subtrees: Vec<Result<Option<Node>, ContextError>> = slots
            .par_iter()
            .map(|slot| match slot {
                Slot::Leaf(_) => Ok(None),
                Slot::Dir {
                    rel,
                    abs,
                    name,
                    meta,
                    info,
                    hidden,
                } => {
                    let fd = listing::open_dir_at(dir_fd, name).map_err(io_err(abs))?;
                    if depth + 1 >= PARALLEL_DEPTH {
                        let items =
                            self.walk_flat(fd, rel, abs, meta, info, *hidden, src_root, excludes)?;
                        return Ok((!items.is_empty()).then_some(Node::Flat(items)));
                    }
                    let mut children = Vec::new();
                    self.walk_dir(
                        fd.as_fd(),
                        rel,
                        abs,
                        src_root,
                        excludes,
                        info,
                        depth + 1,
                        &mut children,
                    )?;
                    if *hidden && children.is_empty() {
                        return Ok(None);
                    }
                    Ok(Some(Node::Dir(
                        self.item(rel.clone(), || abs.clone(), meta, no_link)?,
                        children,
                    )))
                }
            })
            .collect();
        out.reserve(slots.len());
        for (slot, sub) in slots.into_iter().zip(subtrees) {
            match (slot, sub?) {
                (Slot::Leaf(item), _) => out.push(Node::Leaf(item)),
                (Slot::Dir { .. }, Some(node)) => out.push(node),
                (Slot::Dir { .. }, None) => {}
            }
        }
        Ok(())
    }

    /// The directory `rel` and its subtree in pre-order, walked by this thread with an
    /// explicit stack (no recursion, whatever the depth). Empty when the directory is
    /// hidden and nothing below it is visible.
    #[allow(clippy::too_many_arguments)]
    fn walk_flat(
        &self,
        fd: OwnedFd,
        rel: &str,
        abs: &Path,
        meta: &Stat,
        info: &MatchInfo,
        hidden: bool,
        src_root: &str,
        excludes: Option<&IgnoreMatcher>,
    ) -> Result<Vec<Item>, ContextError> {
        struct Frame {
            slots: std::vec::IntoIter<Slot>,
            /// Where this directory's own item sits in `out`.
            at: usize,
            hidden: bool,
            /// The directory, to open its subdirectories from; `None` deeper than
            /// [`FD_DEPTH`].
            fd: Option<OwnedFd>,
        }
        let mut out = vec![self.item(rel.to_string(), || abs.to_path_buf(), meta, no_link)?];
        let mut stack = vec![Frame {
            slots: self
                .scan_dir(fd.as_fd(), rel, abs, src_root, excludes, info)?
                .into_iter(),
            at: 0,
            hidden,
            fd: Some(fd),
        }];
        while let Some(frame) = stack.last_mut() {
            match frame.slots.next() {
                Some(Slot::Leaf(item)) => out.push(item),
                Some(Slot::Dir {
                    rel,
                    abs,
                    name,
                    meta,
                    info,
                    hidden,
                }) => {
                    let at = out.len();
                    out.push(self.item(rel.clone(), || abs.clone(), &meta, no_link)?);
                    let fd = match &frame.fd {
                        Some(parent) => listing::open_dir_at(parent.as_fd(), &name),
                        None => listing::open_dir_beneath(
                            self.root_fd.as_fd(),
                            abs.strip_prefix(&self.root).unwrap_or(&abs),
                        ),
                    }
                    .map_err(io_err(&abs))?;
                    let slots = self.scan_dir(fd.as_fd(), &rel, &abs, src_root, excludes, &info)?;
                    let keep = stack.len() < FD_DEPTH;
                    stack.push(Frame {
                        slots: slots.into_iter(),
                        at,
                        hidden,
                        fd: keep.then_some(fd),
                    });
                }
                None => {
                    let done = stack.pop().expect("the loop holds a frame");
                    // A hidden directory with nothing visible below is dropped again.
                    if done.hidden && out.len() == done.at + 1 {
                        out.pop();
                    }
                }
            }
        }
        Ok(out)
    }

    /// One directory's children, sorted by name, with ignore rules and `--exclude`
    /// applied and each entry stat'ed.
    ///
    /// Entries are stat'ed relative to the open directory `dir` rather than by full
    /// path: on a 20,000-file context the path lookups were the largest cost of a no-op
    /// rebuild.
    fn scan_dir(
        &self,
        dir: BorrowedFd<'_>,
        dir_rel: &str,
        dir_abs: &Path,
        src_root: &str,
        excludes: Option<&IgnoreMatcher>,
        dir_info: &MatchInfo,
    ) -> Result<Vec<Slot>, ContextError> {
        let names = listing::list(dir).map_err(io_err(dir_abs))?;
        let mut slots = Vec::with_capacity(names.len());
        for name in names.iter() {
            let path = || dir_abs.join(OsStr::from_bytes(name.to_bytes()));
            let name_str = String::from_utf8_lossy(name.to_bytes());
            let rel = join(dir_rel, &name_str);
            let (ignored, info) = if self.matcher.is_empty() {
                (false, MatchInfo::default())
            } else {
                self.matcher.matches_with_parent(&rel, dir_info)
            };
            let rel_to_src = || {
                rel.strip_prefix(src_root)
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(&rel)
                    .to_string()
            };
            let user_excluded = excludes.is_some_and(|x| x.matches(&rel_to_src()));
            let meta = listing::stat_at(dir, name).map_err(|source| ContextError::Io {
                path: path(),
                source,
            })?;
            let hidden = ignored || user_excluded;
            if meta.kind() == ContextFileType::Dir {
                if hidden {
                    let may = (!ignored || self.matcher.may_reinclude_under(&rel))
                        && (!user_excluded
                            || excludes.is_some_and(|x| x.may_reinclude_under(&rel_to_src())));
                    if !may {
                        continue;
                    }
                }
                slots.push(Slot::Dir {
                    abs: path(),
                    name: name.to_owned(),
                    rel,
                    meta,
                    info,
                    hidden,
                });
            } else if !hidden {
                let link = || listing::read_link_at(dir, name);
                slots.push(Slot::Leaf(self.item(rel, path, &meta, link)?));
            }
        }

        Ok(slots)
    }

    /// `abs` is only called for errors and non-UTF-8 names, `link` (the target) only for
    /// symlinks: building a full path per file showed up in no-op rebuild profiles.
    fn item(
        &self,
        rel: String,
        abs: impl Fn() -> std::path::PathBuf,
        meta: &Stat,
        link: impl FnOnce() -> io::Result<Vec<u8>>,
    ) -> Result<Item, ContextError> {
        let kind = meta.kind();
        let raw_target = match kind {
            ContextFileType::Symlink => Some(link().map_err(|source| ContextError::Io {
                path: abs(),
                source,
            })?),
            _ => None,
        };
        let mode = if kind == ContextFileType::Symlink {
            0o777
        } else {
            meta.mode & 0o7777
        };
        // None: the raw path is `rel_path` itself (valid UTF-8 all the way).
        let raw_path = if rel.contains('\u{fffd}') {
            abs()
                .strip_prefix(&self.root)
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .ok()
        } else {
            None
        };
        Ok(Item {
            entry: HashedEntry {
                rel_path: display(rel),
                kind,
                mode,
                size: if kind == ContextFileType::File {
                    meta.size
                } else {
                    0
                },
                link_target: raw_target
                    .as_ref()
                    .map(|t| OsStr::from_bytes(t).to_string_lossy().into_owned()),
                sha256: None,
            },
            raw_path,
            raw_target,
            // Files (content and xattrs) and directories (xattrs) are cached by stat.
            stat: matches!(kind, ContextFileType::File | ContextFileType::Dir).then_some(meta.key),
            sha: None,
            linked: meta.linked && kind == ContextFileType::File,
        })
    }
}

/// The `link` of an entry [`Context::item`] knows is no symlink.
fn no_link() -> io::Result<Vec<u8>> {
    Err(io::Error::from(io::ErrorKind::InvalidInput))
}
