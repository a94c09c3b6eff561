//! `--explain-cache`: why a step missed the cache.
//!
//! Every time a layer step is keyed, the inputs of its key (input keys, canonical parameters,
//! the files it selected with their checksums) are saved under the step's place in the
//! Dockerfile. On a miss, the saved inputs of the previous build of that place are compared
//! with the new ones, and the difference is named: which file, which parameter, or which
//! upstream step.

use kiln_store::{SideRecordKind, SideRecords, Store};
use serde::de::DeserializeSeed as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, mpsc};

/// Everything a step's key was computed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub key: String,
    /// Keys of the inputs (the step below, stages read from), with a label each.
    pub inputs: Vec<(String, String)>,
    /// The op's parameters as hashed.
    pub params: Value,
    /// Selected source files: path → content/metadata digest.
    pub files: BTreeMap<String, String>,
}

/// Where explanations are kept: one small JSON file per Dockerfile place, as the store's
/// [`SideRecordKind::Explain`] records (prune drops those whose key has no cache record).
#[derive(Debug, Clone)]
pub struct ExplainLog {
    records: SideRecords,
    writer: Arc<Writer>,
}

/// Records to write, in order (a place's inputs, then its key).
type Batch = (SideRecords, Vec<(String, Content)>);

/// A record's bytes, or what makes them on the writer's thread (`None`: they could not be
/// made, and neither this record nor the ones after it in its batch are written).
enum Content {
    Bytes(Vec<u8>),
    Later(Box<dyn FnOnce() -> Option<Vec<u8>> + Send>),
}

impl Content {
    fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Content::Bytes(bytes) => Some(bytes),
            Content::Later(make) => make(),
        }
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Bytes(bytes) => write!(f, "{} bytes", bytes.len()),
            Content::Later(_) => f.write_str("bytes to be made"),
        }
    }
}

/// A thread that writes what [`ExplainLog::save`] hands it, in order, started on first
/// use: the two atomic writes a step's save makes (a file created and renamed each) cost a
/// small RUN step a few percent of its time on the store's disk, and nothing in the step
/// reads them. [`ExplainLog::flush`] (and the last clone's drop) waits for them, and so
/// does a read of a record not written yet.
#[derive(Debug, Default)]
struct Writer {
    thread: Mutex<Option<(mpsc::Sender<Batch>, std::thread::JoinHandle<()>)>>,
    /// Names handed to the thread and not written yet (a count for each).
    pending: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Writer {
    fn write(batch: Batch, pending: &Mutex<BTreeMap<String, usize>>) {
        let (records, writes) = batch;
        let mut failed = false;
        for (dest, content) in writes {
            // After a failure the rest is not written (the key last: it says the inputs
            // beside it are whole), but no longer pending either.
            failed = failed
                || match content.bytes() {
                    Some(bytes) => records.write(&dest, &bytes).is_err(),
                    None => true,
                };
            if let Ok(mut pending) = pending.lock()
                && let Some(n) = pending.get_mut(&dest)
            {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&dest);
                }
            }
        }
    }

    fn send(&self, batch: Batch) {
        if let Ok(mut pending) = self.pending.lock() {
            for (dest, _) in &batch.1 {
                *pending.entry(dest.clone()).or_default() += 1;
            }
        }
        let Ok(mut slot) = self.thread.lock() else {
            return Writer::write(batch, &self.pending);
        };
        if slot.is_none() {
            let (tx, rx) = mpsc::channel::<Batch>();
            let pending = self.pending.clone();
            let spawned = std::thread::Builder::new()
                .name("kiln-explain-writer".into())
                .spawn(move || {
                    // Nothing waits for it until the build's end, and the inputs of a big
                    // COPY take it tens of milliseconds of CPU: the steps after it (a
                    // RUN's sandbox) go first on a busy machine.
                    let _ = rustix::process::setpriority_process(None, 10);
                    rx.into_iter().for_each(|b| Writer::write(b, &pending))
                });
            match spawned {
                Ok(handle) => *slot = Some((tx, handle)),
                Err(_) => return Writer::write(batch, &self.pending),
            }
        }
        if let Some((tx, _)) = slot.as_ref()
            && let Err(mpsc::SendError(batch)) = tx.send(batch)
        {
            Writer::write(batch, &self.pending);
        }
    }

    /// Before reading record `name`: waits for the thread when it has not written it yet.
    fn settle(&self, name: &str) {
        let waiting = self.pending.lock().is_ok_and(|p| p.contains_key(name));
        if waiting {
            self.flush();
        }
    }

    fn flush(&self) {
        let taken = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some((tx, handle)) = taken {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

impl ExplainLog {
    pub fn new(store: &Store) -> ExplainLog {
        ExplainLog {
            records: store.side_records(SideRecordKind::Explain),
            writer: Arc::default(),
        }
    }

    /// Waits until every record saved so far is written.
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// The record names of `place`: its inputs, and the key they were computed for.
    fn names(place: &str) -> (String, String) {
        let name = kiln_base::digest::sha256_hex(place.as_bytes());
        let key = format!("{name}.key");
        (name, key)
    }

    /// The inputs saved by the previous build of `place`, if any.
    pub fn previous(&self, place: &str) -> Option<KeyInputs> {
        let name = Self::names(place).0;
        self.writer.settle(&name);
        let bytes = self.records.read(&name)?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The regular files among `current` (the entries a key of `place` covered) whose
    /// kind, mode and content digest are the ones the previous build of `place` recorded,
    /// when that build's key was `key` and it recorded files; `None` otherwise.
    ///
    /// On a COPY's path, before its copy starts: for a 20,000-file context, parsing the
    /// record into [`KeyInputs`] (a map of 20,000 pairs of new strings) and formatting a
    /// new string per file to compare took 29-36 ms. Here the record is read as it is
    /// parsed, in one pass beside the files sorted the same way ([`MatchRecorded`]).
    pub fn unchanged_files(
        &self,
        place: &str,
        key: &str,
        current: &[kiln_context::HashedEntry],
    ) -> Option<HashSet<String>> {
        let name = Self::names(place).0;
        self.writer.settle(&name);
        let bytes = self.records.read(&name)?;
        let mut files: Vec<&kiln_context::HashedEntry> = current
            .iter()
            .filter(|e| e.kind == kiln_context::ContextFileType::File && e.sha256.is_some())
            .collect();
        files.sort_unstable_by(|a, b| a.rel_path.cmp(&b.rel_path));
        let seed = MatchRecorded { key, files: &files };
        let mut parser = serde_json::Deserializer::from_slice(&bytes);
        seed.deserialize(&mut parser).ok().flatten()
    }

    /// The key the previous build of `place` computed, if any.
    pub fn previous_key(&self, place: &str) -> Option<String> {
        let name = Self::names(place).1;
        self.writer.settle(&name);
        let bytes = self.records.read(&name)?;
        String::from_utf8(bytes).ok()
    }

    /// Saves the inputs of `key` for `place`, unless the saved ones already have the same
    /// key (a cache hit then writes nothing: the inputs of a big context can be megabytes,
    /// so `inputs` makes them only when they are written, on the writer's thread).
    /// Best effort: explanations never fail a build. Written by a thread of its own
    /// ([`ExplainLog::flush`] waits for it).
    pub fn save(
        &self,
        place: &str,
        key: &str,
        inputs: impl FnOnce() -> KeyInputs + Send + 'static,
    ) {
        let (name, key_name) = Self::names(place);
        self.writer.settle(&key_name);
        if self
            .records
            .read(&key_name)
            .is_some_and(|k| k == key.as_bytes())
        {
            return;
        }
        let inputs = Content::Later(Box::new(move || serde_json::to_vec(&inputs()).ok()));
        // The key last: it says the inputs beside it are whole.
        self.writer.send((
            self.records.clone(),
            vec![
                (name, inputs),
                (key_name, Content::Bytes(key.as_bytes().to_vec())),
            ],
        ));
    }
}

/// Names what differs between the previous inputs of a step and the current ones.
pub fn explain(previous: Option<&KeyInputs>, current: &KeyInputs) -> Vec<String> {
    let Some(prev) = previous else {
        return vec!["no earlier build of this step".to_string()];
    };
    if prev.key == current.key {
        return vec!["same key as before, but its result is no longer in the store".to_string()];
    }
    let mut file_reasons = Vec::new();
    for (path, digest) in &current.files {
        match prev.files.get(path) {
            None => file_reasons.push(format!("file added: {path}")),
            Some(old) if old != digest => file_reasons.push(format!("file changed: {path}")),
            _ => {}
        }
    }
    for path in prev.files.keys() {
        if !current.files.contains_key(path) {
            file_reasons.push(format!("file removed: {path}"));
        }
    }
    let mut reasons = Vec::new();
    for (label, key) in &current.inputs {
        // A context checksum changes because of the files it covers: once those are
        // named, "context X changed" would be a second reason for the same change.
        if label.starts_with("context ") && !file_reasons.is_empty() {
            continue;
        }
        match prev.inputs.iter().find(|(l, _)| l == label) {
            Some((_, old)) if old != key => reasons.push(format!("{label} changed")),
            None => reasons.push(format!("new input: {label}")),
            _ => {}
        }
    }
    diff_params("", &prev.params, &current.params, &mut reasons);
    reasons.extend(file_reasons);
    if reasons.is_empty() {
        reasons.push("the cache key format changed".to_string());
    }
    reasons
}

fn diff_params(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_params(&path, x, y, out),
                    _ => out.push(format!("{path} changed")),
                }
            }
        }
        (a, b) if a != b => out.push(format!("{prefix}: {} -> {}", short(a), short(b))),
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

/// The `files` of [`KeyInputs`]: each entry a key read, by path (a later source naming
/// the same path wins, as it does in the copy).
pub(crate) fn file_digests(entries: &[kiln_context::HashedEntry]) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in entries {
        files.insert(entry.rel_path.clone(), entry_digest(entry));
    }
    files
}

/// How the explain log records a context entry that a key read: its kind, mode, link
/// target and content digest, so `--explain-cache` can name the file that changed.
pub(crate) fn entry_digest(entry: &kiln_context::HashedEntry) -> String {
    let mut digest = String::new();
    write_entry_digest(&mut digest, entry);
    digest
}

/// [`entry_digest`], appended to `out`.
fn write_entry_digest(out: &mut String, entry: &kiln_context::HashedEntry) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:?} {:o} {} {}",
        entry.kind,
        entry.mode,
        entry.link_target.as_deref().unwrap_or_default(),
        entry.sha256.as_deref().unwrap_or_default()
    );
}

/// [`ExplainLog::unchanged_files`]'s reading of a saved [`KeyInputs`]: its `key` compared
/// with `key`, its `files` (a map in byte order of the paths, as a `BTreeMap` writes it)
/// walked beside `files` (sorted the same way), everything else skipped. Gives the paths
/// whose recorded digest is the file's, or `None` when the key differs or no file was
/// recorded. A record out of order only finds fewer files unchanged.
struct MatchRecorded<'f> {
    key: &'f str,
    files: &'f [&'f kiln_context::HashedEntry],
}

impl<'de> serde::de::DeserializeSeed<'de> for MatchRecorded<'_> {
    type Value = Option<HashSet<String>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MatchRecorded<'_> {
    type Value = Option<HashSet<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("saved key inputs")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut same_key, mut unchanged) = (false, None);
        while let Some(field) = map.next_key::<Cow<'de, str>>()? {
            match field.as_ref() {
                "key" => same_key = map.next_value::<Cow<'de, str>>()? == self.key,
                "files" => {
                    unchanged = map.next_value_seed(MatchFiles { files: self.files })?;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(unchanged.filter(|_| same_key))
    }
}

/// The `files` map of [`MatchRecorded`]: `None` when it is empty.
struct MatchFiles<'f> {
    files: &'f [&'f kiln_context::HashedEntry],
}

impl<'de> serde::de::DeserializeSeed<'de> for MatchFiles<'_> {
    type Value = Option<HashSet<String>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MatchFiles<'_> {
    type Value = Option<HashSet<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of paths to entry digests")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut next, mut recorded) = (self.files.iter().peekable(), false);
        let (mut unchanged, mut digest) = (HashSet::new(), String::new());
        while let Some((path, recorded_digest)) =
            map.next_entry::<Cow<'de, str>, Cow<'de, str>>()?
        {
            recorded = true;
            while next
                .next_if(|e| e.rel_path.as_str() < path.as_ref())
                .is_some()
            {}
            let Some(entry) = next.next_if(|e| e.rel_path == path) else {
                continue;
            };
            digest.clear();
            write_entry_digest(&mut digest, entry);
            if digest == recorded_digest {
                unchanged.insert(entry.rel_path.clone());
            }
        }
        Ok(recorded.then_some(unchanged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(key: &str, parent: &str, params: Value, files: &[(&str, &str)]) -> KeyInputs {
        KeyInputs {
            key: key.into(),
            inputs: vec![("previous step".into(), parent.into())],
            params,
            files: files
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn names_the_changed_file() {
        let a = inputs(
            "k1",
            "p",
            serde_json::json!({"dest": "/"}),
            &[("a", "1"), ("b", "2")],
        );
        let b = inputs(
            "k2",
            "p",
            serde_json::json!({"dest": "/"}),
            &[("a", "1"), ("b", "3")],
        );
        assert_eq!(explain(Some(&a), &b), vec!["file changed: b"]);
    }

    #[test]
    fn a_changed_file_is_one_reason_not_also_its_context_checksum() {
        let with_context = |key: &str, sum: &str, digest: &str| KeyInputs {
            key: key.into(),
            inputs: vec![
                ("previous step".into(), "p".into()),
                ("context a".into(), sum.into()),
            ],
            params: serde_json::json!({"dest": "/a"}),
            files: [("a".to_string(), digest.to_string())].into(),
        };
        assert_eq!(
            explain(
                Some(&with_context("k1", "s1", "1")),
                &with_context("k2", "s2", "2")
            ),
            vec!["file changed: a"]
        );
    }

    #[test]
    fn names_parameter_and_upstream_changes() {
        let a = inputs("k1", "p", serde_json::json!({"env": ["A=1"]}), &[]);
        let b = inputs("k2", "q", serde_json::json!({"env": ["A=2"]}), &[]);
        assert_eq!(
            explain(Some(&a), &b),
            vec!["previous step changed", r#"env: ["A=1"] -> ["A=2"]"#]
        );
    }

    fn entry(
        path: &str,
        kind: kiln_context::ContextFileType,
        mode: u32,
        sha: &str,
    ) -> kiln_context::HashedEntry {
        kiln_context::HashedEntry {
            rel_path: path.into(),
            kind,
            mode,
            size: 1,
            link_target: (kind == kiln_context::ContextFileType::Symlink).then(|| "t".into()),
            sha256: (kind == kiln_context::ContextFileType::File).then(|| sha.into()),
        }
    }

    #[test]
    fn unchanged_files_are_the_recorded_ones_with_the_same_digest() {
        use kiln_context::ContextFileType::{File, Symlink};
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let log = ExplainLog::new(&store);
        // A name JSON escapes is not borrowed from the record, and still compared.
        let odd = "dir/quote\"d\\ \u{1}tab\tnon-ascii-é.txt";
        let old = vec![
            entry("a.txt", File, 0o644, "aa"),
            entry("b.txt", File, 0o644, "bb"),
            entry("c.txt", File, 0o644, "cc"),
            entry(odd, File, 0o600, "dd"),
            entry("link", Symlink, 0o777, ""),
        ];
        let saved = KeyInputs {
            key: "k1".into(),
            files: file_digests(&old),
            ..KeyInputs::default()
        };
        log.save("Dockerfile:2", "k1", move || saved);
        log.flush();
        let new = vec![
            entry("a.txt", File, 0o644, "aa"),
            entry("b.txt", File, 0o644, "b2"),
            entry("c.txt", File, 0o755, "cc"),
            entry(odd, File, 0o600, "dd"),
            entry("link", Symlink, 0o777, ""),
            entry("new.txt", File, 0o644, "ee"),
        ];
        let unchanged = log.unchanged_files("Dockerfile:2", "k1", &new).unwrap();
        let mut unchanged: Vec<_> = unchanged.into_iter().collect();
        unchanged.sort();
        assert_eq!(unchanged, vec!["a.txt".to_string(), odd.to_string()]);
        // What the comparison reads is what `--explain-cache` reads.
        let previous = log.previous("Dockerfile:2").unwrap();
        assert_eq!(previous.files.get(odd), Some(&entry_digest(&old[3])));
        // Another key's inputs, another place, or no files recorded: nothing is known.
        assert_eq!(log.unchanged_files("Dockerfile:2", "k0", &new), None);
        assert_eq!(log.unchanged_files("Dockerfile:3", "k1", &new), None);
        log.save("Dockerfile:4", "k4", || KeyInputs {
            key: "k4".into(),
            ..KeyInputs::default()
        });
        log.flush();
        assert_eq!(log.unchanged_files("Dockerfile:4", "k4", &new), None);
    }

    /// The record is read in any field order, and a record whose paths are out of order
    /// finds fewer files unchanged, never a file whose digest differs.
    #[test]
    fn a_record_is_matched_in_one_pass_whatever_its_order() {
        use kiln_context::ContextFileType::File;
        let a = entry("a", File, 0o644, "1");
        let b = entry("b", File, 0o644, "2");
        let files = [&a, &b];
        let run = |json: serde_json::Value, key: &str| {
            let bytes = serde_json::to_vec(&json).unwrap();
            let seed = MatchRecorded { key, files: &files };
            let mut sorted: Vec<String> = seed
                .deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
                .unwrap()?
                .into_iter()
                .collect();
            sorted.sort();
            Some(sorted)
        };
        let digests = serde_json::json!({"a": entry_digest(&a), "b": entry_digest(&b)});
        let files_first = serde_json::json!({"files": digests, "params": {"x": [1]}, "key": "k"});
        assert_eq!(
            run(files_first.clone(), "k"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(run(files_first, "other"), None);
        // Written by hand out of order ("b" before "a"): "a" is missed, nothing is wrong.
        let bytes = format!(
            r#"{{"key":"k","files":{{"b":{},"a":{}}}}}"#,
            serde_json::to_string(&entry_digest(&b)).unwrap(),
            serde_json::to_string(&entry_digest(&a)).unwrap()
        );
        let seed = MatchRecorded {
            key: "k",
            files: &files,
        };
        let found = seed
            .deserialize(&mut serde_json::Deserializer::from_slice(bytes.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(found, HashSet::from(["b".to_string()]));
        // A changed digest is not unchanged.
        let changed =
            serde_json::json!({"key": "k", "files": {"a": "File 644  0", "b": entry_digest(&b)}});
        assert_eq!(run(changed, "k"), Some(vec!["b".into()]));
    }

    #[test]
    fn first_build_and_pruned_record_are_explained() {
        let a = inputs("k1", "p", Value::Null, &[]);
        assert_eq!(explain(None, &a), vec!["no earlier build of this step"]);
        assert!(explain(Some(&a), &a)[0].contains("no longer in the store"));
    }
}
