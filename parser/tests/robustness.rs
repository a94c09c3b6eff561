//! No input makes parsing or lowering panic.

use kiln_parser::*;
use proptest::prelude::*;

fn parse_and_lower(src: &str) {
    let _ = parse_syntax(src).map(|ast| dump_ast(&ast));
    if let Ok(df) = parse(src) {
        let _ = dump(&df);
        if let Ok(g) = lower(&df, &LowerOptions::default(), &EmptyResolver) {
            let _ = to_dot(&g);
        }
    }
}

/// Fragments that reach the interesting corners: flags, heredocs, quotes, expansions.
fn dockerfile_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("FROM ".to_string()),
        Just("FROM scratch AS a\n".to_string()),
        Just("RUN ".to_string()),
        Just("COPY ".to_string()),
        Just("ADD ".to_string()),
        Just("ENV ".to_string()),
        Just("ARG ".to_string()),
        Just("ONBUILD ".to_string()),
        Just("HEALTHCHECK ".to_string()),
        Just("--mount=".to_string()),
        Just("--from=".to_string()),
        Just("<<EOF".to_string()),
        Just("<<-'E'".to_string()),
        Just("EOF".to_string()),
        Just("${a:-b}".to_string()),
        Just("${x#*}".to_string()),
        Just("${".to_string()),
        Just("\\\n".to_string()),
        Just("`\n".to_string()),
        Just("# escape=`\n".to_string()),
        Just("[\"a\", 1]".to_string()),
        Just("[\"a\"]".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("=".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\t".to_string()),
        "[a-z0-9/.:$-]{0,6}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        parse_and_lower(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dockerfile_like_text_never_panics(src in dockerfile_like()) {
        parse_and_lower(&src);
    }

    #[test]
    fn expansion_never_panics(word in "[a-z${}:#%/?+\\\\'\"*-]{0,30}") {
        let env = vec![("a".to_string(), "abc".to_string())];
        let _ = expand(&word, &env, '\\');
        let _ = expand_words(&word, &env, '`');
    }
}
