//! One word, character by character, as BuildKit's `shellWord`: quotes, escapes, `$v`,
//! `${v}` and its modifiers (`:-`, `:+`, `:?`, `#`, `%`, `/`...), collecting the
//! expanded string and, for callers that want them, the quote-aware words.

use super::env::Env;
use super::limits::{MAX_EXPANDED_BYTES, MAX_NESTING, check_len, too_long};
use super::pattern::{shell_pattern_to_regex, trim_prefix, trim_suffix};

/// The state of expanding one word; the options are the [`super::Lexer`]'s.
pub(super) struct ShellWord<'a> {
    pub(super) escape: char,
    pub(super) raw_quotes: bool,
    pub(super) skip_process_quotes: bool,
    pub(super) skip_unset_env: bool,
    pub(super) chars: Vec<char>,
    pub(super) pos: usize,
    /// `${` levels open at `pos` (bounded by [`MAX_NESTING`]).
    pub(super) depth: usize,
    pub(super) env: &'a dyn Env,
    pub(super) raw_escapes: bool,
    /// Whether the caller wants the split words (ProcessWords) or only the string.
    pub(super) want_words: bool,
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

    pub(super) fn process_stop_on(
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
            } else if ch == '\'' && !self.skip_process_quotes {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if ch == '"' && !self.skip_process_quotes {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                check_len(&result)?;
                words.add_raw_string(&tmp);
            } else {
                let mut ch = ch;
                self.next();
                if ch == self.escape {
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
        if self.raw_quotes {
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
                    if self.raw_quotes {
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
        if self.raw_quotes {
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
                    if self.raw_quotes {
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
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape at the end of the word is dropped.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
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
                None if self.skip_unset_env => format!("${name}"),
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
                None if self.skip_unset_env => format!("${{{name}}}"),
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
                if self.skip_unset_env && value.is_none() {
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
                if self.skip_unset_env && value.is_none() {
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
