//! `--chown`: numeric ids, or user and group names looked up in the destination image's
//! `/etc/passwd` and `/etc/group` (read through the layered view, symlinks resolved inside
//! the image). Rules follow BuildKit: `uid` alone means `uid:uid`, a user name alone takes the
//! user's primary group.

use crate::layered::{LayeredError, LayeredFs};

/// The owner given to copied files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Why a `--chown` value could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("reading the image's user database: {0}")]
    Read(#[from] LayeredError),
}

fn read_db(fs: &LayeredFs, path: &str) -> Result<String, LayeredError> {
    match fs.read_file(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        // A missing or unreadable-as-file database means "no entries", as in BuildKit.
        Err(LayeredError::NotFound { .. } | LayeredError::NotAFile { .. }) => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// `(uid, primary gid)` of user `name` in the view's `/etc/passwd`.
pub fn lookup_user(fs: &LayeredFs, name: &str) -> Result<Option<(u32, u32)>, LayeredError> {
    let db = read_db(fs, "/etc/passwd")?;
    Ok(kiln_base::passwd::users(&db)
        .find(|u| u.name == name)
        .map(|u| (u.uid, u.gid)))
}

/// The gid of group `name` in the view's `/etc/group`.
pub fn lookup_group(fs: &LayeredFs, name: &str) -> Result<Option<u32>, LayeredError> {
    let db = read_db(fs, "/etc/group")?;
    Ok(kiln_base::passwd::groups(&db)
        .find(|g| g.name == name)
        .map(|g| g.gid))
}

/// Resolves a `--chown` value (`user`, `user:group`, numeric or names) against `fs`.
pub fn resolve_chown(spec: &str, fs: &LayeredFs) -> Result<Owner, OwnerError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(id) => (id, id),
        Err(_) => {
            lookup_user(fs, user)?.ok_or_else(|| OwnerError::UnknownUser(user.to_string()))?
        }
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => {
                lookup_group(fs, g)?.ok_or_else(|| OwnerError::UnknownGroup(g.to_string()))?
            }
        };
    }
    Ok(Owner { uid, gid })
}
