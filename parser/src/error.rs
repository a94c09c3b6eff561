//! Errors of parsing, with the position and the offending line for the CLI to show.

use thiserror::Error;

/// A Dockerfile that could not be parsed, with where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the instruction or flag at fault.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// Last line involved (continuations, heredocs).
    pub end_line: usize,
    pub message: String,
    /// The physical line at `line`, without its newline, when known.
    pub source_line: Option<String>,
}

impl ParseError {
    pub fn new(line: usize, column: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            column,
            end_line: line,
            message: message.into(),
            source_line: None,
        }
    }

    pub(crate) fn with_end_line(mut self, end: usize) -> Self {
        self.end_line = end;
        self
    }

    pub(crate) fn with_source_line(mut self, line: Option<&str>) -> Self {
        if self.source_line.is_none() {
            self.source_line = line.map(|l| l.trim_end_matches(['\r', '\n']).to_string());
        }
        self
    }

    /// `Dockerfile:3:1: unknown instruction: FOO (did you mean FROM?)` followed by the
    /// line and a caret under the column.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        render_at(
            file_name,
            source,
            self.line,
            self.column,
            &self.message,
            self.source_line.as_deref(),
        )
    }
}

/// Characters of the offending line an error shows (at least; more when the column is
/// further right).
const SHOWN_LINE_CHARS: usize = 240;

/// Shared by parse and lowering errors: the message, the line and a caret.
pub(crate) fn render_at(
    file_name: &str,
    source: &str,
    line: usize,
    column: usize,
    message: &str,
    known_line: Option<&str>,
) -> String {
    let source = source.strip_prefix('\u{FEFF}').unwrap_or(source);
    let text = known_line
        .map(str::to_string)
        .or_else(|| {
            source
                .split_inclusive('\n')
                .nth(line.saturating_sub(1))
                .map(|l| l.trim_end_matches(['\r', '\n']).to_string())
        })
        .unwrap_or_default();
    // A hostile line can be megabytes long: show its start up to a little past the caret.
    let keep = SHOWN_LINE_CHARS.max(column.saturating_add(40));
    let text = match text.char_indices().nth(keep) {
        Some((end, _)) => format!("{} ...", &text[..end]),
        None => text,
    };
    let mut out = format!("{file_name}:{line}:{column}: {message}\n");
    if !text.is_empty() {
        let gutter = format!("{line} | ");
        out.push_str(&gutter);
        out.push_str(&text);
        out.push('\n');
        let pad: String = text
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&" ".repeat(gutter.len()));
        out.push_str(&pad);
        out.push_str("^\n");
    }
    out
}

/// Closest candidate to `value` for "did you mean" hints (Levenshtein, like BuildKit's
/// `suggest` package), or `None` when nothing is close.
pub fn suggest<'a>(value: &str, options: &[&'a str], case_sensitive: bool) -> Option<&'a str> {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let v = norm(value);
    let mut best: Option<(&str, usize)> = None;
    for &o in options {
        let d = levenshtein(&v, &norm(o));
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((o, d));
        }
    }
    let (o, d) = best?;
    if d == 0 {
        return None;
    }
    let len = v.chars().count();
    let allowed = if len <= 3 { 2 } else { (len / 3).max(2) };
    (d <= allowed && d < len.max(1)).then_some(o)
}

/// `msg (did you mean X?)` when a suggestion exists.
pub fn with_suggestion(msg: String, value: &str, options: &[&str], case_sensitive: bool) -> String {
    match suggest(value, options, case_sensitive) {
        Some(s) => format!("{msg} (did you mean {s}?)"),
        None => msg,
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_line_and_caret() {
        let e = ParseError::new(2, 1, "unknown instruction: FOO (did you mean FROM?)");
        let out = e.render("Dockerfile", "FROM a\nFOO b\n");
        assert_eq!(
            out,
            "Dockerfile:2:1: unknown instruction: FOO (did you mean FROM?)\n2 | FOO b\n    ^\n"
        );
    }

    #[test]
    fn suggestions_pick_the_closest_option() {
        assert_eq!(
            suggest("FOO", &["FROM", "RUN", "COPY"], false),
            Some("FROM")
        );
        assert_eq!(
            suggest("chwn", &["chown", "chmod", "from", "link"], true),
            Some("chown")
        );
        assert_eq!(suggest("zzzzzz", &["from"], true), None);
    }
}
