//! The file as stages: FROM lines with their names, the global ARGs before the first
//! one, and every other instruction in the stage it follows (BuildKit's
//! `instructions.Parse`).

use super::args::node_err;
use super::command::parse_instruction;
use super::flags::FlagType::Str;
use super::flags::Flags;
use super::types::{Command, Dockerfile, StageDecl};
use crate::error::ParseError;
use crate::goformat::quote;
use crate::syntax::{Ast, Node};

/// Parses text into a typed Dockerfile: syntax errors and instruction errors both fail.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    let ast = crate::syntax::parse_syntax(source)?;
    from_ast(ast, source)
}

/// Types the instructions of an already parsed syntax tree.
pub fn from_ast(ast: Ast, source: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = source
        .strip_prefix('\u{FEFF}')
        .unwrap_or(source)
        .split_inclusive('\n')
        .collect();
    let mut meta_args = Vec::new();
    let mut stages: Vec<StageDecl> = Vec::new();
    for node in &ast.nodes {
        let attach = |e: ParseError| {
            let l = lines.get(e.line.saturating_sub(1)).copied();
            e.with_source_line(l)
        };
        match node.name().as_str() {
            "from" => stages.push(parse_from(node).map_err(attach)?),
            _ => {
                let ins = parse_instruction(node).map_err(attach)?;
                match stages.last_mut() {
                    Some(stage) => stage.instructions.push(ins),
                    None if matches!(ins.command, Command::Arg(_)) => meta_args.push(ins),
                    None => {
                        return Err(attach(ParseError::new(
                            node.span.line,
                            node.span.column,
                            "no build stage in current context",
                        )));
                    }
                }
            }
        }
    }
    Ok(Dockerfile {
        escape: ast.escape,
        ast,
        meta_args,
        stages,
    })
}

fn parse_from(node: &Node) -> Result<StageDecl, ParseError> {
    let args = &node.args;
    let name = if args.len() == 3 && args[1].eq_ignore_ascii_case("as") {
        let name = args[2].to_ascii_lowercase();
        if !valid_stage_name(&name) {
            return Err(node_err(
                node,
                format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    quote(&args[2])
                ),
            ));
        }
        Some(name)
    } else if args.len() != 1 {
        return Err(node_err(
            node,
            "FROM requires either one or three arguments",
        ));
    } else {
        None
    };
    let flags = Flags::parse(&node.flags, &[("platform", Str)])?;
    Ok(StageDecl {
        name,
        base: args[0].clone(),
        platform: flags.str("platform"),
        span: node.span,
        source: node.original.trim().to_string(),
        instructions: Vec::new(),
    })
}

fn valid_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}
