//! Lowering semantics: ARG/ENV scoping, build args, targets, stage references, ONBUILD,
//! history texts and error messages.

use kiln_parser::*;

fn graph(src: &str) -> BuildGraph {
    graph_with(src, LowerOptions::default())
}

fn graph_with(src: &str, opts: LowerOptions) -> BuildGraph {
    let df = parse(src).unwrap();
    lower(&df, &opts, &EmptyResolver).unwrap()
}

fn lower_err(src: &str, opts: LowerOptions) -> String {
    let df = parse(src).unwrap();
    lower(&df, &opts, &EmptyResolver).unwrap_err().to_string()
}

fn args(pairs: &[(&str, &str)]) -> LowerOptions {
    LowerOptions {
        build_args: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..LowerOptions::default()
    }
}

fn run(step: &Step) -> &RunOp {
    match &step.op {
        Op::Run(r) => r,
        other => panic!("not a RUN: {other:?}"),
    }
}

fn created(g: &BuildGraph) -> Vec<String> {
    g.stages[g.target]
        .steps
        .iter()
        .map(|s| s.created_by.clone())
        .collect()
}

#[test]
fn global_args_are_visible_to_from_only_unless_redeclared() {
    let g = graph("ARG IMG=alpine\nARG V=1\nFROM $IMG:3\nRUN echo $V\nARG V\nRUN echo $V\n");
    assert_eq!(g.stages[0].base, Base::Image("alpine:3".into()));
    let first = run(&g.stages[0].steps[0]);
    assert!(!first.env.iter().any(|(k, _)| k == "V"));
    assert_eq!(
        g.stages[0].steps[0].created_by,
        "RUN /bin/sh -c echo $V # buildkit"
    );
    let second = run(&g.stages[0].steps[2]);
    assert!(second.env.contains(&("V".into(), "1".into())));
    assert_eq!(
        g.stages[0].steps[2].created_by,
        "RUN |1 V=1 /bin/sh -c echo $V # buildkit"
    );
}

#[test]
fn build_args_override_defaults_literally() {
    let src = "FROM scratch\nARG A=default\nARG B=$A-x\nENV C=$B\n";
    let g = graph_with(src, args(&[("A", "$HOME")]));
    let steps = &g.stages[0].steps;
    assert_eq!(
        steps[0].op,
        Op::Arg(vec![("A".into(), Some("$HOME".into()))])
    );
    assert_eq!(
        steps[1].op,
        Op::Arg(vec![("B".into(), Some("$HOME-x".into()))])
    );
    assert_eq!(steps[2].op, Op::Env(vec![("C".into(), "$HOME-x".into())]));
    // Undeclared build args are invisible.
    let g = graph_with(
        "FROM scratch\nENV X=${NOPE:-unset}\n",
        args(&[("NOPE", "1")]),
    );
    assert_eq!(
        g.stages[0].steps[0].op,
        Op::Env(vec![("X".into(), "unset".into())])
    );
}

#[test]
fn env_values_see_the_environment_from_before_the_instruction() {
    let g = graph("FROM scratch\nENV A=1\nENV A=2 B=$A\nENV C=$A\n");
    let steps = &g.stages[0].steps;
    assert_eq!(
        steps[1].op,
        Op::Env(vec![("A".into(), "2".into()), ("B".into(), "1".into())])
    );
    assert_eq!(steps[2].op, Op::Env(vec![("C".into(), "2".into())]));
    assert_eq!(steps[1].created_by, "ENV A=2 B=1");
}

#[test]
fn env_and_args_are_inherited_by_child_stages_only() {
    let src = "FROM scratch AS base\nENV E=1\nARG A=2\nFROM base AS child\nRUN env\nFROM scratch\nCOPY --from=child /x /y\nRUN env\n";
    let g = graph(src);
    assert_eq!(g.stages.len(), 3);
    let child_run = run(&g.stages[1].steps[0]);
    assert!(child_run.env.contains(&("E".into(), "1".into())));
    assert!(child_run.env.contains(&("A".into(), "2".into())));
    assert_eq!(
        g.stages[1].steps[0].created_by,
        "RUN |1 A=2 /bin/sh -c env # buildkit"
    );
    let last = run(&g.stages[2].steps[1]);
    assert!(!last.env.iter().any(|(k, _)| k == "E" || k == "A"));
    assert_eq!(last.env[0].0, "PATH");
}

#[test]
fn platform_args_describe_the_host_when_redeclared() {
    let g = graph("FROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nRUN x\n");
    let host = kiln_parser::lower::host_platform();
    let env = &run(&g.stages[0].steps[2]).env;
    assert!(env.contains(&("TARGETARCH".into(), host.architecture.clone())));
    assert!(
        env.iter()
            .any(|(k, v)| k == "TARGETPLATFORM" && v.starts_with("linux/"))
    );
    let g = graph("ARG BUILDPLATFORM\nFROM --platform=$BUILDPLATFORM scratch\n");
    assert_eq!(
        g.stages[0].platform.as_deref(),
        Some(format!("linux/{}", host.architecture).as_str())
    );
}

#[test]
fn target_selects_a_stage_and_prunes_the_rest() {
    let src = "FROM scratch AS a\nRUN a\nFROM scratch AS b\nRUN b\nFROM a AS c\nCOPY --from=b /x /x\nFROM scratch AS d\n";
    let g = graph_with(
        src,
        LowerOptions {
            target: Some("C".into()),
            ..LowerOptions::default()
        },
    );
    let names: Vec<_> = g.stages.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(g.target, 2);
    assert_eq!(g.stages[2].base, Base::Stage(0));
    assert_eq!(g.stages[2].dependencies(), vec![0, 1]);
    // Pruned indexes are renumbered.
    let g = graph_with(
        src,
        LowerOptions {
            target: Some("b".into()),
            ..LowerOptions::default()
        },
    );
    assert_eq!(g.stages.len(), 1);
    assert_eq!(g.stages[0].position, 1);
    // Default target is the last stage, which needs nothing else.
    assert_eq!(graph(src).stages.len(), 1);
}

#[test]
fn unknown_target_lists_the_stages() {
    let src = "FROM scratch AS build\nFROM scratch AS final\n";
    let err = lower_err(
        src,
        LowerOptions {
            target: Some("buld".into()),
            ..LowerOptions::default()
        },
    );
    assert_eq!(
        err,
        "target stage \"buld\" could not be found (did you mean build?) (stages: build, final)"
    );
}

#[test]
fn copy_from_index_stage_and_image() {
    let src = "FROM scratch AS one\nFROM scratch\nCOPY --from=0 /a /a\nCOPY --from=ONE /b /b\nCOPY --from=busybox:1.36 /bin/sh /sh\n";
    let g = graph(src);
    let froms: Vec<Source> = g.stages[1]
        .steps
        .iter()
        .map(|s| match &s.op {
            Op::Copy(c) => c.from.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        froms,
        [
            Source::Stage(0),
            Source::Stage(0),
            Source::Image("busybox:1.36".into())
        ]
    );
}

#[test]
fn references_to_later_or_own_stages_are_errors() {
    let e = lower_err(
        "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n",
        LowerOptions::default(),
    );
    assert_eq!(
        e,
        "line 2: cannot copy from stage \"b\", it needs to be defined before current stage \"a\""
    );
    let e = lower_err(
        "FROM scratch AS a\nCOPY --from=a /x /x\n",
        LowerOptions::default(),
    );
    assert_eq!(
        e,
        "line 2: circular dependency detected on stage: a (copy refers to its own stage)"
    );
    let e = lower_err(
        "FROM later\nFROM scratch AS later\nCOPY --from=0 / /\n",
        LowerOptions::default(),
    );
    assert_eq!(
        e,
        "line 1: stage \"later\" needs to be defined before it is used as a base (FROM later)"
    );
    let e = lower_err(
        "FROM scratch\nCOPY --from=7 /x /x\n",
        LowerOptions::default(),
    );
    assert_eq!(e, "line 2: invalid stage index 7");
    let e = lower_err(
        "FROM scratch\nCOPY --from=$X /x /x\n",
        LowerOptions::default(),
    );
    assert!(
        e.contains("variable expansion is not supported for --from"),
        "{e}"
    );
}

#[test]
fn run_mount_from_is_a_dependency() {
    let src = "FROM scratch AS deps\nFROM scratch\nRUN --mount=type=cache,target=/c,from=deps,sharing=locked --mount=type=bind,source=/s,target=rel x\n";
    let g = graph(src);
    let r = run(&g.stages[1].steps[0]);
    assert_eq!(g.stages[1].dependencies(), vec![0]);
    assert_eq!(
        r.mounts[0].kind,
        MountKind::Cache {
            id: "/c".into(),
            sharing: CacheSharing::Locked
        }
    );
    assert_eq!(r.mounts[0].from, Some(Source::Stage(0)));
    assert_eq!(r.mounts[1].target, "/rel");
    assert!(r.mounts[1].readonly);
}

#[test]
fn run_mount_errors_name_the_key() {
    let e = lower_err(
        "FROM scratch\nRUN --mount=type=secret,id=x,from=y true\n",
        LowerOptions::default(),
    );
    assert_eq!(e, "line 2: secret mount should not have a from");
    let e = lower_err(
        "FROM scratch\nRUN --mount=type=cach,target=/x true\n",
        LowerOptions::default(),
    );
    assert_eq!(
        e,
        "line 2: unsupported mount type \"cach\" (did you mean cache?)"
    );
}

#[test]
fn onbuild_triggers_of_a_base_stage_run_first() {
    let src = "FROM scratch AS base\nONBUILD RUN echo trigger\nONBUILD COPY --from=ctx /a /a\nFROM scratch AS ctx\nFROM base\nRUN echo own\n";
    // `ctx` is defined after `base` but before the child: the trigger may use it.
    let g = graph(src);
    let child = &g.stages[g.target];
    assert_eq!(child.steps[0].source, "RUN echo trigger");
    assert_eq!(child.steps[0].span.line, 5);
    assert!(matches!(&child.steps[1].op, Op::Copy(c) if c.from == Source::Stage(1)));
    assert_eq!(child.steps[2].source, "RUN echo own");
    // The base stage records its triggers without running them.
    assert_eq!(
        g.stages[0].steps[0].op,
        Op::OnBuild("RUN echo trigger".into())
    );
    assert_eq!(g.stages[0].steps[0].created_by, "");
}

struct OneImage;
impl BaseResolver for OneImage {
    fn resolve(&self, reference: &str) -> Result<BaseImage, String> {
        if reference != "onbuild:1" {
            return Err(format!("no such image {reference}"));
        }
        Ok(BaseImage {
            env: vec![
                ("PATH".into(), "/opt/bin".into()),
                ("LANG".into(), "C".into()),
            ],
            working_dir: "/app".into(),
            user: "nobody".into(),
            shell: vec!["/bin/bash".into(), "-c".into()],
            on_build: vec!["RUN make".into()],
            platform: None,
        })
    }
}

#[test]
fn base_image_config_and_onbuild_apply() {
    let df = parse("FROM onbuild:1\nRUN echo $LANG\nWORKDIR sub\nCOPY a b/\n").unwrap();
    let g = lower(&df, &LowerOptions::default(), &OneImage).unwrap();
    let steps = &g.stages[0].steps;
    let trig = run(&steps[0]);
    assert_eq!(trig.argv, ["/bin/bash", "-c", "make"]);
    assert_eq!(trig.workdir, "/app");
    assert_eq!(trig.user, "nobody");
    assert_eq!(
        trig.env,
        vec![
            ("PATH".into(), "/opt/bin".into()),
            ("LANG".into(), "C".into())
        ]
    );
    assert_eq!(
        steps[2].op,
        Op::Workdir(WorkdirOp {
            path: "/app/sub".into(),
            user: "nobody".into()
        })
    );
    match &steps[3].op {
        Op::Copy(c) => {
            assert_eq!(c.dest, "b/");
            assert_eq!(c.workdir, "/app/sub");
        }
        _ => unreachable!(),
    }
    let err = lower(
        &parse("FROM missing\n").unwrap(),
        &LowerOptions::default(),
        &OneImage,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1: failed to resolve base image missing: no such image missing"
    );
}

#[test]
fn history_texts_match_buildkit() {
    let src = r#"FROM scratch
ARG V
WORKDIR /a/../b/
COPY --chown=1:2 --chmod=644 src other /dst/
ADD https://example.com/x.tgz /
LABEL k=v "a b"=c
EXPOSE 80 443/udp 8000-8001
VOLUME /data /logs
USER app
SHELL ["/bin/bash", "-c"]
CMD echo hi
ENTRYPOINT ["/bin/app"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=90s --retries=3 CMD curl -f http://localhost/
MAINTAINER me
RUN ["echo", "exec"]
"#;
    let g = graph(src);
    assert_eq!(
        created(&g),
        [
            "ARG V",
            "WORKDIR /b",
            "COPY --chown=1:2 --chmod=644 src other /dst/ # buildkit",
            "ADD https://example.com/x.tgz / # buildkit",
            "LABEL k=v a b=c",
            "EXPOSE map[443/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]",
            "VOLUME [/data /logs]",
            "USER app",
            "SHELL [/bin/bash -c]",
            "CMD [\"/bin/bash\" \"-c\" \"echo hi\"]",
            "ENTRYPOINT [\"/bin/app\"]",
            "STOPSIGNAL SIGTERM",
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}",
            "MAINTAINER me",
            "RUN |1 V= echo exec # buildkit",
        ]
    );
    let steps = &g.stages[0].steps;
    assert_eq!(
        steps[5].op,
        Op::Expose(vec![
            "443/udp".into(),
            "80/tcp".into(),
            "8000/tcp".into(),
            "8001/tcp".into()
        ])
    );
    match &steps[12].op {
        Op::Healthcheck(h) => {
            assert_eq!(h.interval, 90_000_000_000);
            assert_eq!(h.retries, 3);
        }
        _ => unreachable!(),
    }
}

#[test]
fn run_heredocs_follow_buildkit() {
    let src = "FROM scratch\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\nRUN <<-EOF\n\techo plain\n\tEOF\nRUN cat <<A <<B\na\nA\nb\nB\n";
    let g = graph(src);
    let s = &g.stages[0].steps;
    let r0 = run(&s[0]);
    assert_eq!(r0.argv, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(
        r0.files,
        vec![InlineFile {
            path: "/dev/pipes/EOF".into(),
            content: "#!/bin/sh\necho hi\n".into(),
            mode: 0o755
        }]
    );
    assert_eq!(run(&s[1]).argv, ["/bin/sh", "-c", "echo plain\n"]);
    assert_eq!(
        run(&s[2]).argv,
        ["/bin/sh", "-c", "cat <<A <<B\na\nA\nb\nB"]
    );
    assert_eq!(s[2].span.end_line, 13);
}

#[test]
fn copy_heredocs_expand_unless_quoted() {
    let src = "FROM scratch\nENV N=x\nCOPY <<EOF <<'RAW' /dst/\n$N \"q\"\nEOF\n$N\nRAW\n";
    let g = graph(src);
    match &g.stages[0].steps[1].op {
        Op::Copy(c) => assert_eq!(
            c.sources,
            [
                CopySource::Heredoc {
                    name: "EOF".into(),
                    content: "x \"q\"\n".into()
                },
                CopySource::Heredoc {
                    name: "RAW".into(),
                    content: "$N\n".into()
                },
            ]
        ),
        _ => unreachable!(),
    }
}

#[test]
fn workdir_is_made_absolute_against_the_previous_one() {
    let g = graph("FROM scratch\nWORKDIR a\nWORKDIR b/../c\nWORKDIR /x/\nRUN pwd\n");
    let paths: Vec<_> = g.stages[0].steps[..3]
        .iter()
        .map(|s| match &s.op {
            Op::Workdir(w) => w.path.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(paths, ["/a", "/a/c", "/x"]);
    assert_eq!(run(&g.stages[0].steps[3]).workdir, "/x");
}

#[test]
fn lowering_errors_render_with_the_line() {
    let src = "FROM scratch\nENV A=\"${B:?must be set}\"\n";
    let df = parse(src).unwrap();
    let err = lower(&df, &LowerOptions::default(), &EmptyResolver).unwrap_err();
    assert_eq!(
        err.render("Dockerfile", src),
        "Dockerfile:2:1: failed to process \"\\\"${B:?must be set}\\\"\": B: must be set\n2 | ENV A=\"${B:?must be set}\"\n    ^\n"
    );
    assert_eq!(
        lower_err("FROM scratch\nSTOPSIGNAL NOPE\n", LowerOptions::default()),
        "line 2: Invalid signal: NOPE"
    );
    assert_eq!(
        lower_err("ARG X\n", LowerOptions::default()),
        "dockerfile contains no stages to build"
    );
}

#[test]
fn onbuild_heredoc_triggers_round_trip() {
    let src = "FROM scratch AS base\nONBUILD RUN <<EOF\necho from trigger\nEOF\nFROM base\n";
    let g = graph(src);
    assert_eq!(
        g.stages[0].steps[0].op,
        Op::OnBuild("RUN <<EOF\necho from trigger\nEOF".into())
    );
    let child = &g.stages[1];
    assert_eq!(
        run(&child.steps[0]).argv,
        ["/bin/sh", "-c", "echo from trigger\n"]
    );
}

#[test]
fn exec_form_and_shell_wrapping_follow_shell() {
    let g = graph(
        "FROM scratch\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN a | b\nENTRYPOINT exec app\nCMD [\"x\"]\n",
    );
    let s = &g.stages[0].steps;
    assert_eq!(
        run(&s[1]).argv,
        ["/bin/bash", "-eo", "pipefail", "-c", "a | b"]
    );
    assert!(run(&s[1]).shell_form);
    assert_eq!(
        s[2].op,
        Op::Entrypoint(vec![
            "/bin/bash".into(),
            "-eo".into(),
            "pipefail".into(),
            "-c".into(),
            "exec app".into()
        ])
    );
    assert_eq!(s[3].op, Op::Cmd(vec!["x".into()]));
}

/// Records every reference it is asked about.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<String>>);
impl BaseResolver for Recording {
    fn resolve(&self, reference: &str) -> Result<BaseImage, String> {
        self.0.lock().unwrap().push(reference.to_string());
        if reference == "missing:1" {
            return Err("not in the store and no registry has it".into());
        }
        Ok(BaseImage::default())
    }
}

#[test]
fn images_read_by_copy_from_and_mount_from_are_resolved_like_from() {
    let df = parse(
        "FROM scratch AS unused\nCOPY --from=never:1 / /\n\
         FROM scratch\nCOPY --from=copied:1 /a /b\n\
         RUN --mount=from=bound:1,target=/m true\n\
         RUN --mount=type=cache,from=cached:1,target=/c true\n\
         RUN --mount=type=tmpfs,target=/t true\n",
    )
    .unwrap();
    let resolver = Recording::default();
    lower(&df, &LowerOptions::default(), &resolver).unwrap();
    // Only what the target needs, each once; a pulling resolver fetches them up front.
    assert_eq!(
        *resolver.0.lock().unwrap(),
        ["copied:1", "bound:1", "cached:1"]
    );
    let err = lower(
        &parse("FROM scratch\nCOPY --from=missing:1 /a /b\n").unwrap(),
        &LowerOptions::default(),
        &Recording::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: failed to resolve base image missing:1: not in the store and no registry has it"
    );
}
