//! The checks BuildKit runs while it expands each FROM line with the global ARGs, for
//! every stage whatever the target: UndefinedArgInFrom, RedundantTargetPlatform,
//! FromPlatformFlagConstDisallowed, and InvalidDefaultArgInFrom (the base name expanded
//! with only the ARG defaults, as if no `--build-arg` were given).

use super::vars::Lookups;
use super::{Finding, Rule, search};

/// Automatic args BuildKit defines that kiln's lowering leaves out (always empty on Linux);
/// a FROM naming them uses a declared ARG.
pub const EXTRA_DEFAULT_ARGS: &[&str] = &["BUILDOSVERSION", "TARGETOSVERSION"];

/// UndefinedArgInFrom: each variable a FROM word looked up that no global ARG declares
/// (with or without a value) and no automatic arg defines. `declared` are those names.
pub fn undefined_args(lookups: &Lookups, declared: &[&str], line: usize) -> Vec<Finding> {
    let mut out = Vec::new();
    for name in &lookups.unmatched {
        if declared.contains(&name.as_str()) || EXTRA_DEFAULT_ARGS.contains(&name.as_str()) {
            continue;
        }
        let mut message = format!("FROM argument '{name}' is not declared");
        if let Some(s) = search(name, declared, true) {
            message.push_str(&format!(" (did you mean {s}?)"));
        }
        out.push(Finding::new(Rule::UndefinedArgInFrom, line, message));
    }
    out
}

/// RedundantTargetPlatform: `--platform=$TARGETPLATFORM` (the only variable, found, and
/// the whole value) asks for the default.
pub fn redundant_target_platform(
    written: &str,
    lookups: &Lookups,
    result: &str,
    target_platform: Option<&str>,
    line: usize,
) -> Option<Finding> {
    let only_target = lookups.unmatched.is_empty()
        && lookups.matched.len() == 1
        && lookups.matched.contains("TARGETPLATFORM");
    (only_target && target_platform == Some(result)).then(|| {
        Finding::new(
            Rule::RedundantTargetPlatform,
            line,
            format!(
                "Setting platform to predefined {written} in FROM is redundant as this is the default behavior"
            ),
        )
    })
}

/// FromPlatformFlagConstDisallowed: a `--platform` with no variable in it, unless the
/// stage's name mentions that platform's OS or architecture (a per-platform stage).
pub fn const_platform(
    stage_name: Option<&str>,
    lookups: &Lookups,
    result: &str,
    line: usize,
) -> Option<Finding> {
    if !lookups.matched.is_empty() || !lookups.unmatched.is_empty() {
        return None;
    }
    let (os, arch) = parse_platform(result)?;
    let name = stage_name.unwrap_or("");
    if name.contains(os.as_str()) || name.contains(arch.as_str()) {
        return None;
    }
    Some(Finding::new(
        Rule::FromPlatformFlagConstDisallowed,
        line,
        format!(
            "FROM --platform flag should not use constant value {}",
            crate::goformat::quote(result)
        ),
    ))
}

/// InvalidDefaultArgInFrom: the base name, expanded with only the ARG defaults (`None`
/// when that expansion failed), is not an image reference docker would accept.
pub fn invalid_default_base(written: &str, expanded: Option<&str>, line: usize) -> Option<Finding> {
    let expanded = expanded?;
    (!valid_reference(expanded)).then(|| {
        Finding::new(
            Rule::InvalidDefaultArgInFrom,
            line,
            format!("Default value for ARG {written} results in empty or invalid base image name"),
        )
    })
}

/// containerd's `platforms.Parse` reduced to what the rule needs: the normalized OS and
/// architecture, or `None` when it would not parse.
fn parse_platform(s: &str) -> Option<(String, String)> {
    const OSES: &[&str] = &[
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    ];
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return None;
    }
    let host = crate::lower::host_platform();
    let (os, arch) = match parts.as_slice() {
        [one] if OSES.contains(one) => (one.to_string(), host.architecture.clone()),
        [one] => (host.os.clone(), normalize_arch(one)?),
        [os, arch, ..] if OSES.contains(os) => (os.to_string(), normalize_arch(arch)?),
        _ => return None,
    };
    Some((os, arch))
}

fn normalize_arch(a: &str) -> Option<String> {
    const ARCHES: &[&str] = &[
        "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
        "ppc64le", "riscv64", "s390x", "wasm",
    ];
    let a = match a {
        "i386" => "386",
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armel" => "arm",
        other => other,
    };
    ARCHES.contains(&a).then(|| a.to_string())
}

/// distribution/reference `ParseNormalizedNamed` acceptance: `[domain/]path[:tag][@digest]`
/// with a lower-case path of `[a-z0-9]` components joined by `.`, `_`, `__` or `-`s.
pub fn valid_reference(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 + 128 + 72 {
        return false;
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return false;
        };
        if alg.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag follows the last `:` after the last `/`.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return false;
        }
    }
    let mut comps: Vec<&str> = name.split('/').collect();
    // The first component is a domain when it has a `.` or `:` or is `localhost`.
    if comps.len() > 1 {
        let first = comps[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            if !valid_domain(first) {
                return false;
            }
            comps.remove(0);
        }
    }
    !comps.is_empty() && comps.iter().all(|c| crate::graph::valid_path_component(c))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '[' || c == ']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups(matched: &[&str], unmatched: &[&str]) -> Lookups {
        Lookups {
            matched: matched.iter().map(|s| s.to_string()).collect(),
            unmatched: unmatched.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn references_are_judged_as_docker_does() {
        for ok in [
            "alpine",
            "alpine:3.19",
            "library/alpine",
            "reg.example.com:5000/a/b:1",
            "localhost/x",
            "golang:1.22-alpine",
            "a__b/c-d.e",
            "x@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
            "scratch",
        ] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "Alpine",
            "alpine:",
            ":latest",
            "a//b",
            "-a",
            "a:b:c",
            "alpine:-x",
            "/x",
        ] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }

    #[test]
    fn undefined_arg_in_from() {
        let f = undefined_args(&lookups(&[], &["VERSON"]), &["VERSION"], 2);
        assert_eq!(
            f[0].to_string(),
            "UndefinedArgInFrom: FROM argument 'VERSON' is not declared (did you mean VERSION?) (line 2)"
        );
        assert!(undefined_args(&lookups(&[], &["VERSION"]), &["VERSION"], 2).is_empty());
        assert!(undefined_args(&lookups(&["A"], &[]), &[], 2).is_empty());
    }

    #[test]
    fn redundant_target_platform_only_for_the_bare_variable() {
        let l = lookups(&["TARGETPLATFORM"], &[]);
        let f =
            redundant_target_platform("$TARGETPLATFORM", &l, "linux/amd64", Some("linux/amd64"), 1);
        assert_eq!(
            f.unwrap().to_string(),
            "RedundantTargetPlatform: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior (line 1)"
        );
        let l2 = lookups(&["BUILDPLATFORM"], &[]);
        assert!(
            redundant_target_platform("$BUILDPLATFORM", &l2, "linux/amd64", Some("linux/amd64"), 1)
                .is_none()
        );
        let l3 = lookups(&["TARGETPLATFORM"], &["X"]);
        assert!(
            redundant_target_platform(
                "$TARGETPLATFORM$X",
                &l3,
                "linux/amd64",
                Some("linux/amd64"),
                1
            )
            .is_none()
        );
    }

    #[test]
    fn const_platform_unless_the_stage_is_named_for_it() {
        let none = lookups(&[], &[]);
        assert_eq!(
            const_platform(Some("build"), &none, "linux/amd64", 1)
                .unwrap()
                .to_string(),
            "FromPlatformFlagConstDisallowed: FROM --platform flag should not use constant value \"linux/amd64\" (line 1)"
        );
        assert!(const_platform(Some("build-amd64"), &none, "linux/amd64", 1).is_none());
        assert!(
            const_platform(
                Some("x"),
                &lookups(&["BUILDPLATFORM"], &[]),
                "linux/amd64",
                1
            )
            .is_none()
        );
        assert!(const_platform(None, &none, "not a platform", 1).is_none());
    }

    #[test]
    fn invalid_default_arg_in_from() {
        assert_eq!(
            invalid_default_base("$IMAGE", Some(""), 3)
                .unwrap()
                .to_string(),
            "InvalidDefaultArgInFrom: Default value for ARG $IMAGE results in empty or invalid base image name (line 3)"
        );
        assert!(invalid_default_base("alpine:$V", Some("alpine:"), 3).is_some());
        assert!(invalid_default_base("alpine:$V", Some("alpine:3"), 3).is_none());
        assert!(invalid_default_base("$X", None, 3).is_none());
    }
}
