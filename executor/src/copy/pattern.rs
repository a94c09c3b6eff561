//! Path patterns for COPY/ADD.
//!
//! - [`go_match`]: Go's `filepath.Match` (source wildcards: `*` and `?` never match `/`,
//!   `[...]` classes with `^` negation and ranges, `\` escapes).
//! - [`PatternMatcher`]: moby/patternmatcher semantics used by `.dockerignore` and
//!   `--exclude` (`**` spans directories, `!` re-includes, the last match wins, a pattern
//!   matching a parent directory matches everything below it).
//! - [`has_wildcards`]: whether a path component needs matching at all.

use regex::Regex;

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

/// One compiled `.dockerignore`-style pattern.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    re: Regex,
}

/// moby/patternmatcher: ordered patterns, `!` exceptions, last match wins.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
}

/// Go's `filepath.Clean` on a relative, `/`-separated pattern.
fn go_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

impl PatternMatcher {
    /// Compiles patterns as `.dockerignore` lines are compiled (each cleaned, a leading `/`
    /// dropped, `!` marks an exception, empty lines skipped).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, BadPattern> {
        let mut out = Vec::new();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let (exclusion, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            if body.is_empty() {
                return Err(BadPattern {
                    pattern: raw.to_string(),
                });
            }
            let cleaned = go_clean(body);
            let cleaned = cleaned.trim_start_matches('/').to_string();
            let re = compile(&cleaned).ok_or_else(|| BadPattern {
                pattern: raw.to_string(),
            })?;
            out.push(Pattern {
                text: cleaned,
                exclusion,
                re,
            });
        }
        Ok(PatternMatcher { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `file` (relative, `/`-separated) is matched: a pattern matching it or one of
    /// its parent directories counts; the last matching pattern decides.
    pub fn matches(&self, file: &str) -> bool {
        let file = go_clean(file);
        let parent = match file.rfind('/') {
            Some(i) => &file[..i],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.re.is_match(&file);
            if !m && parent != "." {
                for i in 0..parent_dirs.len() {
                    if p.re.is_match(&parent_dirs[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// True when some exception pattern could re-include something under directory `dir`
    /// (so an excluded directory must still be walked).
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && (p.text.starts_with(&prefix) || has_wildcards(&p.text)))
    }
}

/// patternmatcher's pattern → regex translation.
fn compile(pattern: &str) -> Option<Regex> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch == '*' {
            if chars.get(i + 1) == Some(&'*') {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                }
                if i + 1 >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            } else {
                re.push_str("[^/]*");
            }
        } else if ch == '?' {
            re.push_str("[^/]");
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            i += 1;
            match chars.get(i) {
                Some(n) => re.push_str(&regex::escape(&n.to_string())),
                None => re.push_str("\\\\"),
            }
        } else {
            re.push(ch);
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).ok()
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
    fn pattern_matcher_follows_dockerignore_rules() {
        let pm = PatternMatcher::new(&["*.log", "!keep.log", "build", "**/tmp"]).unwrap();
        assert!(pm.matches("a.log"));
        assert!(!pm.matches("keep.log"));
        assert!(!pm.matches("sub/a.log"));
        assert!(pm.matches("build/x/y"));
        assert!(pm.matches("tmp"));
        assert!(pm.matches("a/b/tmp/c"));
        assert!(!pm.matches("src/main.rs"));
        let pm = PatternMatcher::new(&["**/*.go"]).unwrap();
        assert!(pm.matches("x.go") && pm.matches("a/b/x.go"));
        let pm = PatternMatcher::new(&["dir/**"]).unwrap();
        assert!(pm.matches("dir/a/b"));
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
