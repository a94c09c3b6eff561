//! [`Lexer`]: the options of one expansion pass and its entry points (BuildKit's
//! `ProcessWord` and `ProcessWords`), and [`ExpandError`], what they fail with. The
//! character-level work is [`super::word`]'s.

use super::env::Env;
use super::limits::clip;
use super::word::ShellWord;
use thiserror::Error;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("failed to process {}: {reason}", crate::goformat::quote(word))]
pub struct ExpandError {
    /// The word as given.
    pub word: String,
    /// What went wrong (`syntax error: bad substitution`, `v: is not allowed to be unset`...).
    pub reason: String,
}

/// Options of one expansion pass; the defaults are BuildKit's `NewLex(escape)`.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character (`\` or the backtick from `# escape=`).
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string (spaces kept), like `ProcessWord`.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        if self.is_literal(word) {
            return Ok(word.to_string());
        }
        self.process(word, env, false).map(|(w, _)| w)
    }

    /// Expands `word` and splits it into words (quote-aware), like `ProcessWords`.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        if self.is_literal(word) {
            return Ok(word
                .split(char::is_whitespace)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect());
        }
        self.process(word, env, true).map(|(_, ws)| ws)
    }

    /// Nothing to expand, unquote or unescape: the common case, answered without the lexer.
    fn is_literal(&self, word: &str) -> bool {
        !word
            .chars()
            .any(|c| c == '$' || c == '\'' || c == '"' || c == self.escape)
    }

    fn process(
        &self,
        word: &str,
        env: &dyn Env,
        want_words: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut sw = ShellWord {
            escape: self.escape,
            raw_quotes: self.raw_quotes,
            skip_process_quotes: self.skip_process_quotes,
            skip_unset_env: self.skip_unset_env,
            chars: word.chars().collect(),
            pos: 0,
            depth: 0,
            env,
            raw_escapes: self.raw_escapes,
            want_words,
        };
        let raw = sw.raw_escapes;
        sw.process_stop_on(None, raw).map_err(|reason| ExpandError {
            word: clip(word),
            reason,
        })
    }
}

/// Expands one word with the default lexer for `escape` (what most instructions use).
pub fn expand(word: &str, env: &dyn Env, escape: char) -> Result<String, ExpandError> {
    Lexer::new(escape).process_word(word, env)
}

/// Expands and splits like ENV/ARG/LABEL/EXPOSE values.
pub fn expand_words(word: &str, env: &dyn Env, escape: char) -> Result<Vec<String>, ExpandError> {
    Lexer::new(escape).process_words(word, env)
}
