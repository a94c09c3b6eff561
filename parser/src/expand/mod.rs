//! Word expansion with BuildKit's rules (`frontend/dockerfile/shell/lex.go`).
//!
//! Owns `$v`, `${v}`, the `${v:-w}` family of modifiers, quote and escape processing and
//! the quote-aware word splitting used for ENV/ARG/LABEL/EXPOSE. The behaviour (including
//! its odd corners, such as `""` producing no word) follows BuildKit so that
//! `envVarTest` and `wordsTest` pass byte for byte.
//!
//! Split by what each part knows: [`lexer`] (the options and entry points), [`word`] (the
//! character-level walk), [`pattern`] (the `#`/`%` trim patterns), [`env`] (the
//! variables) and [`limits`] (the bounds a hostile word meets).

mod env;
mod lexer;
mod limits;
mod pattern;
mod word;

pub use env::{Env, EnvList};
pub use lexer::{ExpandError, Lexer, expand, expand_words};
pub use limits::{MAX_EXPANDED_BYTES, MAX_NESTING};

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("A".into(), "abcabc".into()), ("E".into(), String::new())]
    }

    #[test]
    fn modifiers_follow_bash() {
        let e = env();
        let x = |w: &str| expand(w, &e, '\\').unwrap();
        assert_eq!(x("${A#*b}"), "cabc");
        assert_eq!(x("${A##*b}"), "c");
        assert_eq!(x("${A%b*}"), "abca");
        assert_eq!(x("${A%%b*}"), "a");
        assert_eq!(x("${A/b/X}"), "aXcabc");
        assert_eq!(x("${A//b/X}"), "aXcaXc");
        assert_eq!(x("${E:-d}"), "d");
        assert_eq!(x("${E-d}"), "");
        assert_eq!(x("${A:+y}"), "y");
        assert_eq!(x("${U+y}"), "");
    }

    #[test]
    fn colon_with_trim_modifiers_is_rejected() {
        let e = env();
        let err = expand("${A:#a}", &e, '\\').unwrap_err();
        assert_eq!(err.reason, "unsupported modifier (:#) in substitution");
        assert!(expand("${A:%c}", &e, '\\').is_err());
    }

    #[test]
    fn required_variable_errors_name_the_variable() {
        let e = env();
        let err = expand("${U:?must be set}", &e, '\\').unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${U:?must be set}\": U: must be set"
        );
        let err = expand("${E:?}", &e, '\\').unwrap_err();
        assert_eq!(err.reason, "E: is not allowed to be empty");
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
        let e = env();
        let nested = |n: usize| format!("{}x{}", "${X:-".repeat(n), "}".repeat(n));
        assert_eq!(expand(&nested(MAX_NESTING), &e, '\\').unwrap(), "x");
        let err = expand(&nested(50_000), &e, '\\').unwrap_err();
        assert_eq!(
            err.reason,
            format!("more than {MAX_NESTING} nested ${{...}} substitutions")
        );
        // The message shows the start of the word, not all 300,000 characters of it.
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
        // Quotes inside substitutions nest through the same path.
        let quoted = format!("{}x{}", "\"${X:-".repeat(50_000), "}\"".repeat(50_000));
        assert!(expand(&quoted, &e, '\\').is_err());
    }

    #[test]
    fn results_beyond_the_size_limit_are_an_error() {
        // Doubling: each variable twice the one before, as ARG A1=${A0}${A0}... would.
        let mut env: Vec<(String, String)> = vec![("A0".into(), "x".repeat(8))];
        let mut failed_at = None;
        for i in 1..=24 {
            match expand(&format!("${{A{p}}}${{A{p}}}", p = i - 1), &env, '\\') {
                Ok(v) => env.push((format!("A{i}"), v)),
                Err(e) => {
                    assert_eq!(
                        e.reason,
                        format!("expansion exceeds {MAX_EXPANDED_BYTES} bytes")
                    );
                    failed_at = Some(i);
                    break;
                }
            }
        }
        // 8 << 17 is exactly 1 MiB: A17 fits, A18 does not.
        assert_eq!(failed_at, Some(18));
        // In double quotes and through a replacement the same bound holds.
        let e = vec![("B".into(), "y".repeat(1 << 19))];
        assert!(expand("\"$B$B$B\"", &e, '\\').is_err());
        assert!(expand("${B//y/zzz}", &e, '\\').is_err());
        assert_eq!(expand("${B//y/z}", &e, '\\').unwrap().len(), 1 << 19);
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let mut l = Lexer::new('\\');
        l.skip_unset_env = true;
        let e = env();
        assert_eq!(
            l.process_word("$U ${U} ${U:-x} $A", &e).unwrap(),
            "$U ${U} ${U:-x} abcabc"
        );
    }
}
