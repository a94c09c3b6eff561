//! Go's path rules for `/`-separated paths, as BuildKit and moby apply them: `path.Clean`,
//! `filepath.Match` on Unix, and which COPY/ADD sources are wildcards.
//!
//! Cache keys and the copy itself must read a source path the same way (a key over
//! other files than the ones copied is a wrong cache hit), so both take these from here.
//!
//! Match syntax: `*` any run of non-`/` characters, `?` one non-`/` character, `[...]` a
//! class (`[^...]` negated, ranges `a-z`, `\` escapes inside), `\c` a literal `c`.
//! Malformed patterns (`[`, `[]a]`, `[-]`, `[x-]`, `[a-b-c]`, a trailing `\`) are errors
//! even when they would not be reached, like Go ≥ 1.16.

/// Go's `path.Clean`: `.` and empty parts dropped, `..` resolved lexically (kept at the
/// front of a relative path, dropped at the root), `.` for an empty result.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// The parts of `p` with empty and `.` parts dropped and each `..` taking the part before
/// it, or `None` when a `..` would climb above where `p` starts: how a name inside an
/// archive or a layer is read, which may never reach outside it.
pub fn components_within(p: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts)
}

/// Go's `filepath.Dir` for `/`-separated paths: all but the last element, cleaned.
pub fn dir(p: &str) -> String {
    match p.rfind('/') {
        Some(i) => clean(&p[..=i]),
        None => ".".to_string(),
    }
}

/// BuildKit's `containsWildcards` (Unix): an unescaped `*`, `?` or `[`. A source path
/// without one is a literal name, `\` and all; the first component with one starts the
/// part that is matched.
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

/// Go's `filepath` `hasMeta` (Unix): any character special to [`Pattern`] (`*`, `?`, `[`,
/// `\`), escaped or not: whether a pattern could match anything but its own text.
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// The pattern is malformed (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {pattern:?}")]
pub struct BadPattern {
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Star,
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled `filepath.Match` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    /// Compiles `pattern`, rejecting malformed syntax.
    pub fn new(pattern: &str) -> Result<Pattern, BadPattern> {
        let bad = || BadPattern {
            pattern: pattern.to_string(),
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // Consecutive stars are one star.
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                    i += 1;
                }
                '?' => {
                    toks.push(Tok::Any);
                    i += 1;
                }
                '\\' => {
                    let c = *chars.get(i + 1).ok_or_else(bad)?;
                    toks.push(Tok::Lit(c));
                    i += 2;
                }
                '[' => {
                    i += 1;
                    let mut negated = false;
                    if chars.get(i) == Some(&'^') {
                        negated = true;
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        if chars.get(i) == Some(&']') && !ranges.is_empty() {
                            i += 1;
                            break;
                        }
                        let (lo, next) = class_char(&chars, i).ok_or_else(bad)?;
                        i = next;
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') {
                            let (h, next) = class_char(&chars, i + 1).ok_or_else(bad)?;
                            hi = h;
                            i = next;
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        Ok(Pattern { toks })
    }

    /// True if the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let text: Vec<char> = name.chars().collect();
        let (m, n) = (self.toks.len(), text.len());
        // dp[i][j]: toks[i..] matches text[j..]. Filled backwards; O(m*n).
        let mut next = vec![false; n + 1];
        next[n] = true; // empty pattern matches empty text
        for i in (0..m).rev() {
            let mut cur = vec![false; n + 1];
            for j in (0..=n).rev() {
                cur[j] = match &self.toks[i] {
                    Tok::Star => next[j] || (j < n && text[j] != '/' && cur[j + 1]),
                    Tok::Any => j < n && text[j] != '/' && next[j + 1],
                    Tok::Lit(c) => j < n && text[j] == *c && next[j + 1],
                    Tok::Class { negated, ranges } => {
                        j < n && {
                            let c = text[j];
                            let hit = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                            hit != *negated && next[j + 1]
                        }
                    }
                };
            }
            next = cur;
        }
        next[0]
    }
}

/// One class member at `i`: a plain char or `\c`; `-` and `]` must be escaped.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '-' | ']' => None,
        '\\' => Some((*chars.get(i + 1)?, i + 2)),
        c => Some((*c, i + 1)),
    }
}

/// Go's `filepath.Match(pattern, name)` on Unix.
pub fn filepath_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    Ok(Pattern::new(pattern)?.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `filepath` match tests (as carried in moby/patternmatcher's test file).
    #[test]
    fn go_filepath_match_table() {
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[x-]", "-", Err(())),
            ("[x-]", "z", Err(())),
            ("[-x]", "x", Err(())),
            ("[-x]", "-", Err(())),
            ("[-x]", "a", Err(())),
            ("\\", "a", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("*x", "xxx", Ok(true)),
            // The COPY source matcher's own table.
            ("ab[^b-d]", "abe", Ok(true)),
            ("*.txt", "foo.txt", Ok(true)),
            ("*.txt", "dir/foo.txt", Ok(false)),
        ];
        for (pattern, name, want) in cases {
            let got = filepath_match(pattern, name).map_err(|_| ());
            assert_eq!(&got, want, "Match({pattern:?}, {name:?})");
        }
    }
    #[test]
    fn clean_is_go_path_clean() {
        for (a, b) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "/"),
            ("/a/b/../c/", "/a/c"),
            ("/../x", "/x"),
            ("a//b/.", "a/b"),
            ("../a/..", ".."),
            ("a/../../b", "../b"),
            ("./", "."),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("./a/", "a"),
            ("!docs/", "!docs"),
        ] {
            assert_eq!(clean(a), b, "Clean({a:?})");
        }
    }

    #[test]
    fn components_within_refuse_to_climb_out() {
        assert_eq!(components_within("./a//b/../c/"), Some(vec!["a", "c"]));
        assert_eq!(components_within("/"), Some(vec![]));
        assert_eq!(components_within("a/../.."), None);
        assert_eq!(components_within("../x"), None);
    }

    #[test]
    fn dir_is_go_filepath_dir() {
        for (a, b) in [
            ("a/b", "a"),
            ("a/b/", "a/b"),
            ("a", "."),
            ("/a", "/"),
            ("/", "/"),
        ] {
            assert_eq!(dir(a), b, "Dir({a:?})");
        }
    }

    /// BuildKit's rule (fsutil and contenthash `containsWildcards`): an escaped wildcard is
    /// no wildcard, and a `\` alone does not make a source a pattern. The context checksum
    /// used to treat `a\b` as a pattern (matching `ab`) while the copy read the file
    /// `a\b`.
    #[test]
    fn only_unescaped_stars_questions_and_brackets_are_wildcards() {
        for s in ["*", "a?", "[ab]", "x/\\*y*", "\\\\*"] {
            assert!(has_wildcards(s), "{s}");
        }
        for s in ["abc", "a\\b", "a\\*", "\\?", "\\[x]", "x\\"] {
            assert!(!has_wildcards(s), "{s}");
        }
        assert!(has_meta("a\\b") && has_meta("a*") && !has_meta("abc"));
    }

    #[test]
    fn bad_pattern_names_the_pattern() {
        assert_eq!(
            filepath_match("a[", "a").unwrap_err().to_string(),
            "syntax error in pattern \"a[\""
        );
    }
}
