//! Parse + lower a generated 10,000-instruction Dockerfile; prints the best of several
//! runs. Target: under 20 ms in release (`cargo bench -p kiln-parser --bench parse`).

use std::time::{Duration, Instant};

use kiln_parser::{EmptyResolver, LowerOptions, lower, parse};

/// A Dockerfile of `n` instructions: several stages, every common instruction, ARG/ENV
/// expansion, continuations, heredocs, mounts and cross-stage copies. `distinct` variable
/// names: ENV/ARG names cycle over that many (real files reuse a few dozen names; the
/// stress variant gives every ENV/ARG its own, so every RUN carries thousands of vars).
fn generate(n: usize, distinct: usize) -> String {
    let mut s =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\nARG VERSION=1.0\n");
    let mut count = 2;
    let mut stage = 0;
    while count < n {
        if count % 500 == 2 {
            if stage == 0 {
                s.push_str(&format!("FROM $BASE AS s{stage}\n"));
            } else {
                s.push_str(&format!("FROM s{} AS s{stage}\n", stage - 1));
            }
            s.push_str("ARG VERSION\n");
            stage += 1;
            count += 2;
            continue;
        }
        let i = count;
        let line = match i % 10 {
            0 => format!("RUN echo step {i} ${{VERSION}} && \\\n    make -j2 target-{i}\n"),
            1 => format!(
                "ENV VAR_{}=\"value ${{VERSION}}-{i}\" OTHER_{}=x\n",
                i % distinct,
                i % distinct
            ),
            2 => format!("COPY --chown=1000:1000 src/{i} /app/{i}/\n"),
            3 => format!("WORKDIR /work/{}\n", i % 7),
            4 => format!("LABEL org.example.step{i}=\"{i}\"\n"),
            5 => format!(
                "RUN --mount=type=cache,target=/root/.cache/{} --mount=type=bind,target=/src \\\n    build {i}\n",
                i % 3
            ),
            6 => format!("ARG A_{}=${{VERSION:-0}}\n", i % distinct),
            7 => format!("EXPOSE {}\n", 8000 + i % 100),
            8 => "RUN <<EOF\nset -e\necho heredoc\nEOF\n".to_string(),
            _ => format!("USER user{}\n", i % 5),
        };
        s.push_str(&line);
        count += 1;
    }
    s.push_str("CMD [\"/app/run\"]\n");
    s
}

fn measure(label: &str, src: &str) {
    let instructions = match parse(src) {
        Ok(df) => {
            df.meta_args.len()
                + df.stages
                    .iter()
                    .map(|s| 1 + s.instructions.len())
                    .sum::<usize>()
        }
        Err(e) => panic!("generated Dockerfile does not parse: {e}"),
    };
    let mut best_syntax = Duration::MAX;
    for _ in 0..15 {
        let start = Instant::now();
        let ast = kiln_parser::parse_syntax(src).expect("parse_syntax");
        best_syntax = best_syntax.min(start.elapsed());
        drop(ast);
    }
    let mut best = Duration::MAX;
    let mut best_parse = Duration::MAX;
    let mut steps = 0;
    for _ in 0..15 {
        let start = Instant::now();
        let df = parse(src).expect("parse");
        let parsed = start.elapsed();
        let graph = lower(&df, &LowerOptions::default(), &EmptyResolver).expect("lower");
        let elapsed = start.elapsed();
        steps = graph.stages.iter().map(|s| s.steps.len()).sum::<usize>();
        best = best.min(elapsed);
        best_parse = best_parse.min(parsed);
    }
    println!(
        "{label}: parse+lower of {instructions} instructions ({} bytes, {steps} steps): best {:.2} ms (parse {:.2} ms, of which syntax {:.2} ms)",
        src.len(),
        best.as_secs_f64() * 1e3,
        best_parse.as_secs_f64() * 1e3,
        best_syntax.as_secs_f64() * 1e3
    );
}

fn main() {
    // `KILN_BENCH=typical` or `stress` runs one variant (for profiling).
    let only = std::env::var("KILN_BENCH").unwrap_or_default();
    if only.is_empty() || only == "typical" {
        measure("typical (10 ENV/ARG names)", &generate(10_000, 10));
    }
    if only.is_empty() || only == "stress" {
        measure(
            "stress (every ENV/ARG distinct)",
            &generate(10_000, usize::MAX),
        );
    }
}
