//! The flags an instruction accepts, BuildKit's `BFlags`: each declared with its type
//! (bool, string, repeatable list), then checked (unknown with a suggestion, duplicate,
//! missing value, not a boolean) and read back by name.

use crate::error::{ParseError, with_suggestion};
use crate::graph::Span;
use crate::syntax::RawFlag;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum FlagType {
    Bool,
    Str,
    List,
}

/// The values of the flags of one instruction after type checks.
pub(super) struct Flags {
    defs: Vec<(&'static str, FlagType)>,
    bools: Vec<(&'static str, bool)>,
    strs: Vec<(&'static str, String)>,
    lists: Vec<(&'static str, Vec<(String, Span)>)>,
}

impl Flags {
    pub(super) fn parse(
        raw: &[RawFlag],
        defs: &[(&'static str, FlagType)],
    ) -> Result<Flags, ParseError> {
        let mut f = Flags {
            defs: defs.to_vec(),
            bools: Vec::new(),
            strs: Vec::new(),
            lists: Vec::new(),
        };
        let mut used: Vec<&str> = Vec::new();
        for flag in raw {
            let err = |m: String| ParseError::new(flag.span.line, flag.span.column, m);
            let Some(body) = flag.text.strip_prefix("--") else {
                return Err(err(format!("arg should start with -- : {}", flag.text)));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(def_name, ty)) = f.defs.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = f.defs.iter().map(|(n, _)| *n).collect();
                return Err(err(with_suggestion(
                    format!("unknown flag: {name}"),
                    name,
                    &names,
                    true,
                )));
            };
            if used.contains(&def_name) && ty != FlagType::List {
                return Err(err(format!("duplicate flag specified: {name}")));
            }
            used.push(def_name);
            match ty {
                FlagType::Bool => {
                    let v = match value {
                        Some("") => return Err(err(format!("missing a value on flag: {name}"))),
                        None => true,
                        Some(v) => match v.to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => {
                                return Err(err(format!(
                                    "expecting boolean value for flag {name}, not: {v}"
                                )));
                            }
                        },
                    };
                    f.bools.push((def_name, v));
                }
                FlagType::Str => {
                    let Some(v) = value else {
                        return Err(err(format!("missing a value on flag: {name}")));
                    };
                    f.strs.push((def_name, v.to_string()));
                }
                FlagType::List => {
                    let Some(v) = value else {
                        return Err(err(format!("missing a value on flag: {name}")));
                    };
                    match f.lists.iter_mut().find(|(n, _)| *n == def_name) {
                        Some((_, l)) => l.push((v.to_string(), flag.span)),
                        None => f.lists.push((def_name, vec![(v.to_string(), flag.span)])),
                    }
                }
            }
        }
        Ok(f)
    }

    pub(super) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
    pub(super) fn str(&self, name: &str) -> Option<String> {
        self.strs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
    pub(super) fn list(&self, name: &str) -> Vec<(String, Span)> {
        self.lists
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}
