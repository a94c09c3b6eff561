//! The syntax tree: instructions as written (keyword, flags, arguments, heredocs, the
//! span they came from), before anything is typed or expanded.

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
    pub warnings: Vec<SyntaxWarning>,
}

/// Something the parser read past that BuildKit warns of (an empty continuation line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxWarning {
    /// BuildKit's line for it: the last line read of the instruction.
    pub line: usize,
    pub message: String,
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
