//! What a failed step says, BuildKit's way: the Dockerfile lines around the step, the
//! step's last output, the error, a hint when only one ID is mapped, and the command that
//! opens a shell in the state before the step. A plain build and both builds of
//! `--verify-reproducible` report a failed step alike, so the report is made here once.

use crate::Dockerfile;
use kiln_solver::SolveError;
use std::path::Path;

/// The report of `e`, a step of `dockerfile` that failed (lines end in `\n`).
pub fn failed_step(e: &SolveError, dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    if let Some(span) = e.span {
        let lines: Vec<&str> = dockerfile.text.lines().collect();
        out.push_str(&format!(
            "{}:{}\n--------------------\n",
            dockerfile.display, span.line
        ));
        let first = span.line.saturating_sub(2).max(1);
        let last = span.end_line.max(span.line).min(lines.len());
        for n in first..=last {
            let marker = if n >= span.line { ">>>" } else { "   " };
            let text = lines.get(n - 1).copied().unwrap_or("");
            out.push_str(&format!(" {n:>4} | {marker} {text}\n"));
        }
        out.push_str("--------------------\n");
    }
    if !e.output_tail.is_empty() {
        out.push_str("last output:\n");
        for line in &e.output_tail {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("ERROR: failed to solve: {}\n", e.message));
    // A RUN that switches users or chowns fails in its own words (EINVAL, "invalid user"):
    // say what kiln knows about the cause.
    if kiln_executor::userns::only_own_id_mapped() && !e.message.contains("is not mapped") {
        out.push_str(&format!(
            "hint: {}\n",
            kiln_executor::userns::single_id_hint()
        ));
    }
    out
}

/// The command that opens a shell in the state before the failed step, when the solver
/// kept one; `root` is the `--root` the user gave, so the command finds the same store.
pub fn debug_command(e: &SolveError, root: Option<&Path>) -> Option<String> {
    let id = e.debug_image.as_ref()?;
    let root = match root {
        Some(dir) => format!(" --root {}", shell_word(&dir.display().to_string())),
        None => String::new(),
    };
    Some(format!("to debug: kiln{root} run --rm -it {id} sh"))
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_words_a_shell_would_split_are_quoted() {
        assert_eq!(shell_word("/tmp/store"), "/tmp/store");
        assert_eq!(shell_word("/tmp/my store"), "'/tmp/my store'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
