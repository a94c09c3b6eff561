//! Which image or stage each stage starts from, and what else it reads: FROM lines
//! (names case-insensitive, indexes, `--platform`), the stages `COPY --from` and
//! `RUN --mount from=` name, base images through the caller's [`BaseResolver`], and the
//! ONBUILD triggers a base brings.

use super::error::{LowerError, at};
use super::{BaseRef, Ctx, FromRef};
use crate::error::ParseError;
use crate::graph::*;
use crate::instructions::{Command, Instruction};
use crate::mount::split_csv;

impl Ctx<'_> {
    /// Expands every FROM with the global ARGs and decides what each stage starts from.
    pub(super) fn resolve_bases(&mut self) -> Result<(), LowerError> {
        let df = self.df;
        for (i, st) in df.stages.iter().enumerate() {
            let (base, base_lookups) = self.expand_global(&st.base);
            let platform_word = st.platform.as_ref().map(|p| (p, self.expand_global(p)));
            let checked = platform_word
                .as_ref()
                .map(|(_, (r, l))| (l, r.as_deref().unwrap_or_default()));
            self.check_from(i, &base_lookups, checked);
            let base = base.map_err(|e| at(st.span, e.to_string()))?;
            if base.is_empty() {
                return Err(at(
                    st.span,
                    format!("base name ({}) should not be blank", st.base),
                ));
            }
            let platform = match platform_word {
                Some((p, (v, _))) => {
                    let v = v.map_err(|e| {
                        at(
                            st.span,
                            format!("failed to process arguments for platform: {e}"),
                        )
                    })?;
                    if v.is_empty() {
                        return Err(at(
                            st.span,
                            format!("empty platform value from expression {p}"),
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            if self.stage_override(i).is_some() {
                // Replaced by a named context: never built, so what it starts from is
                // never asked (BuildKit does not resolve it either).
                self.bases.push(BaseRef::Scratch);
                self.platforms.push(platform);
                continue;
            }
            let lower = base.to_ascii_lowercase();
            let earlier = df.stages[..i]
                .iter()
                .rposition(|s| s.name.as_deref() == Some(lower.as_str()));
            let r = if let Some(j) = earlier {
                match self.stage_override(j) {
                    Some((key, context)) => self.named_base(&key, context, st.span)?,
                    None => BaseRef::Stage(j),
                }
            } else if df.stages[i..]
                .iter()
                .any(|s| s.name.as_deref() == Some(lower.as_str()))
            {
                return Err(at(
                    st.span,
                    format!(
                        "stage {} needs to be defined before it is used as a base (FROM {base})",
                        crate::goformat::quote(&lower)
                    ),
                ));
            } else if base == "scratch" {
                BaseRef::Scratch
            } else if let Some((key, context)) = self.named_context(&base) {
                self.named_base(&key, context, st.span)?
            } else {
                BaseRef::Image(base)
            };
            self.bases.push(r);
            self.platforms.push(platform);
        }
        Ok(())
    }

    pub(super) fn stage_label(&self, i: usize) -> String {
        self.df.stages[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{i}"))
    }

    /// Resolves a `--from`/`from=` reference seen in stage `current`: a stage, an image, or
    /// the named context that replaces either.
    pub(super) fn resolve_from(
        &self,
        name: &str,
        current: usize,
        span: Span,
        what: &str,
    ) -> Result<FromRef, LowerError> {
        Ok(
            match self.resolve_from_unnamed(name, current, span, what)? {
                FromRef::Stage(j) => match self.stage_override(j) {
                    Some((key, context)) => Self::named_from(&key, context),
                    None => FromRef::Stage(j),
                },
                FromRef::Image(image) => match self.named_context(&image) {
                    Some((key, context)) => Self::named_from(&key, context),
                    None => FromRef::Image(image),
                },
                named @ FromRef::Named(_) => named,
            },
        )
    }

    /// [`Ctx::resolve_from`] without named contexts.
    fn resolve_from_unnamed(
        &self,
        name: &str,
        current: usize,
        span: Span,
        what: &str,
    ) -> Result<FromRef, LowerError> {
        let lower = name.to_ascii_lowercase();
        let found = self
            .df
            .stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lower.as_str()));
        let idx = match found {
            Some(j) => Some(j),
            None => match name.parse::<usize>() {
                Ok(j) if j < self.df.stages.len() => Some(j),
                Ok(j) => return Err(at(span, format!("invalid stage index {j}"))),
                Err(_) => None,
            },
        };
        match idx {
            Some(j) if j >= current => {
                // A later one with the same name may shadow an earlier one; prefer earlier.
                if let Some(e) = self.df.stages[..current]
                    .iter()
                    .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
                {
                    return Ok(FromRef::Stage(e));
                }
                if j == current {
                    Err(at(
                        span,
                        format!(
                            "circular dependency detected on stage: {} ({what} refers to its own stage)",
                            self.stage_label(current)
                        ),
                    ))
                } else {
                    Err(at(
                        span,
                        format!(
                            "cannot {what} from stage {}, it needs to be defined before current stage {}",
                            crate::goformat::quote(name),
                            crate::goformat::quote(&self.stage_label(current))
                        ),
                    ))
                }
            }
            Some(j) => Ok(FromRef::Stage(j)),
            None => Ok(FromRef::Image(name.to_string())),
        }
    }

    /// The image `reference` as stage `i` reads it: for the stage's own platform when its
    /// FROM names one other than the build's.
    pub(super) fn image(
        &mut self,
        reference: &str,
        i: usize,
        span: Span,
    ) -> Result<BaseImage, LowerError> {
        let platform = self.own_platform(i);
        let cache_key = match &platform {
            Some(p) => format!("{p}\0{reference}"),
            None => reference.to_string(),
        };
        if let Some(img) = self.images.get(&cache_key) {
            return Ok(img.clone());
        }
        let resolved = match &platform {
            Some(p) => self.resolver.resolve_for(reference, p),
            None => self.resolver.resolve(reference),
        };
        let img = resolved.map_err(|message| LowerError::Resolve {
            span,
            reference: reference.to_string(),
            message,
        })?;
        self.images.insert(cache_key, img.clone());
        Ok(img)
    }

    /// Stage `i`'s `FROM --platform=` when it names a valid platform other than the
    /// build's (`arm64/v8` is `arm64`); `None` when the stage is for the build's.
    pub(super) fn own_platform(&self, i: usize) -> Option<Platform> {
        let written = self.platforms.get(i)?.as_deref()?;
        let platform = Platform::parse_normalized(written).ok()?;
        let build = self
            .opts
            .platform
            .clone()
            .unwrap_or_else(super::host_platform);
        (platform != build).then_some(platform)
    }

    /// ONBUILD triggers a stage runs first: its base stage's ONBUILD lines or its base
    /// image's config.
    pub(super) fn triggers(&mut self, i: usize) -> Result<Vec<Instruction>, LowerError> {
        let st = &self.df.stages[i];
        let span = st.span;
        let exprs: Vec<String> = match self.bases[i].clone() {
            BaseRef::Scratch => Vec::new(),
            BaseRef::Stage(j) => self.df.stages[j]
                .instructions
                .iter()
                .filter_map(|ins| match &ins.command {
                    Command::OnBuild(e) => Some(e.clone()),
                    _ => None,
                })
                .collect(),
            BaseRef::Image(r) => self.image(&r, i, span)?.on_build,
            BaseRef::Named(key) => self.held_image(&key).on_build,
        };
        let mut out = Vec::new();
        for e in exprs {
            let trig = |source: ParseError| LowerError::Trigger { span, source };
            let ast = crate::syntax::parse_syntax(&e).map_err(trig)?;
            if ast.nodes.len() != 1 {
                return Err(at(span, "onbuild trigger should be a single expression"));
            }
            let mut ins = crate::instructions::parse_instruction(&ast.nodes[0]).map_err(trig)?;
            ins.span = span;
            ins.source = e.clone();
            for f in &mut ins.flags {
                f.span = span;
            }
            if let Command::Run(r) = &mut ins.command {
                for m in &mut r.mounts {
                    m.1 = span;
                }
            }
            out.push(ins);
        }
        Ok(out)
    }

    /// Stages that stage `i` reads from (base, --from, mount from=, triggers').
    pub(super) fn stage_deps(&mut self, i: usize) -> Result<Vec<usize>, LowerError> {
        let mut deps = Vec::new();
        if self.stage_override(i).is_some() {
            return Ok(deps);
        }
        if let BaseRef::Stage(j) = self.bases[i] {
            deps.push(j);
        }
        let triggers = self.triggers(i)?;
        let df = self.df;
        for ins in triggers.iter().chain(df.stages[i].instructions.iter()) {
            for name in from_refs(ins) {
                if let FromRef::Stage(j) = self.resolve_from(&name.0, i, name.1, name.2)? {
                    deps.push(j);
                }
            }
        }
        Ok(deps)
    }
}

/// Every stage reference of an instruction: (name, span, verb for messages).
fn from_refs(ins: &Instruction) -> Vec<(String, Span, &'static str)> {
    let mut out = Vec::new();
    match &ins.command {
        Command::Copy(c) => {
            if let Some(f) = &c.from {
                let span = ins
                    .flags
                    .iter()
                    .find(|f| f.text.starts_with("--from"))
                    .map_or(ins.span, |f| f.span);
                out.push((f.clone(), span, "copy"));
            }
        }
        Command::Run(r) => {
            for (m, span) in &r.mounts {
                let Ok(fields) = split_csv(m) else { continue };
                let mut from = None;
                let mut secretish = false;
                for f in fields {
                    if let Some((k, v)) = f.split_once('=') {
                        match k.to_ascii_lowercase().as_str() {
                            "from" => from = Some(v.to_string()),
                            "type" => {
                                secretish = matches!(
                                    v.to_ascii_lowercase().as_str(),
                                    "secret" | "ssh" | "tmpfs"
                                )
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(f) = from.filter(|f| !f.is_empty() && !secretish) {
                    out.push((f, *span, "mount"));
                }
            }
        }
        _ => {}
    }
    out
}
