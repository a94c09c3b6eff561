//! `--platform` for another architecture: RUN goes through the kernel's binfmt_misc
//! emulator (qemu-user-static, registered with the F flag, which `.ci/run` installs), on a
//! base made in the test from Debian's arm64 busybox-static
//! (`testdata/platform/make-busybox.sh`). As root and as the unprivileged test user.

mod common;

use common::identity::{Identity, World, assert_ok, assert_refused, identities, is_root};
use std::path::{Path, PathBuf};

/// The arm64 busybox, made once (root and the package mirror needed); `None` skips.
fn arm64_busybox() -> Option<PathBuf> {
    if !is_root() {
        eprintln!("skipped: fetching the arm64 busybox needs root");
        return None;
    }
    Some(common::foreign_busybox("arm64"))
}

fn emulator_registered(name: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc/sys/fs/binfmt_misc").join(name))
        .is_ok_and(|t| t.starts_with("enabled") && t.contains("flags: ") && t.contains('F'))
}

/// A context whose busybox is `busybox` (another architecture's).
fn context(w: &World, name: &str, busybox: &Path, body: &str) -> PathBuf {
    let ctx = w.context(
        name,
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n{body}"
        ),
    );
    std::fs::copy(busybox, ctx.join("busybox")).expect("copy arm64 busybox");
    common::open_up(&ctx);
    ctx
}

fn iid(w: &World, ctx: &Path, tag: &str) -> String {
    let file = w.user_dir("iid").join(tag.replace(':', "_"));
    let file = file.to_str().expect("utf-8");
    let out = w.build(
        ctx,
        &[
            "--platform",
            "linux/arm64",
            "--no-cache",
            "--iidfile",
            file,
            "-t",
            tag,
        ],
    );
    assert_ok(&out);
    std::fs::read_to_string(file).expect("iidfile")
}

#[test]
fn an_arm64_build_runs_its_steps_under_emulation_and_is_an_arm64_image() {
    let Some(busybox) = arm64_busybox() else {
        return;
    };
    if !emulator_registered("qemu-aarch64") {
        panic!(
            "qemu-aarch64 is not registered with the F flag (apt-get install qemu-user-static binfmt-support)"
        );
    }
    for id in identities() {
        let w = World::new(id);
        let ctx = context(
            &w,
            "ctx",
            &busybox,
            "ARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDARCH\n\
             RUN uname -m > /arch && echo \"$TARGETPLATFORM $TARGETARCH $BUILDARCH\" > /args\n",
        );
        let out = w.build(&ctx, &["--platform", "linux/arm64", "-t", "arm:1"]);
        assert_ok(&out);
        let img = w.image("arm:1");
        assert_eq!(img.text("arch"), "aarch64\n", "{id:?}");
        assert_eq!(img.text("args"), "linux/arm64 arm64 amd64\n", "{id:?}");
        assert_eq!(img.config["architecture"], "arm64", "{id:?}");
        assert_eq!(img.config["os"], "linux", "{id:?}");
        if id == Identity::Root {
            // Reproducible as every build: two --no-cache builds, one image ID.
            assert_eq!(iid(&w, &ctx, "arm:2"), iid(&w, &ctx, "arm:3"));
            // The host build of the same Dockerfile is another image (and would not run
            // this busybox): the platform is part of every RUN's key.
            let out = w.build(&ctx, &["--platform", "linux/arm64", "-t", "arm:4"]);
            assert_ok(&out);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(err.matches("CACHED").count(), 3, "{err}");
        }
    }
}

/// Disables a binfmt_misc entry for the life of the guard (root only; the entry is not
/// one any other test uses).
struct Disabled(PathBuf);

impl Disabled {
    fn new(name: &str) -> Option<Disabled> {
        let path = Path::new("/proc/sys/fs/binfmt_misc").join(name);
        std::fs::write(&path, "0").ok()?;
        Some(Disabled(path))
    }
}

impl Drop for Disabled {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "1");
    }
}

#[test]
fn a_platform_without_an_emulator_fails_before_any_step_runs() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n",
        );
        // No emulator can exist for an architecture kiln does not know.
        let out = w.build(&ctx, &["--platform", "linux/vax", "-t", "vax:1"]);
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("platform linux/vax"), "{id:?}: {err}");
        assert!(!err.contains("#1 "), "{id:?}: a step started: {err}");

        // A known one whose emulator is switched off.
        if id == Identity::Root
            && emulator_registered("qemu-riscv64")
            && let Some(_off) = Disabled::new("qemu-riscv64")
        {
            let out = w.build(&ctx, &["--platform", "linux/riscv64", "-t", "rv:1"]);
            assert_refused(&out);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                err.contains("platform linux/riscv64: RUN needs an emulator"),
                "{err}"
            );
            assert!(err.contains("qemu-user-static"), "{err}");
            assert!(!err.contains("#1 "), "a step started: {err}");
        }
        let images = String::from_utf8_lossy(&w.kiln(&["images"]).stdout).into_owned();
        assert!(
            !images.contains("vax") && !images.contains("rv"),
            "{images}"
        );
        // A stored base of another platform is not used for this one.
        let host = w.context("host-base", "FROM scratch\nCOPY busybox /bin/busybox\n");
        assert_ok(&w.build(&host, &["-t", "hostbase:1"]));
        let on = w.context("on-base", "FROM hostbase:1\nCOPY Dockerfile /\n");
        let out = w.build(&on, &["--platform", "linux/arm64", "-t", "onbase:1"]);
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("the stored image is for linux/amd64, the build for linux/arm64"),
            "{id:?}: {err}"
        );
        // A build without RUN needs no emulator.
        let ctx = w.context("copy-only", "FROM scratch\nCOPY busybox /bin/busybox\n");
        assert_ok(&w.build(&ctx, &["--platform", "linux/riscv64", "-t", "rvcopy:1"]));
        assert_eq!(w.image("rvcopy:1").config["architecture"], "riscv64");
    }
}
