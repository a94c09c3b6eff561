//! `.dockerignore` matching with moby's `patternmatcher` + `ignorefile` semantics.
//!
//! File rules (`ignorefile.ReadAll`): a UTF-8 BOM is stripped; lines *starting* with `#`
//! are comments; lines are trimmed and blank ones skipped; `!` marks an exception; each
//! pattern goes through `filepath.Clean` and loses a leading `/`.
//!
//! Match rules (`patternmatcher`): `*` and `?` never cross `/`; `**` spans directories
//! (`**/x` also matches `x`, a trailing `**` matches everything below); a pattern that
//! matches a parent directory matches everything under it; patterns apply in order and the
//! last one that matches wins, so `!` re-includes.
//!
//! Where moby passes a pattern character straight into a Go regexp by accident (`\d`,
//! `^`, character classes), this port treats it as `filepath.Match` would.

use std::path::{Path, PathBuf};

use regex::Regex;

use kiln_base::gopath::{self, Pattern as GlobPattern};

/// Errors from parsing or loading ignore patterns.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern { pattern: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve {} inside the build context: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: crate::resolve::ResolveError,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: kiln_image::limits::CappedReadError,
    },
    #[error("in {}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<IgnoreError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned pattern without the leading `!`.
    cleaned: String,
    exclusion: bool,
    kind: Kind,
    regex: Option<Regex>,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            Kind::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(path)),
        }
    }
}

/// Per-pattern results for a directory, passed down to its children while walking
/// (moby's `MatchInfo`).
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// Lines of an ignore file → patterns, as `ignorefile.ReadAll` does.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = gopath::clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

fn compile(cleaned: &str) -> Result<(Kind, Option<Regex>), IgnoreError> {
    let bad = || IgnoreError::BadPattern {
        pattern: cleaned.to_string(),
    };
    let chars: Vec<char> = cleaned.chars().collect();
    let mut re = String::from("(?s)^");
    let mut kind = Kind::Exact;
    let mut pos = 0;
    let mut i = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                // Treat "**/" as "**".
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if i == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => match chars.get(pos) {
                Some(c) => {
                    re.push_str(&regex::escape(&c.to_string()));
                    pos += 1;
                    kind = Kind::Regex;
                }
                None => return Err(bad()),
            },
            '[' => {
                let (class, next) = class_regex(&chars, pos).ok_or_else(bad)?;
                re.push_str(&class);
                pos = next;
                kind = Kind::Regex;
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    if kind == Kind::Regex {
        re.push('$');
        let r = Regex::new(&re).map_err(|_| bad())?;
        return Ok((kind, Some(r)));
    }
    Ok((kind, None))
}

/// The class starting after `[` at `pos`, as a regex class with every member written as
/// `\x{..}` (so nothing in it is special to the regex crate).
fn class_regex(chars: &[char], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::from("[");
    if chars.get(pos) == Some(&'^') {
        out.push('^');
        pos += 1;
    }
    let mut n = 0;
    loop {
        if chars.get(pos) == Some(&']') && n > 0 {
            out.push(']');
            return Some((out, pos + 1));
        }
        let one = |p: usize| -> Option<(char, usize)> {
            match chars.get(p)? {
                '-' | ']' => None,
                '\\' => Some((*chars.get(p + 1)?, p + 2)),
                c => Some((*c, p + 1)),
            }
        };
        let (lo, next) = one(pos)?;
        pos = next;
        out.push_str(&format!("\\x{{{:x}}}", lo as u32));
        if chars.get(pos) == Some(&'-') {
            let (hi, next) = one(pos + 1)?;
            pos = next;
            out.push_str(&format!("-\\x{{{:x}}}", hi as u32));
        }
        n += 1;
    }
}

impl IgnoreMatcher {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<IgnoreMatcher, IgnoreError> {
        IgnoreMatcher::from_patterns(&read_patterns(text))
    }

    /// Compiles patterns as `patternmatcher.New` does (each is trimmed and cleaned again;
    /// empty ones are skipped).
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<IgnoreMatcher, IgnoreError> {
        let mut pm = IgnoreMatcher::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = gopath::clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(IgnoreError::IllegalExclusion);
                }
                exclusion = true;
                p = rest.to_string();
                pm.exclusions = true;
            }
            // Same syntax check as moby: filepath.Match(p, ".") must not fail.
            GlobPattern::new(&p).map_err(|_| IgnoreError::BadPattern { pattern: p.clone() })?;
            let (kind, regex) = compile(&p)?;
            pm.patterns.push(Pattern {
                cleaned: p,
                exclusion,
                kind,
                regex,
            });
        }
        Ok(pm)
    }

    /// A matcher that excludes nothing.
    pub fn empty() -> IgnoreMatcher {
        IgnoreMatcher::default()
    }

    /// True if there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True if some pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// True if a pattern (not an exception) excludes every entry of the root (`*`, `**`,
    /// `**/*`): BuildKit's CopyIgnoredFile check then warns of a COPY of `.` too.
    pub fn ignores_every_root_entry(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| !p.exclusion && matches!(p.cleaned.as_str(), "*" | "**" | "**/*"))
    }

    /// Is `rel_path` (relative to the context root, `/`-separated) excluded? The path is
    /// cleaned first; the root itself (`.`) is never excluded.
    pub fn matches(&self, rel_path: &str) -> bool {
        let mut p = gopath::clean(rel_path);
        if p.starts_with('/') {
            p = gopath::clean(p.trim_start_matches('/'));
        }
        if p == "." {
            return false;
        }
        self.matches_or_parent_matches(&p)
    }

    /// moby's `MatchesOrParentMatches`: `file` as given (no cleaning).
    pub fn matches_or_parent_matches(&self, file: &str) -> bool {
        let parent = gopath::dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pat in &self.patterns {
            if pat.exclusion != matched {
                continue;
            }
            let mut m = pat.matches(file);
            if !m && parent != "." {
                for i in 0..parent_dirs.len() {
                    if pat.matches(&parent_dirs[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !pat.exclusion;
            }
        }
        matched
    }

    /// moby's `MatchesExact`: no parent matching.
    pub fn matches_exact(&self, file: &str) -> bool {
        let mut matched = false;
        for pat in &self.patterns {
            if pat.exclusion != matched {
                continue;
            }
            if pat.matches(file) {
                matched = !pat.exclusion;
            }
        }
        matched
    }

    /// moby's `MatchesUsingParentResults`: for walks, pass the parent directory's
    /// [`MatchInfo`] (the default one for top-level entries or when unknown).
    pub fn matches_with_parent(&self, file: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let known = parent.parent_matched.len() == self.patterns.len() && !self.patterns.is_empty();
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pat) in self.patterns.iter().enumerate() {
            let mut m = known && parent.parent_matched[i];
            if !m {
                if pat.exclusion != matched {
                    continue;
                }
                m = pat.matches(file);
                if !m && !known {
                    let parent_path = gopath::dir(file);
                    if parent_path != "." {
                        let dirs: Vec<&str> = parent_path.split('/').collect();
                        for j in 0..dirs.len() {
                            if pat.matches(&dirs[..=j].join("/")) {
                                m = true;
                                break;
                            }
                        }
                    }
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !pat.exclusion;
            }
        }
        (matched, info)
    }

    /// Could an exception pattern re-include something below the excluded directory
    /// `dir`? If not, a walk may skip the whole directory. Conservative: any exception
    /// with a wildcard, or whose text lies under `dir/`, says yes.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        if !self.exclusions {
            return false;
        }
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            gopath::has_meta(&p.cleaned) || format!("{}/", p.cleaned).starts_with(&dir_slash)
        })
    }
}

/// The largest `.dockerignore` read (the same bound as a Dockerfile's: it comes with the
/// untrusted context).
const MAX_IGNORE_FILE_SIZE: u64 = 16 << 20;

/// Loads the ignore rules for a build: `<dockerfile>.dockerignore` beside the Dockerfile
/// wins over `<context_dir>/.dockerignore`; neither present means nothing is ignored.
pub fn load_for(context_dir: &Path, dockerfile_path: &Path) -> Result<IgnoreMatcher, IgnoreError> {
    let mut beside = dockerfile_path.as_os_str().to_owned();
    beside.push(".dockerignore");
    load_first(
        context_dir,
        [PathBuf::from(beside), context_dir.join(".dockerignore")],
    )
}

/// The ignore file of a named build context (`--build-context NAME=DIR`): `DIR/.dockerignore`
/// only, as BuildKit reads it (no Dockerfile sits beside a named context).
pub fn load_own(context_dir: &Path) -> Result<IgnoreMatcher, IgnoreError> {
    load_first(context_dir, [context_dir.join(".dockerignore")])
}

/// The first of `candidates` that exists, parsed; none matches nothing.
fn load_first<const N: usize>(
    context_dir: &Path,
    candidates: [PathBuf; N],
) -> Result<IgnoreMatcher, IgnoreError> {
    for path in candidates {
        // Inside the context, a symlink resolves inside it: the file is the context's own.
        let real = crate::resolve::resolve_context_path(context_dir, &path).map_err(|source| {
            IgnoreError::Resolve {
                path: path.clone(),
                source,
            }
        })?;
        // A FIFO would block the open and a device read forever: only a regular file counts.
        match std::fs::metadata(&real) {
            Ok(m) if !m.is_file() => {
                return Err(IgnoreError::Io {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ),
                });
            }
            _ => {}
        }
        match std::fs::File::open(&real) {
            Ok(file) => {
                let bytes = kiln_image::limits::read_capped(
                    file,
                    MAX_IGNORE_FILE_SIZE,
                    path.display().to_string(),
                )
                .map_err(|source| IgnoreError::Read {
                    path: path.clone(),
                    source,
                })?;
                let text = String::from_utf8_lossy(&bytes);
                return IgnoreMatcher::parse(&text).map_err(|e| IgnoreError::InFile {
                    path,
                    source: Box::new(e),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(IgnoreError::Io { path, source }),
        }
    }
    Ok(IgnoreMatcher::empty())
}
