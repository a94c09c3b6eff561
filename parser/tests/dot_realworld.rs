//! DOT for a large real multi-stage Dockerfile stays well-formed.

use kiln_parser::*;

#[test]
fn dot_of_moby_dockerfile_has_one_cluster_per_reachable_stage() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/conformance/realworld/files/moby__moby__Dockerfile"
    );
    let src = std::fs::read_to_string(path).unwrap();
    let g = lower(
        &parse(&src).unwrap(),
        &LowerOptions::default(),
        &EmptyResolver,
    )
    .unwrap();
    let dot = to_dot(&g);
    assert_eq!(dot.matches("subgraph cluster_").count(), g.stages.len());
    assert!(g.stages.len() > 5);
    // Every statement line ends like DOT statements do.
    for line in dot.lines().skip(1) {
        let t = line.trim();
        assert!(
            t.ends_with(';') || t.ends_with('{') || t == "}",
            "odd line {line:?}"
        );
    }
    for (i, s) in g.stages.iter().enumerate() {
        for dep in s.dependencies() {
            assert!(dep < i, "dependency {dep} of stage {i} is not earlier");
        }
    }
}
