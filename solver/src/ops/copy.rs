//! COPY and ADD: keyed by the copy options and the content of what they select (context
//! checksums, a named context's own, the key of a stage or image read, a URL's bytes or
//! pinned checksum, a git source's commit); executed by the executor's copier into the
//! layer directory.

use super::fetch::Fetched;
use super::{KeyContext, KeyParts, SourceKey, StepContext, stage_key};
use crate::blocking::blocking;
use crate::error::{SolveError, StepError};
use crate::named::{NamedContexts, OpenNamed};
use crate::result::{StageInputs, StageResult, find_input, lowers_of};
use crate::session::BuildSession;
use kiln_executor::commit::LayerSource;
use kiln_executor::copy::{CopyRequest, SourceRoot, SourceSpec};
use kiln_executor::layered::LayeredFs;
use kiln_parser::{CopyOp, CopySource, Source};
use serde::Serialize;

/// The hashed parameters of a COPY/ADD: `{"copy": ...}`.
#[derive(Serialize)]
struct CopyKey<'a> {
    copy: CopyFields<'a>,
}

#[derive(Serialize)]
struct CopyFields<'a> {
    add: bool,
    from: SourceKey<'a>,
    sources: Vec<CopySourceKey<'a>>,
    dest: &'a str,
    workdir: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    parents: bool,
    exclude: &'a [String],
    checksum: Option<&'a str>,
    unpack: Option<bool>,
    keep_git_dir: bool,
}

#[derive(Serialize)]
enum CopySourceKey<'a> {
    Path(&'a str),
    Url(&'a str),
    Heredoc {
        name: &'a str,
        content: &'a str,
    },
    /// Neither the remote nor the ref: the commit they resolve to is the step's input.
    Git {
        subdir: &'a str,
        keep_git_dir: bool,
        submodules: bool,
    },
}

/// The key parameters of `copy`. Inputs, in this order: each URL's pinned checksum or the
/// digest of the bytes fetched now (kept in `fetched` for the copy), then the checksum of
/// each context pattern, or the key of the stage or image read.
pub(crate) fn key(
    copy: &CopyOp,
    kc: &KeyContext,
    parts: &mut KeyParts,
    fetched: &mut Fetched,
) -> Result<serde_json::Value, StepError> {
    let CopyOp {
        add,
        from,
        sources,
        dest,
        workdir,
        chown,
        chmod,
        link,
        parents,
        exclude,
        checksum,
        unpack,
        keep_git_dir,
    } = copy;
    let mut git_source = false;
    for source in sources {
        match source {
            CopySource::Url(url) => {
                // Content decides, like BuildKit: a pinned checksum, else the bytes.
                let sum = match checksum {
                    Some(sum) => sum.clone(),
                    None => fetched.fetch(kc.session, url)?,
                };
                parts.inputs.push((format!("url {url}"), sum));
            }
            CopySource::Git { git, .. } => {
                // The commit decides (BuildKit's git source key), never the ref's name;
                // the label (kept in the explain log) never shows a password.
                let resolved = super::git::resolve(kc.session, git)?;
                let remote = kiln_context::git::shown_remote(&git.remote);
                parts
                    .inputs
                    .push((format!("git {remote}"), resolved.commit.clone()));
                fetched.git = Some(resolved);
                git_source = true;
            }
            CopySource::Path(_) | CopySource::Heredoc { .. } => {}
        }
    }
    match from {
        Source::Context => {
            for source in sources {
                if let CopySource::Path(pattern) = source {
                    let sum = kc.session.checksum(pattern, exclude, &mut parts.files)?;
                    parts.inputs.push((format!("context {pattern}"), sum));
                }
            }
        }
        Source::Stage(i) => parts
            .inputs
            .push((format!("stage {i}"), stage_key(kc, *i)?)),
        Source::Image(reference) => {
            let image = kc.session.resolve_image(reference)?;
            parts.inputs.push((format!("image {reference}"), image.key));
        }
        // Like the main context: by the content of what the patterns select, never the
        // directory's path, so moving the directory keeps the cache.
        Source::Named(name) => match kc.session.named.get(name)? {
            OpenNamed::Dir(context) => {
                for source in sources {
                    if let CopySource::Path(pattern) = source {
                        let sum =
                            NamedContexts::checksum(context, pattern, exclude, &mut parts.files)?;
                        parts
                            .inputs
                            .push((format!("context {name} {pattern}"), sum));
                    }
                }
            }
            OpenNamed::Image(_) => {
                let image = kc.session.resolve_named_image(name)?;
                parts.inputs.push((format!("context {name}"), image.key));
            }
        },
    }
    let key = CopyKey {
        copy: CopyFields {
            add: *add,
            from: SourceKey::of(from),
            sources: sources
                .iter()
                .map(|s| match s {
                    CopySource::Path(p) => CopySourceKey::Path(p),
                    CopySource::Url(u) => CopySourceKey::Url(u),
                    CopySource::Heredoc { name, content } => {
                        CopySourceKey::Heredoc { name, content }
                    }
                    CopySource::Git { git, .. } => CopySourceKey::Git {
                        subdir: &git.subdir,
                        keep_git_dir: git.keep_git_dir.unwrap_or(false),
                        submodules: git.submodules.unwrap_or(true),
                    },
                })
                .collect(),
            dest,
            workdir,
            chown: chown.as_deref(),
            chmod: chmod.as_deref(),
            link: *link,
            parents: *parents,
            exclude,
            // A git source's checksum only checks the commit, which is an input already.
            checksum: checksum.as_deref().filter(|_| !git_source),
            unpack: *unpack,
            keep_git_dir: *keep_git_dir,
        },
    };
    serde_json::to_value(key).map_err(StepError::KeySerialize)
}

/// The copy to carry out: the executor runs it as it commits the layer (where and how it
/// stages it is the executor's business, see [`kiln_executor::commit`]).
pub(crate) async fn exec(
    copy: &CopyOp,
    ctx: &StepContext<'_>,
    fetched: &Fetched,
) -> Result<LayerSource, SolveError> {
    let git = copy.sources.iter().find_map(|s| match s {
        CopySource::Git { git, .. } => Some(git.clone()),
        _ => None,
    });
    if let (Some(git), Some(resolved)) = (git, fetched.git.clone()) {
        let session = ctx.session.clone();
        let checkout = blocking(move || super::git::checkout(&session, &git, &resolved))
            .await
            .map_err(|e| ctx.at(e))?;
        let req = git_request(copy, ctx.current, &checkout.tree);
        if let Ok(mut kept) = fetched.checkout.lock() {
            *kept = Some(checkout);
        }
        return Ok(LayerSource::Copy(Box::new(req)));
    }
    let req =
        copy_request(ctx.session, copy, ctx.current, ctx.inputs, fetched).map_err(|e| ctx.at(e))?;
    Ok(LayerSource::Copy(Box::new(req)))
}

/// The copy of a git source (ADD's only source then): the checkout's `subdir` (its root
/// when empty), read as a context is (owners 0:0, symlinks inside copied as they are),
/// into the destination. The checksum was checked against the commit when keying.
fn git_request(copy: &CopyOp, current: &StageResult, tree: &std::path::Path) -> CopyRequest {
    let subdir = copy.sources.iter().find_map(|s| match s {
        CopySource::Git { git, .. } if !git.subdir.is_empty() => Some(git.subdir.clone()),
        _ => None,
    });
    CopyRequest {
        sources: vec![SourceSpec::Path(subdir.unwrap_or_else(|| "/".to_string()))],
        from: SourceRoot::Dir {
            root: tree.to_path_buf(),
            filter: None,
        },
        dest: copy.dest.clone(),
        workdir: copy.workdir.clone(),
        target: LayeredFs::new(current.lowers()),
        chown: copy.chown.clone(),
        chmod: copy.chmod.clone(),
        add: copy.add,
        unpack: Some(false),
        checksum: None,
        parents: false,
        excludes: copy.exclude.clone(),
        link: copy.link,
        stage_contents: false,
        previous: None,
        // Git's HTTP credentials are not BuildKit's HTTP_AUTH_* secrets (GIT_AUTH_TOKEN is).
        authorization: None,
    }
}

fn copy_request(
    session: &BuildSession,
    copy: &CopyOp,
    current: &StageResult,
    inputs: &StageInputs,
    fetched: &Fetched,
) -> Result<CopyRequest, StepError> {
    let from = match &copy.from {
        Source::Context => SourceRoot::Dir {
            root: session.context_dir().to_path_buf(),
            filter: Some(session.context_filter()),
        },
        Source::Stage(i) => {
            let stage = find_input(inputs, *i)?;
            SourceRoot::Layers(LayeredFs::new(stage.lowers()))
        }
        Source::Image(reference) => {
            let image = session.resolve_image(reference)?;
            SourceRoot::Layers(LayeredFs::new(lowers_of(&image.layers)))
        }
        Source::Named(name) => match session.named.get(name)? {
            OpenNamed::Dir(context) => SourceRoot::Dir {
                root: context.root().to_path_buf(),
                filter: Some(crate::named::filter(context)),
            },
            OpenNamed::Image(_) => {
                let image = session.resolve_named_image(name)?;
                SourceRoot::Layers(LayeredFs::new(lowers_of(&image.layers)))
            }
        },
    };
    let sources = copy
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Path(p) => SourceSpec::Path(p.clone()),
            CopySource::Url(u) => fetched.source(u),
            // Lowering makes a git source ADD's only one, which `exec` copies on its own.
            CopySource::Git { source, .. } => SourceSpec::Path(source.clone()),
            CopySource::Heredoc { name, content } => SourceSpec::Inline {
                name: name.clone(),
                content: content.clone().into_bytes(),
            },
        })
        .collect();
    // A URL with --checksum is downloaded by the copier (the key needed no bytes), with
    // its host's credentials; the others were fetched while keying.
    let authorization = match (&copy.checksum, copy.sources.as_slice()) {
        (Some(_), [CopySource::Url(url)]) => session.http_authorization(url)?,
        _ => None,
    };
    Ok(CopyRequest {
        sources,
        from,
        dest: copy.dest.clone(),
        workdir: copy.workdir.clone(),
        target: LayeredFs::new(current.lowers()),
        chown: copy.chown.clone(),
        chmod: copy.chmod.clone(),
        add: copy.add,
        unpack: copy.unpack,
        checksum: copy.checksum.clone(),
        authorization,
        parents: copy.parents,
        excludes: copy.exclude.clone(),
        link: copy.link,
        stage_contents: false,
        previous: None,
    })
}
