//! COPY and ADD: keyed by the copy options and the content of what they select (context
//! checksums, the key of a stage or image read, a URL's bytes or pinned checksum); executed
//! by the executor's copier into the layer directory.

use super::fetch::Fetched;
use super::{KeyContext, KeyParts, SourceKey, StepContext, stage_key};
use crate::error::{SolveError, StepError};
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
    Heredoc { name: &'a str, content: &'a str },
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
    for source in sources {
        if let CopySource::Url(url) = source {
            // Content decides, like BuildKit: a pinned checksum, else the bytes.
            let sum = match checksum {
                Some(sum) => sum.clone(),
                None => fetched.fetch(kc.session, url)?,
            };
            parts.inputs.push((format!("url {url}"), sum));
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
                })
                .collect(),
            dest,
            workdir,
            chown: chown.as_deref(),
            chmod: chmod.as_deref(),
            link: *link,
            parents: *parents,
            exclude,
            checksum: checksum.as_deref(),
            unpack: *unpack,
            keep_git_dir: *keep_git_dir,
        },
    };
    serde_json::to_value(key).map_err(StepError::KeySerialize)
}

/// The copy to carry out: the executor runs it as it commits the layer (where and how it
/// stages it is the executor's business, see [`kiln_executor::commit`]).
pub(crate) fn exec(
    copy: &CopyOp,
    ctx: &StepContext<'_>,
    fetched: &Fetched,
) -> Result<LayerSource, SolveError> {
    let req =
        copy_request(ctx.session, copy, ctx.current, ctx.inputs, fetched).map_err(|e| ctx.at(e))?;
    Ok(LayerSource::Copy(Box::new(req)))
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
    };
    let sources = copy
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Path(p) => SourceSpec::Path(p.clone()),
            CopySource::Url(u) => fetched.source(u),
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
    })
}
