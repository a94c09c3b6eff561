//! Resolving a Dockerfile `USER` value against the container's `/etc/passwd` and
//! `/etc/group`, with BuildKit's rules and error texts.
//!
//! Pure functions over file contents ([`kiln_base::passwd`] reads them); the helper reads
//! the files after `pivot_root`.

/// The IDs a RUN process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups that list the user as a member (when no group was
    /// given explicitly).
    pub groups: Vec<u32>,
    /// HOME from the passwd entry; `/` when the user has none (runc's default).
    pub home: String,
}

/// Why a `USER` value could not be resolved. The texts are BuildKit's (runc's user package).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user {0:?}: ID out of range")]
    BadId(String),
}

fn numeric(s: &str) -> Option<Result<u32, UserError>> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Some(
            s.parse::<u32>()
                .map_err(|_| UserError::BadId(s.to_string())),
        )
    } else {
        None
    }
}

/// Resolve `user` ("" = root, "name", "uid", "name:group", "uid:gid", mixes allowed).
///
/// Like BuildKit: a fully numeric `uid` or `uid:gid` needs no files (a bare uid gets gid 0);
/// names are looked up in `passwd` / `group` (missing files count as empty).
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty() && group_part.is_none() {
        let home = kiln_base::passwd::users(passwd)
            .find(|e| e.uid == 0)
            .map(|e| e.home)
            .unwrap_or("/");
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: non_empty(home),
        });
    }
    let users: Vec<_> = kiln_base::passwd::users(passwd).collect();
    // BuildKit's fast path: numeric uid (and gid) take no IDs from the passwd file.
    if let Some(uid) = numeric(user_part) {
        let uid = uid?;
        let home = non_empty(
            users
                .iter()
                .find(|e| e.uid == uid)
                .map(|e| e.home)
                .unwrap_or("/"),
        );
        match group_part {
            None => {
                return Ok(ResolvedUser {
                    uid,
                    gid: 0,
                    groups: Vec::new(),
                    home,
                });
            }
            Some(g) => {
                if let Some(gid) = numeric(g) {
                    return Ok(ResolvedUser {
                        uid,
                        gid: gid?,
                        groups: Vec::new(),
                        home,
                    });
                }
            }
        }
    }
    let (uid, mut gid, name, home) = if let Some(uid) = numeric(user_part) {
        let uid = uid?;
        match users.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name), e.home),
            None => (uid, 0, None, "/"),
        }
    } else {
        match users.iter().find(|e| e.name == user_part) {
            Some(e) => (e.uid, e.gid, Some(e.name), e.home),
            None => return Err(UserError::UnknownUser(user_part.to_string())),
        }
    };
    let groups_db: Vec<_> = kiln_base::passwd::groups(group).collect();
    let mut groups = Vec::new();
    match group_part {
        Some(g) => {
            gid = match numeric(g) {
                Some(n) => n?,
                None => match groups_db.iter().find(|e| e.name == g) {
                    Some(e) => e.gid,
                    None => return Err(UserError::UnknownGroup(g.to_string())),
                },
            };
        }
        None => {
            if let Some(name) = name {
                for e in &groups_db {
                    if e.members.contains(&name) && !groups.contains(&e.gid) {
                        groups.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home: non_empty(home),
    })
}

fn non_empty(home: &str) -> String {
    if home.is_empty() {
        "/".to_string()
    } else {
        home.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1001:\nwheel:x:10:alice,bob\nstaff:x:50:bob\n";

    #[test]
    fn empty_user_is_root() {
        let u = resolve_user("", PASSWD, "").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (0, 0, vec![], "/root")
        );
    }

    #[test]
    fn name_resolves_uid_primary_gid_and_member_groups() {
        let u = resolve_user("alice", PASSWD, GROUP).unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                groups: vec![10],
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn numeric_uid_without_files_gets_gid_zero() {
        let u = resolve_user("1234", "", "").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (1234, 0, vec![], "/")
        );
        assert_eq!(resolve_user("1234:55", "", "").unwrap().gid, 55);
    }

    #[test]
    fn explicit_group_by_name_overrides_primary_group_and_drops_members() {
        let u = resolve_user("alice:staff", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 50, vec![]));
        assert_eq!(resolve_user("1000:wheel", PASSWD, GROUP).unwrap().gid, 10);
    }

    #[test]
    fn unknown_names_give_buildkit_errors() {
        assert_eq!(
            resolve_user("nobody2", PASSWD, GROUP)
                .unwrap_err()
                .to_string(),
            "unable to find user nobody2: no matching entries in passwd file"
        );
        assert_eq!(
            resolve_user("alice:nogroup", PASSWD, GROUP)
                .unwrap_err()
                .to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
    }
}
