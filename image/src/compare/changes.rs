//! Comparing two opened images: final filesystems path by path, the config
//! fields a user sets, then history; rendered as text lines or stable JSON.

use super::CompareError;
use super::fstree::{FileMeta, FileTree};
use super::source::OpenImage;
use crate::oci::{ContainerConfig, History, ImageConfig};
use serde::Serialize;
use serde_json::Value;

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in B (`+`).
    Added,
    /// Only in A (`-`).
    Removed,
    /// In both, different (`~`).
    Modified,
}

/// One differing path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Absolute path in the image.
    pub path: String,
    /// Added, removed or modified.
    pub change: Change,
    /// For modified paths: among content, mode, owner, type, link, mtime, xattr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<&'static str>,
    /// The path in A, when there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<FileMeta>,
    /// The path in B, when there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<FileMeta>,
}

/// One differing config field (`null` when unset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Docker's name for the field (`Env`, `Cmd`, `created` ...).
    pub field: &'static str,
    /// Value in A.
    pub a: Value,
    /// Value in B.
    pub b: Value,
}

/// One differing field of one history entry (0-based index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryChange {
    /// Position in the history, oldest first, from 0.
    pub index: usize,
    /// `created`, `created_by`, `author`, `comment`, `empty_layer`, or
    /// `entry` when the entry exists on one side only.
    pub field: &'static str,
    /// Value in A.
    pub a: Value,
    /// Value in B.
    pub b: Value,
}

/// Digests of one compared image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageIds {
    /// What the user called it.
    pub name: String,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Config digest (image ID).
    pub config_digest: String,
}

/// The result of comparing A with B. Its JSON form (field order as declared
/// here) is the stable `--format json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// True when the images are the same image (same manifest, or nothing differs).
    pub identical: bool,
    /// A's digests.
    pub a: ImageIds,
    /// B's digests.
    pub b: ImageIds,
    /// Path differences, sorted by path.
    pub files: Vec<FileChange>,
    /// Config differences, in a fixed field order.
    pub config: Vec<FieldChange>,
    /// History differences, by index.
    pub history: Vec<HistoryChange>,
    /// Files and config agree but the layers (digests or diff_ids) do not
    /// (history may differ too).
    pub same_files_different_layering: bool,
}

/// Compares the final filesystems, config and history of `a` and `b`.
/// Images with the same manifest digest are identical without reading a layer.
pub fn compare(a: &OpenImage<'_>, b: &OpenImage<'_>) -> Result<Comparison, CompareError> {
    let ids = |i: &OpenImage<'_>| ImageIds {
        name: i.name.clone(),
        manifest_digest: i.manifest_digest.clone(),
        config_digest: i.config_digest.clone(),
    };
    let mut out = Comparison {
        identical: true,
        a: ids(a),
        b: ids(b),
        files: Vec::new(),
        config: Vec::new(),
        history: Vec::new(),
        same_files_different_layering: false,
    };
    if a.manifest_digest == b.manifest_digest {
        return Ok(out);
    }
    out.files = compare_trees(&a.file_tree()?, &b.file_tree()?);
    out.config = compare_config(&a.config, &b.config);
    out.history = compare_history(&a.config.history, &b.config.history);
    let same_content = out.files.is_empty() && out.config.is_empty();
    let layers = |i: &OpenImage<'_>| {
        (
            i.manifest
                .layers
                .iter()
                .map(|l| l.digest.clone())
                .collect::<Vec<_>>(),
            i.config.rootfs.diff_ids.clone(),
        )
    };
    // History may differ too (one COPY of two files against two COPYs).
    out.same_files_different_layering = same_content && layers(a) != layers(b);
    // Anything else that changes the manifest digest (annotations, media
    // types) is not a difference a user asked about.
    out.identical = same_content && out.history.is_empty() && !out.same_files_different_layering;
    Ok(out)
}

/// Which aspects of one path differ; a changed type implies its content and
/// link changed, so those are not listed again.
fn changed_kinds(a: &FileMeta, b: &FileMeta) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    let type_changed = a.kind != b.kind;
    if !type_changed && (a.sha256 != b.sha256 || a.size != b.size || a.device != b.device) {
        kinds.push("content");
    }
    if a.mode != b.mode {
        kinds.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid {
        kinds.push("owner");
    }
    if type_changed {
        kinds.push("type");
    }
    if !type_changed && a.link != b.link {
        kinds.push("link");
    }
    if a.mtime != b.mtime {
        kinds.push("mtime");
    }
    if a.xattrs != b.xattrs {
        kinds.push("xattr");
    }
    kinds
}

/// Path-by-path differences of two filesystems, sorted by path.
pub fn compare_trees(a: &FileTree, b: &FileTree) -> Vec<FileChange> {
    let mut out = Vec::new();
    let mut ia = a.entries.iter().peekable();
    let mut ib = b.entries.iter().peekable();
    loop {
        let order = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((pa, _)), Some((pb, _))) => pa.cmp(pb),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((path, meta)) = ia.next() {
                    out.push(FileChange {
                        path: path.clone(),
                        change: Change::Removed,
                        kinds: Vec::new(),
                        a: Some(meta.clone()),
                        b: None,
                    });
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((path, meta)) = ib.next() {
                    out.push(FileChange {
                        path: path.clone(),
                        change: Change::Added,
                        kinds: Vec::new(),
                        a: None,
                        b: Some(meta.clone()),
                    });
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((path, ma)), Some((_, mb))) = (ia.next(), ib.next()) {
                    let kinds = changed_kinds(ma, mb);
                    if !kinds.is_empty() {
                        out.push(FileChange {
                            path: path.clone(),
                            change: Change::Modified,
                            kinds,
                            a: Some(ma.clone()),
                            b: Some(mb.clone()),
                        });
                    }
                }
            }
        }
    }
    out
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The compared config fields in output order: Docker's names, then the
/// top-level fields.
fn config_fields(c: &ImageConfig) -> Vec<(&'static str, Value)> {
    let r: &ContainerConfig = &c.config;
    vec![
        ("Env", json(&r.env)),
        ("Cmd", json(&r.cmd)),
        ("Entrypoint", json(&r.entrypoint)),
        ("WorkingDir", json(&r.working_dir)),
        ("User", json(&r.user)),
        ("ExposedPorts", json(&r.exposed_ports)),
        ("Volumes", json(&r.volumes)),
        ("Labels", json(&r.labels)),
        ("StopSignal", json(&r.stop_signal)),
        ("Healthcheck", json(&r.healthcheck)),
        ("Shell", json(&r.shell)),
        ("OnBuild", json(&r.on_build)),
        ("created", json(&c.created)),
        ("author", json(&c.author)),
        ("architecture", json(&c.architecture)),
        ("os", json(&c.os)),
        ("variant", json(&c.variant)),
    ]
}

/// Config differences (layers and history are compared elsewhere).
pub fn compare_config(a: &ImageConfig, b: &ImageConfig) -> Vec<FieldChange> {
    config_fields(a)
        .into_iter()
        .zip(config_fields(b))
        .filter(|((_, va), (_, vb))| va != vb)
        .map(|((field, a), (_, b))| FieldChange { field, a, b })
        .collect()
}

/// History differences, entry by entry.
pub fn compare_history(a: &[History], b: &[History]) -> Vec<HistoryChange> {
    let fields = |h: &History| {
        [
            ("created", json(&h.created)),
            ("created_by", json(&h.created_by)),
            ("author", json(&h.author)),
            ("comment", json(&h.comment)),
            ("empty_layer", Value::Bool(h.empty_layer)),
        ]
    };
    let mut out = Vec::new();
    for index in 0..a.len().max(b.len()) {
        match (a.get(index), b.get(index)) {
            (Some(ha), Some(hb)) => {
                for ((field, va), (_, vb)) in fields(ha).into_iter().zip(fields(hb)) {
                    if va != vb {
                        out.push(HistoryChange {
                            index,
                            field,
                            a: va,
                            b: vb,
                        });
                    }
                }
            }
            (ha, hb) => out.push(HistoryChange {
                index,
                field: "entry",
                a: ha.map_or(Value::Null, json),
                b: hb.map_or(Value::Null, json),
            }),
        }
    }
    out
}

/// A value as one line: compact JSON, `(unset)` for null.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".to_string(),
        v => v.to_string(),
    }
}

impl Comparison {
    /// The text report: one line per difference (files by path, then
    /// config, then history), each ending in a newline; empty when identical.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            match f.change {
                Change::Added => out.push_str(&format!("+ {}\n", f.path)),
                Change::Removed => out.push_str(&format!("- {}\n", f.path)),
                Change::Modified => {
                    out.push_str(&format!("~ {} ({})\n", f.path, f.kinds.join(",")))
                }
            }
        }
        for c in &self.config {
            out.push_str(&format!(
                "config {}: {} -> {}\n",
                c.field,
                show(&c.a),
                show(&c.b)
            ));
        }
        for h in &self.history {
            out.push_str(&format!(
                "history {}: {}: {} -> {}\n",
                h.index,
                h.field,
                show(&h.a),
                show(&h.b)
            ));
        }
        if self.same_files_different_layering {
            out.push_str("same files, different layering\n");
        }
        out
    }

    /// The JSON report (pretty-printed, fields in declaration order, maps sorted).
    pub fn render_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::fstree::FileType;

    fn file(content: &str, mode: u32) -> FileMeta {
        FileMeta {
            kind: FileType::File,
            mode,
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            sha256: Some(crate::sha256_digest(content.as_bytes())),
            link: None,
            device: None,
            mtime: 0,
            xattrs: Default::default(),
        }
    }

    #[test]
    fn tree_differences_are_sorted_and_name_every_kind() {
        let mut a = FileTree::new();
        let mut b = FileTree::new();
        a.entries.insert("/a".into(), file("x", 0o644));
        a.entries.insert("/gone".into(), file("", 0o644));
        b.entries.insert("/a".into(), file("y", 0o755));
        b.entries.insert("/new".into(), file("", 0o644));
        let mut owned = file("", 0o644);
        a.entries.insert("/same".into(), owned.clone());
        owned.uid = 1000;
        b.entries.insert("/same".into(), owned);
        let c = compare_trees(&a, &b);
        let lines: Vec<String> = c
            .iter()
            .map(|f| format!("{:?} {} {:?}", f.change, f.path, f.kinds))
            .collect();
        assert_eq!(
            lines,
            [
                "Modified /a [\"content\", \"mode\"]",
                "Removed /gone []",
                "Added /new []",
                "Modified /same [\"owner\"]",
            ]
        );
    }

    #[test]
    fn config_lines_show_both_values_as_json() {
        let a = ImageConfig::default();
        let mut b = ImageConfig::default();
        b.config.env = Some(vec!["A=1".into()]);
        let c = compare_config(&a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!(
            format!(
                "config {}: {} -> {}",
                c[0].field,
                show(&c[0].a),
                show(&c[0].b)
            ),
            "config Env: (unset) -> [\"A=1\"]"
        );
    }

    #[test]
    fn history_reports_changed_fields_and_missing_entries() {
        let h = |by: &str| History {
            created_by: Some(by.into()),
            ..Default::default()
        };
        let c = compare_history(&[h("RUN a")], &[h("RUN b"), h("COPY x /")]);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].index, c[0].field), (0, "created_by"));
        assert_eq!((c[1].index, c[1].field), (1, "entry"));
        assert_eq!(c[1].a, Value::Null);
    }
}
