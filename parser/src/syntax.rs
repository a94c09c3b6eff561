//! Dockerfile text → syntax tree, the way BuildKit's `parser.Parse` does it.
//!
//! Owns directives (`syntax`, `escape`, `check`, only at the top), the BOM, CRLF, line
//! continuations (with comment and blank lines inside them), heredoc bodies, flag
//! extraction and the per-instruction argument shapes (JSON or shell form, whitespace
//! lists, `k=v` words). Nothing here knows what an instruction means: unknown keywords
//! parse fine and are rejected by [`crate::instructions`].

use crate::error::ParseError;
use crate::expand::Lexer;
use crate::graph::Span;

/// The parsed file before instructions are typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ast {
    pub nodes: Vec<Node>,
    /// `\` or the backtick chosen by `# escape=`.
    pub escape: char,
    /// Directives found at the top, keys lower-cased, in order.
    pub directives: Vec<Directive>,
    /// Non-fatal findings (empty continuation lines).
    pub warnings: Vec<String>,
}

/// `# key=value` at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`...).
    pub keyword: String,
    /// The logical line (continuations joined, comment lines dropped).
    pub original: String,
    pub flags: Vec<RawFlag>,
    /// The argument chain, BuildKit's `Next` values: ENV/LABEL give `key value sep` triples.
    pub args: Vec<String>,
    /// ONBUILD's nested instruction.
    pub child: Option<Box<Node>>,
    /// Exec (JSON) form.
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    pub span: Span,
}

impl Node {
    /// The keyword lower-cased.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }
}

/// A `--flag[=value]` word as written, quotes already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlag {
    pub text: String,
    pub span: Span,
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body.
    pub chomp: bool,
    /// The body, each line with its line terminator.
    pub content: String,
}

/// Parses Dockerfile text into a syntax tree (BuildKit `parser.Parse`).
pub fn parse_syntax(source: &str) -> Result<Ast, ParseError> {
    Parser::new(source).run()
}

/// Maps byte offsets of a logical line back to physical lines and columns.
#[derive(Debug, Clone, Default)]
struct SegmentMap {
    /// (offset in the logical line, physical line, byte column in that physical line)
    segments: Vec<(usize, usize, usize)>,
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    escape: char,
    directives_done: bool,
    directives: Vec<Directive>,
    warnings: Vec<String>,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line).trim_start().starts_with('#')
}

fn is_go_space_re(c: char) -> bool {
    // Go regexp `\s`.
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
fn match_directive(token: &str) -> Option<(String, String)> {
    let rest = token.strip_prefix('#')?;
    let rest = rest.trim_start_matches(is_go_space_re);
    let first = rest.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let name = &rest[..name_end];
    let rest = rest[name_end..].trim_start_matches(is_go_space_re);
    let rest = rest.strip_prefix('=')?;
    let rest = rest.trim_start_matches(is_go_space_re);
    let value = rest.trim_end_matches(is_go_space_re);
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    Some((name.to_string(), value.to_string()))
}

impl<'a> Parser<'a> {
    fn new(source: &'a str) -> Self {
        let source = source.strip_prefix('\u{FEFF}').unwrap_or(source);
        Parser {
            lines: source.split_inclusive('\n').collect(),
            escape: '\\',
            directives_done: false,
            directives: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn err(&self, line: usize, column: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(line, column, message)
    }

    /// Looks for a parser directive on a line, until the first line that is not one.
    fn possible_directive(&mut self, token: &str, line_no: usize) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(token) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        if self.directives.iter().any(|d| d.name == key) {
            return Err(self.err(
                line_no,
                1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        if key == "escape" {
            match value.as_str() {
                "`" => self.escape = '`',
                "\\" => self.escape = '\\',
                _ => {
                    return Err(self.err(
                        line_no,
                        1,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ));
                }
            }
        }
        self.directives.push(Directive {
            name: key,
            value,
            line: line_no,
        });
        Ok(())
    }

    /// BuildKit `processLine`: trim the newline (and leading space on first lines),
    /// check for a directive, and blank out a line that starts with `#`.
    fn process_line<'l>(
        &mut self,
        raw: &'l str,
        strip_left: bool,
        line_no: usize,
    ) -> Result<&'l str, ParseError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        self.possible_directive(token, line_no)?;
        if token.starts_with('#') {
            return Ok("");
        }
        Ok(token)
    }

    /// Removes a trailing escape token (line continuation); false when the line ends here.
    fn trim_continuation<'l>(&self, line: &'l str) -> (&'l str, bool) {
        let e = self.escape;
        let t = line.trim_end_matches([' ', '\t']);
        if let Some(before) = t.strip_suffix(e) {
            // `([^E])E[ \t]*$|^E[ \t]*$`: an escaped escape token does not continue.
            if before.is_empty() || !before.ends_with(e) {
                return (before, false);
            }
        }
        (line, true)
    }

    fn run(mut self) -> Result<Ast, ParseError> {
        let mut nodes = Vec::new();
        let mut i = 0usize; // index of the next physical line to read
        let total = self.lines.len();
        let mut current_line = 0usize;
        while i < total {
            let raw = self.lines[i];
            i += 1;
            let first_line_no = current_line + 1;
            let processed = self.process_line(raw, true, first_line_no)?;
            current_line += 1;
            let start_line = current_line;
            let lead = trim_newline(raw).len() - trim_newline(raw).trim_start().len();
            let (first, mut is_end) = self.trim_continuation(processed);
            if is_end && first.is_empty() {
                continue;
            }
            let mut logical = String::from(first);
            let mut map = SegmentMap::default();
            map.segments.push((0, start_line, lead));
            let mut empty_continuation = false;
            while !is_end && i < total {
                let raw = self.lines[i];
                i += 1;
                let processed = self.process_line(raw, false, current_line + 1)?;
                current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                if trim_newline(processed).trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, end) = self.trim_continuation(processed);
                is_end = end;
                map.segments.push((logical.len(), current_line, 0));
                logical.push_str(part);
            }
            if empty_continuation {
                self.warnings.push(format!(
                    "[WARNING]: Empty continuation line found in:\n    {logical}"
                ));
            }
            let ctx = LineCtx {
                logical: &logical,
                map: &map,
                lines: &self.lines,
                end_line: current_line,
                last: std::cell::Cell::new((0, 0, 0)),
            };
            let mut node = new_node_from_line(&logical, &ctx, self.escape, 0)
                .map_err(|e| e.with_source_line(self.lines.get(start_line - 1).copied()))?;
            if can_contain_heredoc(&node) {
                let docs = heredocs_from_line(&logical).map_err(|m| {
                    self.err(start_line, ctx.column_at(0), m)
                        .with_source_line(self.lines.get(start_line - 1).copied())
                })?;
                for mut doc in docs {
                    let mut terminated = false;
                    while i < total {
                        let raw = self.lines[i];
                        i += 1;
                        current_line += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(self
                            .err(start_line, ctx.column_at(0), "unterminated heredoc")
                            .with_end_line(current_line)
                            .with_source_line(self.lines.get(start_line - 1).copied()));
                    }
                    node.heredocs.push(doc);
                }
            }
            node.span.end_line = current_line;
            // The logical line is no longer borrowed: hand it over instead of copying.
            node.original = logical;
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(self.err(current_line.max(1), 1, "file with no instructions"));
        }
        Ok(Ast {
            nodes,
            escape: self.escape,
            directives: self.directives,
            warnings: self.warnings,
        })
    }
}

/// What is needed to give positions inside one logical line.
pub(crate) struct LineCtx<'a> {
    logical: &'a str,
    map: &'a SegmentMap,
    lines: &'a [&'a str],
    end_line: usize,
    /// The last column computed: (line, byte column, char count). Spans are asked for left
    /// to right (each flag of an instruction), so counting on from the last one keeps a
    /// line of many flags linear instead of quadratic (a hostile line of 600,000 flags
    /// took minutes).
    last: std::cell::Cell<(usize, usize, usize)>,
}

impl LineCtx<'_> {
    fn locate(&self, offset: usize) -> (usize, usize) {
        let segs = &self.map.segments;
        let i = segs.partition_point(|s| s.0 <= offset);
        let (start, line, col0) = segs[i.saturating_sub(1)];
        let byte_col = col0 + (offset - start);
        let text = self.lines.get(line - 1).copied().unwrap_or("");
        let end = byte_col.min(text.len());
        let (l0, b0, c0) = self.last.get();
        let counted = match text.get(b0..end) {
            Some(delta) if l0 == line && b0 <= end => Some(c0 + delta.chars().count()),
            _ => text.get(..end).map(|p| p.chars().count()),
        };
        if let Some(chars) = counted {
            self.last.set((line, end, chars));
        }
        (line, counted.unwrap_or(byte_col) + 1)
    }

    fn column_at(&self, offset: usize) -> usize {
        self.locate(offset).1
    }

    /// Span of a substring of the logical line.
    fn span_of(&self, sub: &str) -> Span {
        let offset = (sub.as_ptr() as usize).saturating_sub(self.logical.as_ptr() as usize);
        let offset = offset.min(self.logical.len());
        let (line, column) = self.locate(offset);
        Span {
            line,
            column,
            end_line: self.end_line,
        }
    }
}

fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// How deep `ONBUILD ONBUILD ...` is parsed. Each level is a level of recursion (here, in
/// the dump and in dropping the tree); BuildKit parses any depth and then refuses all but
/// one level (`Chaining ONBUILD ... isn't allowed`), so a bound that keeps the first few
/// levels gives the same answer without letting a long line overflow the stack.
const MAX_ONBUILD_NESTING: usize = 8;

/// BuildKit `splitCommand` + dispatch: keyword, flags, then the per-instruction shape.
/// `depth` counts the ONBUILDs this line is nested in (0 at the top level).
fn new_node_from_line(
    line: &str,
    ctx: &LineCtx<'_>,
    escape: char,
    depth: usize,
) -> Result<Node, ParseError> {
    let nested = depth > 0;
    let trimmed = line.trim();
    let kw_end = trimmed.find(is_token_ws).unwrap_or(trimmed.len());
    let keyword = &trimmed[..kw_end];
    let after = trimmed[kw_end..].trim_start_matches(is_token_ws);
    let span = ctx.span_of(keyword);
    let (args_str, flags) = if kw_end < trimmed.len() {
        extract_builder_flags(after, ctx)
    } else {
        ("", Vec::new())
    };
    let rest = args_str.trim();
    let lower = keyword.to_ascii_lowercase();
    let mut node = Node {
        keyword: keyword.to_string(),
        // Top-level callers move the whole logical line in afterwards.
        original: if nested {
            line.to_string()
        } else {
            String::new()
        },
        flags,
        span,
        ..Node::default()
    };
    let fail = |m: String| ParseError::new(span.line, span.column, m);
    match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json(rest) {
            Json::Array(items) => {
                node.args = items;
                node.json = true;
            }
            Json::NotStrings => return Err(fail(NOT_STRING_ARRAY.into())),
            Json::Invalid => node.args = split_whitespace_go(rest),
        },
        "arg" => node.args = parse_words(rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            parse_maybe_json(rest, &mut node).map_err(fail)?;
        }
        "env" | "label" => {
            node.args = parse_name_val(
                rest,
                &keyword.to_ascii_uppercase(),
                escape,
                lower == "label",
            )
            .map_err(fail)?;
        }
        "expose" | "from" => node.args = split_whitespace_go(rest),
        "healthcheck" => {
            let sep = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
            if sep > 0 {
                let typ = &rest[..sep];
                let cmd = rest[sep..].trim_start();
                node.args.push(typ.to_string());
                parse_maybe_json(cmd, &mut node).map_err(fail)?;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args.push(rest.to_string());
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_ONBUILD_NESTING {
                    return Err(fail(format!(
                        "ONBUILD nested more than {MAX_ONBUILD_NESTING} levels deep"
                    )));
                }
                node.child = Some(Box::new(new_node_from_line(rest, ctx, escape, depth + 1)?));
            }
        }
        // Unknown instructions keep an empty argument, like BuildKit's parseIgnore.
        _ => node.args.push(String::new()),
    }
    Ok(node)
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

enum Json {
    Array(Vec<String>),
    NotStrings,
    Invalid,
}

fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::Invalid;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Array(out)
        }
        Err(_) => Json::Invalid,
    }
}

fn parse_maybe_json(rest: &str, node: &mut Node) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    match parse_json(rest) {
        Json::Array(items) => {
            node.args.extend(items);
            node.json = true;
        }
        Json::NotStrings => return Err(NOT_STRING_ARRAY.into()),
        Json::Invalid => node.args.push(rest.to_string()),
    }
    Ok(())
}

/// `reWhitespace.Split(rest, -1)` with `[\t\v\f\r ]+`; empty input gives no words.
fn split_whitespace_go(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut in_ws = false;
    for (i, c) in rest.char_indices() {
        if is_token_ws(c) {
            if !in_ws {
                out.push(rest[start..i].to_string());
                in_ws = true;
            }
        } else if in_ws {
            in_ws = false;
            start = i;
        }
    }
    out.push(if in_ws {
        String::new()
    } else {
        rest[start..].to_string()
    });
    out
}

/// BuildKit `parseWords`: quote-aware words, quotes and escapes kept.
///
/// Every character of a word is kept except an escape token at the very end of the input,
/// so each word is a substring: track byte bounds instead of building strings.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let n = chars.len();
    let end_of = |i: usize| chars.get(i + 1).map_or(rest.len(), |c| c.0);
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let (mut wstart, mut wend) = (0usize, 0usize);
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;
    while pos <= n {
        let ch = if pos < n { chars[pos].1 } else { '\0' };
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
            wstart = chars[pos].0;
            wend = wstart;
        }
        if (phase == Phase::Word || phase == Phase::Quote) && pos == n {
            if blank_ok || wend > wstart {
                words.push(rest[wstart..wend].to_string());
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || wend > wstart {
                    words.push(rest[wstart..wend].to_string());
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                pos += 1;
            }
            wend = end_of(pos);
            pos += 1;
            continue;
        }
        // In a quote.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
        }
        wend = end_of(pos);
        pos += 1;
    }
    words
}

/// ENV/LABEL: `k=v ...` or the legacy `k rest of line`, as `key value sep` triples.
fn parse_name_val(
    rest: &str,
    key: &str,
    escape: char,
    _label: bool,
) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts = split_whitespace_go_n2(rest);
        let Some((k, v)) = parts else {
            return Err(format!("{key} must have two arguments"));
        };
        return Ok(vec![k, v, String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::goformat::quote(&word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// `reWhitespace.Split(rest, 2)` when it yields two parts.
fn split_whitespace_go_n2(rest: &str) -> Option<(String, String)> {
    let idx = rest.find(is_token_ws)?;
    let k = &rest[..idx];
    let v = rest[idx..].trim_start_matches(is_token_ws);
    Some((k.to_string(), v.to_string()))
}

/// BuildKit `extractBuilderFlags`: leading `--flag[=value]` words; returns the rest.
fn extract_builder_flags<'l>(line: &'l str, ctx: &LineCtx<'_>) -> (&'l str, Vec<RawFlag>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let n = b.len();
    let mut words: Vec<RawFlag> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut word_start = 0usize;
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0usize;
    let push = |words: &mut Vec<RawFlag>, word: &[u8], start: usize| {
        words.push(RawFlag {
            text: String::from_utf8_lossy(word).into_owned(),
            span: ctx.span_of(&line[start..]),
        });
    };
    while pos <= n {
        let mut ch = if pos < n { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if ch.is_ascii_whitespace() || ch == 0x0b {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == n || b[pos + 1] != b'-' {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if (phase == Phase::Word || phase == Phase::Quote) && pos == n {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                push(&mut words, &word, word_start);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_ascii_whitespace() || ch == 0x0b {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    push(&mut words, &word, word_start);
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == b'\\' {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == b'\\' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(ch);
        pos += 1;
    }
    ("", words)
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.child, node.name().as_str()) {
        (Some(child), "onbuild") => child.as_ref(),
        _ => node,
    };
    matches!(n.name().as_str(), "run" | "copy" | "add") && !n.json
}

/// Parses `[n]<<[-]WORD` into a heredoc, if `word` is one (BuildKit `ParseHeredoc`).
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let Some(idx) = word.find("<<") else {
        return Ok(None);
    };
    let fd_part = &word[..idx];
    if !fd_part.bytes().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    let mut rest = &word[idx + 2..];
    let chomp = rest.starts_with('-');
    if chomp {
        rest = &rest[1..];
    }
    if rest.contains('<') || rest.is_empty() || rest.contains('\n') {
        return Ok(None);
    }
    let fd = fd_part.parse::<u32>().unwrap_or(0);
    let empty: Vec<(String, String)> = Vec::new();
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &empty).map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &empty).map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let count = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = count(&words[0]) == count(&raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let empty: Vec<(String, String)> = Vec::new();
    let words = lex.process_words(line, &empty).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(doc) = parse_heredoc(&w)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// `<<-` bodies: leading tabs removed from every line.
pub fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
