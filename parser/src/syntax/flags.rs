//! The leading `--flag[=value]` words of an instruction, BuildKit's
//! `extractBuilderFlags`: quotes and backslashes processed, each flag with its span.

use super::position::LineCtx;
use super::tree::RawFlag;

/// BuildKit `extractBuilderFlags`: leading `--flag[=value]` words; returns the rest.
pub(super) fn extract_builder_flags<'l>(
    line: &'l str,
    ctx: &LineCtx<'_>,
) -> (&'l str, Vec<RawFlag>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let n = b.len();
    let mut words: Vec<RawFlag> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut word_start = 0usize;
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0usize;
    let push = |words: &mut Vec<RawFlag>, word: &[u8], start: usize| {
        words.push(RawFlag {
            text: String::from_utf8_lossy(word).into_owned(),
            span: ctx.span_of(&line[start..]),
        });
    };
    while pos <= n {
        let mut ch = if pos < n { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if ch.is_ascii_whitespace() || ch == 0x0b {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == n || b[pos + 1] != b'-' {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if (phase == Phase::Word || phase == Phase::Quote) && pos == n {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                push(&mut words, &word, word_start);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_ascii_whitespace() || ch == 0x0b {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    push(&mut words, &word, word_start);
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == b'\\' {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == b'\\' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(ch);
        pos += 1;
    }
    ("", words)
}
