//! Named build contexts while lowering (`--build-context`, BuildKit's `NamedContext`): the
//! names they are looked up by, what they replace (a stage, an image in FROM, `COPY
//! --from` and `RUN --mount from=`), and the errors.

use kiln_parser::*;

fn with(contexts: &[(&str, NamedContext)]) -> LowerOptions {
    LowerOptions {
        named_contexts: contexts
            .iter()
            .map(|(k, c)| (k.to_string(), c.clone()))
            .collect(),
        ..LowerOptions::default()
    }
}

fn graph(src: &str, opts: LowerOptions) -> BuildGraph {
    lower(&parse(src).unwrap(), &opts, &EmptyResolver).unwrap()
}

fn lower_err(src: &str, opts: LowerOptions) -> String {
    lower(&parse(src).unwrap(), &opts, &EmptyResolver)
        .unwrap_err()
        .to_string()
}

fn copy_from(step: &Step) -> &Source {
    match &step.op {
        Op::Copy(c) => &c.from,
        other => panic!("not a COPY: {other:?}"),
    }
}

#[test]
fn names_are_compared_in_buildkits_familiar_form() {
    let d = format!("sha256:{}", "a".repeat(64));
    for (name, familiar) in [
        ("alpine", "alpine"),
        ("alpine:latest", "alpine"),
        ("docker.io/library/alpine:latest", "alpine"),
        ("index.docker.io/library/alpine", "alpine"),
        ("library/alpine", "alpine"),
        ("docker.io/alpine:3.19", "alpine:3.19"),
        ("docker.io/team/app", "team/app"),
        ("registry.local:5000/app:latest", "registry.local:5000/app"),
        ("localhost/app:1", "localhost/app:1"),
        ("builder", "builder"),
    ] {
        assert_eq!(context_name(name).as_deref(), Some(familiar), "{name}");
    }
    assert_eq!(
        context_name(&format!("alpine@{d}")),
        Some(format!("alpine@{d}"))
    );
    assert_eq!(context_name("Alpine"), None);
    assert_eq!(context_name("a..b"), None);
    assert_eq!(context_name("app:-x"), None);
}

#[test]
fn a_directory_replaces_a_stage_wherever_it_is_read() {
    let src = "FROM scratch AS gen\nCOPY x /x\nFROM scratch\nCOPY --from=gen / /a\nCOPY --from=0 / /b\nRUN --mount=from=gen,target=/m true\n";
    let g = graph(src, with(&[("gen", NamedContext::Files)]));
    // The replaced stage is never built.
    assert_eq!(g.stages.len(), 1);
    let steps = &g.stages[0].steps;
    assert_eq!(copy_from(&steps[0]), &Source::Named("gen".into()));
    assert_eq!(copy_from(&steps[1]), &Source::Named("gen".into()));
    match &steps[2].op {
        Op::Run(r) => assert_eq!(r.mounts[0].from, Some(Source::Named("gen".into()))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_context_replaces_an_image_name_as_buildkit_normalizes_it() {
    let src = "FROM docker.io/library/alpine:latest\nCOPY --from=assets a /a\nCOPY --from=alpine:3.19 / /old\n";
    let g = graph(
        src,
        with(&[
            ("alpine", NamedContext::Image("busybox:1".into())),
            ("assets", NamedContext::Files),
        ]),
    );
    assert_eq!(g.stages[0].base, Base::Image("busybox:1".into()));
    assert_eq!(
        copy_from(&g.stages[0].steps[0]),
        &Source::Named("assets".into())
    );
    // `alpine:3.19` is another name than `alpine`.
    assert_eq!(
        copy_from(&g.stages[0].steps[1]),
        &Source::Image("alpine:3.19".into())
    );
}

#[test]
fn a_held_image_gives_its_config_to_the_stage_built_on_it() {
    let held = BaseImage {
        env: vec![("FROM_LAYOUT".into(), "1".into())],
        working_dir: "/srv".into(),
        ..BaseImage::default()
    };
    let src = "FROM scratch AS base\nFROM base\nRUN pwd\n";
    let g = graph(src, with(&[("base", NamedContext::Held(held))]));
    assert_eq!(g.stages.len(), 1);
    assert_eq!(g.stages[0].base, Base::Named("base".into()));
    match &g.stages[0].steps[0].op {
        Op::Run(r) => {
            assert_eq!(r.workdir, "/srv");
            assert!(r.env.contains(&("FROM_LAYOUT".into(), "1".into())));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unused_names_change_nothing_and_scratch_is_never_replaced() {
    let src = "FROM scratch AS a\nCOPY x /x\nFROM a\nCOPY --from=a / /y\n";
    let plain = graph(src, LowerOptions::default());
    let named = graph(
        src,
        with(&[
            ("unused", NamedContext::Files),
            ("scratch", NamedContext::Image("busybox".into())),
        ]),
    );
    assert_eq!(plain, named);
}

#[test]
fn a_directory_cannot_be_a_base_nor_the_target() {
    let err = lower_err("FROM dir\n", with(&[("dir", NamedContext::Files)]));
    assert!(
        err.contains("the build context dir is a directory"),
        "{err}"
    );
    let err = lower_err(
        "FROM scratch AS out\nCOPY x /x\n",
        with(&[("out", NamedContext::Files)]),
    );
    assert!(err.contains("the target stage out is replaced"), "{err}");
}
