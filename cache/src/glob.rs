//! A port of Go's `path/filepath.Match` (the wildcard syntax of COPY/ADD sources and the
//! syntax check of `.dockerignore` patterns).
//!
//! Syntax: `*` any run of non-`/` characters, `?` one non-`/` character, `[...]` a class
//! (`[^...]` negated, ranges `a-z`, `\` escapes inside), `\c` a literal `c`. Malformed
//! patterns (`[`, `[]a]`, `[-]`, `[x-]`, `[a-b-c]`, a trailing `\`) are errors even
//! when they would not be reached, like Go ≥ 1.16.

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
pub struct GlobPattern {
    toks: Vec<Tok>,
}

/// True if `s` has any character special to [`GlobPattern`] (`*`, `?`, `[`, `\`).
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

impl GlobPattern {
    /// Compiles `pattern`, rejecting malformed syntax.
    pub fn new(pattern: &str) -> Result<GlobPattern, BadPattern> {
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
        Ok(GlobPattern { toks })
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

/// `filepath.Match(pattern, name)`.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    Ok(GlobPattern::new(pattern)?.matches(name))
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
        ];
        for (pattern, name, want) in cases {
            let got = glob_match(pattern, name).map_err(|_| ());
            assert_eq!(&got, want, "Match({pattern:?}, {name:?})");
        }
    }
}
