//! One node → one typed instruction: the dispatch on its keyword, with the flags and
//! argument rules of each (COPY/ADD and HEALTHCHECK have modules of their own), and the
//! ONBUILD trigger checks.

use super::args::{command_line, exactly_one, kvps, node_err};
use super::copy::parse_copy;
use super::flags::FlagType::{List, Str};
use super::flags::Flags;
use super::healthcheck::parse_healthcheck;
use super::types::*;
use crate::error::{ParseError, with_suggestion};
use crate::syntax::Node;

/// Types one non-FROM node.
pub fn parse_instruction(node: &Node) -> Result<Instruction, ParseError> {
    let command = parse_command(node)?;
    Ok(Instruction {
        span: node.span,
        source: node.original.trim().to_string(),
        flags: node.flags.clone(),
        command,
    })
}

fn parse_command(node: &Node) -> Result<Command, ParseError> {
    let name = node.name();
    let no_flags = |node: &Node| Flags::parse(&node.flags, &[]).map(|_| ());
    Ok(match name.as_str() {
        "env" => {
            no_flags(node)?;
            Command::Env(kvps(node, "ENV")?)
        }
        "label" => {
            no_flags(node)?;
            Command::Label(kvps(node, "LABEL")?)
        }
        "maintainer" => {
            let v = exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Command::Maintainer(v)
        }
        "add" | "copy" => Command::Copy(parse_copy(node, name == "add")?),
        "onbuild" => {
            let Some(child) = &node.child else {
                return Err(node_err(node, "ONBUILD requires at least one argument"));
            };
            no_flags(node)?;
            let trigger = child.keyword.trim().to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(node_err(
                        node,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(node_err(
                        node,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                _ => {}
            }
            let mut expr = strip_onbuild(&node.original);
            for doc in &node.heredocs {
                expr.push('\n');
                expr.push_str(&doc.content);
                expr.push_str(&doc.name);
            }
            Command::OnBuild(expr)
        }
        "workdir" => {
            let v = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Command::Workdir(v)
        }
        "run" => {
            let f = Flags::parse(
                &node.flags,
                &[
                    ("mount", List),
                    ("network", Str),
                    ("security", Str),
                    ("device", List),
                ],
            )?;
            Command::Run(RunCommand {
                cmd: command_line(node, false),
                mounts: f.list("mount"),
                network: f.str("network"),
                security: f.str("security"),
                devices: f.list("device").into_iter().map(|(v, _)| v).collect(),
            })
        }
        "cmd" => {
            no_flags(node)?;
            Command::Cmd(command_line(node, false))
        }
        "entrypoint" => {
            no_flags(node)?;
            Command::Entrypoint(command_line(node, true))
        }
        "healthcheck" => Command::Healthcheck(parse_healthcheck(node)?),
        "expose" => {
            if node.args.is_empty() {
                return Err(node_err(node, "EXPOSE requires at least one argument"));
            }
            no_flags(node)?;
            Command::Expose(node.args.clone())
        }
        "user" => {
            let v = exactly_one(node, "USER")?;
            no_flags(node)?;
            Command::User(v)
        }
        "volume" => {
            if node.args.is_empty() {
                return Err(node_err(node, "VOLUME requires at least one argument"));
            }
            no_flags(node)?;
            let mut vols = Vec::new();
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(node_err(
                        node,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        "stopsignal" => {
            let v = exactly_one(node, "STOPSIGNAL")?;
            no_flags(node)?;
            Command::StopSignal(v)
        }
        "arg" => {
            if node.args.is_empty() {
                return Err(node_err(node, "ARG requires at least one argument"));
            }
            no_flags(node)?;
            let mut decls = Vec::new();
            for a in &node.args {
                match a.split_once('=') {
                    Some((k, v)) => {
                        if k.is_empty() {
                            return Err(node_err(node, "ARG names can not be blank"));
                        }
                        decls.push(ArgDecl {
                            key: k.to_string(),
                            value: Some(v.to_string()),
                        });
                    }
                    None => decls.push(ArgDecl {
                        key: a.clone(),
                        value: None,
                    }),
                }
            }
            Command::Arg(decls)
        }
        "shell" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(node_err(node, "SHELL requires at least one argument"));
            }
            if !node.json {
                return Err(node_err(
                    node,
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            Command::Shell(node.args.clone())
        }
        _ => {
            return Err(node_err(
                node,
                with_suggestion(
                    format!("unknown instruction: {}", node.keyword),
                    &node.keyword,
                    INSTRUCTIONS,
                    false,
                ),
            ));
        }
    })
}

/// `(?i)^\s*ONBUILD\s*` removed from the original line.
fn strip_onbuild(original: &str) -> String {
    let t = original.trim_start();
    if t.len() >= 7 && t[..7].eq_ignore_ascii_case("onbuild") {
        t[7..].trim_start().to_string()
    } else {
        t.to_string()
    }
}
