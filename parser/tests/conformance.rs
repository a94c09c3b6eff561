//! BuildKit conformance vectors and the real-world corpus (vendored in testdata/conformance).

use std::path::{Path, PathBuf};

use kiln_parser::expand::Lexer;
use kiln_parser::{EmptyResolver, LowerOptions, dump_ast, lower, parse, parse_syntax};

fn conformance() -> PathBuf {
    // Vendored into the repository (see testdata/conformance/*/README.md for sources and
    // licenses): a fresh clone runs these with nothing beside it.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/conformance")
}

fn sorted_dirs(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_buildkit_testfile_dumps_byte_for_byte() {
    let dir = conformance().join("buildkit/parser/testfiles");
    let mut failures = Vec::new();
    let cases = sorted_dirs(&dir);
    assert!(cases.len() >= 33);
    for case in &cases {
        let src = std::fs::read(case.join("Dockerfile")).unwrap();
        let src = String::from_utf8_lossy(&src);
        let expected = std::fs::read_to_string(case.join("result")).unwrap();
        match parse_syntax(&src) {
            Ok(ast) => {
                let got = dump_ast(&ast);
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse error {e}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_negative_testfile_is_rejected() {
    let dir = conformance().join("buildkit/parser/testfiles-negative");
    for case in sorted_dirs(&dir) {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        assert!(parse(&src).is_err(), "{} was accepted", case.display());
    }
}

fn shell_env() -> Vec<(String, String)> {
    vec![
        ("PWD".into(), "/home".into()),
        ("SHELL".into(), "bash".into()),
        ("KOREAN".into(), "한국어".into()),
        ("NULL".into(), String::new()),
    ]
}

#[test]
fn every_env_var_test_vector_passes() {
    let text = std::fs::read_to_string(conformance().join("buildkit/shell/envVarTest")).unwrap();
    let env = shell_env();
    let lex = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "bad vector line {line:?}");
        let (platform, input, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue;
        }
        count += 1;
        let got = lex.process_word(input, &env);
        let ok = match &got {
            Ok(v) => expected != "error" && v == expected,
            Err(_) => expected == "error",
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(count > 200);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_words_test_vector_passes() {
    let text = std::fs::read_to_string(conformance().join("buildkit/shell/wordsTest")).unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    let lex = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let (input, expected) = line.split_once('|').unwrap();
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        count += 1;
        let got = lex.process_words(input, &env);
        let ok = match &got {
            Ok(ws) => {
                expected != ["error"] && ws.iter().map(String::as_str).eq(expected.iter().copied())
            }
            Err(_) => expected == ["error"],
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(count >= 24);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Files that need a build arg to have a base image at all (`FROM $BASE` with no
/// default): BuildKit rejects them too without it, so the test supplies one.
const NEEDS_BUILD_ARGS: &[(&str, &str, &str)] = &[
    (
        "containerd__containerd__integration__images__volume-copy-up__Dockerfile",
        "BASE",
        "busybox",
    ),
    (
        "containers__buildah__tests__bud__multiarch__Dockerfile.fail-multistage",
        "SAFEIMAGE",
        "busybox",
    ),
];

/// Files that parse but that BuildKit itself cannot build, with the error it gives.
const BUILDKIT_FAILS_TOO: &[(&str, &str)] = &[(
    "containers__buildah__tests__conformance__testdata__Dockerfile.env",
    // `ENV name='a\'b'`: a backslash does not escape inside single quotes, so the
    // last quote is unterminated.
    "line 12: failed to process \"'a\\\\'b'\": unexpected end of statement while looking for matching single-quote",
)];

#[test]
fn every_realworld_dockerfile_parses_and_lowers() {
    let dir = conformance().join("realworld/files");
    let files = sorted_dirs(&dir);
    let mut failures = Vec::new();
    let mut lowered = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let src = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        let mut opts = LowerOptions::default();
        for (file, k, v) in NEEDS_BUILD_ARGS {
            if *file == name {
                opts.build_args.push((k.to_string(), v.to_string()));
            }
        }
        let df = match parse(&src) {
            Ok(df) => df,
            Err(e) => {
                failures.push(format!("{name}: parse: {e}"));
                continue;
            }
        };
        let result = lower(&df, &opts, &EmptyResolver).map_err(|e| e.to_string());
        let expected = BUILDKIT_FAILS_TOO.iter().find(|(f, _)| *f == name);
        match (result, expected) {
            (Ok(_), None) => lowered += 1,
            (Err(e), Some((_, want))) if e == *want => {}
            (Ok(_), Some(_)) => failures.push(format!("{name}: lowered but BuildKit fails")),
            (Err(e), _) => failures.push(format!("{name}: {e}")),
        }
    }
    assert_eq!(
        lowered + BUILDKIT_FAILS_TOO.len(),
        files.len(),
        "{failures:?}"
    );
    assert!(files.len() >= 539, "corpus has {} files", files.len());
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn nonstandard_realworld_files_are_rejected() {
    let dir = conformance().join("realworld/files-nonstandard");
    let mut accepted = Vec::new();
    for f in sorted_dirs(&dir) {
        let src = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        let ok = parse(&src)
            .ok()
            .and_then(|df| lower(&df, &LowerOptions::default(), &EmptyResolver).ok())
            .is_some();
        if ok {
            accepted.push(f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}
