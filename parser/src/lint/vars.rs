//! Which variables an expansion looked up and found, and which it found unset (BuildKit's
//! `ProcessWordWithMatches`): an [`Env`] that answers from another and writes down each
//! name asked for. Expansion itself is unchanged; only the lookups are seen.

use crate::expand::Env;
use std::cell::RefCell;
use std::collections::BTreeSet;

/// Names looked up through a [`Recorder`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lookups {
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// An [`Env`] over `inner` that records every lookup.
pub struct Recorder<'e> {
    inner: &'e dyn Env,
    seen: RefCell<Lookups>,
}

impl<'e> Recorder<'e> {
    pub fn new(inner: &'e dyn Env) -> Self {
        Recorder {
            inner,
            seen: RefCell::default(),
        }
    }

    /// What was looked up so far.
    pub fn into_lookups(self) -> Lookups {
        self.seen.into_inner()
    }
}

impl Env for Recorder<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let v = self.inner.get(name);
        let mut seen = self.seen.borrow_mut();
        let set = if v.is_some() {
            &mut seen.matched
        } else {
            &mut seen.unmatched
        };
        if !set.contains(name) {
            set.insert(name.to_string());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::Lexer;

    #[test]
    fn set_and_unset_names_are_told_apart() {
        let env = vec![("A".to_string(), "1".to_string())];
        let r = Recorder::new(&env);
        let out = Lexer::new('\\')
            .process_word("$A ${B} ${C:-x}", &r)
            .unwrap();
        assert_eq!(out, "1  x");
        let l = r.into_lookups();
        assert_eq!(l.matched.iter().collect::<Vec<_>>(), ["A"]);
        assert_eq!(l.unmatched.iter().collect::<Vec<_>>(), ["B", "C"]);
    }
}
