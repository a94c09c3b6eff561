//! Shared helpers for the COPY/ADD tests: building trees on disk and describing a layer
//! directory as sorted lines (`kind path mode uid:gid payload`) that tests compare whole.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_executor::copy::{
    CopyError, CopyReport, CopyRequest, SourceRoot, SourceSpec, copy_into_layer,
};
use kiln_executor::layered::LayeredFs;

/// A scratch area with a context dir, lower layers and an output layer.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    /// The build context directory.
    pub fn ctx(&self) -> PathBuf {
        let p = self.path("ctx");
        fs::create_dir_all(&p).unwrap();
        p
    }
    /// A fresh empty output layer directory.
    pub fn out(&self) -> PathBuf {
        let mut i = 0;
        loop {
            let p = self.path(&format!("out{i}"));
            if !p.exists() {
                fs::create_dir_all(&p).unwrap();
                return p;
            }
            i += 1;
        }
    }
    /// Layer directory `name` (created).
    pub fn layer(&self, name: &str) -> PathBuf {
        let p = self.path(&format!("layers/{name}"));
        fs::create_dir_all(&p).unwrap();
        p
    }
    pub fn ctx_root(&self) -> SourceRoot {
        SourceRoot::Dir {
            root: self.ctx(),
            filter: None,
        }
    }
    pub fn ctx_filtered(&self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> SourceRoot {
        SourceRoot::Dir {
            root: self.ctx(),
            filter: Some(Arc::new(f)),
        }
    }
}

/// Writes a file (parents created) with `mode`.
pub fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn symlink(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

pub fn chown(root: &Path, rel: &str, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(root.join(rel), Some(uid), Some(gid)).unwrap();
}

/// Describes every entry under `dir` as `kind /path mode uid:gid payload`, sorted.
/// kind: d, f (payload = content), l (payload = -> target), c (payload = rdev), h marks a
/// file whose inode was already listed (payload = = first path).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    walk(dir, dir, &mut out, &mut seen);
    out.sort();
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<String>,
    seen: &mut std::collections::HashMap<u64, String>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = format!("/{}", p.strip_prefix(root).unwrap().to_str().unwrap());
        let own = format!("{:04o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
        let ft = m.file_type();
        if ft.is_dir() {
            out.push(format!("d {rel} {own}"));
            walk(root, &p, out, seen);
        } else if ft.is_symlink() {
            let t = fs::read_link(&p).unwrap();
            out.push(format!(
                "l {rel} {}:{} -> {}",
                m.uid(),
                m.gid(),
                t.display()
            ));
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = seen.get(&m.ino()) {
                    out.push(format!("h {rel} = {first}"));
                    continue;
                }
                seen.insert(m.ino(), rel.clone());
            }
            let c = fs::read(&p).unwrap();
            out.push(format!("f {rel} {own} {}", String::from_utf8_lossy(&c)));
        } else {
            out.push(format!("c {rel} {own} {}", m.rdev()));
        }
    }
}

/// Runs a copy into a fresh output layer; returns the layer dir and the result.
pub fn run(fx: &Fixture, req: &CopyRequest) -> (PathBuf, Result<CopyReport, CopyError>) {
    let out = fx.out();
    let r = copy_into_layer(req, &out);
    (out, r)
}

/// Runs a copy that must succeed and returns the layer's tree.
pub fn run_ok(fx: &Fixture, req: &CopyRequest) -> Vec<String> {
    let (out, r) = run(fx, req);
    r.unwrap_or_else(|e| panic!("copy failed: {e}"));
    tree(&out)
}

/// Runs a copy that must fail and returns the error text.
pub fn run_err(fx: &Fixture, req: &CopyRequest) -> String {
    let (_, r) = run(fx, req);
    match r {
        Ok(rep) => panic!("copy unexpectedly succeeded: {rep:?}"),
        Err(e) => e.to_string(),
    }
}

pub fn paths(v: &[&str]) -> Vec<SourceSpec> {
    v.iter().map(|s| SourceSpec::Path(s.to_string())).collect()
}

pub fn req(fx: &Fixture, srcs: &[&str], dest: &str, target: LayeredFs) -> CopyRequest {
    CopyRequest::new(paths(srcs), fx.ctx_root(), dest, target)
}

pub fn lines(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}
