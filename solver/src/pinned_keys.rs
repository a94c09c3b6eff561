//! Known cache keys, pinned: the key of each representative layer step, computed over a
//! temp-dir store and context, must stay exactly these hex values.
//!
//! A key is what a build looks up in every store it has written, so a key that changes
//! silently makes every cached layer a miss (and every `--cache-from` useless). The values
//! below were computed by the code before keys were made of explicit per-op fields; any
//! change to what enters a key, or to how it is serialized, shows here first.
//!
//! Metadata-only steps (ENV, LABEL, USER, ...) have no key of their own: they never reach
//! the cache (the stage applies them to its config), and they enter the keys of the RUNs
//! after them through the RUN's expanded environment, user and directory.

use crate::entitlements::NetworkDefault;
use crate::explain::KeyInputs;
use crate::key::vertex_key;
use crate::ops::{KeyContext, LayerOp};
use crate::test_session::{Fixture, fixture, fixture_with, serve, step};
use kiln_executor::sandbox::{ExtraHost, RunOptions, UNLIMITED, Ulimit};
use kiln_parser::{
    CacheSharing, CopyOp, CopySource, InlineFile, Mount, MountKind, NetworkMode, Op, RunOp,
    SecurityMode, Source, WorkdirOp,
};

/// The key of the previous step every pinned step sits on.
const PARENT: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// The key of the stage the `--from` / `from=` steps read (stage 0).
const STAGE0: &str = "0000000000000000000000000000000000000000000000000000000000000002";

/// What the step of `op` on [`PARENT`], reading stage 0 as [`STAGE0`], was keyed from.
fn key_inputs(f: &Fixture, op: Op) -> KeyInputs {
    let stage_keys = [(0, STAGE0.to_string())];
    let kc = KeyContext {
        session: &f.session,
        parent: PARENT,
        stage_keys: &stage_keys,
    };
    let step = step(op);
    let op = LayerOp::of(&step.op).expect("a layer step");
    op.key(&kc).unwrap().inputs
}

fn key(f: &Fixture, op: Op) -> String {
    key_inputs(f, op).key
}

fn mount(kind: MountKind, target: &str) -> Mount {
    Mount {
        kind,
        target: target.into(),
        source: None,
        from: None,
        readonly: false,
        mode: None,
        uid: None,
        gid: None,
    }
}

fn run_with_mounts() -> RunOp {
    RunOp {
        argv: vec!["/bin/sh".into(), "-c".into(), "make && make install".into()],
        shell_form: true,
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("GOFLAGS".into(), "-mod=mod".into()),
        ],
        workdir: "/src".into(),
        user: "build".into(),
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        mounts: vec![
            Mount {
                source: Some("/out".into()),
                from: Some(Source::Stage(0)),
                readonly: true,
                ..mount(MountKind::Bind, "/in")
            },
            Mount {
                source: Some("src".into()),
                ..mount(MountKind::Bind, "/ctx")
            },
            Mount {
                mode: Some(0o755),
                uid: Some(1000),
                gid: Some(0),
                ..mount(
                    MountKind::Cache {
                        id: "gocache".into(),
                        sharing: CacheSharing::Locked,
                    },
                    "/root/.cache",
                )
            },
            mount(
                MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
                "/tmp",
            ),
            Mount {
                mode: Some(0o400),
                uid: Some(0),
                gid: Some(0),
                ..mount(
                    MountKind::Secret {
                        id: "token".into(),
                        env: Some("TOKEN".into()),
                        required: true,
                    },
                    "/run/secrets/token",
                )
            },
        ],
        files: vec![InlineFile {
            path: "/dev/pipes/script".into(),
            content: "echo hi\n".into(),
            mode: 0o755,
        }],
        // Not in the key: the pinned key below is the one from before proxies were passed.
        proxy_env: vec![("HTTPS_PROXY".into(), "http://proxy.example:3128".into())],
    }
}

fn copy() -> CopyOp {
    CopyOp {
        add: false,
        from: Source::Context,
        sources: vec![CopySource::Path("src".into())],
        dest: "app/".into(),
        workdir: "/work".into(),
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        checksum: None,
        unpack: None,
        keep_git_dir: false,
    }
}

#[test]
fn run_keys_are_pinned() {
    let f = fixture(NetworkDefault::Host, Some(0));
    assert_eq!(
        key(&f, Op::Run(run_with_mounts())),
        "b436fb63b0d9417ed375e3f38e0a8d2d8e5ddae15b7b190717ed9ee623495208"
    );
    let insecure_host = RunOp {
        network: NetworkMode::Host,
        security: SecurityMode::Insecure,
        mounts: Vec::new(),
        files: Vec::new(),
        shell_form: false,
        ..run_with_mounts()
    };
    assert_eq!(
        key(&f, Op::Run(insecure_host.clone())),
        "ef7ffa4125e17a344a7c6cd4bbf8608710ad9ff1461328d7b3fc6a55716ceae8"
    );
    // `--network none` on the command line is keyed as the network the RUN really gets.
    let none = fixture(NetworkDefault::None, None);
    assert_eq!(
        key(&none, Op::Run(insecure_host)),
        "e266282e9aa9e2239d82452c78d3c2778f9dbaabddfb0f44e1c95638eea748eb"
    );
}

/// `--add-host` enters a RUN's key by its names, as in BuildKit (which clears the IPs of
/// an exec op's extra hosts before hashing it): another name is another step, another
/// address for the same name is the same step. Without the flag the keys are the pinned
/// ones above.
#[test]
fn extra_host_names_enter_run_keys_and_their_addresses_do_not() {
    let with = |hosts: &[(&str, &str)]| {
        let options = RunOptions {
            extra_hosts: hosts
                .iter()
                .map(|(host, ip)| ExtraHost {
                    host: host.to_string(),
                    ip: ip.parse().unwrap(),
                })
                .collect(),
            ..RunOptions::default()
        };
        key(
            &fixture_with(NetworkDefault::Host, Some(0), options),
            Op::Run(run_with_mounts()),
        )
    };
    let plain = "b436fb63b0d9417ed375e3f38e0a8d2d8e5ddae15b7b190717ed9ee623495208";
    assert_eq!(with(&[]), plain);
    let db = with(&[("db", "10.0.0.2")]);
    assert_eq!(
        db,
        "95e8f64cc6457972f634851ed2951b103b8e5f08c6f243be7f9f245fdf432ceb"
    );
    assert_eq!(with(&[("db", "fd00::2")]), db);
    assert_ne!(with(&[("cache", "10.0.0.2")]), db);
}

/// `--ulimit` enters a RUN's key, as it is part of BuildKit's exec op: another limit is
/// another step.
#[test]
fn ulimits_enter_run_keys() {
    let with = |ulimits: Vec<Ulimit>| {
        let options = RunOptions {
            ulimits,
            ..RunOptions::default()
        };
        key(
            &fixture_with(NetworkDefault::Host, Some(0), options),
            Op::Run(run_with_mounts()),
        )
    };
    let nofile = |soft, hard| Ulimit {
        name: "nofile".into(),
        soft,
        hard,
    };
    assert_eq!(
        with(Vec::new()),
        "b436fb63b0d9417ed375e3f38e0a8d2d8e5ddae15b7b190717ed9ee623495208"
    );
    let limited = with(vec![nofile(1024, 2048)]);
    assert_eq!(
        limited,
        "e3696edf881a713a065f2b5e34019d6d307db93122eeb35ce741be74f0a96320"
    );
    assert_ne!(with(vec![nofile(1024, UNLIMITED)]), limited);
}

/// `--shm-size` enters a RUN's key, as the `/dev/shm` mount BuildKit adds to the exec op.
#[test]
fn the_shm_size_enters_run_keys() {
    let with = |shm_size| {
        let options = RunOptions {
            shm_size,
            ..RunOptions::default()
        };
        key(
            &fixture_with(NetworkDefault::Host, Some(0), options),
            Op::Run(run_with_mounts()),
        )
    };
    assert_eq!(
        with(None),
        "b436fb63b0d9417ed375e3f38e0a8d2d8e5ddae15b7b190717ed9ee623495208"
    );
    assert_eq!(
        with(Some(128 << 20)),
        "5f64ee3e25a084259c68d400950f737e19da7420ba455fee418052394fb6fe4d"
    );
}

#[test]
fn copy_keys_are_pinned() {
    let f = fixture(NetworkDefault::Host, Some(0));
    assert_eq!(
        key(&f, Op::Copy(copy())),
        "427041460d2a08744cad11a3c8a04e3b79b3ffe325843659e156745fef83b993"
    );
    let from_stage = CopyOp {
        from: Source::Stage(0),
        sources: vec![CopySource::Path("/out/bin".into())],
        chown: Some("1000:1000".into()),
        chmod: Some("0755".into()),
        link: true,
        ..copy()
    };
    assert_eq!(
        key(&f, Op::Copy(from_stage)),
        "0f0b2a17d755f2947947568fe408d9d7a2939bada1a4641e2febade08db5c606"
    );
    let parents = CopyOp {
        sources: vec![
            CopySource::Path("./src/**/*.sh".into()),
            CopySource::Heredoc {
                name: "note".into(),
                content: "hello\n".into(),
            },
        ],
        parents: true,
        exclude: vec!["*.txt".into()],
        keep_git_dir: true,
        ..copy()
    };
    assert_eq!(
        key(&f, Op::Copy(parents)),
        "e23213a973a1c19c2419bb0905d29bcd607dc3654ea6dc37eb82693dad722a5c"
    );
}

#[test]
fn add_keys_are_pinned() {
    let f = fixture(NetworkDefault::Host, None);
    let checksummed = CopyOp {
        add: true,
        sources: vec![CopySource::Url("https://example.invalid/tool.tgz".into())],
        checksum: Some(format!("sha256:{}", "ab".repeat(32))),
        unpack: Some(true),
        ..copy()
    };
    assert_eq!(
        key(&f, Op::Copy(checksummed)),
        "be49964eb882b6ae4b98f2fccd44e9e316724861904da1e5420615f1a5251b55"
    );
    // Without a checksum the bytes and Last-Modified the server sends decide. The URL
    // holds the server's port, so the hashed document is written out here in full.
    let (url, _) = serve(|_| b"tool bytes\n".to_vec());
    let downloaded = CopyOp {
        add: true,
        sources: vec![CopySource::Url(url.clone())],
        ..copy()
    };
    let inputs = key_inputs(&f, Op::Copy(downloaded));
    let digest =
        "sha256:67adcd1086be37ccf08376a039b8424ca3bfd93881c4895942c8e7defc817bd4 784887151";
    assert_eq!(inputs.inputs[1].1, digest);
    let params = serde_json::json!({
        "op": {"copy": {
            "add": true, "from": "Context", "sources": [{"Url": url}], "dest": "app/",
            "workdir": "/work", "chown": null, "chmod": null, "link": false,
            "parents": false, "exclude": [], "checksum": null, "unpack": null,
            "keep_git_dir": false,
        }},
        "layer": {
            "compression": "application/vnd.oci.image.layer.v1.tar+gzip",
            "source_date_epoch": null,
            "chunking": kiln_image::CHUNK_FORMAT,
        },
    });
    assert_eq!(inputs.key, vertex_key("step", &params, &[PARENT, digest]));
}

#[test]
fn workdir_keys_are_pinned() {
    let f = fixture(NetworkDefault::Host, Some(1_700_000_000));
    let w = WorkdirOp {
        path: "/srv/app".into(),
        user: "1000:1000".into(),
    };
    assert_eq!(
        key(&f, Op::Workdir(w)),
        "00016a8a2f6336f7da54152d2882995b32279fc3c37fc224a0cf99d39d91f95f"
    );
}

#[test]
fn the_layer_format_enters_every_key() {
    let gzip = fixture(NetworkDefault::Host, Some(0));
    let w = || {
        Op::Workdir(WorkdirOp {
            path: "/srv".into(),
            user: String::new(),
        })
    };
    let epoch = fixture(NetworkDefault::Host, Some(1));
    assert_ne!(key(&gzip, w()), key(&epoch, w()));
}
