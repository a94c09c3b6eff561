//! COPY and ADD: filling an empty layer directory with exactly what one step adds.
//!
//! [`copy_into_layer`] takes a [`CopyRequest`] (sources, where they come from, the
//! destination as written, and the layers below as a [`LayeredFs`]) and writes the new
//! layer. The rules are BuildKit's (`dockerfile2llb/convert_copy.go`, `fsutil/copy`,
//! `llbsolver/file`):
//!
//! - sources: wildcards per component (Go `filepath.Match`), a directory copies its
//!   contents, the named source is followed if it is a symlink, entries inside are not;
//!   `--exclude` and `.dockerignore` filters; `--parents` keeps the path below the context
//!   root or below a `/./` pivot;
//! - destination: relative to WORKDIR, a trailing `/` means a directory, several sources
//!   need one, a file onto an existing directory goes inside it, missing parents are created
//!   (0755, owned by the `--chown` user), symlinks in the image are followed inside the
//!   image's root (not with `--link`);
//! - owners 0:0 for context files, kept for `--from` sources, `--chown` overrides (names from
//!   the image's `/etc/passwd` and `/etc/group`); `--chmod` octal or symbolic
//!   ([`kiln_parser::chmod`], the parser's own check);
//! - ADD: local archives (tar, gzip, bzip2, xz, zstd; sniffed by content) are extracted,
//!   refusing entries that would land outside the destination; URLs are downloaded
//!   (`--checksum` verified, mtime from `Last-Modified`, mode 0600).

pub mod archive;
pub mod http;
pub mod meta;
pub mod owner;
pub mod pattern;
pub mod relink;
mod source;
mod tree;
mod writer;

use kiln_parser::copy_rules::{CopyRuleError, SourceKind, check_sources};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::layered::{LayeredError, LayeredFs, components, join_components};
use kiln_context::IgnoreMatcher;
use kiln_image::ExternalContent;
pub use kiln_parser::chmod::{ModeError, ModeSpec};
pub use owner::{Owner, OwnerError, lookup_group, lookup_user, resolve_chown};
use tree::{Copier, Source};
use writer::LayerWriter;

/// `.dockerignore` filter: called with a context-relative, `/`-separated path; `false`
/// means excluded. A directory for which it returns false is not descended into, so the
/// filter must answer true for a directory that holds re-included (`!pattern`) paths.
pub type SourceFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One source argument of COPY/ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A path (wildcards allowed) relative to the source root.
    Path(String),
    /// A heredoc source: a file `name` with `content`, mode 0644.
    Inline { name: String, content: Vec<u8> },
    /// An `http://` or `https://` URL (ADD only).
    Url(String),
    /// A URL source the caller downloaded already ([`http::download`]): the file `name`
    /// in `dir`, copied as a downloaded URL is. The solver downloads once, to key the step,
    /// and copies those bytes, so the layer always holds what its key was made of.
    Fetched { dir: PathBuf, name: String },
}

/// Where path sources are read from.
#[derive(Clone)]
pub enum SourceRoot {
    /// The build context (a plain directory), with its `.dockerignore` filter.
    Dir {
        root: PathBuf,
        filter: Option<SourceFilter>,
    },
    /// A stage or image (`--from`): its layer stack.
    Layers(LayeredFs),
}

impl fmt::Debug for SourceRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRoot::Dir { root, filter } => f
                .debug_struct("Dir")
                .field("root", root)
                .field("filter", &filter.as_ref().map(|_| "<fn>"))
                .finish(),
            SourceRoot::Layers(l) => f.debug_tuple("Layers").field(l).finish(),
        }
    }
}

/// Everything one COPY/ADD step needs (values already expanded by the solver).
#[derive(Clone, Debug)]
pub struct CopyRequest {
    pub sources: Vec<SourceSpec>,
    pub from: SourceRoot,
    /// The destination as written (a trailing `/` matters).
    pub dest: String,
    /// The stage's WORKDIR (absolute), for a relative destination.
    pub workdir: String,
    /// The layers below this step.
    pub target: LayeredFs,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// ADD (archives extracted, URLs allowed) rather than COPY.
    pub add: bool,
    /// `--unpack`: None = default (local archives yes, URLs no).
    pub unpack: Option<bool>,
    /// `--checksum=sha256:<hex>` for a URL source.
    pub checksum: Option<String>,
    /// The `Authorization` header for that URL source (from a build secret).
    pub authorization: Option<http::Authorization>,
    pub parents: bool,
    pub excludes: Vec<String>,
    /// `--link`: the layer does not depend on the layers below (their symlinks are not
    /// followed and their directories not consulted).
    pub link: bool,
    /// Stage a metadata tree: regular files read from the source root become empty
    /// placeholders and [`CopyReport::content`] says where their bytes are (see
    /// [`kiln_image::layer::external`]). Ignored for ADD, whose archives and downloads
    /// have no lasting source to point at.
    pub stage_contents: bool,
    /// The step's previous snapshot and the context files unchanged since: those are
    /// linked from it rather than copied again (see [`relink`]).
    pub previous: Option<Arc<relink::PreviousCopy>>,
}

impl CopyRequest {
    /// A plain `COPY <sources> <dest>` from `from` onto `target`, WORKDIR `/`.
    pub fn new(
        sources: Vec<SourceSpec>,
        from: SourceRoot,
        dest: &str,
        target: LayeredFs,
    ) -> CopyRequest {
        CopyRequest {
            sources,
            from,
            dest: dest.to_string(),
            workdir: "/".to_string(),
            target,
            chown: None,
            chmod: None,
            add: false,
            unpack: None,
            checksum: None,
            authorization: None,
            parents: false,
            excludes: Vec::new(),
            link: false,
            stage_contents: false,
            previous: None,
        }
    }
}

/// What a step wrote.
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// View paths created or replaced in the layer, in the order written (parents included).
    pub written: Vec<String>,
    /// Regular-file bytes copied or extracted (or, staged, referenced).
    pub bytes: u64,
    /// With [`CopyRequest::stage_contents`], the placeholders' sources.
    pub content: ExternalContent,
}

/// Why a COPY/ADD failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "When using {cmd} with more than one source file, the destination must be a directory and end with a /"
    )]
    MultipleSourcesNeedDir { cmd: &'static str },
    #[error("{path:?}: not found")]
    SourceNotFound { path: String },
    #[error(transparent)]
    Mode(#[from] ModeError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error("invalid pattern: {0}")]
    Pattern(String),
    #[error("cannot replace to directory {path} with file")]
    ReplaceDirWithFile { path: String },
    #[error("cannot copy to non-directory: {path}")]
    CopyToNonDir { path: String },
    #[error("cannot create directory {path}: a non-directory is in the way")]
    NotADirectory { path: String },
    #[error(transparent)]
    Rule(#[from] CopyRuleError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Layered(#[from] LayeredError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl CopyError {
    /// The destination filesystem ran out of room or inodes (a full tmpfs staging area:
    /// the caller can stage on disk instead).
    pub fn is_out_of_space(&self) -> bool {
        let code = match self {
            CopyError::Io { source, .. } => source.raw_os_error(),
            CopyError::Layered(LayeredError::Write { source, .. }) => source.raw_os_error(),
            _ => None,
        };
        matches!(code, Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

/// True when a destination as written names a directory (`/` at the end, `.`, `..`).
fn dest_is_dir_form(dest: &str) -> bool {
    dest.is_empty()
        || dest.ends_with('/')
        || dest == "."
        || dest == ".."
        || dest.ends_with("/.")
        || dest.ends_with("/..")
}

/// Parent of a clean absolute view path.
fn parent_of(p: &str) -> String {
    if let Some(rel) = crate::layered::clean_relative(p) {
        return match rel.rfind('/') {
            Some(i) => p[..i + 1].to_string(),
            None => "/".to_string(),
        };
    }
    let mut c = components(p);
    c.pop();
    join_components(&c)
}

fn child_of(dir: &str, name: &str) -> String {
    let mut c = components(dir);
    c.extend(components(name));
    join_components(&c)
}

/// A source after expansion, ready to copy.
enum Item {
    Local(source::Match),
    Inline { name: String, content: Vec<u8> },
    Url(String),
    Fetched { dir: PathBuf, name: String },
    Parents(source::ParentsSpec),
}

/// Applies one COPY/ADD into the empty layer directory `out`.
pub fn copy_into_layer(req: &CopyRequest, out: &Path) -> Result<CopyReport, CopyError> {
    let cmd = if req.add { "ADD" } else { "COPY" };
    let mode = req
        .chmod
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(ModeSpec::parse)
        .transpose()?;
    let chown = match req.chown.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(resolve_chown(s, &req.target)?),
        None => None,
    };
    // The parser's rules, for a request however it was made (heredocs are not counted).
    let kinds: Vec<SourceKind> = req
        .sources
        .iter()
        .filter_map(|s| match s {
            SourceSpec::Path(_) => Some(SourceKind::Path),
            SourceSpec::Url(_) | SourceSpec::Fetched { .. } => Some(SourceKind::Url),
            SourceSpec::Inline { .. } => None,
        })
        .collect();
    check_sources(req.add, req.checksum.is_some(), &kinds)?;
    let excludes = IgnoreMatcher::from_patterns(&req.excludes)
        .map_err(|e| CopyError::Pattern(e.to_string()))?;

    let dest_abs = if req.dest.starts_with('/') {
        req.dest.clone()
    } else {
        format!("{}/{}", req.workdir, req.dest)
    };
    let dest_clean = join_components(&components(&dest_abs));
    let dir_form = dest_is_dir_form(&req.dest);

    let (src_fs, filter, from_context) = match &req.from {
        SourceRoot::Dir { root, filter } => {
            (LayeredFs::plain_dir(root.clone()), filter.as_ref(), true)
        }
        SourceRoot::Layers(l) => (l.clone(), None, false),
    };
    let src = Source {
        fs: &src_fs,
        filter,
        preserve_owner: !from_context,
        from_context,
    };

    let mut items = Vec::new();
    for spec in &req.sources {
        match spec {
            SourceSpec::Path(p) if req.parents => {
                items.push(Item::Parents(source::parents_spec(&src, p)?))
            }
            SourceSpec::Path(p) => {
                for m in source::expand(&src, p)? {
                    // `--exclude` also filters what a wildcard selected.
                    if m.wildcard
                        && !excludes.is_empty()
                        && excludes.matches(m.entry.path.trim_start_matches('/'))
                    {
                        continue;
                    }
                    items.push(Item::Local(m));
                }
            }
            SourceSpec::Inline { name, content } => items.push(Item::Inline {
                name: name.clone(),
                content: content.clone(),
            }),
            SourceSpec::Url(u) => items.push(Item::Url(u.clone())),
            SourceSpec::Fetched { dir, name } => items.push(Item::Fetched {
                dir: dir.clone(),
                name: name.clone(),
            }),
        }
    }
    if items.len() > 1 && !dir_form {
        return Err(CopyError::MultipleSourcesNeedDir { cmd });
    }

    // BuildKit takes the independent-layer (MergeOp) path only when --chmod is empty; with
    // --chmod, --link is silently a plain copy onto the layers below.
    let link = req.link && mode.is_none();
    let lowers = if link {
        LayeredFs::new(Vec::new())
    } else {
        req.target.clone()
    };
    let parent_owner = chown.unwrap_or(Owner { uid: 0, gid: 0 });
    let mut w = LayerWriter::new(out, &lowers, parent_owner);
    let mut bytes = 0u64;
    // Scratch space for inline and downloaded sources, removed on return.
    let scratch = tempfile::Builder::new()
        .prefix(".kiln-copy-")
        .tempdir()
        .map_err(|e| CopyError::Io {
            op: "create temporary directory",
            path: std::env::temp_dir(),
            source: e,
        })?;

    // A downloaded file is extracted only when asked (`--unpack=true`), unlike a local
    // archive.
    let copy_url_file = |w: &mut LayerWriter, copier: &mut Copier<'_>, dir, name| {
        let unpack = req.unpack == Some(true);
        copy_scratch_file(w, copier, dir, name, &dest_clean, dir_form, unpack, chown)
    };
    let staged = req.stage_contents && !req.add;
    let mut external = ExternalContent::new();
    for item in items {
        let mut copier = Copier::new(chown, mode.as_ref(), &excludes);
        // Inline sources live in `scratch`, gone on return: their bytes are written.
        copier.reference = staged && matches!(item, Item::Local(_) | Item::Parents(_));
        copier.track = staged;
        copier.content = std::mem::take(&mut external);
        copier.relink = req.previous.clone().map(|p| (p, out));
        match item {
            Item::Local(m) => {
                let unpack = req.add && req.unpack != Some(false);
                bytes += copy_match(
                    &mut w,
                    &src,
                    &mut copier,
                    &m,
                    &dest_clean,
                    dir_form,
                    unpack,
                    chown,
                )?;
            }
            Item::Inline { name, content } => {
                let base = components(&name)
                    .pop()
                    .unwrap_or_else(|| "__unnamed__".to_string());
                let dir = scratch.path().join(format!("inline-{}", w.written.len()));
                let host = dir.join(&base);
                std::fs::create_dir_all(&dir).map_err(writer::io_at("mkdir", &dir))?;
                std::fs::write(&host, &content).map_err(writer::io_at("write", &host))?;
                meta::set_mode(&host, 0o644).map_err(writer::io_at("chmod", &host))?;
                bytes += copy_scratch_file(
                    &mut w,
                    &mut copier,
                    dir,
                    base,
                    &dest_clean,
                    dir_form,
                    false,
                    chown,
                )?;
            }
            Item::Url(url) => {
                let dir = scratch.path().join(format!("url-{}", w.written.len()));
                std::fs::create_dir_all(&dir).map_err(writer::io_at("mkdir", &dir))?;
                let name = http::download(
                    &url,
                    req.checksum.as_deref(),
                    req.authorization.as_ref(),
                    &dir,
                )?;
                bytes += copy_url_file(&mut w, &mut copier, dir, name)?;
            }
            Item::Fetched { dir, name } => {
                bytes += copy_url_file(&mut w, &mut copier, dir, name)?;
            }
            Item::Parents(spec) => {
                let dst = w.ensure_dir(&dest_clean)?;
                for (rel, entry) in source::parents_matches(&src, &spec)? {
                    // Parent directories keep the source's metadata when this step creates them.
                    let mut src_dir = spec.base.clone();
                    let mut dst_dir = dst.clone();
                    for name in &rel[..rel.len() - 1] {
                        src_dir = child_of(&src_dir, name);
                        dst_dir = child_of(&dst_dir, name);
                        if let Some(d) = src.fs.metadata(&src_dir)? {
                            copier.copy_dir_only(&mut w, &src, &d, &dst_dir)?;
                        }
                    }
                    let target = child_of(&dst, &rel.join("/"));
                    copier.copy(&mut w, &src, &entry, "", &target, true)?;
                }
            }
        }
        copier.flush()?;
        bytes += copier.bytes;
        external = std::mem::take(&mut copier.content);
    }
    let written = w.finish()?;
    Ok(CopyReport {
        written,
        bytes,
        content: external,
    })
}

/// Copies the file `name` of the scratch directory `dir` (an inline or downloaded source)
/// like a single local source: no filter, owners from `--chown` or root.
#[allow(clippy::too_many_arguments)]
fn copy_scratch_file(
    w: &mut LayerWriter,
    copier: &mut Copier<'_>,
    dir: std::path::PathBuf,
    name: String,
    dest_clean: &str,
    dir_form: bool,
    unpack: bool,
    chown: Option<Owner>,
) -> Result<u64, CopyError> {
    let fs = LayeredFs::plain_dir(dir);
    let src = Source {
        fs: &fs,
        filter: None,
        preserve_owner: false,
        from_context: false,
    };
    let entry = fs
        .metadata(&name)?
        .ok_or_else(|| CopyError::SourceNotFound { path: name.clone() })?;
    let m = source::Match {
        name,
        entry,
        wildcard: false,
    };
    copy_match(w, &src, copier, &m, dest_clean, dir_form, unpack, chown)
}

/// BuildKit's `Copy` for one selected source: decide the target path, create parents, and
/// copy (or, for ADD, extract an archive into the destination).
#[allow(clippy::too_many_arguments)]
fn copy_match(
    w: &mut LayerWriter,
    src: &Source<'_>,
    copier: &mut Copier<'_>,
    m: &source::Match,
    dest_clean: &str,
    dir_form: bool,
    unpack: bool,
    chown: Option<Owner>,
) -> Result<u64, CopyError> {
    if dir_form {
        w.ensure_dir(dest_clean)?;
    } else {
        w.ensure_dir(&parent_of(dest_clean))?;
    }
    let dst = w.view().resolve(dest_clean, true)?;
    if unpack
        && m.entry.kind == crate::layered::FileKind::File
        && archive::is_archive(&m.entry.host_path)?
    {
        let dst = w.ensure_dir(&dst)?;
        return archive::extract(&m.entry.host_path, w, &dst, chown);
    }
    let dest_entry = w.view().stat(&dst)?;
    let mut target = dst.clone();
    if !m.entry.is_dir() && dest_entry.as_ref().is_some_and(|e| e.is_dir()) {
        target = child_of(&dst, &m.name);
    }
    if m.entry.is_dir() && dest_entry.is_none() {
        w.ensure_dir(&target)?;
    } else {
        w.ensure_dir(&parent_of(&target))?;
    }
    copier.copy(w, src, &m.entry, "", &target, false)?;
    Ok(0)
}
