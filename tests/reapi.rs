//! The build cache in a REAPI service (`--cache-to/--cache-from type=reapi`), against a
//! real BuildGrid on loopback, as root and as the unprivileged test user. Two stores on one
//! machine stand in for two CI runners.
//!
//! - What one store pushes, the other finds: every step CACHED, the same image ID and
//!   manifest, and the records land locally; a rebuild with one changed step uploads only
//!   that step's blobs.
//! - A server that is down, answers garbage, lies about a layer or is killed mid-build
//!   costs one warning: the build goes on locally and gives the image a local build gives.

mod common;

use common::buildgrid::BuildGrid;
use common::identity::{Identity, World, assert_ok, both, identities, image_id, steps};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

fn dockerfile(last: &str) -> String {
    format!(
        "{}COPY greeting.txt noise.bin /\nRUN wc -c /greeting.txt > /count\nRUN {last}\n",
        common::identity::BUSYBOX
    )
}

fn context(world: &World, name: &str, dockerfile: &str) -> std::path::PathBuf {
    let ctx = world.context(name, dockerfile);
    std::fs::write(ctx.join("greeting.txt"), "hello from the farm\n").unwrap();
    // 3 MiB that do not compress: a layer too big for a batch, so it is uploaded with
    // ByteStream.Write (and read back with ByteStream.Read).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(ctx.join("noise.bin"), noise).unwrap();
    common::open_up(&ctx);
    ctx
}

/// `kiln build --progress plain FLAGS CONTEXT` as the world's identity, with its
/// `~/.config` as `XDG_CONFIG_HOME` (runuser gives the test user its own HOME).
fn build(world: &World, ctx: &Path, flags: &[String]) -> std::process::Output {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend(flags.iter().map(String::as_str));
    args.push(ctx.to_str().unwrap());
    let config = world.home.join(".config");
    world.kiln_env(&args, &[("XDG_CONFIG_HOME", config.to_str().unwrap())])
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

fn manifest_digest(world: &World, tag: &str) -> String {
    let out = world.kiln(&["inspect", tag]);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["ManifestDigest"].as_str().unwrap().to_string()
}

/// The image ID a build of `dockerfile` gives locally, in a fresh store, with no cache.
fn local_image(id: Identity, dockerfile: &str) -> String {
    let world = World::new(id);
    let ctx = context(&world, "local", dockerfile);
    let out = build(&world, &ctx, &["--no-cache".into()]);
    assert_ok(&out);
    image_id(&out)
}

/// `uploaded N blobs` from the export line.
fn uploaded_blobs(out: &std::process::Output) -> usize {
    let t = text(out);
    let line = t
        .lines()
        .find(|l| l.contains("uploaded "))
        .unwrap_or_else(|| panic!("no upload line: {}", both(out)));
    let n = line.split("uploaded ").nth(1).unwrap();
    n.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_cache_pushed_by_one_store_is_all_cached_in_another() {
    let server = BuildGrid::start();
    let cache_to = format!(
        "--cache-to=type=reapi,endpoint={},mode=max",
        server.endpoint()
    );
    let cache_from = format!("--cache-from=type=reapi,endpoint={}", server.endpoint());
    for id in identities() {
        // The identities share one server: each one's RUN lines differ, so do its keys.
        let first = dockerfile(&format!("echo first {id:?} > /last"));
        let a = World::new(id);
        let ctx = context(&a, "ctx", &first);
        let pushed = build(&a, &ctx, &["-t".into(), "app:1".into(), cache_to.clone()]);
        assert_ok(&pushed);
        let pushed_id = image_id(&pushed);
        assert!(
            text(&pushed).contains("exported 5 cache records to the REAPI cache"),
            "{}",
            both(&pushed)
        );

        let b = World::new(id);
        let ctx_b = context(&b, "ctx", &first);
        let pulled = build(
            &b,
            &ctx_b,
            &["-t".into(), "app:1".into(), cache_from.clone()],
        );
        assert_ok(&pulled);
        let all = steps(&pulled);
        assert_eq!(all.len(), 5, "{}", both(&pulled));
        assert!(
            all.iter().all(|(_, cached)| *cached),
            "{all:?}\n{}",
            both(&pulled)
        );
        assert_eq!(image_id(&pulled), pushed_id, "{id:?}");
        assert_eq!(manifest_digest(&b, "app:1"), manifest_digest(&a, "app:1"));
        assert_eq!(pushed_id, local_image(id, &first), "{id:?}");
        // The records arrived in the second store: without the remote, still all cached.
        let again = build(&b, &ctx_b, &[]);
        assert_ok(&again);
        assert!(steps(&again).iter().all(|(_, c)| *c), "{}", both(&again));
        assert_eq!(image_id(&again), pushed_id);

        // One changed step: only its layer, record, Command and Action go up.
        let second = dockerfile(&format!("echo second {id:?} > /last"));
        std::fs::write(ctx.join("Dockerfile"), &second).unwrap();
        let changed = build(&a, &ctx, std::slice::from_ref(&cache_to));
        assert_ok(&changed);
        assert_eq!(uploaded_blobs(&changed), 4, "{}", both(&changed));
        std::fs::write(ctx_b.join("Dockerfile"), &second).unwrap();
        let pulled = build(&b, &ctx_b, std::slice::from_ref(&cache_from));
        assert_ok(&pulled);
        assert!(steps(&pulled).iter().all(|(_, c)| *c), "{}", both(&pulled));
        assert_eq!(image_id(&pulled), image_id(&changed));
    }
}

/// Lines of a build's output that warn about the REAPI cache.
fn remote_warnings(out: &std::process::Output) -> Vec<String> {
    text(out)
        .lines()
        .filter(|l| {
            l.contains("warning") && l.contains("REAPI cache")
                || l.contains("warning: remote cache")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn a_server_that_is_down_or_answers_garbage_costs_one_warning() {
    // Nothing listens on a port just freed.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A server that answers every connection with bytes that are not HTTP/2.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_port = garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in garbage.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.write_all(b"HTTP/1.1 500 Nope\r\ncontent-length: 5\r\n\r\nnope\n");
        }
    });
    for id in identities() {
        let df = dockerfile(&format!("echo down {id:?} > /last"));
        let expected = local_image(id, &df);
        for port in [down, garbage_port] {
            let world = World::new(id);
            let ctx = context(&world, "ctx", &df);
            let endpoint = format!("endpoint=grpc://127.0.0.1:{port}");
            let out = build(
                &world,
                &ctx,
                &[
                    "-t".into(),
                    "app:1".into(),
                    format!("--cache-from=type=reapi,{endpoint}"),
                    format!("--cache-to=type=reapi,{endpoint}"),
                ],
            );
            assert_ok(&out);
            assert_eq!(image_id(&out), expected, "{}", both(&out));
            let warnings = remote_warnings(&out);
            // One for reading the cache, one for writing it; the build stands.
            assert_eq!(warnings.len(), 2, "{warnings:?}\n{}", both(&out));
            assert!(
                warnings
                    .iter()
                    .all(|w| w.contains(&format!("127.0.0.1:{port}")))
            );
            assert!(steps(&out).iter().all(|(_, c)| !*c), "{}", both(&out));
            // The image is named.
            assert_ok(&world.kiln(&["inspect", "app:1"]));
        }
    }
}

#[test]
fn a_server_that_hangs_costs_one_call_deadline() {
    // Accepts connections and never answers a byte: the call deadline ends the wait.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hung.incoming() {
            held.extend(conn.ok());
        }
    });
    for id in identities() {
        let df = dockerfile(&format!("echo hung {id:?} > /last"));
        let world = World::new(id);
        let ctx = context(&world, "ctx", &df);
        let out = build(
            &world,
            &ctx,
            &[format!(
                "--cache-from=type=reapi,endpoint=grpc://127.0.0.1:{port}"
            )],
        );
        assert_ok(&out);
        let warnings = remote_warnings(&out);
        assert_eq!(warnings.len(), 1, "{warnings:?}\n{}", both(&out));
        assert_eq!(image_id(&out), local_image(id, &df));
    }
}

/// Every record of `store` (key, record JSON).
fn records(store: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(store.join("cache")).unwrap() {
        let path = entry.unwrap().path();
        let Some(key) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice(&bytes) else {
            continue;
        };
        out.push((key.to_string(), record));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_server_that_lies_about_a_layer_is_caught() {
    let server = BuildGrid::start();
    for id in identities() {
        let df = dockerfile(&format!("echo lies {id:?} > /last"));
        // The lying store is the test's own (the test opens it to push from it); its keys
        // are every identity's, as a build's keys do not depend on who runs it.
        let a = World::new(if common::identity::is_root() {
            Identity::Root
        } else {
            id
        });
        let ctx = context(&a, "ctx", &df);
        let built = build(&a, &ctx, &[]);
        assert_ok(&built);
        let expected = image_id(&built);
        // Each record is pushed naming the next record's layer: every blob is a real
        // blob that matches its digest, but not the diff_id the record says it holds.
        let mut lying = records(&a.store());
        assert!(lying.len() >= 3, "{lying:?}");
        let layers: Vec<serde_json::Value> =
            lying.iter().map(|(_, r)| r["layer"].clone()).collect();
        for (n, (_, record)) in lying.iter_mut().enumerate() {
            let next = &layers[(n + 1) % layers.len()];
            record["layer"]["digest"] = next["digest"].clone();
            record["layer"]["size"] = next["size"].clone();
        }
        let pushed = push_records(&server.endpoint(), &a.store(), &lying);
        assert_eq!(pushed, lying.len());

        let b = World::new(id);
        let ctx_b = context(&b, "ctx", &df);
        let out = build(
            &b,
            &ctx_b,
            &[format!(
                "--cache-from=type=reapi,endpoint={}",
                server.endpoint()
            )],
        );
        assert_ok(&out);
        assert_eq!(image_id(&out), expected, "{}", both(&out));
        let warnings = remote_warnings(&out);
        assert_eq!(warnings.len(), 1, "{warnings:?}\n{}", both(&out));
        assert!(warnings[0].contains("unpacks to"), "{warnings:?}");
        assert!(steps(&out).iter().all(|(_, c)| !*c), "{}", both(&out));
        // Nothing the lie named was recorded: the next build runs every step again
        // only if a record is missing, and here every record is the local build's.
        let again = build(&b, &ctx_b, &[]);
        assert_ok(&again);
        assert_eq!(image_id(&again), expected);
    }
}

/// Pushes `records` (blobs from `store`) as kiln's REAPI client does.
fn push_records(endpoint: &str, store: &Path, records: &[(String, serde_json::Value)]) -> usize {
    let endpoint = kiln_remote::Endpoint::parse(endpoint).unwrap();
    let store = kiln_store::Store::open(store).unwrap();
    let records: Vec<(String, kiln_store::CacheRecord)> = records
        .iter()
        .map(|(k, r)| (k.clone(), serde_json::from_value(r.clone()).unwrap()))
        .collect();
    kiln_remote::push_blocking(&endpoint, &[], &store, &records)
        .unwrap()
        .records
}

#[test]
fn a_server_killed_mid_build_degrades_cleanly() {
    for id in identities() {
        let mut server = BuildGrid::start();
        let df = format!(
            "{}RUN sleep 1; echo one > /one\nRUN sleep 1; echo two {id:?} > /two\nRUN echo three > /three\nRUN echo four > /four\n",
            common::identity::BUSYBOX
        );
        let expected = local_image(id, &df);
        let world = World::new(id);
        let ctx = world.context("ctx", &df);
        let endpoint = server.endpoint();
        let mut child = world
            .kiln_command(
                &[
                    "build",
                    "--progress",
                    "plain",
                    "-t",
                    "app:1",
                    &format!("--cache-from=type=reapi,endpoint={endpoint}"),
                    &format!("--cache-to=type=reapi,endpoint={endpoint}"),
                    ctx.to_str().unwrap(),
                ],
                &[],
            )
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        let mut killed = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            // The server dies while the first slow RUN runs.
            if !killed && line.contains("RUN sleep 1; echo one") {
                server.kill();
                killed = true;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let status = child.wait().unwrap();
        assert!(killed, "{seen}");
        assert!(status.success(), "{seen}");
        let id_line = seen
            .lines()
            .find_map(|l| l.strip_prefix("writing image "))
            .unwrap_or_else(|| panic!("{seen}"));
        assert_eq!(id_line.trim(), expected, "{seen}");
        let warnings: Vec<&str> = seen
            .lines()
            .filter(|l| l.contains("warning") && l.contains(&endpoint))
            .collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}\n{seen}");
        assert_ok(&world.kiln(&["inspect", "app:1"]));
    }
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", both(&out));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all P-256.
fn make_certs(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=kiln test CA"];
    ca.extend(key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "kiln test client",
            "extendedKeyUsage=clientAuth\n",
        ),
    ] {
        let subj = format!("/CN={cn}");
        let (keyfile, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let mut req = vec!["req", "-subj", &subj, "-keyout", &keyfile, "-out", &csr];
        req.extend(key);
        openssl(dir, &req);
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (crt, extfile) = (format!("{name}.crt"), format!("{name}.ext"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &extfile,
                "-out",
                &crt,
            ],
        );
    }
}

/// Puts `files` (name in certs.d, file in `certs`) in `world`'s
/// `~/.config/kiln/certs.d/HOST:PORT/`, readable by the identity.
fn trust(world: &World, host: &str, certs: &Path, files: &[(&str, &str)]) {
    let dir = world.home.join(".config/kiln/certs.d").join(host);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, from) in files {
        std::fs::copy(certs.join(from), dir.join(name)).unwrap();
    }
    common::open_up(&world.home.join(".config"));
}

#[test]
fn grpcs_trusts_certs_d_and_sends_its_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let server = BuildGrid::start_tls(&common::buildgrid::Tls {
        key: &certs.path().join("server.key"),
        cert: &certs.path().join("server.crt"),
        client_cas: &certs.path().join("ca.crt"),
    });
    let host = format!("127.0.0.1:{}", server.port);
    let endpoint = server.tls_endpoint();
    let full = [
        ("ca.crt", "ca.crt"),
        ("client.cert", "client.crt"),
        ("client.key", "client.key"),
    ];
    for id in identities() {
        let df = dockerfile(&format!("echo tls {id:?} > /last"));
        let a = World::new(id);
        trust(&a, &host, certs.path(), &full);
        let ctx = context(&a, "ctx", &df);
        let pushed = build(
            &a,
            &ctx,
            &[format!("--cache-to=type=reapi,endpoint={endpoint}")],
        );
        assert_ok(&pushed);
        assert!(
            remote_warnings(&pushed).is_empty(),
            "{id:?}: {}",
            both(&pushed)
        );
        assert!(
            text(&pushed).contains("exported 5 cache records"),
            "{}",
            both(&pushed)
        );

        let b = World::new(id);
        trust(&b, &host, certs.path(), &full);
        let ctx_b = context(&b, "ctx", &df);
        let from = format!("--cache-from=type=reapi,endpoint={endpoint}");
        let pulled = build(&b, &ctx_b, std::slice::from_ref(&from));
        assert_ok(&pulled);
        assert!(steps(&pulled).iter().all(|(_, c)| *c), "{}", both(&pulled));
        assert_eq!(image_id(&pulled), image_id(&pushed));

        // Without the CA the server is not trusted; without the client certificate the
        // server refuses kiln: either way one warning and a local build.
        for files in [&full[1..], &full[..1]] {
            let c = World::new(id);
            trust(&c, &host, certs.path(), files);
            let ctx_c = context(&c, "ctx", &df);
            let out = build(&c, &ctx_c, std::slice::from_ref(&from));
            assert_ok(&out);
            assert_eq!(remote_warnings(&out).len(), 1, "{files:?}: {}", both(&out));
            assert!(steps(&out).iter().all(|(_, c)| !*c), "{}", both(&out));
            assert_eq!(image_id(&out), image_id(&pushed));
        }
    }
}
