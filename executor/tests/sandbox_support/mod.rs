//! Fixtures for the sandbox tests: a busybox layer directory, RunSpec scaffolding, running
//! a spec and collecting its output, and a printable description of a layer directory.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_executor::sandbox::{
    self, Network, OutputLine, OutputStream, RunOutcome, RunSpec, SandboxError, Snapshotter,
};

/// A layer directory with busybox, applet symlinks, /etc/passwd, /etc/group, /etc/x.
/// No /dev, /proc, /sys, /etc/hosts or /etc/resolv.conf: mount points must not leak.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let l = dir.join("base");
    std::fs::create_dir_all(l.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", l.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for name in String::from_utf8(list.stdout).unwrap().lines() {
        if name != "busybox" {
            std::os::unix::fs::symlink("busybox", l.join("bin").join(name)).unwrap();
        }
    }
    std::fs::create_dir_all(l.join("etc")).unwrap();
    std::fs::write(
        l.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        l.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n",
    )
    .unwrap();
    std::fs::write(l.join("etc/x"), "x\n").unwrap();
    std::fs::create_dir_all(l.join("root")).unwrap();
    std::fs::create_dir_all(l.join("keep/sub")).unwrap();
    std::fs::write(l.join("keep/sub/file"), "k\n").unwrap();
    l
}

/// A second layer: adds /d with two files.
pub fn second_layer(dir: &Path) -> PathBuf {
    let l = dir.join("second");
    std::fs::create_dir_all(l.join("d/inner")).unwrap();
    std::fs::write(l.join("d/a"), "a\n").unwrap();
    std::fs::write(l.join("d/inner/b"), "b\n").unwrap();
    l
}

pub struct Sandbox {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub lowers: Vec<PathBuf>,
    n: usize,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("kiln-sbtest")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let lowers = vec![busybox_layer(&dir), second_layer(&dir)];
        Sandbox {
            _tmp: tmp,
            dir,
            lowers,
            n: 0,
        }
    }

    pub fn spec(&mut self, script: &str) -> RunSpec {
        self.n += 1;
        let upper = self.dir.join(format!("upper{}", self.n));
        let work = self.dir.join(format!("work{}", self.n));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        RunSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: "kilntest".into(),
            network: Network::Host,
            lowers: self.lowers.clone(),
            upper,
            work,
            mounts: vec![],
            files: vec![],
            snapshotter: Snapshotter::Overlay,
            insecure: false,
            options: Default::default(),
        }
    }
}

pub struct Ran {
    pub outcome: RunOutcome,
    pub stdout: String,
    pub stderr: String,
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn try_run(spec: RunSpec) -> Result<Ran, SandboxError> {
    let mut out = Vec::new();
    let outcome = block_on(sandbox::run(spec, |l: OutputLine| out.push(l)))?;
    let text = |s: OutputStream| {
        out.iter()
            .filter(|l| l.stream == s)
            .map(|l| String::from_utf8_lossy(&l.line).into_owned() + "\n")
            .collect::<String>()
    };
    Ok(Ran {
        outcome,
        stdout: text(OutputStream::Stdout),
        stderr: text(OutputStream::Stderr),
    })
}

pub fn run(spec: RunSpec) -> Ran {
    let r = try_run(spec).unwrap();
    assert!(
        r.outcome.success(),
        "RUN failed: {:?}\nstdout: {}\nstderr: {}",
        r.outcome,
        r.stdout,
        r.stderr
    );
    r
}

/// Every entry under `dir`: "type mode uid:gid detail" (content, link target, opaque).
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

pub fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let detail = if ft.is_dir() {
            let opq = xattr::get(&p, "user.overlay.opaque").ok().flatten();
            format!(
                "dir{}",
                if opq.as_deref() == Some(b"y") {
                    " opaque"
                } else {
                    ""
                }
            )
        } else if ft.is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_char_device() {
            format!("char {}", md.rdev())
        } else if ft.is_file() {
            let c = std::fs::read(&p).unwrap();
            if c.len() < 200 {
                format!("file {:?}", String::from_utf8_lossy(&c))
            } else {
                format!("file {} bytes", c.len())
            }
        } else {
            "other".into()
        };
        let xattrs: Vec<String> = xattr::list(&p)
            .map(|l| {
                l.map(|x| x.to_string_lossy().into_owned())
                    .filter(|x| x != "user.overlay.opaque")
                    .collect()
            })
            .unwrap_or_default();
        let x = if xattrs.is_empty() {
            String::new()
        } else {
            format!(" xattrs={xattrs:?}")
        };
        out.insert(
            rel,
            format!(
                "{detail} {:o} {}:{}{x}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ),
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
