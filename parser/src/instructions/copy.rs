//! COPY and ADD: their flags, sources and destination, and sources given inline as
//! heredocs.

use super::args::node_err;
use super::flags::FlagType::{Bool, List, Str};
use super::flags::Flags;
use super::types::*;
use crate::error::ParseError;
use crate::syntax::{Node, chomp_heredoc_content, parse_heredoc};

pub(super) fn parse_copy(node: &Node, add: bool) -> Result<CopyCommand, ParseError> {
    let cmd = if add { "ADD" } else { "COPY" };
    if node.args.len() < 2 {
        return Err(node_err(
            node,
            format!(
                "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
        ));
    }
    let f = if add {
        Flags::parse(
            &node.flags,
            &[
                ("chown", Str),
                ("chmod", Str),
                ("link", Bool),
                ("keep-git-dir", Bool),
                ("checksum", Str),
                ("unpack", Bool),
                ("exclude", List),
            ],
        )?
    } else {
        Flags::parse(
            &node.flags,
            &[
                ("chown", Str),
                ("from", Str),
                ("chmod", Str),
                ("link", Bool),
                ("parents", Bool),
                ("exclude", List),
            ],
        )?
    };
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    if !node.json && parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(node_err(
            node,
            format!("{cmd} cannot accept a heredoc as a destination"),
        ));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    for s in srcs {
        match (!node.json)
            .then(|| parse_heredoc(s).ok().flatten())
            .flatten()
        {
            Some(doc) => {
                let found = node.heredocs.iter().find(|h| h.name == doc.name);
                let mut data = found.map(|h| h.content.clone()).unwrap_or_default();
                if doc.chomp {
                    data = chomp_heredoc_content(&data);
                }
                contents.push(InlineSource {
                    name: doc.name,
                    data,
                    expand: doc.expand,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    Ok(CopyCommand {
        add,
        sources,
        contents,
        dest,
        from: f.str("from"),
        chown: f.str("chown"),
        chmod: f.str("chmod"),
        link: f.bool("link").unwrap_or(false),
        parents: f.bool("parents").unwrap_or(false),
        exclude: f.list("exclude").into_iter().map(|(v, _)| v).collect(),
        checksum: f.str("checksum"),
        unpack: f.bool("unpack"),
        keep_git_dir: f.bool("keep-git-dir"),
        json: node.json,
    })
}
