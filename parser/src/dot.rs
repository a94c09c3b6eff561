//! Graphviz DOT for a [`BuildGraph`]: one cluster per stage, one node per step, edges
//! for the step order and for every cross-stage dependency (base, `--from`, `from=`).

use std::fmt::Write;

use crate::graph::{Base, BuildGraph, Op, Source};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn label(s: &str) -> String {
    let one_line: String = s.lines().next().unwrap_or_default().to_string();
    let short: String = one_line.chars().take(60).collect();
    if short.len() < s.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// Renders the graph as a `digraph`; deterministic for a given graph.
pub fn to_dot(graph: &BuildGraph) -> String {
    let mut out = String::from(
        "digraph build {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    let mut images: Vec<String> = Vec::new();
    let last_node = |si: usize| -> String {
        let n = graph.stages[si].steps.len();
        if n == 0 {
            format!("s{si}_from")
        } else {
            format!("s{si}_{}", n - 1)
        }
    };
    for (si, stage) in graph.stages.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{si} {{");
        let target = if si == graph.target { " (target)" } else { "" };
        let _ = writeln!(
            out,
            "    label=\"{}{}\";",
            esc(&stage.display_name()),
            target
        );
        let _ = writeln!(
            out,
            "    s{si}_from [label=\"{}\", shape=oval];",
            esc(&label(&stage.source))
        );
        for (i, step) in stage.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "    s{si}_{i} [label=\"{}\"];",
                esc(&label(&step.source))
            );
        }
        let _ = writeln!(out, "  }}");
        let mut prev = format!("s{si}_from");
        for i in 0..stage.steps.len() {
            let _ = writeln!(out, "  {prev} -> s{si}_{i};");
            prev = format!("s{si}_{i}");
        }
        match &stage.base {
            Base::Stage(b) => {
                let _ = writeln!(
                    out,
                    "  {} -> s{si}_from [style=bold, label=\"FROM\"];",
                    last_node(*b)
                );
            }
            Base::Image(r) => {
                if !images.contains(r) {
                    images.push(r.clone());
                }
                let id = images.iter().position(|x| x == r).unwrap_or(0);
                let _ = writeln!(out, "  img{id} -> s{si}_from [style=bold, label=\"FROM\"];");
            }
            Base::Scratch => {}
            Base::Named(key) => {
                let r = format!("context {key}");
                if !images.contains(&r) {
                    images.push(r.clone());
                }
                let id = images.iter().position(|x| *x == r).unwrap_or(0);
                let _ = writeln!(out, "  img{id} -> s{si}_from [style=bold, label=\"FROM\"];");
            }
        }
        for (i, step) in stage.steps.iter().enumerate() {
            let mut srcs: Vec<(&Source, &str)> = Vec::new();
            match &step.op {
                Op::Copy(c) => srcs.push((&c.from, "--from")),
                Op::Run(r) => {
                    for m in &r.mounts {
                        if let Some(f) = &m.from {
                            srcs.push((f, "mount"));
                        }
                    }
                }
                _ => {}
            }
            for (src, what) in srcs {
                match src {
                    Source::Stage(b) => {
                        let _ = writeln!(
                            out,
                            "  {} -> s{si}_{i} [style=dashed, label=\"{what}\"];",
                            last_node(*b)
                        );
                    }
                    Source::Image(r) => {
                        if !images.contains(r) {
                            images.push(r.clone());
                        }
                        let id = images.iter().position(|x| x == r).unwrap_or(0);
                        let _ = writeln!(
                            out,
                            "  img{id} -> s{si}_{i} [style=dashed, label=\"{what}\"];"
                        );
                    }
                    Source::Named(key) => {
                        let r = format!("context {key}");
                        if !images.contains(&r) {
                            images.push(r.clone());
                        }
                        let id = images.iter().position(|x| *x == r).unwrap_or(0);
                        let _ = writeln!(
                            out,
                            "  img{id} -> s{si}_{i} [style=dashed, label=\"{what}\"];"
                        );
                    }
                    Source::Context => {}
                }
            }
        }
    }
    for (id, r) in images.iter().enumerate() {
        let _ = writeln!(out, "  img{id} [label=\"{}\", shape=cylinder];", esc(r));
    }
    out.push_str("}\n");
    out
}
