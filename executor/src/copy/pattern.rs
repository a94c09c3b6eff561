//! `--parents` patterns for COPY/ADD: Go `filepath.Match` components plus `**`.
//!
//! - One component, and a plain wildcard source, is [`kiln_base::gopath`]'s
//!   `filepath.Match` (`*` and `?` never match `/`, `[...]` classes, `\` escapes), the
//!   same matcher the context checksum uses for the cache key.
//! - `--exclude` uses the `.dockerignore` matcher, [`kiln_context::IgnoreMatcher`] (both
//!   are moby's patternmatcher).

use kiln_base::gopath::{BadPattern, filepath_match};

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
            if !filepath_match(&pattern[i], path[i])? {
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
                match filepath_match(&pattern[i], path[j]) {
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
        if filepath_match(&p[0], s[0])? {
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
