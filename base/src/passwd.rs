//! Reading `/etc/passwd` and `/etc/group` text: one parser for `USER`, `--chown`, `WORKDIR`
//! owners and the host's own user name.
//!
//! The format is runc's (moby/sys/user): each line trimmed, blank lines skipped,
//! `:`-separated fields. Two things are kinder than runc, so that every file kiln read
//! before still reads the same: `#` comment lines are skipped, and the numeric fields are
//! trimmed; an entry whose uid or gid is not a number is skipped (runc would take it as
//! 0, root). The callers bound the bytes they read (`kiln_image::limits::
//! MAX_IMAGE_FILE_SIZE` for an image's files): a build can make these files any size.

/// One `/etc/passwd` entry (`name:password:uid:gid:gecos:home:shell`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    /// The home directory field as written ("" when missing).
    pub home: &'a str,
}

/// One `/etc/group` entry (`name:password:gid:member,member...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    pub name: &'a str,
    pub gid: u32,
    /// The users listed as members (empty names dropped).
    pub members: Vec<&'a str>,
}

/// The entries of a passwd file, in file order.
pub fn users(text: &str) -> impl Iterator<Item = User<'_>> {
    entries(text).filter_map(|f| {
        Some(User {
            name: f.first()?,
            uid: f.get(2)?.trim().parse().ok()?,
            gid: f.get(3)?.trim().parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// The entries of a group file, in file order.
pub fn groups(text: &str) -> impl Iterator<Item = Group<'_>> {
    entries(text).filter_map(|f| {
        Some(Group {
            name: f.first()?,
            gid: f.get(2)?.trim().parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// The fields of each entry line.
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_read_in_order_with_their_home() {
        let text = "root:x:0:0:root:/root:/bin/sh\n\n# a comment\nalice:x:1000:1001::/home/alice:/bin/sh\nbob:x:7:7\n";
        let got: Vec<User> = users(text).collect();
        assert_eq!(
            got,
            [
                User {
                    name: "root",
                    uid: 0,
                    gid: 0,
                    home: "/root"
                },
                User {
                    name: "alice",
                    uid: 1000,
                    gid: 1001,
                    home: "/home/alice"
                },
                User {
                    name: "bob",
                    uid: 7,
                    gid: 7,
                    home: ""
                },
            ]
        );
    }

    /// The two copies this replaces disagreed: `--chown` trimmed the id fields, `USER` did
    /// not and skipped comments. Now both trim lines and id fields, and skip comments.
    #[test]
    fn lines_and_id_fields_are_trimmed_and_bad_entries_skipped() {
        let text =
            "  carol:x: 42 :\t43\t:c:/home/carol  \r\nbad:x:abc:1::\nshort:x:5\n#hash:x:1:1::\n";
        let got: Vec<User> = users(text).collect();
        assert_eq!(
            got,
            [User {
                name: "carol",
                uid: 42,
                gid: 43,
                home: "/home/carol"
            }]
        );
    }

    #[test]
    fn groups_list_their_members() {
        let text = "root:x:0:\nwheel:x:10:alice,,bob\nstaff:x: 50 \nbad:x:z:alice\n";
        let got: Vec<Group> = groups(text).collect();
        assert_eq!(
            got,
            [
                Group {
                    name: "root",
                    gid: 0,
                    members: vec![]
                },
                Group {
                    name: "wheel",
                    gid: 10,
                    members: vec!["alice", "bob"]
                },
                Group {
                    name: "staff",
                    gid: 50,
                    members: vec![]
                },
            ]
        );
    }
}
