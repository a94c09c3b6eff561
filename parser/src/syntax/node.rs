//! One logical line → one node, BuildKit's `newNodeFromLine` and its dispatch table: the
//! keyword, the leading `--flags` ([`super::flags`]) and the argument shape each
//! instruction has (JSON or shell form, whitespace lists, quote-aware words, `k=v`
//! pairs, ONBUILD's nested instruction). Nothing here knows what an instruction means.

use super::flags::extract_builder_flags;
use super::position::LineCtx;
use super::tree::Node;
use crate::error::ParseError;

fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// How deep `ONBUILD ONBUILD ...` is parsed. Each level is a level of recursion (here, in
/// the dump and in dropping the tree); BuildKit parses any depth and then refuses all but
/// one level (`Chaining ONBUILD ... isn't allowed`), so a bound that keeps the first few
/// levels gives the same answer without letting a long line overflow the stack.
const MAX_ONBUILD_NESTING: usize = 8;

/// BuildKit `splitCommand` + dispatch: keyword, flags, then the per-instruction shape.
/// `depth` counts the ONBUILDs this line is nested in (0 at the top level).
pub(super) fn new_node_from_line(
    line: &str,
    ctx: &LineCtx<'_>,
    escape: char,
    depth: usize,
) -> Result<Node, ParseError> {
    let nested = depth > 0;
    let trimmed = line.trim();
    let kw_end = trimmed.find(is_token_ws).unwrap_or(trimmed.len());
    let keyword = &trimmed[..kw_end];
    let after = trimmed[kw_end..].trim_start_matches(is_token_ws);
    let span = ctx.span_of(keyword);
    let (args_str, flags) = if kw_end < trimmed.len() {
        extract_builder_flags(after, ctx)
    } else {
        ("", Vec::new())
    };
    let rest = args_str.trim();
    let lower = keyword.to_ascii_lowercase();
    let mut node = Node {
        keyword: keyword.to_string(),
        // Top-level callers move the whole logical line in afterwards.
        original: if nested {
            line.to_string()
        } else {
            String::new()
        },
        flags,
        span,
        ..Node::default()
    };
    let fail = |m: String| ParseError::new(span.line, span.column, m);
    match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json(rest) {
            Json::Array(items) => {
                node.args = items;
                node.json = true;
            }
            Json::NotStrings => return Err(fail(NOT_STRING_ARRAY.into())),
            Json::Invalid => node.args = split_whitespace_go(rest),
        },
        "arg" => node.args = parse_words(rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            parse_maybe_json(rest, &mut node).map_err(fail)?;
        }
        "env" | "label" => {
            node.args = parse_name_val(
                rest,
                &keyword.to_ascii_uppercase(),
                escape,
                lower == "label",
            )
            .map_err(fail)?;
        }
        "expose" | "from" => node.args = split_whitespace_go(rest),
        "healthcheck" => {
            let sep = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
            if sep > 0 {
                let typ = &rest[..sep];
                let cmd = rest[sep..].trim_start();
                node.args.push(typ.to_string());
                parse_maybe_json(cmd, &mut node).map_err(fail)?;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args.push(rest.to_string());
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_ONBUILD_NESTING {
                    return Err(fail(format!(
                        "ONBUILD nested more than {MAX_ONBUILD_NESTING} levels deep"
                    )));
                }
                node.child = Some(Box::new(new_node_from_line(rest, ctx, escape, depth + 1)?));
            }
        }
        // Unknown instructions keep an empty argument, like BuildKit's parseIgnore.
        _ => node.args.push(String::new()),
    }
    Ok(node)
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

enum Json {
    Array(Vec<String>),
    NotStrings,
    Invalid,
}

fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::Invalid;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Array(out)
        }
        Err(_) => Json::Invalid,
    }
}

fn parse_maybe_json(rest: &str, node: &mut Node) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    match parse_json(rest) {
        Json::Array(items) => {
            node.args.extend(items);
            node.json = true;
        }
        Json::NotStrings => return Err(NOT_STRING_ARRAY.into()),
        Json::Invalid => node.args.push(rest.to_string()),
    }
    Ok(())
}

/// `reWhitespace.Split(rest, -1)` with `[\t\v\f\r ]+`; empty input gives no words.
fn split_whitespace_go(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut in_ws = false;
    for (i, c) in rest.char_indices() {
        if is_token_ws(c) {
            if !in_ws {
                out.push(rest[start..i].to_string());
                in_ws = true;
            }
        } else if in_ws {
            in_ws = false;
            start = i;
        }
    }
    out.push(if in_ws {
        String::new()
    } else {
        rest[start..].to_string()
    });
    out
}

/// BuildKit `parseWords`: quote-aware words, quotes and escapes kept.
///
/// Every character of a word is kept except an escape token at the very end of the input,
/// so each word is a substring: track byte bounds instead of building strings.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let n = chars.len();
    let end_of = |i: usize| chars.get(i + 1).map_or(rest.len(), |c| c.0);
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let (mut wstart, mut wend) = (0usize, 0usize);
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;
    while pos <= n {
        let ch = if pos < n { chars[pos].1 } else { '\0' };
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
            wstart = chars[pos].0;
            wend = wstart;
        }
        if (phase == Phase::Word || phase == Phase::Quote) && pos == n {
            if blank_ok || wend > wstart {
                words.push(rest[wstart..wend].to_string());
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || wend > wstart {
                    words.push(rest[wstart..wend].to_string());
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                pos += 1;
            }
            wend = end_of(pos);
            pos += 1;
            continue;
        }
        // In a quote.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
        }
        wend = end_of(pos);
        pos += 1;
    }
    words
}

/// ENV/LABEL: `k=v ...` or the legacy `k rest of line`, as `key value sep` triples.
fn parse_name_val(
    rest: &str,
    key: &str,
    escape: char,
    _label: bool,
) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts = split_whitespace_go_n2(rest);
        let Some((k, v)) = parts else {
            return Err(format!("{key} must have two arguments"));
        };
        return Ok(vec![k, v, String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::goformat::quote(&word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// `reWhitespace.Split(rest, 2)` when it yields two parts.
fn split_whitespace_go_n2(rest: &str) -> Option<(String, String)> {
    let idx = rest.find(is_token_ws)?;
    let k = &rest[..idx];
    let v = rest[idx..].trim_start_matches(is_token_ws);
    Some((k.to_string(), v.to_string()))
}
