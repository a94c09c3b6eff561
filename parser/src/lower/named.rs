//! Named build contexts while lowering (`--build-context NAME=VALUE`, BuildKit's
//! `NamedContext`): which stage or image name each one replaces, and what a reference to
//! it becomes. A stage replaced by a context is never built: every `FROM`, `COPY --from` and
//! `RUN --mount from=` that names it (by name or index) reads the context instead, as does
//! one that names an image of the context's name (compared as [`context_name`] gives them).

use super::error::{LowerError, at};
use super::{BaseRef, Ctx, FromRef};
use crate::graph::{NamedContext, Span, context_name};

impl Ctx<'_> {
    /// The named context `name` (a stage name or an image reference) stands for, with the
    /// name it is known by.
    pub(super) fn named_context(&self, name: &str) -> Option<(String, &NamedContext)> {
        if self.opts.named_contexts.is_empty() {
            return None;
        }
        let key = context_name(name)?;
        self.opts
            .named_contexts
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(k, c)| (k.clone(), c))
    }

    /// The context replacing stage `i`, if one has its name.
    pub(super) fn stage_override(&self, i: usize) -> Option<(String, &NamedContext)> {
        let name = self.df.stages[i].name.as_deref()?;
        self.named_context(name)
    }

    /// What a FROM reading context `key` starts from.
    pub(super) fn named_base(
        &self,
        key: &str,
        context: &NamedContext,
        span: Span,
    ) -> Result<BaseRef, LowerError> {
        match context {
            NamedContext::Image(reference) => Ok(BaseRef::Image(reference.clone())),
            NamedContext::Held(_) => Ok(BaseRef::Named(key.to_string())),
            NamedContext::Files => Err(at(
                span,
                format!(
                    "the build context {key} is a directory, and kiln cannot start a stage \
                     from one: COPY --from={key} reads it"
                ),
            )),
        }
    }

    /// What a `--from`/`from=` reading context `key` reads.
    pub(super) fn named_from(key: &str, context: &NamedContext) -> FromRef {
        match context {
            NamedContext::Image(reference) => FromRef::Image(reference.clone()),
            NamedContext::Held(_) | NamedContext::Files => FromRef::Named(key.to_string()),
        }
    }

    /// The config of the held image of context `key`, for a stage that starts from it.
    pub(super) fn held_image(&self, key: &str) -> crate::graph::BaseImage {
        self.opts
            .named_contexts
            .iter()
            .rev()
            .find_map(|(k, c)| match c {
                NamedContext::Held(image) if k == key => Some(image.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}
