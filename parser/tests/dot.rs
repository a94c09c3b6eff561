//! Graphviz output.

use kiln_parser::*;

#[test]
fn dot_has_clusters_nodes_and_dependency_edges() {
    let src = "FROM golang AS build\nRUN go build\nFROM scratch AS assets\nFROM alpine\nCOPY --from=build /app /app\nRUN --mount=type=bind,from=assets,target=/a true\n";
    let g = lower(
        &parse(src).unwrap(),
        &LowerOptions::default(),
        &EmptyResolver,
    )
    .unwrap();
    let dot = to_dot(&g);
    assert!(dot.starts_with("digraph build {\n"));
    assert!(dot.ends_with("}\n"));
    for needle in [
        "subgraph cluster_0 {",
        "label=\"build\";",
        "subgraph cluster_2 {",
        "label=\"stage-2 (target)\";",
        "s0_0 [label=\"RUN go build\"];",
        "s0_from -> s0_0;",
        "s0_0 -> s2_0 [style=dashed, label=\"--from\"];",
        "s1_from -> s2_1 [style=dashed, label=\"mount\"];",
        "img0 -> s0_from [style=bold, label=\"FROM\"];",
        "img0 [label=\"golang\", shape=cylinder];",
        "img1 [label=\"alpine\", shape=cylinder];",
    ] {
        assert!(dot.contains(needle), "missing {needle:?} in\n{dot}");
    }
    // Deterministic.
    assert_eq!(dot, to_dot(&g));
}
