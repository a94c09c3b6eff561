//! `kiln build --build-context NAME=VALUE` through the binary, as root and as the
//! unprivileged test user: a local directory replacing a stage and read by a name no stage
//! has (COPY --from and RUN --mount from=), `docker-image://` replacing a FROM image,
//! `oci-layout://` of a layout `kiln build -o type=oci,tar=false` wrote, a git URL (served on
//! loopback by `git daemon` and `git http-backend`) and a plain http URL. Each is checked by
//! the files and config of the image, its ID, which steps ran and which were CACHED, and the
//! error and exit status of a bad value (nothing tagged).

mod common;

use common::identity::{Identity, World, assert_ok, assert_refused, both, identities};
use common::{Image, open_up};
use std::path::{Path, PathBuf};
use std::process::Output;

/// The busybox prefix ([`common::identity::BUSYBOX`]) as a stage named `tools`.
fn busybox_stage(name: &str) -> String {
    common::identity::BUSYBOX.replacen("FROM scratch\n", &format!("FROM scratch AS {name}\n"), 1)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A directory below the world's root, readable by every identity, holding `files`.
fn tree(world: &World, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = world.tmp.path().join(name);
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    std::fs::create_dir_all(&dir).expect("mkdir");
    open_up(&dir);
    dir
}

/// The image `tag` as a file tree (saved as a docker archive by the identity).
fn image(world: &World, tag: &str) -> Image {
    let out = world
        .user_dir("out")
        .join(format!("{}.tar", tag.replace([':', '/'], "_")));
    assert_ok(&world.kiln(&["save", "-o", p(&out), tag]));
    Image::from_docker_archive(&out)
}

/// The ID `kiln build` wrote to its iidfile.
fn build_id(world: &World, ctx: &Path, args: &[&str]) -> (String, Output) {
    let iid = world.user_dir("out").join("iid");
    let _ = std::fs::remove_file(&iid);
    let mut all = vec!["--iidfile", p(&iid)];
    all.extend_from_slice(args);
    let out = world.build(ctx, &all);
    assert_ok(&out);
    let id = std::fs::read_to_string(&iid).expect("iidfile");
    (id.trim().to_string(), out)
}

/// The steps of a plain-progress log that ran (not CACHED), by their vertex names, FROM
/// lines left out.
fn ran(out: &Output) -> Vec<String> {
    let log = String::from_utf8_lossy(&out.stderr);
    let mut names = std::collections::BTreeMap::new();
    let mut cached = std::collections::BTreeSet::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, what)) = rest.split_once(' ') else {
            continue;
        };
        if what == "CACHED" {
            cached.insert(id.to_string());
        } else if what.starts_with('[') && !names.contains_key(id) {
            names.insert(id.to_string(), what.to_string());
        }
    }
    names
        .into_iter()
        .filter(|(id, name)| !cached.contains(id) && !name.contains("] FROM "))
        .map(|(_, name)| name)
        .collect()
}

fn each_identity(test: impl Fn(&World)) {
    for id in identities() {
        eprintln!("-- as {id:?}");
        test(&World::new(id));
    }
}

#[test]
fn a_directory_replaces_a_stage_and_is_read_by_a_name_no_stage_has() {
    each_identity(|world| {
        let dockerfile = format!(
            "FROM scratch AS gen\nCOPY never-built /x\n\n{}\
             COPY --from=gen / /gen/\n\
             RUN echo independent > /ind.txt\n\
             COPY --from=assets data.txt /assets/data.txt\n\
             RUN --mount=from=assets,target=/m cat /m/data.txt /gen/g.txt > /out.txt\n",
            busybox_stage("app")
        );
        let ctx = world.context("ctx", &dockerfile);
        let gen_dir = tree(
            world,
            "gen",
            &[
                ("g.txt", "from gen\n"),
                ("skip.log", "no"),
                (".dockerignore", "*.log\n"),
            ],
        );
        let assets = tree(world, "assets", &[("data.txt", "v1\n")]);
        let contexts = |gen_dir: &Path, assets: &Path| {
            vec![
                format!("gen={}", p(gen_dir)),
                format!("assets={}", p(assets)),
            ]
        };
        let args = |c: &[String]| -> Vec<String> {
            let mut a = vec!["-t".to_string(), "named:1".to_string()];
            for c in c {
                a.push("--build-context".into());
                a.push(c.clone());
            }
            a
        };
        let first_args = args(&contexts(&gen_dir, &assets));
        let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
        let (id, _) = build_id(world, &ctx, &first_args);
        let img = image(world, "named:1");
        assert_eq!(img.text("gen/g.txt"), "from gen\n");
        assert_eq!(img.text("gen/.dockerignore"), "*.log\n");
        assert!(
            !img.files.contains_key("gen/skip.log"),
            "the named context's .dockerignore holds"
        );
        assert!(!img.files.contains_key("x"), "the replaced stage was built");
        assert_eq!(img.text("assets/data.txt"), "v1\n");
        assert_eq!(img.text("out.txt"), "v1\nfrom gen\n");

        // Unchanged: every step CACHED, the same image.
        let (again, out) = build_id(world, &ctx, &first_args);
        assert_eq!(again, id);
        assert_eq!(ran(&out), Vec::<String>::new(), "{}", both(&out));

        // Moved (and renamed) directories with the same content: still all CACHED.
        let moved = world.tmp.path().join("assets-moved");
        std::fs::rename(&assets, &moved).expect("move");
        let moved_args = args(&contexts(&gen_dir, &moved));
        let moved_args: Vec<&str> = moved_args.iter().map(String::as_str).collect();
        let (same, out) = build_id(world, &ctx, &moved_args);
        assert_eq!(same, id);
        assert_eq!(ran(&out), Vec::<String>::new(), "{}", both(&out));

        // A changed file re-runs what reads it and what follows, nothing before.
        std::fs::write(moved.join("data.txt"), "v2\n").expect("write");
        let (changed, out) = build_id(world, &ctx, &moved_args);
        assert_ne!(changed, id);
        let ran = ran(&out);
        assert_eq!(ran.len(), 2, "{ran:?}\n{}", both(&out));
        assert!(
            ran[0].ends_with("COPY --from=assets data.txt /assets/data.txt"),
            "{ran:?}"
        );
        assert!(ran[1].contains("RUN --mount=from=assets"), "{ran:?}");
        assert_eq!(image(world, "named:1").text("out.txt"), "v2\nfrom gen\n");

        // Two --no-cache builds give the same image.
        let mut no_cache = vec!["--no-cache"];
        no_cache.extend_from_slice(&moved_args);
        let (a, _) = build_id(world, &ctx, &no_cache);
        let (b, _) = build_id(world, &ctx, &no_cache);
        assert_eq!(a, b);
        assert_eq!(a, changed);
    });
}

#[test]
fn docker_image_replaces_a_from_image_as_buildkit_names_it() {
    each_identity(|world| {
        let base = world.context(
            "base",
            &format!(
                "{}ENV WHICH=other\nRUN echo other > /which\n",
                common::identity::BUSYBOX
            ),
        );
        assert_ok(&world.build(&base, &["-t", "other:2"]));
        // `mybase` is in no store and no registry: the context stands in for it.
        let app = "FROM docker.io/library/mybase:latest\nRUN cat /which > /seen && echo $WHICH >> /seen\n";
        let ctx = world.context("app", app);
        let (id, _) = build_id(
            world,
            &ctx,
            &[
                "-t",
                "app:1",
                "--build-context",
                "mybase=docker-image://other:2",
            ],
        );
        let img = image(world, "app:1");
        assert_eq!(img.text("seen"), "other\nother\n");
        // The very image of `FROM other:2`: keyed by the image, not by how it was named.
        let direct = world.context(
            "direct",
            "FROM other:2\nRUN cat /which > /seen && echo $WHICH >> /seen\n",
        );
        let (direct_id, out) = build_id(world, &direct, &["-t", "direct:1"]);
        assert_eq!(direct_id, id);
        assert_eq!(ran(&out), Vec::<String>::new(), "{}", both(&out));
        // Two --no-cache builds agree.
        let args = [
            "--no-cache",
            "--build-context",
            "mybase=docker-image://other:2",
        ];
        let (a, _) = build_id(world, &ctx, &args);
        let (b, _) = build_id(world, &ctx, &args);
        assert_eq!((a.as_str(), b.as_str()), (id.as_str(), id.as_str()));
    });
}

#[test]
fn oci_layout_of_a_kiln_build_replaces_a_stage_and_an_image() {
    each_identity(|world| {
        let base = world.context(
            "base",
            &format!(
                "{}WORKDIR /srv\nRUN echo layout > /which\n",
                common::identity::BUSYBOX
            ),
        );
        let layout = world.user_dir("layout");
        let dest = format!("type=oci,dest={},tar=false", p(&layout));
        assert_ok(&world.build(&base, &["-t", "lay:1", "-o", &dest]));
        let digest = {
            let index: serde_json::Value = serde_json::from_slice(
                &std::fs::read(layout.join("index.json")).expect("index.json"),
            )
            .expect("index json");
            index["manifests"][0]["digest"]
                .as_str()
                .expect("digest")
                .to_string()
        };
        let app = "FROM scratch AS base\nCOPY never-built /x\n\
                   FROM base\nRUN pwd > /pwd && cat /which >> /pwd\n\
                   COPY --from=files /srv/../which /copied\n";
        let ctx = world.context("app", app);
        for value in [
            format!("oci-layout://{}", p(&layout)),
            format!("oci-layout://{}:lay:1", p(&layout)),
            format!("oci-layout://{}:1", p(&layout)),
            format!("oci-layout://{}@{digest}", p(&layout)),
        ] {
            let (id, _) = build_id(
                world,
                &ctx,
                &[
                    "-t",
                    "fromlayout:1",
                    "--build-context",
                    &format!("base={value}"),
                    "--build-context",
                    &format!("files={value}"),
                ],
            );
            let img = image(world, "fromlayout:1");
            assert_eq!(img.text("pwd"), "/srv\nlayout\n", "{value}");
            assert_eq!(img.text("copied"), "layout\n", "{value}");
            assert!(!img.files.contains_key("x"));
            // The same image as FROM the stored image itself (with the COPY written the
            // same, for its history).
            let direct = world.context(
                "direct",
                "FROM lay:1 AS files\nFROM lay:1\nRUN pwd > /pwd && cat /which >> /pwd\n\
                 COPY --from=files /srv/../which /copied\n",
            );
            let (direct_id, _) = build_id(world, &direct, &[]);
            assert_eq!(direct_id, id, "{value}");
        }
        // An unknown tag: a clear error, nothing tagged.
        let out = world.build(
            &ctx,
            &[
                "-t",
                "notag:1",
                "--build-context",
                &format!("base=oci-layout://{}:nope", p(&layout)),
            ],
        );
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no image tagged \"nope\" (tags: lay:1)"),
            "{err}"
        );
        let images = world.kiln(&["images"]);
        assert!(!String::from_utf8_lossy(&images.stdout).contains("notag"));
    });
}

#[test]
fn bad_values_are_refused_before_anything_is_tagged() {
    let world = World::new(identities()[0]);
    let ctx = world.context("ctx", "FROM scratch\nCOPY --from=src a /a\n");
    let missing = world.tmp.path().join("missing");
    let file = tree(&world, "file", &[("f", "x")]).join("f");
    for (value, message) in [
        (
            "src".to_string(),
            "--build-context \"src\": expected NAME=VALUE".to_string(),
        ),
        (
            "Src=/tmp".to_string(),
            "invalid context name \"Src\"".to_string(),
        ),
        (
            format!("src={}", p(&missing)),
            format!(
                "build context src: {}: No such file or directory",
                p(&missing)
            ),
        ),
        (
            format!("src={}", p(&file)),
            format!("build context src: {}: not a directory", p(&file)),
        ),
        (
            "src=docker-image://Bad".to_string(),
            "repository name must be lowercase".to_string(),
        ),
        (
            "src=ftp://host/x".to_string(),
            "unsupported context source ftp://".to_string(),
        ),
        (
            format!("src=oci-layout://{}", p(&missing)),
            "index.json".to_string(),
        ),
    ] {
        let out = world.build(&ctx, &["-t", "bad:1", "--build-context", &value]);
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&message), "{value}: {err}");
        let images = world.kiln(&["images"]);
        assert!(!String::from_utf8_lossy(&images.stdout).contains("bad"));
    }
    // A FROM of a directory context says so, at the line.
    let from_dir = world.context("fromdir", "FROM src\n");
    let dir = tree(&world, "dir", &[("a", "a")]);
    let out = world.build(&from_dir, &["--build-context", &format!("src={}", p(&dir))]);
    assert_refused(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:1:1: the build context src is a directory"),
        "{err}"
    );
    // A name nothing uses is ignored, as in BuildKit.
    let plain = world.context("plain", "FROM scratch\nCOPY Dockerfile /d\n");
    let (a, _) = build_id(&world, &plain, &[]);
    let (b, _) = build_id(
        &world,
        &plain,
        &["--build-context", &format!("unused={}", p(&dir))],
    );
    assert_eq!(a, b);
    let _ = Identity::Root;
}

/// Serves `body` at `/files/notes.txt` (404 elsewhere) on loopback, for `max` requests.
fn serve(body: &'static str, max: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let (status, body) = match first.split_whitespace().nth(1) {
                Some("/files/notes.txt") => ("200 OK", body),
                _ => ("404 Not Found", "no"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_url_is_a_directory_holding_the_file_it_serves() {
    each_identity(|world| {
        let base = serve("served\n", 3);
        let ctx = world.context(
            "ctx",
            "FROM scratch\nCOPY --from=remote notes.txt /notes.txt\n",
        );
        let value = format!("remote={base}/files/notes.txt");
        let (id, _) = build_id(world, &ctx, &["-t", "url:1", "--build-context", &value]);
        let img = image(world, "url:1");
        assert_eq!(img.text("notes.txt"), "served\n");
        assert_eq!(img.file("notes.txt").mode & 0o777, 0o600);
        // Keyed by what was served: the same bytes again are CACHED.
        let (again, out) = build_id(world, &ctx, &["--build-context", &value]);
        assert_eq!(again, id);
        assert_eq!(ran(&out), Vec::<String>::new(), "{}", both(&out));
        // A missing file: the server's answer, nothing tagged.
        let out = world.build(
            &ctx,
            &[
                "-t",
                "url404:1",
                "--build-context",
                &format!("remote={base}/gone"),
            ],
        );
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("build context remote:") && err.contains("404"),
            "{err}"
        );
    });
}

#[test]
fn a_git_url_is_its_commit_checked_out_and_keyed_by_content() {
    let servers = common::gitserve::GitServers::start();
    let repo = servers.repo("lib");
    repo.commit(
        &[
            ("src/lib.txt", "one\n", 0o644),
            ("src/.dockerignore", "*.tmp\n", 0o644),
            ("src/x.tmp", "ignored\n", 0o644),
            ("README", "r\n", 0o644),
        ],
        "one",
    );
    each_identity(|world| {
        let dockerfile = format!(
            "{}RUN echo first > /first\nCOPY --from=lib / /lib/\nRUN cat /lib/lib.txt > /seen\n",
            common::identity::BUSYBOX
        );
        let ctx = world.context("ctx", &dockerfile);
        for url in [
            format!("lib={}#main:src", servers.http_url("lib")),
            format!("lib={}#main:src", servers.git_url("lib")),
        ] {
            let (id, _) = build_id(world, &ctx, &["-t", "git:1", "--build-context", &url]);
            let img = image(world, "git:1");
            assert_eq!(img.text("lib/lib.txt"), "one\n", "{url}");
            assert!(
                !img.files.contains_key("lib/x.tmp"),
                "{url}: its .dockerignore holds"
            );
            assert!(
                !img.files.contains_key("lib/README"),
                "{url}: the subdir only"
            );
            assert!(!img.files.contains_key("lib/.git"), "{url}");
            assert_eq!(img.text("seen"), "one\n");
            // The same commit again: all CACHED (the checkout is new, its content is not).
            let (again, out) = build_id(world, &ctx, &["--build-context", &url]);
            assert_eq!(again, id, "{url}");
            assert_eq!(ran(&out), Vec::<String>::new(), "{url}\n{}", both(&out));
        }
        let url = format!("lib={}#main:src", servers.http_url("lib"));
        let bad = world.build(
            &ctx,
            &[
                "-t",
                "gitbad:1",
                "--build-context",
                &format!("lib={}#nope", servers.http_url("lib")),
            ],
        );
        assert_refused(&bad);
        assert!(both(&bad).contains("build context lib:"), "{}", both(&bad));
        assert!(!String::from_utf8_lossy(&world.kiln(&["images"]).stdout).contains("gitbad"));
        // A new commit re-runs what reads the context, nothing before it.
        let (before, _) = build_id(world, &ctx, &["--build-context", &url]);
        repo.commit(&[("src/lib.txt", "two\n", 0o644)], "two");
        let (after, out) = build_id(world, &ctx, &["-t", "git:2", "--build-context", &url]);
        assert_ne!(after, before);
        let ran = ran(&out);
        assert_eq!(ran.len(), 2, "{ran:?}\n{}", both(&out));
        assert!(ran[0].contains("COPY --from=lib"), "{ran:?}");
        assert_eq!(image(world, "git:2").text("seen"), "two\n");
        // Back to the first content for the next identity.
        repo.commit(&[("src/lib.txt", "one\n", 0o644)], "three");
    });
}
