//! Hostile Dockerfiles that once overflowed the stack or grew without bound: nested
//! substitutions, doubling ARGs, environments copied into every step, chained ONBUILDs.
//! Each must end in an error that names the line, in bounded time and memory.

use kiln_parser::*;

/// Parses and lowers `src`; the rendered error (parse or lowering).
fn lower_err(src: &str) -> String {
    let df = match parse(src) {
        Ok(df) => df,
        Err(e) => return e.render("Dockerfile", src),
    };
    match lower(&df, &LowerOptions::default(), &EmptyResolver) {
        Ok(_) => panic!("lowering succeeded"),
        Err(e) => e.render("Dockerfile", src),
    }
}

#[test]
fn deeply_nested_substitutions_fail_on_their_line() {
    let n = 50_000;
    let word = format!("{}x{}", "${X:-".repeat(n), "}".repeat(n));
    let src = format!("FROM scratch\nARG X\nENV A={word}\n");
    let err = lower_err(&src);
    assert!(err.starts_with("Dockerfile:3:"), "{err:.300}");
    assert!(err.contains("nested ${...} substitutions"), "{err:.300}");
    // The word and the line are shown clipped, not all 300,000 characters.
    assert!(err.len() < 2_000, "error is {} bytes", err.len());
}

#[test]
fn doubling_args_stop_at_the_size_limit_on_their_line() {
    let mut src = String::from("FROM scratch\nARG A0=xxxxxxxx\n");
    for i in 1..=24 {
        src.push_str(&format!("ARG A{i}=${{A{p}}}${{A{p}}}\n", p = i - 1));
    }
    let err = lower_err(&src);
    // A17 is 1 MiB exactly; A18 (line 20) is the first over the limit.
    assert!(err.starts_with("Dockerfile:20:"), "{err:.300}");
    assert!(
        err.contains("expansion exceeds 1048576 bytes"),
        "{err:.300}"
    );
}

/// `ARG A0..A17`: a 1 MiB value (the largest one word may expand to) in A17.
fn one_mib_arg() -> String {
    let mut src = String::from("FROM scratch\nARG A0=xxxxxxxx\n");
    for i in 1..=17 {
        src.push_str(&format!("ARG A{i}=${{A{p}}}${{A{p}}}\n", p = i - 1));
    }
    src
}

#[test]
fn many_copies_of_a_large_value_exceed_the_environment_limit() {
    let mut src = one_mib_arg();
    for i in 0..16 {
        src.push_str(&format!("ENV B{i}=$A17\n"));
    }
    let err = lower_err(&src);
    assert!(
        err.contains("the environment (ENV and ARG values) exceeds"),
        "{err:.300}"
    );
    // A0..A17 hold just under 2 MiB, B0 (line 20) brings it under 3 MiB, and B1 (line 21)
    // a few bytes over 4 MiB.
    assert!(err.starts_with("Dockerfile:21:"), "{err:.300}");
}

#[test]
fn a_large_environment_times_many_steps_is_bounded() {
    let mut src = one_mib_arg();
    src.push_str("ENV B=$A17\n");
    for _ in 0..200 {
        src.push_str("RUN true\n");
    }
    let err = lower_err(&src);
    assert!(err.contains("bytes of environment in all"), "{err:.300}");
}

#[test]
fn chained_onbuild_is_refused_at_any_length() {
    let err = lower_err("FROM scratch\nONBUILD ONBUILD RUN true\n");
    assert!(err.contains("Chaining ONBUILD"), "{err}");
    let src = format!("FROM scratch\n{}RUN true\n", "ONBUILD ".repeat(50_000));
    let err = lower_err(&src);
    assert!(err.starts_with("Dockerfile:2:"), "{err:.300}");
    assert!(err.len() < 2_000, "error is {} bytes", err.len());
}
