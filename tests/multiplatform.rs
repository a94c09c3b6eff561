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

/// The arm64 busybox (`testdata/platform/make-busybox.sh`, cached); root only.
fn arm64_busybox() -> PathBuf {
    let out = Command::new(common::testdata("platform/make-busybox.sh"))
        .arg("arm64")
        .output()
        .expect("make-busybox.sh");
    assert!(
        out.status.success(),
        "make-busybox.sh arm64 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
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
