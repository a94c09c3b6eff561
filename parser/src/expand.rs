//! Word expansion with BuildKit's rules (`frontend/dockerfile/shell/lex.go`).
//!
//! Owns `$v`, `${v}`, the `${v:-w}` family of modifiers, quote and escape processing and
//! the quote-aware word splitting used for ENV/ARG/LABEL/EXPOSE. The behaviour (including
//! its odd corners, such as `""` producing no word) follows BuildKit so that
//! `envVarTest` and `wordsTest` pass byte for byte.

use std::collections::HashMap;

use thiserror::Error;

/// Deepest nesting of `${...}` inside one word. BuildKit has no limit and recurses once per
/// level, so 50,000 nested `${X:-${X:-...}}` overflow its stack as they did ours. Real
/// Dockerfiles nest two or three levels; 100 is far beyond any of them and costs a few
/// hundred KiB of stack at most, even unoptimized.
pub const MAX_NESTING: usize = 100;

/// Largest result of expanding one word (bytes). Linux refuses a single argument or
/// environment string over 128 KiB (MAX_ARG_STRLEN) and all of a process's arguments and
/// environment over ~2 MiB, so no RUN could use more; 1 MiB leaves room for labels and
/// paths while doubling ARGs (`A1=${A0}${A0}`...) stop at 1 MiB instead of gigabytes.
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// How much of the word an error shows: a word that hit a limit can be huge, and the
/// message needs only enough to find it (the line is named by the caller).
const ERROR_WORD_CHARS: usize = 200;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("failed to process {}: {reason}", crate::goformat::quote(word))]
pub struct ExpandError {
    /// The word as given.
    pub word: String,
    /// What went wrong (`syntax error: bad substitution`, `v: is not allowed to be unset`...).
    pub reason: String,
}

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, or `None` if it is unset.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// An ordered environment with replace-in-place semantics and fast lookup, like LLB's
/// `EnvList`: re-setting a key keeps its position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
    /// Keys and values, in bytes (what the list costs to hold and to copy).
    bytes: usize,
}

impl EnvList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an existing value in place.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.index.get(key) {
            Some(&i) => {
                self.bytes = self.bytes - self.entries[i].1.len() + value.len();
                self.entries[i].1 = value.to_string();
            }
            None => {
                self.bytes += key.len() + value.len();
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push((key.to_string(), value.to_string()));
            }
        }
    }

    /// The total length of every key and value.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.entries[i].1.as_str())
    }
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
            lex: *self,
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

/// `word` cut to [`ERROR_WORD_CHARS`] characters (with `...`) for an error message.
fn clip(word: &str) -> String {
    match word.char_indices().nth(ERROR_WORD_CHARS) {
        Some((end, _)) => format!("{}...", &word[..end]),
        None => word.to_string(),
    }
}

/// The error for a result over [`MAX_EXPANDED_BYTES`].
fn too_long() -> String {
    format!("expansion exceeds {MAX_EXPANDED_BYTES} bytes")
}

/// Fails once `s` is over [`MAX_EXPANDED_BYTES`]: checked as results grow, so a word never
/// builds more than one step past the limit.
fn check_len(s: &str) -> Res<()> {
    if s.len() > MAX_EXPANDED_BYTES {
        return Err(too_long());
    }
    Ok(())
}

/// Expands one word with the default lexer for `escape` (what most instructions use).
pub fn expand(word: &str, env: &dyn Env, escape: char) -> Result<String, ExpandError> {
    Lexer::new(escape).process_word(word, env)
}

/// Expands and splits like ENV/ARG/LABEL/EXPOSE values.
pub fn expand_words(word: &str, env: &dyn Env, escape: char) -> Result<Vec<String>, ExpandError> {
    Lexer::new(escape).process_words(word, env)
}

struct ShellWord<'a> {
    lex: Lexer,
    chars: Vec<char>,
    pos: usize,
    /// `${` levels open at `pos` (bounded by [`MAX_NESTING`]).
    depth: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    /// Whether the caller wants the split words (ProcessWords) or only the string.
    want_words: bool,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
    off: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if self.off {
            return;
        }
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        if self.off {
            return;
        }
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        if self.off {
            return;
        }
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        if self.off {
            return;
        }
        self.word.push_str(s);
        self.in_word = true;
    }
    fn into_words(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

type Res<T> = Result<T, String>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Res<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    /// The word up to `stop`; when the input ends before it, the error is `missing`.
    fn word_until(&mut self, stop: Option<char>, raw_escapes: bool, missing: &str) -> Res<String> {
        match self.process_stop_on(stop, raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(missing.into()),
            Err(e) => Err(e),
        }
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Res<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words {
            off: !self.want_words,
            ..Words::default()
        };
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.into_words()));
            }
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                check_len(&result)?;
                words.add_string(&tmp);
            } else if ch == '\'' && !self.lex.skip_process_quotes {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if ch == '"' && !self.lex.skip_process_quotes {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                check_len(&result)?;
                words.add_raw_string(&tmp);
            } else {
                let mut ch = ch;
                self.next();
                if ch == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    match self.next() {
                        None => break,
                        Some(c) => ch = c,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.into_words()))
    }

    fn process_single_quote(&mut self) -> Res<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Res<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                    check_len(&result)?;
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape at the end of the word is dropped.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name).map(str::to_string)
    }

    fn process_dollar(&mut self) -> Res<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".into());
            }
            _ => {}
        }
        // Each `${` level is a level of recursion below: bounded, so a hostile word gets an
        // error rather than a stack overflow.
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "more than {MAX_NESTING} nested ${{...}} substitutions"
            ));
        }
        self.depth += 1;
        let r = self.process_braced();
        self.depth -= 1;
        r
    }

    /// `${name...}` after the `${`.
    fn process_braced(&mut self) -> Res<String> {
        let name = self.process_name();
        let first = self.next();
        let mut chs: String = first.map(String::from).unwrap_or_else(|| "\u{FFFD}".into());
        let mut ch = first;
        let mut null_is_unset = false;
        match ch {
            Some('}') => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') | Some('+') | Some('-') | Some('?') | Some('#') | Some('%') => {
                if ch == Some(':') {
                    null_is_unset = true;
                    ch = self.next();
                    chs.push(ch.unwrap_or('\u{FFFD}'));
                }
                let raw = matches!(ch, Some('#') | Some('%'));
                let word = self.word_until(Some('}'), raw, "syntax error: missing '}'")?;
                let value = self.lookup(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                match ch {
                    Some('-') => {
                        if !set || (null_is_unset && value.is_empty()) {
                            Ok(word)
                        } else {
                            Ok(value)
                        }
                    }
                    Some('+') => {
                        if !set || (null_is_unset && value.is_empty()) {
                            Ok(String::new())
                        } else {
                            Ok(word)
                        }
                    }
                    Some('?') => {
                        if !set {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {msg}"));
                        }
                        if null_is_unset && value.is_empty() {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {msg}"));
                        }
                        Ok(value)
                    }
                    // `${v:#p}` and `${v:%p}` are not shell syntax; BuildKit rejects them.
                    Some('%' | '#') if null_is_unset => {
                        Err(format!("unsupported modifier ({chs}) in substitution"))
                    }
                    Some(c @ ('%' | '#')) => {
                        let (greedy, pat) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        if c == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern =
                    self.word_until(Some('/'), true, "syntax error: missing '/' in ${}")?;
                let replacement = self.word_until(Some('}'), true, "syntax error: missing '}'")?;
                let value = self.lookup(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let re = shell_pattern_to_regex(&pattern, true, false)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                if replace_all {
                    // Every match can add the whole replacement: bound the result before
                    // building it.
                    let matches = re.find_iter(&value).count();
                    let bound = matches
                        .saturating_mul(replacement.len())
                        .saturating_add(value.len());
                    if bound > MAX_EXPANDED_BYTES {
                        return Err(too_long());
                    }
                    Ok(re.replace_all(&value, replacement.as_str()).into_owned())
                } else if let Some(m) = re.find(&value) {
                    Ok(format!(
                        "{}{}{}",
                        &value[..m.start()],
                        replacement,
                        &value[m.end()..]
                    ))
                } else {
                    Ok(value)
                }
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(c) = self.peek() {
                    if !c.is_numeric() {
                        break;
                    }
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell glob (`*`, `?`, `\` escapes; no brackets) to a regex, as BuildKit does.
fn shell_pattern_to_regex(pattern: &str, greedy: bool, anchored: bool) -> Res<regex::Regex> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let tok = chars[i];
        i += 1;
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `}` and `/` needed escaping inside ${}, the escape is not part of the pattern.
                if matches!(chars.get(i), Some('}') | Some('/')) {
                    continue;
                }
                match chars.get(i) {
                    Some(&c @ ('*' | '?' | '\\')) => {
                        i += 1;
                        out.push_str(&regex::escape(&c.to_string()));
                    }
                    Some(&c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape '\\'".into()),
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Res<String> {
    let re = shell_pattern_to_regex(pattern, greedy, true)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern keeping `\x` escapes in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let runes: Vec<char> = pattern.chars().collect();
    let n = runes.len();
    let mut out = vec!['\0'; n];
    let mut i = 0;
    while i < n {
        let tok = runes[i];
        let out_idx = n - 1 - i;
        if tok == '\\' && i != n - 1 {
            out[out_idx - 1] = tok;
            out[out_idx] = runes[i + 1];
            i += 2;
        } else {
            out[out_idx] = tok;
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Res<String> {
    // Regexes cannot find the shortest rightmost match, so reverse both sides.
    let pattern = reverse_pattern(pattern);
    let value: String = value.chars().rev().collect();
    let s = trim_prefix(&pattern, &value, greedy)?;
    Ok(s.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("A".into(), "abcabc".into()), ("E".into(), String::new())]
    }

    #[test]
    fn modifiers_follow_bash() {
        let e = env();
        let x = |w: &str| expand(w, &e, '\\').unwrap();
        assert_eq!(x("${A#*b}"), "cabc");
        assert_eq!(x("${A##*b}"), "c");
        assert_eq!(x("${A%b*}"), "abca");
        assert_eq!(x("${A%%b*}"), "a");
        assert_eq!(x("${A/b/X}"), "aXcabc");
        assert_eq!(x("${A//b/X}"), "aXcaXc");
        assert_eq!(x("${E:-d}"), "d");
        assert_eq!(x("${E-d}"), "");
        assert_eq!(x("${A:+y}"), "y");
        assert_eq!(x("${U+y}"), "");
    }

    #[test]
    fn colon_with_trim_modifiers_is_rejected() {
        let e = env();
        let err = expand("${A:#a}", &e, '\\').unwrap_err();
        assert_eq!(err.reason, "unsupported modifier (:#) in substitution");
        assert!(expand("${A:%c}", &e, '\\').is_err());
    }

    #[test]
    fn required_variable_errors_name_the_variable() {
        let e = env();
        let err = expand("${U:?must be set}", &e, '\\').unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${U:?must be set}\": U: must be set"
        );
        let err = expand("${E:?}", &e, '\\').unwrap_err();
        assert_eq!(err.reason, "E: is not allowed to be empty");
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
        let e = env();
        let nested = |n: usize| format!("{}x{}", "${X:-".repeat(n), "}".repeat(n));
        assert_eq!(expand(&nested(MAX_NESTING), &e, '\\').unwrap(), "x");
        let err = expand(&nested(50_000), &e, '\\').unwrap_err();
        assert_eq!(
            err.reason,
            format!("more than {MAX_NESTING} nested ${{...}} substitutions")
        );
        // The message shows the start of the word, not all 300,000 characters of it.
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
        // Quotes inside substitutions nest through the same path.
        let quoted = format!("{}x{}", "\"${X:-".repeat(50_000), "}\"".repeat(50_000));
        assert!(expand(&quoted, &e, '\\').is_err());
    }

    #[test]
    fn results_beyond_the_size_limit_are_an_error() {
        // Doubling: each variable twice the one before, as ARG A1=${A0}${A0}... would.
        let mut env: Vec<(String, String)> = vec![("A0".into(), "x".repeat(8))];
        let mut failed_at = None;
        for i in 1..=24 {
            match expand(&format!("${{A{p}}}${{A{p}}}", p = i - 1), &env, '\\') {
                Ok(v) => env.push((format!("A{i}"), v)),
                Err(e) => {
                    assert_eq!(
                        e.reason,
                        format!("expansion exceeds {MAX_EXPANDED_BYTES} bytes")
                    );
                    failed_at = Some(i);
                    break;
                }
            }
        }
        // 8 << 17 is exactly 1 MiB: A17 fits, A18 does not.
        assert_eq!(failed_at, Some(18));
        // In double quotes and through a replacement the same bound holds.
        let e = vec![("B".into(), "y".repeat(1 << 19))];
        assert!(expand("\"$B$B$B\"", &e, '\\').is_err());
        assert!(expand("${B//y/zzz}", &e, '\\').is_err());
        assert_eq!(expand("${B//y/z}", &e, '\\').unwrap().len(), 1 << 19);
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let mut l = Lexer::new('\\');
        l.skip_unset_env = true;
        let e = env();
        assert_eq!(
            l.process_word("$U ${U} ${U:-x} $A", &e).unwrap(),
            "$U ${U} ${U:-x} abcabc"
        );
    }
}
