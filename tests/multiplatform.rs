//! `kiln build --platform linux/amd64,linux/arm64`: one graph solved per platform, the
//! arm64 one under qemu-user-static through binfmt_misc (registered with the F flag by
//! `.ci/run`), tied together in one OCI index: written to an OCI layout, saved as a docker
//! archive (this machine's platform only), pushed to a real `docker-registry` and read
//! back by skopeo. As root and as the unprivileged test user.

mod common;

use common::Image;
use common::identity::{Identity, World, assert_ok, assert_refused, identities, is_root};
use common::registry::Registry;
use std::path::{Path, PathBuf};
use std::process::Command;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A RUN-heavy Dockerfile whose base is the target's own busybox.
const DOCKERFILE: &str = "FROM scratch
ARG TARGETARCH
COPY busybox-${TARGETARCH} /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
ENV PATH=/bin
ARG TARGETPLATFORM
RUN uname -m > /arch && echo \"$TARGETPLATFORM\" > /target
RUN for i in 1 2 3; do echo $i >> /steps; done
RUN wc -l < /steps > /count
";

/// The arm64 busybox; root only.
fn arm64_busybox() -> PathBuf {
    common::foreign_busybox("arm64")
}

fn context(w: &World, name: &str, arm64: &Path) -> PathBuf {
    let ctx = w.context(name, DOCKERFILE);
    std::fs::copy("/bin/busybox", ctx.join("busybox-amd64")).expect("copy amd64 busybox");
    std::fs::copy(arm64, ctx.join("busybox-arm64")).expect("copy arm64 busybox");
    common::open_up(&ctx);
    ctx
}

fn json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// Builds the context for both platforms (with `extra` flags); the iidfile's content.
fn build(w: &World, ctx: &Path, tag: &str, extra: &[&str]) -> (String, String) {
    let iid = w.user_dir("iid").join(tag.replace([':', '/'], "_"));
    let iid_s = iid.to_str().expect("utf-8");
    let mut args = vec![
        "--platform",
        "linux/amd64,linux/arm64",
        "--iidfile",
        iid_s,
        "-t",
        tag,
    ];
    args.extend_from_slice(extra);
    let out = w.build(ctx, &args);
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (std::fs::read_to_string(&iid).expect("iidfile"), err)
}

#[test]
fn a_two_platform_build_is_one_index_of_two_images_each_built_for_its_platform() {
    assert_eq!(
        std::env::consts::ARCH,
        "x86_64",
        "these tests pair this machine's amd64 busybox with Debian's arm64 one"
    );
    assert!(is_root(), "fetching the arm64 busybox needs root");
    let arm64 = arm64_busybox();
    for id in identities() {
        let w = World::new(id);
        let ctx = context(&w, "ctx", &arm64);
        let layout = w.user_dir("layout");
        let dest = format!("type=oci,dest={},tar=false", layout.display());
        let (iid, err) = build(&w, &ctx, "multi:1", &["-o", &dest]);

        // Each platform's steps show under its own name, numbered apart.
        assert!(err.contains("[linux/amd64 "), "{id:?}: {err}");
        assert!(err.contains("[linux/arm64 "), "{id:?}: {err}");

        // The layout holds the index; the iidfile names it.
        let top = json(&layout.join("index.json"));
        assert_eq!(top["manifests"].as_array().expect("manifests").len(), 1);
        assert_eq!(top["manifests"][0]["mediaType"], INDEX, "{top}");
        assert_eq!(top["manifests"][0]["digest"], iid.as_str(), "{top}");
        let index = json(&blob(&layout, &iid));
        assert_eq!(index["mediaType"], INDEX);
        let children = index["manifests"].as_array().expect("children");
        let platforms: Vec<String> = children
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c["platform"]["os"].as_str().expect("os"),
                    c["platform"]["architecture"].as_str().expect("arch")
                )
            })
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{id:?}");

        // Each image really ran its steps on its platform.
        for (child, (machine, arch)) in children
            .iter()
            .zip([("x86_64", "amd64"), ("aarch64", "arm64")])
        {
            let digest = child["digest"].as_str().expect("digest");
            let img = Image::from_oci_layout(&layout, digest);
            assert_eq!(img.config["architecture"], arch, "{id:?}");
            assert_eq!(img.config["os"], "linux", "{id:?}");
            assert_eq!(img.text("arch"), format!("{machine}\n"), "{id:?}");
            assert_eq!(img.text("target"), format!("linux/{arch}\n"), "{id:?}");
            assert_eq!(img.text("count"), "3\n", "{id:?}");
        }

        // A docker archive holds one platform: this machine's.
        let saved = w.user_dir("save").join("multi.tar");
        assert_ok(&w.kiln(&["save", "-o", saved.to_str().expect("utf-8"), "multi:1"]));
        let native = Image::from_docker_archive(&saved);
        assert_eq!(native.text("arch"), "x86_64\n", "{id:?}");
        assert_eq!(native.config["architecture"], "amd64", "{id:?}");
        // And an OCI archive the whole index.
        let oci = w.user_dir("save").join("multi-oci.tar");
        let oci_s = oci.to_str().expect("utf-8");
        assert_ok(&w.kiln(&["save", "--format", "oci", "-o", oci_s, "multi:1"]));
        let listing = Command::new("tar")
            .args(["-tf", oci_s])
            .output()
            .expect("tar");
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        for child in children {
            let hex = child["digest"]
                .as_str()
                .expect("digest")
                .trim_start_matches("sha256:");
            assert!(listing.contains(hex), "{id:?}: {listing}");
        }

        // Unchanged, it is all cached; the result is the same index.
        let (again, err) = build(&w, &ctx, "multi:2", &[]);
        assert_eq!(again, iid, "{id:?}");
        assert_eq!(err.matches("CACHED").count(), 10, "{id:?}: {err}");

        if id == Identity::Root {
            // Reproducible: two --no-cache builds give the same index, the cached one's.
            let (a, _) = build(&w, &ctx, "multi:3", &["--no-cache"]);
            let (b, _) = build(&w, &ctx, "multi:4", &["--no-cache"]);
            assert_eq!(a, iid);
            assert_eq!(b, iid);
        }
    }
}

#[test]
fn the_build_platforms_stage_runs_natively_once_for_every_target() {
    assert!(is_root(), "fetching the arm64 busybox needs root");
    let arm64 = arm64_busybox();
    for id in identities() {
        let w = World::new(id);
        let ctx = context(&w, "ctx", &arm64);
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM --platform=$BUILDPLATFORM scratch AS tools\n\
             COPY busybox-amd64 /bin/busybox\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox uname -m > /built-on && /bin/busybox cat /proc/sys/kernel/random/uuid > /nonce\"]\n\
             FROM scratch\n\
             ARG TARGETARCH\n\
             COPY busybox-${TARGETARCH} /bin/busybox\n\
             COPY --from=tools /built-on /nonce /\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox uname -m > /arch\"]\n",
        )
        .expect("write Dockerfile");
        let layout = w.user_dir("layout");
        let dest = format!("type=oci,dest={},tar=false", layout.display());
        let (iid, err) = build(&w, &ctx, "cross:1", &["--no-cache", "-o", &dest]);
        let index = json(&blob(&layout, &iid));
        let images: Vec<Image> = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|c| Image::from_oci_layout(&layout, c["digest"].as_str().expect("digest")))
            .collect();
        assert_eq!(images.len(), 2);
        for (img, arch) in images.iter().zip(["x86_64\n", "aarch64\n"]) {
            // The tools ran on this machine, natively, whatever the target.
            assert_eq!(img.text("built-on"), "x86_64\n", "{id:?}");
            assert_eq!(img.text("arch"), arch, "{id:?}");
        }
        // The tools stage shows as this machine's platform's in both solves; the target
        // stages as their own.
        assert!(!err.contains("[linux/arm64 tools"), "{id:?}: {err}");
        assert!(err.contains("[linux/amd64 tools 3/3] RUN"), "{id:?}: {err}");
        assert!(err.contains("[linux/arm64 stage-1 "), "{id:?}: {err}");
        // Once: the random id it wrote is the same in both images (a second run would
        // have written another).
        assert_eq!(
            images[0].text("nonce"),
            images[1].text("nonce"),
            "{id:?}: {err}"
        );
        assert_eq!(images[0].config["architecture"], "amd64");
        assert_eq!(images[1].config["architecture"], "arm64");
    }
}

#[test]
fn a_platform_list_with_no_emulator_for_one_fails_before_any_step_and_names_nothing() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n",
        );
        let out = w.build(
            &ctx,
            &["--platform", "linux/amd64,linux/vax", "-t", "two:1"],
        );
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("platform linux/vax"), "{id:?}: {err}");
        assert!(!err.contains("#1 "), "{id:?}: a step started: {err}");
        let images = String::from_utf8_lossy(&w.kiln(&["images"]).stdout).into_owned();
        assert!(!images.contains("two"), "{id:?}: {images}");
    }
}

#[test]
fn a_pushed_index_is_what_skopeo_reads_and_copies_with_every_platform() {
    assert!(is_root(), "fetching the arm64 busybox needs root");
    let arm64 = arm64_busybox();
    let registry = Registry::start();
    let w = World::new(Identity::Root);
    let ctx = context(&w, "ctx", &arm64);
    let name = format!("{}/kiln/multi:1", registry.host());
    let (iid, _) = build(&w, &ctx, &name, &["--push"]);

    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .expect("skopeo must be installed (apt-get install skopeo)");
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    // The registry holds the very bytes kiln made: their digest is the iidfile's.
    let digest = format!("sha256:{}", sha256_hex(&raw.stdout));
    assert_eq!(digest, iid);
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("index json");
    assert_eq!(index["mediaType"], INDEX);
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    // `-o type=registry` pushes the same index.
    let name2 = format!("{}/kiln/multi:2", registry.host());
    let (iid2, _) = build(&w, &ctx, &name2, &["-o", "type=registry"]);
    assert_eq!(iid2, iid);
    let raw2 = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name2}"))
        .output()
        .expect("skopeo");
    assert!(
        raw2.status.success(),
        "{}",
        String::from_utf8_lossy(&raw2.stderr)
    );
    assert_eq!(raw2.stdout, raw.stdout);

    let copy = w.user_dir("copy");
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:multi", copy.display()))
        .output()
        .expect("skopeo copy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for m in index["manifests"].as_array().expect("manifests") {
        let digest = m["digest"].as_str().expect("digest");
        let img = Image::from_oci_layout(&copy, digest);
        let want = match m["platform"]["architecture"].as_str() {
            Some("arm64") => "aarch64\n",
            _ => "x86_64\n",
        };
        assert_eq!(img.text("arch"), want);
    }

    // A fresh store builds on the pushed index for both platforms: each build pulls its
    // platform's child, and the name keeps standing for this machine's.
    let fresh = World::new(Identity::Root);
    let on = fresh.context(
        "on",
        &format!("FROM {name}\nRUN uname -m > /arch2 && cat /arch >> /arch2\n"),
    );
    let layout = fresh.user_dir("layout");
    let dest = format!("type=oci,dest={},tar=false", layout.display());
    let (iid, _) = build(&fresh, &on, "on:1", &["-o", &dest]);
    let index = json(&blob(&layout, &iid));
    for (child, want) in index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .zip(["x86_64\nx86_64\n", "aarch64\naarch64\n"])
    {
        let img = Image::from_oci_layout(&layout, child["digest"].as_str().expect("digest"));
        assert_eq!(img.text("arch2"), want);
    }
    let saved = fresh.user_dir("save").join("base.tar");
    assert_ok(&fresh.kiln(&["save", "-o", saved.to_str().expect("utf-8"), &name]));
    assert_eq!(Image::from_docker_archive(&saved).text("arch"), "x86_64\n");
    // Both children are in the store now: the base is whole again, its index saved.
    let oci = fresh.user_dir("save").join("base-oci");
    let dest = format!("type=oci,dest={},tar=false", oci.display());
    let (again, err) = build(&fresh, &on, "on:2", &["-o", &dest]);
    assert_eq!(again, iid, "{err}");
    assert!(!err.contains("pulling"), "{err}");
}

#[test]
fn a_base_is_taken_from_its_index_by_platform_variant_included() {
    let registry = Registry::start();
    let w = World::new(Identity::Root);
    // Two arm variants of one image, nothing to run: no emulator needed.
    let ctx = w.context(
        "variants",
        "FROM scratch\nARG TARGETVARIANT\nCOPY variant-${TARGETVARIANT} /variant\n",
    );
    for v in ["v6", "v7"] {
        std::fs::write(ctx.join(format!("variant-{v}")), format!("{v}\n")).expect("write");
    }
    common::open_up(&ctx);
    let name = format!("{}/kiln/arm:1", registry.host());
    let out = w.build(
        &ctx,
        &[
            "--platform",
            "linux/arm/v6,linux/arm/v7",
            "--push",
            "-t",
            &name,
        ],
    );
    assert_ok(&out);

    for id in identities() {
        let fresh = World::new(id);
        let on = fresh.context("on", &format!("FROM {name}\nCOPY Dockerfile /on\n"));
        // v7 first, then v6 in the same store: the second build pulls its own child.
        for v in ["v7", "v6"] {
            let platform = format!("linux/arm/{v}");
            let tag = format!("on:{v}");
            assert_ok(&fresh.build(&on, &["--platform", &platform, "-t", &tag]));
            let oci = fresh.user_dir("oci").join(v);
            let dest = format!("type=oci,dest={},tar=false", oci.display());
            let out = fresh.build(&on, &["--platform", &platform, "-t", &tag, "-o", &dest]);
            assert_ok(&out);
            let top = json(&oci.join("index.json"));
            let digest = top["manifests"][0]["digest"].as_str().expect("digest");
            let img = Image::from_oci_layout(&oci, digest);
            assert_eq!(img.text("variant"), format!("{v}\n"), "{id:?}");
            assert_eq!(img.config["architecture"], "arm", "{id:?}");
            assert_eq!(img.config["variant"], v, "{id:?}");
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kiln inspect ARGS...` as JSON.
fn inspect(w: &World, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    let out = w.kiln(&all);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

#[test]
fn images_inspect_and_history_show_an_index_and_each_of_its_platforms() {
    assert!(is_root(), "fetching the arm64 busybox needs root");
    let arm64 = arm64_busybox();
    for id in identities() {
        let w = World::new(id);
        let ctx = context(&w, "ctx", &arm64);
        let (iid, _) = build(&w, &ctx, "multi:1", &[]);
        assert_ok(&w.build(&ctx, &["-t", "single:1"]));

        // `kiln images`: a PLATFORMS column, the index's short digest as the ID; the
        // single image's row is what it always was (no trailing column).
        let out = w.kiln(&["images"]);
        assert_ok(&out);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{id:?}: {text}");
        assert!(
            lines[0].starts_with("NAME ") && lines[0].ends_with("SIZE (compressed)  PLATFORMS"),
            "{id:?}: {text}"
        );
        let multi = lines
            .iter()
            .find(|l| l.starts_with("multi:1 "))
            .expect("multi row");
        let short = &iid.trim_start_matches("sha256:")[..12];
        assert!(multi.contains(&format!(" {short} ")), "{id:?}: {text}");
        assert!(
            multi.ends_with("  linux/amd64, linux/arm64"),
            "{id:?}: {text}"
        );
        assert_eq!(
            multi.find("linux/amd64"),
            lines[0].find("PLATFORMS"),
            "{text}"
        );
        let single = lines
            .iter()
            .find(|l| l.starts_with("single:1 "))
            .expect("row");
        assert!(
            !single.contains("linux/") && !single.ends_with(' '),
            "{id:?}: {text}"
        );

        // `kiln inspect`: the index, each platform's digests, and the image standing for
        // it (this machine's).
        let doc = inspect(&w, &["multi:1"]);
        assert_eq!(doc["Id"], iid.as_str(), "{id:?}: {doc}");
        assert_eq!(doc["IndexDigest"], iid.as_str());
        assert_eq!(doc["Platform"], "linux/amd64");
        let platforms = doc["Platforms"].as_array().expect("Platforms");
        let names: Vec<&str> = platforms
            .iter()
            .map(|p| p["Platform"].as_str().expect("Platform"))
            .collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"], "{id:?}");
        assert_eq!(doc["ManifestDigest"], platforms[0]["ManifestDigest"]);
        assert_eq!(doc["Config"]["architecture"], "amd64");
        assert_ne!(
            platforms[0]["ManifestDigest"],
            platforms[1]["ManifestDigest"]
        );
        // The index's children are these manifests, in this order.
        let layout = w.user_dir("layout");
        let dest = format!("type=oci,dest={},tar=false", layout.display());
        let (again, _) = build(&w, &ctx, "multi:2", &["-o", &dest]);
        assert_eq!(again, iid);
        let index = json(&blob(&layout, &iid));
        for (child, p) in index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .zip(platforms)
        {
            assert_eq!(child["digest"], p["ManifestDigest"], "{id:?}");
            let img = Image::from_oci_layout(&layout, child["digest"].as_str().expect("digest"));
            assert_eq!(
                img.manifest["config"]["digest"], p["ConfigDigest"],
                "{id:?}"
            );
        }

        // One platform chosen: that image's document.
        let arm = inspect(&w, &["--platform", "linux/arm64/v8", "multi:1"]);
        assert_eq!(arm["Platform"], "linux/arm64", "{id:?}: {arm}");
        assert_eq!(arm["IndexDigest"], iid.as_str());
        assert_eq!(arm["Id"], platforms[1]["ConfigDigest"]);
        assert_eq!(arm["ManifestDigest"], platforms[1]["ManifestDigest"]);
        assert_eq!(arm["Config"]["architecture"], "arm64");
        assert!(arm.get("Platforms").is_none(), "{arm}");
        // The index's ID finds it as well as its name.
        let by_id = inspect(&w, &[short]);
        assert_eq!(by_id["IndexDigest"], iid.as_str(), "{id:?}");
        let out = w.kiln(&["inspect", "--platform", "linux/s390x", "multi:1"]);
        assert_refused(&out);
        assert!(
            stderr(&out).contains(
                "multi:1 has no image for linux/s390x; its platforms are linux/amd64, linux/arm64"
            ),
            "{id:?}: {}",
            stderr(&out)
        );
        // A single image: its document as ever; another platform is refused.
        let one = inspect(&w, &["single:1"]);
        let keys: Vec<&String> = one.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["Config", "Id", "Manifest", "ManifestDigest", "Name"]);
        assert_eq!(inspect(&w, &["--platform", "linux/amd64", "single:1"]), one);
        let out = w.kiln(&["inspect", "--platform", "linux/arm64", "single:1"]);
        assert_refused(&out);
        assert!(
            stderr(&out)
                .contains("single:1 has no image for linux/arm64; it is an image for linux/amd64"),
            "{id:?}: {}",
            stderr(&out)
        );

        // `kiln history`: a line naming the platform, then the table as ever.
        let out = w.kiln(&["history", "multi:1"]);
        assert_ok(&out);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PLATFORM linux/amd64 (of linux/amd64, linux/arm64; --platform chooses)"
        );
        assert!(lines[1].starts_with("CREATED "), "{text}");
        let standing = format!("{}\n", lines[1..].join("\n"));
        assert!(
            lines[2].contains(" RUN |2 TARGETARCH=amd64 TARGETPLATFORM=linux/amd64 "),
            "{text}"
        );
        assert!(text.contains("COPY busybox-amd64 "), "{id:?}: {text}");
        assert!(!standing.contains("arm64"), "{id:?}: {text}");
        let out = w.kiln(&["history", "--platform", "linux/arm64", "multi:1"]);
        assert_ok(&out);
        let text = stdout(&out);
        assert!(
            text.starts_with("PLATFORM linux/arm64 (of linux/amd64, linux/arm64)\nCREATED "),
            "{id:?}: {text}"
        );
        assert!(text.contains("COPY busybox-arm64 "), "{id:?}: {text}");
        assert_eq!(text.lines().count(), lines.len(), "{text}");
        // The single image is this machine's image of the index: its history is the
        // table above, without the platform line.
        let single = stdout(&w.kiln(&["history", "single:1"]));
        assert!(single.starts_with("CREATED "), "{id:?}: {single}");
        assert_eq!(single, standing, "{id:?}");
    }
}

/// A COPY-only Dockerfile: any platform builds without an emulator.
const COPY_ONLY: &str = "FROM scratch\nARG TARGETARCH\nCOPY data-${TARGETARCH} /data\n";

fn copy_context(w: &World, name: &str, arm64_data: &str) -> PathBuf {
    let ctx = w.context(name, COPY_ONLY);
    for (arch, data) in [("amd64", "a\n"), ("arm64", arm64_data), ("s390x", "s\n")] {
        std::fs::write(ctx.join(format!("data-{arch}")), data).expect("write data");
    }
    common::open_up(&ctx);
    ctx
}

#[test]
fn diff_of_two_index_images_compares_them_platform_by_platform() {
    for id in identities() {
        let w = World::new(id);
        let ctx = copy_context(&w, "ctx", "b\n");
        let changed = copy_context(&w, "changed", "B\n");
        let two = |ctx: &Path, platforms: &str, tag: &str| {
            assert_ok(&w.build(ctx, &["--platform", platforms, "-t", tag]));
        };
        two(&ctx, "linux/amd64,linux/arm64", "x:1");
        two(&ctx, "linux/amd64,linux/arm64", "x:2");
        two(&changed, "linux/amd64,linux/arm64", "x:3");
        two(&ctx, "linux/amd64,linux/s390x", "y:1");
        let diff = |args: &[&str]| {
            let mut all = vec!["diff"];
            all.extend_from_slice(args);
            let out = w.kiln(&all);
            (out.status.code(), stdout(&out), stderr(&out))
        };

        assert_eq!(
            diff(&["x:1", "x:2"]),
            (
                Some(0),
                "identical: x:1 and x:2 (linux/amd64, linux/arm64)\n".into(),
                String::new()
            ),
            "{id:?}"
        );
        assert_eq!(
            diff(&["x:1", "x:3"]),
            (
                Some(1),
                "platform linux/amd64: identical\n\
                 platform linux/arm64: differs\n\
                 ~ /data (content)\n"
                    .into(),
                String::new()
            ),
            "{id:?}"
        );
        assert_eq!(
            diff(&["x:1", "y:1"]),
            (
                Some(1),
                "platform linux/amd64: identical\n\
                 platform linux/arm64: only in x:1\n\
                 platform linux/s390x: only in y:1\n"
                    .into(),
                String::new()
            ),
            "{id:?}"
        );
        // --platform compares that platform's images only.
        assert_eq!(
            diff(&["--platform", "linux/amd64", "x:1", "x:3"]).0,
            Some(0),
            "{id:?}"
        );
        assert_eq!(
            diff(&["--platform", "linux/arm64", "x:1", "x:3"]),
            (Some(1), "~ /data (content)\n".into(), String::new()),
            "{id:?}"
        );
        let (code, _, err) = diff(&["--platform", "linux/s390x", "x:1", "y:1"]);
        assert_eq!(code, Some(2), "{id:?}: {err}");
        assert!(
            err.contains(
                "x:1 has no image for linux/s390x; its platforms are linux/amd64, linux/arm64"
            ),
            "{id:?}: {err}"
        );

        // JSON: one entry per platform.
        let (code, out, _) = diff(&["--format", "json", "x:1", "y:1"]);
        assert_eq!(code, Some(1));
        let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(doc["identical"], false, "{doc}");
        assert_eq!(doc["platforms"][0]["platform"], "linux/amd64");
        assert_eq!(doc["platforms"][0]["identical"], true);
        assert_eq!(doc["platforms"][0]["comparison"]["identical"], true);
        assert_eq!(doc["platforms"][1]["only_in"], "a");
        assert_eq!(doc["platforms"][2]["only_in"], "b");
        let (_, out, _) = diff(&["--format", "json", "x:1", "x:3"]);
        let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            doc["platforms"][1]["comparison"]["files"][0]["path"],
            "/data"
        );

        // A docker archive holds one image, this machine's: an index without it is refused.
        two(&ctx, "linux/arm64,linux/s390x", "z:1");
        let tar = w.user_dir("archives").join("z.tar");
        let out = w.kiln(&["save", "-o", tar.to_str().expect("utf-8"), "z:1"]);
        assert_refused(&out);
        assert!(
            stderr(&out).contains(
                "z:1 is an image for linux/arm64, linux/s390x: a docker archive holds one platform"
            ),
            "{id:?}: {}",
            stderr(&out)
        );
        assert!(
            !tar.exists(),
            "{id:?}: a refused save left {}",
            tar.display()
        );

        // The same for indexes written out: an OCI layout and an OCI archive.
        let layout = w.user_dir("x1-layout");
        let archive = w.user_dir("archives").join("x3.tar");
        let archive_s = archive.to_str().expect("utf-8");
        assert_ok(&w.kiln(&["save", "--format", "oci", "-o", archive_s, "x:3"]));
        let dest = format!("type=oci,dest={},tar=false", layout.display());
        assert_ok(&w.build(
            &ctx,
            &["--platform", "linux/amd64,linux/arm64", "-o", &dest],
        ));
        let oci = format!("oci:{}", layout.display());
        let oci_archive = format!("oci-archive:{archive_s}");
        assert_eq!(diff(&[&oci, "x:1"]).0, Some(0), "{id:?}");
        assert_eq!(
            diff(&[&oci, &oci_archive]),
            (
                Some(1),
                "platform linux/amd64: identical\n\
                 platform linux/arm64: differs\n\
                 ~ /data (content)\n"
                    .into(),
                String::new()
            ),
            "{id:?}"
        );
        // And `kiln load` takes such an archive whole: the same index, both platforms.
        let fresh = World::new(id);
        let out = fresh.kiln(&["load", "-i", archive_s]);
        assert_ok(&out);
        let loaded = inspect(&fresh, &["x:3"]);
        assert_eq!(loaded["Id"], inspect(&w, &["x:3"])["Id"], "{id:?}");
        let again = fresh.user_dir("again").join("x3.tar");
        let again_s = again.to_str().expect("utf-8");
        assert_ok(&fresh.kiln(&["save", "--format", "oci", "-o", again_s, "x:3"]));
        let out = w.kiln(&["diff", &oci_archive, &format!("oci-archive:{again_s}")]);
        assert_eq!(out.status.code(), Some(0), "{id:?}: {}", stdout(&out));
    }
}

#[test]
fn verify_reproducible_builds_every_platform_twice_and_names_the_one_that_differs() {
    assert!(is_root(), "fetching the arm64 busybox needs root");
    let arm64 = arm64_busybox();
    for id in identities() {
        let w = World::new(id);
        let ctx = context(&w, "ctx", &arm64);
        let layout = w.user_dir("layout");
        let dest = format!("type=oci,dest={},tar=false", layout.display());
        let (iid, err) = build(&w, &ctx, "v:1", &["--verify-reproducible", "-o", &dest]);
        assert!(
            err.contains(&format!(
                "verify-reproducible: both builds gave the same index digest {iid}"
            )),
            "{id:?}: {err}"
        );
        assert!(err.contains("naming to v:1"), "{id:?}: {err}");
        assert!(iid.starts_with("sha256:"), "{iid}");
        assert_eq!(inspect(&w, &["v:1"])["Id"], iid.as_str(), "{id:?}");
        // Exported as a plain build's: the index and both platforms' images, whole.
        let top = json(&layout.join("index.json"));
        assert_eq!(top["manifests"][0]["digest"], iid.as_str(), "{top}");
        let index = json(&blob(&layout, &iid));
        let arm = index["manifests"][1]["digest"].as_str().expect("digest");
        assert_eq!(
            Image::from_oci_layout(&layout, arm).text("arch"),
            "aarch64\n"
        );
        // And the index is the one a plain build makes.
        let (plain, _) = build(&w, &ctx, "v:2", &["--no-cache"]);
        assert_eq!(plain, iid, "{id:?}");

        // Random bytes on arm64 only: that platform, and only it, is named.
        let bad = context(&w, "bad", &arm64);
        let stamp = "RUN if [ \"$(uname -m)\" = aarch64 ]; then od -An -N8 -tx8 /dev/urandom; \
                     else echo fixed; fi > /stamp\n";
        std::fs::write(bad.join("Dockerfile"), format!("{DOCKERFILE}{stamp}")).expect("write");
        let out = w.build(
            &bad,
            &[
                "--verify-reproducible",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "bad:1",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{id:?}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "platform linux/amd64: identical\n\
             platform linux/arm64: differs\n\
             ~ /stamp (content)\n",
            "{id:?}"
        );
        assert!(
            stderr(&out).contains("verify-reproducible: not reproducible on linux/arm64: two --no-cache builds gave indexes sha256:"),
            "{id:?}: {}",
            stderr(&out)
        );
        assert_refused(&w.kiln(&["inspect", "bad:1"]));
    }
}

#[test]
fn a_base_pulled_for_one_platform_of_its_index_lists_as_one_image_until_the_store_holds_all() {
    assert!(is_root(), "fetching the arm64 busybox needs root");
    let arm64 = arm64_busybox();
    let registry = Registry::start();
    let w = World::new(Identity::Root);
    let ctx = context(&w, "ctx", &arm64);
    let name = format!("{}/kiln/pulled:1", registry.host());
    let (iid, _) = build(&w, &ctx, &name, &["--push"]);

    let fresh = World::new(Identity::Root);
    assert_ok(&fresh.kiln(&["pull", &name]));
    // Only this machine's image is in the store: a single image, as before indexes.
    let text = stdout(&fresh.kiln(&["images"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("SIZE (compressed)"), "{text}");
    assert!(lines[1].starts_with(&format!("{name} ")), "{text}");
    assert!(!lines[1].contains("linux/"), "{text}");
    let doc = inspect(&fresh, &[&name]);
    assert!(doc.get("Platforms").is_none(), "{doc}");
    assert!(doc.get("IndexDigest").is_none(), "{doc}");
    assert_eq!(doc["Config"]["architecture"], "amd64");
    let history = stdout(&fresh.kiln(&["history", &name]));
    assert!(history.starts_with("CREATED "), "{history}");
    let out = fresh.kiln(&["history", "--platform", "linux/arm64", &name]);
    assert_refused(&out);
    assert!(
        stderr(&out).contains(&format!(
            "{name}: the store holds no image for linux/arm64, only for linux/amd64; \
             `kiln pull --platform linux/arm64 {name}` fetches it"
        )),
        "{}",
        stderr(&out)
    );

    // A build on it for both platforms pulls the arm64 image: now the store holds the
    // whole index, and the base lists as the image of two platforms it is.
    let on = fresh.context("on", &format!("FROM {name}\nRUN cat /arch > /arch2\n"));
    build(&fresh, &on, "on:1", &[]);
    let text = stdout(&fresh.kiln(&["images"]));
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .expect("the base's row");
    let short = &iid.trim_start_matches("sha256:")[..12];
    assert!(row.contains(&format!(" {short} ")), "{text}");
    assert!(row.ends_with("  linux/amd64, linux/arm64"), "{text}");
    let arm = stdout(&fresh.kiln(&["history", "--platform", "linux/arm64", &name]));
    assert!(arm.contains("COPY busybox-arm64 "), "{arm}");
    assert_eq!(inspect(&fresh, &[&name])["Id"], iid.as_str());
}
