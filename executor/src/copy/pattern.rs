//! Path patterns for COPY/ADD.
//!
//! - [`go_match`]: Go's `filepath.Match` (source wildcards: `*` and `?` never match `/`,
//!   `[...]` classes with `^` negation and ranges, `\` escapes).
//! - `--exclude` uses the `.dockerignore` matcher, [`kiln_cache::IgnoreMatcher`] (both
//!   are moby's patternmatcher).
//! - [`has_wildcards`]: whether a path component needs matching at all.

/// A pattern that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("syntax error in pattern {pattern:?}")]
pub struct BadPattern {
    pub pattern: String,
}

/// True when `s` contains an unescaped `*`, `?` or `[`.
pub fn has_wildcards(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `filepath.Match(pattern, name)` on Unix.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let bad = || BadPattern {
        pattern: pattern.to_string(),
    };
    let mut pat: &[char] = &pattern.chars().collect::<Vec<_>>();
    let name_chars: Vec<char> = name.chars().collect();
    let mut name: &[char] = &name_chars;
    'outer: while !pat.is_empty() {
        let (star, chunk, rest) = scan_chunk(pat);
        pat = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&'/'));
        }
        let (t, ok, err) = match_chunk(chunk, name);
        if ok && (t.is_empty() || !pat.is_empty()) {
            name = t;
            continue;
        }
        if err {
            return Err(bad());
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != '/' {
                let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                if ok {
                    if pat.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'outer;
                }
                if err {
                    return Err(bad());
                }
                i += 1;
            }
        }
        // Report a syntax error in the rest of the pattern even when the match failed.
        while !pat.is_empty() {
            let (_, chunk, rest) = scan_chunk(pat);
            pat = rest;
            if match_chunk(chunk, &[]).2 {
                return Err(bad());
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pat: &[char]) -> (bool, &[char], &[char]) {
    let mut star = false;
    while pat.first() == Some(&'*') {
        pat = &pat[1..];
        star = true;
    }
    let mut inrange = false;
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            '\\' if i + 1 < pat.len() => {
                i += 1;
            }
            '[' => inrange = true,
            ']' => inrange = false,
            '*' if !inrange => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pat[..i], &pat[i..])
}

/// Returns (rest of name, matched, syntax error).
fn match_chunk<'a>(mut chunk: &[char], mut s: &'a [char]) -> (&'a [char], bool, bool) {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            '[' => {
                let mut r = '\0';
                if !failed {
                    r = s[0];
                    s = &s[1..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if chunk.first() == Some(&'^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let Some((lo, rest)) = get_esc(chunk) else {
                        return (&[], false, true);
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&'-') {
                        let Some((h, rest)) = get_esc(&chunk[1..]) else {
                            return (&[], false, true);
                        };
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    if s[0] == '/' {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == '\\' {
                    chunk = &chunk[1..];
                    match chunk.first() {
                        Some(c) => *c,
                        None => return (&[], false, true),
                    }
                } else {
                    c
                };
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        (&[], false, false)
    } else {
        (s, true, false)
    }
}

fn get_esc(chunk: &[char]) -> Option<(char, &[char])> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some('-') | Some(']') => return None,
        Some('\\') => {
            chunk = &chunk[1..];
            chunk.first()?;
        }
        _ => {}
    }
    let r = chunk[0];
    let rest = &chunk[1..];
    if rest.is_empty() {
        return None;
    }
    Some((r, rest))
}

/// Matches a `/`-separated relative path against a pattern whose components are Go
/// patterns, plus `**` components spanning any number of directories. Returns
/// `(full, partial)`: `full` when the path matches, `partial` when a descendant of the path
/// might match (the path is a prefix of some possible match).
pub fn match_parents_pattern(
    pattern: &[String],
    path: &[&str],
) -> Result<(bool, bool), BadPattern> {
    fn rec(p: &[String], s: &[&str]) -> Result<(bool, bool), BadPattern> {
        if p.is_empty() {
            return Ok((s.is_empty(), false));
        }
        if p[0] == "**" {
            // `**` matches zero components, or one and stays.
            let (f0, p0) = rec(&p[1..], s)?;
            if s.is_empty() {
                return Ok((f0, true));
            }
            let (f1, p1) = rec(p, &s[1..])?;
            return Ok((f0 || f1, p0 || p1));
        }
        if s.is_empty() {
            return Ok((false, true));
        }
        if go_match(&p[0], s[0])? {
            rec(&p[1..], &s[1..])
        } else {
            Ok((false, false))
        }
    }
    rec(pattern, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abe", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a?b", "a/b", false),
            ("*.txt", "foo.txt", true),
            ("*.txt", "dir/foo.txt", false),
        ];
        for (p, n, want) in cases {
            assert_eq!(go_match(p, n), Ok(want), "{p} vs {n}");
        }
        assert!(go_match("[", "a").is_err());
        assert!(go_match("a[", "x").is_err());
    }

    #[test]
    fn parents_pattern_partial_and_full() {
        let p: Vec<String> = ["**", "*.txt"].iter().map(|s| s.to_string()).collect();
        assert!(match_parents_pattern(&p, &["a", "b.txt"]).unwrap().0);
        assert_eq!(match_parents_pattern(&p, &["a"]).unwrap(), (false, true));
        let p: Vec<String> = ["x", "*", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            match_parents_pattern(&p, &["x", "y"]).unwrap(),
            (false, true)
        );
        assert_eq!(match_parents_pattern(&p, &["z"]).unwrap(), (false, false));
        assert_eq!(
            match_parents_pattern(&p, &["x", "y", "c"]).unwrap(),
            (true, false)
        );
    }
}
