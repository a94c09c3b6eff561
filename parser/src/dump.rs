//! The AST dump in BuildKit's testfiles `result` format: `(instr ["--flags"] "arg" ...)`.

use crate::goformat::{quote, quote_list};
use crate::instructions::Dockerfile;
use crate::syntax::{Ast, Node};

/// Dumps a parsed Dockerfile, one line per instruction, ending with a newline.
pub fn dump(df: &Dockerfile) -> String {
    dump_ast(&df.ast)
}

/// Dumps a syntax tree (what `parse_syntax` returns; accepts unknown instructions/flags).
pub fn dump_ast(ast: &Ast) -> String {
    let mut out = String::new();
    for node in &ast.nodes {
        out.push('(');
        out.push_str(&dump_node(node));
        out.push_str(")\n");
    }
    out
}

fn dump_node(node: &Node) -> String {
    let mut s = node.keyword.to_lowercase();
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| f.text.clone()).collect();
        s.push(' ');
        s.push_str(&quote_list(&flags));
    }
    if let Some(child) = &node.child {
        s.push_str(" (");
        s.push_str(&dump_node(child));
        s.push(')');
    }
    for a in &node.args {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s.trim().to_string()
}
