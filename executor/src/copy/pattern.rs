//! Path patterns for COPY/ADD.
//!
//! - [`go_match`]: Go's `filepath.Match` (source wildcards: `*` and `?` never match `/`,
//!   `[...]` classes with `^` negation and ranges, `\` escapes).
//! - `--exclude` uses the `.dockerignore` matcher, [`kiln_cache::IgnoreMatcher`] (both
//!   are moby's patternmatcher).
//! - [`has_wildcards`]: whether a path component needs matching at all.

/// A pattern that does not parse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
///
/// Neither recursive nor exponential: a Dockerfile can give many `**` and a context many
/// levels, so without `**` this is one pass, and with it a table over (pattern component,
/// path component) filled from the end, each cell once. Errors come out exactly where the
/// recursive definition would meet them (a bad component is only judged when reached).
pub fn match_parents_pattern(
    pattern: &[String],
    path: &[&str],
) -> Result<(bool, bool), BadPattern> {
    let (np, ns) = (pattern.len(), path.len());
    if !pattern.iter().any(|c| c == "**") {
        for i in 0.. {
            if i == np {
                return Ok((i == ns, false));
            }
            if i == ns {
                return Ok((false, true));
            }
            if !go_match(&pattern[i], path[i])? {
                return Ok((false, false));
            }
        }
    }
    // cell(i, j): the answer for pattern[i..] against path[j..].
    let width = ns + 1;
    let mut table: Vec<Result<(bool, bool), BadPattern>> =
        vec![Ok((false, false)); (np + 1) * width];
    for i in (0..=np).rev() {
        for j in (0..=ns).rev() {
            let cell = if i == np {
                Ok((j == ns, false))
            } else if pattern[i] == "**" {
                // `**` matches zero components, or one and stays.
                match table[(i + 1) * width + j].clone() {
                    Err(e) => Err(e),
                    Ok((f0, _)) if j == ns => Ok((f0, true)),
                    Ok((f0, p0)) => table[i * width + j + 1]
                        .clone()
                        .map(|(f1, p1)| (f0 || f1, p0 || p1)),
                }
            } else if j == ns {
                Ok((false, true))
            } else {
                match go_match(&pattern[i], path[j]) {
                    Err(e) => Err(e),
                    Ok(true) => table[(i + 1) * width + j + 1].clone(),
                    Ok(false) => Ok((false, false)),
                }
            };
            table[i * width + j] = cell;
        }
    }
    table[0].clone()
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

    /// The recursive definition the table replaces, for comparison.
    fn reference(p: &[String], s: &[&str]) -> Result<(bool, bool), BadPattern> {
        if p.is_empty() {
            return Ok((s.is_empty(), false));
        }
        if p[0] == "**" {
            let (f0, p0) = reference(&p[1..], s)?;
            if s.is_empty() {
                return Ok((f0, true));
            }
            let (f1, p1) = reference(p, &s[1..])?;
            return Ok((f0 || f1, p0 || p1));
        }
        if s.is_empty() {
            return Ok((false, true));
        }
        if go_match(&p[0], s[0])? {
            reference(&p[1..], &s[1..])
        } else {
            Ok((false, false))
        }
    }

    #[test]
    fn parents_pattern_table_agrees_with_the_recursive_definition() {
        let pats = ["**", "a", "*", "b*", "[", "c"];
        let paths = ["a", "b", "bc", "c", "x"];
        // Every pattern of up to 3 components against every path of up to 3 components.
        let mut patterns: Vec<Vec<String>> = vec![vec![]];
        for _ in 0..3 {
            let mut next = patterns.clone();
            for p in &patterns {
                for c in pats {
                    let mut q = p.clone();
                    q.push(c.to_string());
                    next.push(q);
                }
            }
            patterns = next;
        }
        let mut names: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..3 {
            let mut next = names.clone();
            for n in &names {
                for c in paths {
                    let mut q = n.clone();
                    q.push(c);
                    next.push(q);
                }
            }
            names = next;
        }
        for p in &patterns {
            for n in &names {
                assert_eq!(match_parents_pattern(p, n), reference(p, n), "{p:?} {n:?}");
            }
        }
    }

    #[test]
    fn many_double_stars_against_a_deep_path_take_no_time() {
        let p: Vec<String> = std::iter::repeat_n("**".to_string(), 40)
            .chain(["nomatch".to_string()])
            .collect();
        let path: Vec<&str> = vec!["d"; 2000];
        let started = std::time::Instant::now();
        assert_eq!(match_parents_pattern(&p, &path).unwrap(), (false, true));
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        let literal: Vec<String> = vec!["d".to_string(); 50_000];
        assert_eq!(
            match_parents_pattern(&literal, &path).unwrap(),
            (false, true)
        );
    }
}
