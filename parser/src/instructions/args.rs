//! The argument rules instructions share: the error at a node, exactly one argument,
//! `k=v` pairs (ENV, LABEL), and a command line in shell or JSON form.

use super::types::{KeyValue, ShellCommandLine};
use crate::error::ParseError;
use crate::syntax::Node;

pub(super) fn node_err(node: &Node, msg: impl Into<String>) -> ParseError {
    ParseError::new(node.span.line, node.span.column, msg).with_end_line(node.span.end_line)
}

pub(super) fn kvps(node: &Node, cmd: &str) -> Result<Vec<KeyValue>, ParseError> {
    if node.args.is_empty() {
        return Err(node_err(
            node,
            format!("{cmd} requires at least one argument"),
        ));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(node_err(
            node,
            format!("Bad input to {cmd}, too many arguments"),
        ));
    }
    let mut out = Vec::new();
    for c in node.args.chunks(3) {
        if c[0].is_empty() {
            return Err(node_err(node, format!("{cmd} names can not be blank")));
        }
        out.push(KeyValue {
            key: c[0].clone(),
            value: c[1].clone(),
            legacy: c[2].is_empty(),
        });
    }
    Ok(out)
}

pub(super) fn exactly_one(node: &Node, cmd: &str) -> Result<String, ParseError> {
    if node.args.len() != 1 {
        return Err(node_err(
            node,
            format!("{cmd} requires exactly one argument"),
        ));
    }
    Ok(node.args[0].clone())
}

pub(super) fn command_line(node: &Node, empty_as_nil: bool) -> ShellCommandLine {
    let args = if !node.json && !node.args.is_empty() {
        // Shell form keeps the raw text as a single argument.
        vec![node.args.join(" ")]
    } else {
        node.args.clone()
    };
    let _ = empty_as_nil;
    ShellCommandLine {
        args,
        prepend_shell: !node.json,
        files: node.heredocs.clone(),
    }
}
