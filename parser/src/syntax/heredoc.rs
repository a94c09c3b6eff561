//! Heredocs (`<<EOF`, `<<-EOF`, `3<<"EOF"`): which instructions may have them, the words
//! that open them (BuildKit's `ParseHeredoc`) and `<<-`'s tab stripping. The bodies are
//! read by the line loop ([`super::lines`]).

use super::tree::{Heredoc, Node};
use crate::expand::Lexer;

pub(super) fn can_contain_heredoc(node: &Node) -> bool {
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

pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
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
