//! Helpers for the end-to-end tests: run the real `kiln` binary against a temporary store,
//! and read the images it writes (docker-archive) back into a file tree to assert on.
#![allow(dead_code)]

pub mod buildgrid;
pub mod dockerd;
pub mod gitserve;
pub mod identity;
pub mod registry;
pub mod sshd;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's busybox-static for the architecture `arch` (Debian's name), fetched once and
/// cached by `testdata/platform/make-busybox.sh` (root and the package mirror needed).
pub fn foreign_busybox(arch: &str) -> PathBuf {
    made_by("platform/make-busybox.sh", &[arch])
}

/// The path the testdata script `script` prints once it has made (or found cached) what
/// it makes; its stderr is the failure's message.
pub fn made_by(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new(testdata(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running testdata/{script}: {e}"));
    assert!(
        out.status.success(),
        "testdata/{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The kiln binary under test.
pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

/// The repository's `testdata/` folder.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// A kiln store in a temporary directory.
pub struct Kiln {
    pub root: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln {
            root: tempfile::tempdir().expect("temp store"),
        }
    }

    /// `kiln --root STORE ARGS...`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(kiln_bin());
        c.arg("--root").arg(self.root.path());
        c.env_remove("SOURCE_DATE_EPOCH");
        c
    }

    /// Runs kiln with `args`, returning its output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running kiln")
    }

    /// `kiln build --progress plain ARGS...`; panics with the output when it fails.
    pub fn build_ok(&self, args: &[&str]) -> Output {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "kiln build failed:\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Saves `tag` as a docker-archive and reads it back.
    pub fn image(&self, tag: &str) -> Image {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("image.tar");
        let out = self.run(&["save", "-o", file.to_str().unwrap(), tag]);
        assert!(
            out.status.success(),
            "kiln save failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Image::from_docker_archive(&file)
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One path of an image's final filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// 'f' file, 'd' dir, 'l' symlink, 'h' hardlink, 'c'/'b' devices, 'p' fifo.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub content: Vec<u8>,
    pub link: String,
    pub mtime: u64,
}

/// An image read back from an archive.
#[derive(Debug)]
pub struct Image {
    pub manifest: serde_json::Value,
    pub config: serde_json::Value,
    pub files: BTreeMap<String, FileInfo>,
    pub layer_count: usize,
}

impl Image {
    pub fn from_docker_archive(path: &Path) -> Image {
        let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut ar = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
        for e in ar.entries().expect("archive entries") {
            let mut e = e.expect("archive entry");
            let name = e.path().expect("entry path").to_string_lossy().into_owned();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).expect("read entry");
            entries.insert(name.trim_start_matches("./").to_string(), buf);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&entries["manifest.json"]).expect("manifest.json");
        let m = &manifest[0];
        let config: serde_json::Value =
            serde_json::from_slice(&entries[m["Config"].as_str().expect("Config")])
                .expect("config json");
        let layers: Vec<&str> = m["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| l.as_str().expect("layer name"))
            .collect();
        let mut files = BTreeMap::new();
        for l in &layers {
            apply_layer(&mut files, &entries[*l]);
        }
        let layer_count = layers.len();
        Image {
            manifest,
            config,
            files,
            layer_count,
        }
    }

    /// The image whose manifest is `manifest_digest` in the OCI layout directory `dir`.
    pub fn from_oci_layout(dir: &Path, manifest_digest: &str) -> Image {
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            std::fs::read(dir.join("blobs/sha256").join(hex))
                .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(manifest_digest)).expect("manifest json");
        let config: serde_json::Value = serde_json::from_slice(&blob(
            manifest["config"]["digest"]
                .as_str()
                .expect("config digest"),
        ))
        .expect("config json");
        let layers = manifest["layers"].as_array().expect("layers").clone();
        let mut files = BTreeMap::new();
        for l in &layers {
            apply_layer(
                &mut files,
                &blob(l["digest"].as_str().expect("layer digest")),
            );
        }
        Image {
            manifest,
            config,
            files,
            layer_count: layers.len(),
        }
    }

    pub fn file(&self, path: &str) -> &FileInfo {
        self.files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in image; have {:?}", self.files.keys()))
    }

    pub fn text(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.file(path).content).into_owned()
    }
}

fn decompress(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("gunzip layer");
        out
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(data).expect("unzstd layer")
    } else {
        data.to_vec()
    }
}

/// Applies one layer tar to `files` with OCI whiteout rules.
pub fn apply_layer(files: &mut BTreeMap<String, FileInfo>, data: &[u8]) {
    let data = decompress(data);
    let mut ar = tar::Archive::new(&data[..]);
    for e in ar.entries().expect("layer entries") {
        let mut e = e.expect("layer entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            let prefix = format!("{dir}/");
            files.retain(|k, _| !k.starts_with(&prefix));
            continue;
        }
        if let Some(gone) = base.strip_prefix(".wh.") {
            let gone = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            let prefix = format!("{gone}/");
            files.retain(|k, _| k != &gone && !k.starts_with(&prefix));
            continue;
        }
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            _ => 'f',
        };
        let mut content = Vec::new();
        e.read_to_end(&mut content).expect("read layer entry");
        let link = e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        if kind != 'd' {
            let prefix = format!("{path}/");
            files.retain(|k, _| !k.starts_with(&prefix));
        }
        files.insert(
            path,
            FileInfo {
                kind,
                mode: h.mode().unwrap_or(0) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                content,
                link,
                mtime: h.mtime().unwrap_or(0),
            },
        );
    }
}

/// Copies the `from` directory to `to` recursively (a context to mutate in a test).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("dir entry");
        let ft = e.file_type().expect("file type");
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_dir(&e.path(), &dst);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).expect("readlink");
            std::os::unix::fs::symlink(target, &dst).expect("symlink");
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

/// The test suite's one account (README: "What the tests do to the machine"). Tests that
/// need a user without a subordinate range run as `nobody` instead of creating one.
pub const TEST_USER: &str = "kilnrootless";

/// Creates the unprivileged test user `name` (with a subordinate ID range starting at
/// `sub_start` unless `useradd` already gave it one) and returns its uid; `None` when not
/// running as root, since only root can create users.
pub fn ensure_test_user(name: &str, sub_start: u32) -> Option<u32> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let id = || {
        std::process::Command::new("id")
            .args(["-u", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
    };
    if id().is_none() {
        let _ = std::process::Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", name])
            .status();
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let mut text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{name}:"))) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{name}:{sub_start}:65536\n"));
            std::fs::write(file, text).expect("write subordinate ID file");
        }
    }
    id()
}

/// Makes `dir` and everything below readable (and directories enterable) by everyone.
pub fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            open_up(&e.path());
        } else if ft.is_file() {
            let mode = std::fs::metadata(e.path()).unwrap().permissions().mode() | 0o444;
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}
