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
        "08c3a53ce71e01e3740bd6d9c23c5dec068cf907f87c884391bc01093903aaba"
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
        "d13d48b2d046f1a6e8acd2afe84a50cf04200c14552afbec9adda42dc203a155"
    );
    // `--network none` on the command line is keyed as the network the RUN really gets.
    let none = fixture(NetworkDefault::None, None);
    assert_eq!(
        key(&none, Op::Run(insecure_host)),
        "d467a97088042bec3806ef9bcaad5866484880c569083c0580ed49e3315f08b0"
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
    let plain = "08c3a53ce71e01e3740bd6d9c23c5dec068cf907f87c884391bc01093903aaba";
    assert_eq!(with(&[]), plain);
    let db = with(&[("db", "10.0.0.2")]);
    assert_eq!(
        db,
        "063d71105438294ac8780bb950e6b89ac25cce4c4c57e1c55c2376d92169bc38"
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
        "08c3a53ce71e01e3740bd6d9c23c5dec068cf907f87c884391bc01093903aaba"
    );
    let limited = with(vec![nofile(1024, 2048)]);
    assert_eq!(
        limited,
        "5c536091afef96dc3131f22be8c3f3c77caa418e775d7e166150413e25ee5eb9"
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
        "08c3a53ce71e01e3740bd6d9c23c5dec068cf907f87c884391bc01093903aaba"
    );
    assert_eq!(
        with(Some(128 << 20)),
        "9881abc699a3ffc308ee78171c8230ff27fd85c82e50116ced8faa9860184bd5"
    );
}

#[test]
fn copy_keys_are_pinned() {
    let f = fixture(NetworkDefault::Host, Some(0));
    assert_eq!(
        key(&f, Op::Copy(copy())),
        "0629a68725184d05af17419f6c91b05285856afb6dd92e97999539473f27a3dc"
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
        "234e01afefb9c21664312c0372d45f68df07a5d4a9848b311d7b527f73eca15c"
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
        "57625107a7d002ac6ee82af911a79a4902e7f1d82fb4f58dcb3f22b645286787"
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
        "2cab483bf15b6c3c759bd5286b9053c25d0c747539b5fdf51d1145cd697d9d88"
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
        "67060ed06da316b0ffcf15ba2d9801631e85439ed624d4161b6ab1440a3f5cd3"
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
