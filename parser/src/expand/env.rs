//! The variables an expansion sees: any `(name, value)` list (the last one wins), or an
//! [`EnvList`], the ordered environment of a stage.

use std::collections::HashMap;

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, or `None` if it is unset.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// An ordered environment with replace-in-place semantics and fast lookup, like LLB's
/// `EnvList`: re-setting a key keeps its position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
    /// Keys and values, in bytes (what the list costs to hold and to copy).
    bytes: usize,
}

impl EnvList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an existing value in place.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.index.get(key) {
            Some(&i) => {
                self.bytes = self.bytes - self.entries[i].1.len() + value.len();
                self.entries[i].1 = value.to_string();
            }
            None => {
                self.bytes += key.len() + value.len();
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push((key.to_string(), value.to_string()));
            }
        }
    }

    /// The total length of every key and value.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.entries[i].1.as_str())
    }
}
