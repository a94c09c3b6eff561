//! Parser behaviour and error texts beyond the BuildKit vectors.

use kiln_parser::instructions::Command;
use kiln_parser::*;

fn perr(src: &str) -> ParseError {
    parse(src).unwrap_err()
}

#[test]
fn unknown_instruction_suggests_and_renders_a_caret() {
    let src = "FROM scratch\n\nFOO bar\n";
    let e = perr(src);
    assert_eq!(
        e.to_string(),
        "line 3: unknown instruction: FOO (did you mean FROM?)"
    );
    assert_eq!(
        e.render("Dockerfile", src),
        "Dockerfile:3:1: unknown instruction: FOO (did you mean FROM?)\n3 | FOO bar\n    ^\n"
    );
}

#[test]
fn flags_are_typed_and_unknown_ones_suggested() {
    let e = perr("FROM scratch\nCOPY --chwon=1 a b\n");
    assert_eq!((e.line, e.column), (2, 6));
    assert_eq!(e.message, "unknown flag: chwon (did you mean chown?)");
    assert_eq!(
        perr("FROM scratch\nCOPY --from a b\n").message,
        "missing a value on flag: from"
    );
    assert_eq!(
        perr("FROM scratch\nCOPY --link=maybe a b\n").message,
        "expecting boolean value for flag link, not: maybe"
    );
    assert_eq!(
        perr("FROM scratch\nCOPY --chown=1 --chown=2 a b\n").message,
        "duplicate flag specified: chown"
    );
    assert_eq!(
        perr("FROM scratch\nCMD --x=1 a\n").message,
        "unknown flag: x"
    );
    let df = parse("FROM scratch\nCOPY --exclude=a --exclude=b --link x y\n").unwrap();
    match &df.stages[0].instructions[0].command {
        Command::Copy(c) => {
            assert_eq!(c.exclude, ["a", "b"]);
            assert!(c.link);
        }
        _ => unreachable!(),
    }
}

#[test]
fn flag_spans_point_at_the_flag_on_continuation_lines() {
    let df = parse("FROM scratch\nRUN \\\n  --mount=type=cache,target=/c \\\n  true\n").unwrap();
    let ins = &df.stages[0].instructions[0];
    assert_eq!(
        (ins.span.line, ins.span.column, ins.span.end_line),
        (2, 1, 4)
    );
    assert_eq!((ins.flags[0].span.line, ins.flags[0].span.column), (3, 3));
}

#[test]
fn json_with_non_strings_is_an_error_but_invalid_json_is_shell_form() {
    let e = perr("FROM scratch\nCMD [\"a\", 1]\n");
    assert_eq!(
        e.message,
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    let df = parse("FROM scratch\nCMD ['a']\n").unwrap();
    match &df.stages[0].instructions[0].command {
        Command::Cmd(c) => {
            assert!(c.prepend_shell);
            assert_eq!(c.args, ["['a']"]);
        }
        _ => unreachable!(),
    }
}

#[test]
fn escape_directive_bom_and_crlf() {
    let src = "\u{FEFF}# escape=`\r\nFROM scratch\r\nRUN echo a `\r\n  b\r\n";
    let df = parse(src).unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(dump(&df), "(from \"scratch\")\n(run \"echo a   b\")\n");
    // Directives only count at the top.
    let df = parse("FROM scratch\n# escape=`\nRUN a \\\n b\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(
        perr("# escape=x\nFROM scratch\n").message,
        "invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(
        perr("# syntax=a\n# syntax=b\nFROM scratch\n").message,
        "only one syntax parser directive can be used"
    );
    let df = parse("# syntax=docker/dockerfile:1\n# check=skip=all\nFROM scratch\n").unwrap();
    assert_eq!(df.ast.directives.len(), 2);
}

#[test]
fn heredocs_need_their_terminator() {
    let e = perr("FROM scratch\nRUN <<EOF\necho\n");
    assert_eq!(e.message, "unterminated heredoc");
    assert_eq!(e.line, 2);
    assert_eq!(
        perr("FROM scratch\nCOPY a <<EOF\nx\nEOF\n").message,
        "COPY cannot accept a heredoc as a destination"
    );
}

#[test]
fn structural_errors_have_buildkit_texts() {
    assert_eq!(perr("RUN x\n").message, "no build stage in current context");
    assert_eq!(
        perr("FROM a b\n").message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        perr("FROM a AS 1x\n").message,
        "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        perr("FROM a\nONBUILD ONBUILD RUN x\n").message,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        perr("FROM a\nONBUILD FROM b\n").message,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        perr("FROM a\nSHELL sh -c\n").message,
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        perr("FROM a\nHEALTHCHECK --interval=1us CMD x\n").message,
        "Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(
        perr("FROM a\nHEALTHCHECK FOO x\n").message,
        "Unknown type \"FOO\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        perr("FROM a\nCOPY x\n").message,
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        perr("FROM a\nENV PATH\n").message,
        "ENV must have two arguments"
    );
    assert_eq!(perr("").message, "file with no instructions");
}

#[test]
fn flag_spans_count_characters_on_long_lines_and_across_continuations() {
    // Non-ASCII values before later flags: columns are characters, not bytes, whether
    // counted from the line start or on from the previous flag (kiln counts on, so a line
    // of many flags stays linear).
    let df = parse(
        "FROM scratch\nCOPY --chown=ü --chmod=755 --exclude=é \\\n   --link --exclude=ß a b\n",
    )
    .unwrap();
    let ins = &df.stages[0].instructions[0];
    let at: Vec<(usize, usize)> = ins
        .flags
        .iter()
        .map(|f| (f.span.line, f.span.column))
        .collect();
    assert_eq!(at, [(2, 6), (2, 16), (2, 28), (3, 4), (3, 11)]);
    // Many flags on one line still get exact columns.
    let line: String = (0..2000).map(|_| "--exclude=x ").collect();
    let df = parse(&format!("FROM scratch\nCOPY {line}a b\n")).unwrap();
    let ins = &df.stages[0].instructions[0];
    assert_eq!(ins.flags.len(), 2000);
    assert_eq!(ins.flags[1999].span.column, 6 + 12 * 1999);
}
