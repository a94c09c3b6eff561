//! Dockerfile text → syntax tree, the way BuildKit's `parser.Parse` does it.
//!
//! Owns directives (`syntax`, `escape`, `check`, only at the top), the BOM, CRLF, line
//! continuations (with comment and blank lines inside them), heredoc bodies, flag
//! extraction and the per-instruction argument shapes (JSON or shell form, whitespace
//! lists, `k=v` words). Nothing here knows what an instruction means: unknown keywords
//! parse fine and are rejected by [`crate::instructions`].
//!
//! Split by stage of that parse: [`lines`] (physical lines into logical ones, directives,
//! heredoc bodies), [`node`] (one logical line into a node, with [`flags`] for its
//! `--flags`), [`heredoc`] (which words open a heredoc), over the types of [`tree`] and
//! the positions of [`position`].

mod flags;
mod heredoc;
mod lines;
mod node;
mod position;
mod tree;

pub use heredoc::chomp_heredoc_content;
pub(crate) use heredoc::parse_heredoc;
pub use lines::parse_syntax;
pub use tree::{Ast, Directive, Heredoc, Node, RawFlag, SyntaxWarning};
