//! Where the store lives: `--root`, else `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else
//! `~/.local/share/kiln`.

use anyhow::{Context, Result, bail};
use kiln_store::Store;
use std::path::PathBuf;

/// The store directory chosen by flags and environment.
pub fn store_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = from_env("KILN_ROOT") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = from_env("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("kiln"));
    }
    match from_env("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/kiln")),
        None => bail!("cannot choose a store directory: set --root, KILN_ROOT or HOME"),
    }
}

/// Opens (creating if needed) the store.
pub fn open_store(flag: Option<PathBuf>) -> Result<Store> {
    let dir = store_dir(flag)?;
    Store::open(&dir).with_context(|| format!("opening the store at {}", dir.display()))
}
