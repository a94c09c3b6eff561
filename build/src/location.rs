//! Where the store lives: `--root`, else `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else
//! `~/.local/share/kiln`. Every command opens its store through [`open_store`], so they
//! all agree on it.

use crate::BuildError;
use kiln_store::Store;
use std::path::PathBuf;

/// The store directory chosen by the `--root` flag (`flag`) and the environment.
pub fn store_dir(flag: Option<PathBuf>) -> Result<PathBuf, BuildError> {
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
        None => Err(BuildError::Request(
            "cannot choose a store directory: set --root, KILN_ROOT or HOME".into(),
        )),
    }
}

/// Opens (creating if needed) the store [`store_dir`] chooses.
pub fn open_store(flag: Option<PathBuf>) -> Result<Store, BuildError> {
    let dir = store_dir(flag)?;
    Store::open(&dir).map_err(BuildError::store(format!(
        "opening the store at {}",
        dir.display()
    )))
}
