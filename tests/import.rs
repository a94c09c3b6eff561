//! `kiln import` through the binary: the same files give the same image ID (whatever their
//! times or compression), `--change` and `-m` shape the config, failures tag nothing, and
//! the README's offline example (make-rootfs.sh → import → build with RUN → run) works as
//! root and as the unprivileged test user `kilnrootless`.

mod common;

use common::{Kiln, kiln_bin, stderr, stdout, testdata};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `testdata/busybox-base/make-rootfs.sh OUT`, as the README runs it.
fn make_rootfs(out: &Path) {
    let status = Command::new("sh")
        .arg(testdata("busybox-base/make-rootfs.sh"))
        .arg(out)
        .status()
        .expect("sh");
    assert!(
        status.success(),
        "make-rootfs.sh failed (busybox-static installed?)"
    );
}

/// The image ID `kiln import` printed.
fn import_ok(kiln: &Kiln, args: &[&str]) -> String {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    let out = kiln.run(&all);
    assert!(out.status.success(), "kiln import: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    id
}

/// `tar` rewritten with every mtime moved, as a rootfs made at another time would be.
fn retimed(tar: &Path, out: &Path) {
    let mut reader = tar::Archive::new(fs::File::open(tar).unwrap());
    let mut writer = tar::Builder::new(fs::File::create(out).unwrap());
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        header.set_mtime(header.mtime().unwrap() + 86_400 * 365);
        header.set_cksum();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        writer.append(&header, data.as_slice()).unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn the_same_files_give_the_same_image_id() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("rootfs.tar");
    make_rootfs(&tar);
    let later = tmp.path().join("later.tar");
    retimed(&tar, &later);
    let gz = tmp.path().join("rootfs.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&fs::read(&later).unwrap()).unwrap();
    enc.finish().unwrap();
    let zst = tmp.path().join("rootfs.tar.zst");
    fs::write(
        &zst,
        zstd::encode_all(&fs::read(&tar).unwrap()[..], 3).unwrap(),
    )
    .unwrap();

    let a = Kiln::new();
    let id = import_ok(&a, &[tar.to_str().unwrap(), "base:1"]);
    let b = Kiln::new();
    for (file, name) in [(&later, "later:1"), (&gz, "gz:1"), (&zst, "zst:1")] {
        assert_eq!(
            import_ok(&b, &[file.to_str().unwrap(), name]),
            id,
            "{}",
            file.display()
        );
    }
    // From stdin too.
    let mut child = b
        .cmd()
        .args(["import", "-", "stdin:1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&fs::read(&tar).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out).trim(), id);

    // One layer, normalised: times clamped to SOURCE_DATE_EPOCH (0), entries sorted.
    let image = a.image("base:1");
    assert_eq!(image.layer_count, 1);
    assert_eq!(image.file("bin/busybox").mode & 0o777, 0o755);
    assert_eq!(image.file("bin/busybox").mtime, 0);
    assert_eq!(image.file("bin/sh").link, "busybox");
    assert_eq!(image.config["history"][0]["comment"], "Imported from -");
    // It runs.
    let out = a.run(&["run", "base:1", "sh", "-c", "echo imported"]);
    assert_eq!(stdout(&out), "imported\n", "{}", stderr(&out));
}

#[test]
fn change_and_message_shape_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("rootfs.tar");
    make_rootfs(&tar);
    let kiln = Kiln::new();
    import_ok(
        &kiln,
        &[
            "--change",
            "ENV GREETING=hello",
            "-c",
            "ENV TARGET=$GREETING-world",
            "-c",
            "WORKDIR /srv",
            "-c",
            r#"CMD ["sh", "-c", "echo $TARGET from $(pwd)"]"#,
            "-c",
            "LABEL org.example.base=busybox",
            "-c",
            "EXPOSE 8080",
            "-m",
            "my base",
            tar.to_str().unwrap(),
            "changed:1",
        ],
    );
    let image = kiln.image("changed:1");
    let config = &image.config["config"];
    assert_eq!(
        config["Env"],
        serde_json::json!(["GREETING=hello", "TARGET=hello-world"])
    );
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["Labels"]["org.example.base"], "busybox");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(image.config["history"][0]["comment"], "my base");
    // WORKDIR in --change sets the config only; docker makes no directory either.
    let out = kiln.run(&["run", "-w", "/", "changed:1", "sh", "-c", "echo $TARGET"]);
    assert_eq!(stdout(&out), "hello-world\n", "{}", stderr(&out));
}

#[test]
fn a_failed_import_says_why_and_tags_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("rootfs.tar");
    make_rootfs(&tar);
    let text = tmp.path().join("notes.txt");
    fs::write(&text, "this is not a tar archive\n").unwrap();
    let empty = tmp.path().join("empty.tar");
    fs::write(&empty, "").unwrap();
    let kiln = Kiln::new();
    let missing = tmp.path().join("missing.tar");
    let cases: [(Vec<&str>, &str); 5] = [
        (vec![missing.to_str().unwrap()], "No such file"),
        (vec![text.to_str().unwrap()], "not a tar archive"),
        (vec![empty.to_str().unwrap()], "not a tar archive"),
        (
            vec!["--change", "RUN true", tar.to_str().unwrap()],
            "RUN cannot be used here",
        ),
        (
            vec!["--change", "ENV", tar.to_str().unwrap()],
            "--change \"ENV\"",
        ),
    ];
    for (args, why) in cases {
        let mut all = vec!["import"];
        all.extend_from_slice(&args);
        all.push("never:1");
        let out = kiln.run(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
    let images = kiln.run(&["images"]);
    assert!(!stdout(&images).contains("never"), "{}", stdout(&images));
}

/// The README's "On a fresh machine" example with RUN, command by command, as `user`
/// (`None`: this user) in `home`; returns the image ID of busybox:local.
fn readme_flow(user: Option<&str>, home: &Path) -> String {
    let run = |script: &str| {
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "sh", "-c"]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-c");
                c
            }
        };
        let out = cmd
            .arg(script)
            .env("HOME", home)
            .env("KILN", kiln_bin())
            .env("KILN_ROOT", home.join("store"))
            .env("TESTDATA", testdata(""))
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{user:?}: {script}\n{}", stderr(&out));
        out
    };
    run(r#"sh "$TESTDATA/busybox-base/make-rootfs.sh" rootfs.tar"#);
    let id = stdout(&run(r#""$KILN" import rootfs.tar busybox:local"#));
    run(r#""$KILN" build -t busybox-app:1 "$TESTDATA/busybox-app""#);
    let out = run(r#""$KILN" run busybox-app:1"#);
    assert_eq!(
        stdout(&out),
        "hello from a RUN kiln built offline\nbuilt by root in /app\n36 greeting.txt\n",
        "{user:?}"
    );
    id.trim().to_string()
}

fn home_for(parent: &Path, name: &str, uid: Option<u32>) -> PathBuf {
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    let home = parent.join(name);
    fs::create_dir(&home).unwrap();
    if let Some(uid) = uid {
        std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
    }
    home
}

#[test]
fn the_readme_offline_example_builds_a_run_step_and_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let id = readme_flow(None, &home_for(tmp.path(), "me", None));
    match common::ensure_test_user("kilnrootless", 300000) {
        Some(uid) => {
            let home = home_for(tmp.path(), "rootless", Some(uid));
            assert_eq!(
                readme_flow(Some("kilnrootless"), &home),
                id,
                "rootless import gives another image"
            );
        }
        None => eprintln!("SKIP rootless half: creating kilnrootless needs root"),
    }
}

/// A rootfs tar with device nodes in `/dev`, as debootstrap, mmdebstrap and `docker export`
/// write them.
fn rootfs_with_devices(out: &Path) {
    let mut writer = tar::Builder::new(fs::File::create(out).unwrap());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, dev: (u32, u32), data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if kind.is_character_special() || kind.is_block_special() {
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
        }
        writer.append_data(&mut h, name, data).unwrap();
    };
    add("./", tar::EntryType::Directory, 0o755, (0, 0), b"");
    add("./dev/", tar::EntryType::Directory, 0o755, (0, 0), b"");
    add("./dev/null", tar::EntryType::Char, 0o666, (1, 3), b"");
    add("./dev/loop0", tar::EntryType::Block, 0o660, (7, 0), b"");
    add("./dev/zero", tar::EntryType::Char, 0o666, (1, 5), b"");
    add("./etc/", tar::EntryType::Directory, 0o755, (0, 0), b"");
    add(
        "./etc/hostname",
        tar::EntryType::Regular,
        0o644,
        (0, 0),
        b"base\n",
    );
    writer.finish().unwrap();
}

#[test]
fn device_nodes_survive_a_rootless_import_with_the_root_image_id() {
    use common::identity::{Identity, World, assert_ok, both, is_root};
    if !is_root() {
        eprintln!("SKIP: comparing with a root import needs root (CI runs as root)");
        return;
    }
    let mut ids = Vec::new();
    for id in [Identity::Root, Identity::Rootless] {
        let world = World::new(id);
        let tar = world.tmp.path().join("rootfs.tar");
        rootfs_with_devices(&tar);
        fs::set_permissions(&tar, fs::Permissions::from_mode(0o644)).unwrap();
        let out = world.kiln(&["import", tar.to_str().unwrap(), "devbase:1"]);
        assert_ok(&out);
        ids.push(stdout(&out).trim().to_string());
        // The layer keeps every node (a user namespace only leaves them out of the snapshot).
        let saved = world.user_dir("out").join("image.tar");
        assert_ok(&world.kiln(&["save", "-o", saved.to_str().unwrap(), "devbase:1"]));
        let image = common::Image::from_docker_archive(&saved);
        for dev in ["dev/null", "dev/loop0", "dev/zero"] {
            let kind = image.files.get(dev).map(|f| f.kind);
            assert!(
                matches!(kind, Some('c' | 'b')),
                "{id:?}: {dev} is {kind:?}: {}",
                both(&out)
            );
        }
    }
    assert_eq!(ids[0], ids[1], "root and rootless imports differ");
}
