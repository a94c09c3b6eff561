//! Physical lines → logical lines, BuildKit's `parser.Parse` loop: the BOM, CRLF,
//! directives at the top (`syntax`, `escape`, `check`), comment lines, line
//! continuations (with comment and blank lines inside them) and the bodies of heredocs.
//! Each logical line becomes a node through [`super::node`].

use super::heredoc::{can_contain_heredoc, heredocs_from_line};
use super::node::new_node_from_line;
use super::position::{LineCtx, SegmentMap};
use super::tree::{Ast, Directive, SyntaxWarning};
use crate::error::ParseError;

/// Parses Dockerfile text into a syntax tree (BuildKit `parser.Parse`).
pub fn parse_syntax(source: &str) -> Result<Ast, ParseError> {
    Parser::new(source).run()
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    escape: char,
    directives_done: bool,
    directives: Vec<Directive>,
    warnings: Vec<SyntaxWarning>,
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
                self.warnings.push(SyntaxWarning {
                    line: current_line,
                    message: format!("Empty continuation line found in: {logical}"),
                });
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
