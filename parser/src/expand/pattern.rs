//! Shell patterns of `${v#p}`, `${v%p}` and friends (`*`, `?`, `\` escapes; no
//! brackets), as BuildKit turns them into regexes, and the prefix and suffix trims.

type Res<T> = Result<T, String>;

/// Converts a shell glob (`*`, `?`, `\` escapes; no brackets) to a regex, as BuildKit does.
pub(super) fn shell_pattern_to_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Res<regex::Regex> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let tok = chars[i];
        i += 1;
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `}` and `/` needed escaping inside ${}, the escape is not part of the pattern.
                if matches!(chars.get(i), Some('}') | Some('/')) {
                    continue;
                }
                match chars.get(i) {
                    Some(&c @ ('*' | '?' | '\\')) => {
                        i += 1;
                        out.push_str(&regex::escape(&c.to_string()));
                    }
                    Some(&c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape '\\'".into()),
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&out).map_err(|e| e.to_string())
}

pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Res<String> {
    let re = shell_pattern_to_regex(pattern, greedy, true)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern keeping `\x` escapes in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let runes: Vec<char> = pattern.chars().collect();
    let n = runes.len();
    let mut out = vec!['\0'; n];
    let mut i = 0;
    while i < n {
        let tok = runes[i];
        let out_idx = n - 1 - i;
        if tok == '\\' && i != n - 1 {
            out[out_idx - 1] = tok;
            out[out_idx] = runes[i + 1];
            i += 2;
        } else {
            out[out_idx] = tok;
            i += 1;
        }
    }
    out.into_iter().collect()
}

pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Res<String> {
    // Regexes cannot find the shortest rightmost match, so reverse both sides.
    let pattern = reverse_pattern(pattern);
    let value: String = value.chars().rev().collect();
    let s = trim_prefix(&pattern, &value, greedy)?;
    Ok(s.chars().rev().collect())
}
