//! `RUN --mount=type=ssh` with `--ssh`: a real `ssh-agent` holding a key made by the test,
//! and OpenSSH's `ssh-add` (with its libraries, copied from this machine) inside the image
//! listing the keys it reaches. As root and as the unprivileged test user.

mod common;

use common::identity::{BUSYBOX, Identity, World, assert_ok, assert_refused, identities};
use common::sshd::{Agent, make_key};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The comment of the test key, which `ssh-add -l` prints.
const KEY_COMMENT: &str = "kiln-ssh-test-key";

fn have_openssh() -> bool {
    ["ssh-agent", "ssh-add", "ssh-keygen"]
        .iter()
        .all(|t| Path::new("/usr/bin").join(t).exists())
}

/// A context with busybox and this machine's `ssh-add` with the libraries it loads.
fn context(w: &World, name: &str, body: &str) -> PathBuf {
    let ctx = w.context(name, &format!("{BUSYBOX}COPY sshroot/ /\n{body}"));
    let root = ctx.join("sshroot");
    let mut files = vec![PathBuf::from("/usr/bin/ssh-add")];
    let ldd = Command::new("ldd")
        .arg("/usr/bin/ssh-add")
        .output()
        .expect("ldd");
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            files.push(PathBuf::from(word));
        }
    }
    for f in files {
        let to = root.join(f.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        // Through the symlink (/lib64/ld-linux... is one): the file itself.
        std::fs::copy(&f, &to).expect("copy a file of ssh-add");
    }
    common::open_up(&ctx);
    ctx
}

#[test]
fn a_run_reaches_the_agent_given_by_socket_and_by_key_file() {
    if !have_openssh() {
        eprintln!("skipped: OpenSSH's client is not installed (apt-get install openssh-client)");
        return;
    }
    for id in identities() {
        let w = World::new(id);
        let key = make_key(&w, "keys", KEY_COMMENT);
        let agent = Agent::start(&w, "agent", &key);
        let ctx = context(
            &w,
            "ctx",
            "RUN --mount=type=ssh /usr/bin/ssh-add -l > /keys && echo \"$SSH_AUTH_SOCK\" > /sock\n\
             RUN --mount=type=ssh,id=other,target=/tmp/agent,uid=1000,gid=1000,mode=0640 \
             stat -c '%u:%g %a' /tmp/agent > /owner && SSH_AUTH_SOCK=/tmp/agent /usr/bin/ssh-add -l > /other\n",
        );
        let socket = agent.socket.to_str().expect("utf-8").to_string();
        let key_arg = format!("other={}", key.display());
        let out = w.kiln_env(
            &[
                "build",
                "--progress",
                "plain",
                "--ssh",
                "default",
                "--ssh",
                &key_arg,
                "-t",
                "ssh:1",
                ctx.to_str().expect("utf-8"),
            ],
            &[("SSH_AUTH_SOCK", &socket)],
        );
        assert_ok(&out);
        let img = w.image("ssh:1");
        assert!(
            img.text("keys").contains(KEY_COMMENT),
            "{id:?}: {}",
            img.text("keys")
        );
        assert_eq!(img.text("sock"), "/run/buildkit/ssh_agent.0\n", "{id:?}");
        assert_eq!(img.text("owner"), "1000:1000 640\n", "{id:?}");
        assert!(img.text("other").contains(KEY_COMMENT), "{id:?}");
        // The mount points are not part of the image, and no key is.
        assert!(!img.files.contains_key("run/buildkit"), "{id:?}");
        assert!(!img.files.contains_key("tmp/agent"), "{id:?}");
        let private = std::fs::read(&key).expect("read key");
        for (path, f) in &img.files {
            assert!(
                !f.content
                    .windows(private.len())
                    .any(|w| w == private.as_slice()),
                "{id:?}: the private key is in {path}"
            );
        }
        // Which agent serves a mount is not part of the step's key, as in BuildKit.
        let again = w.build(
            &ctx,
            &[
                "--ssh",
                &key_arg,
                "--ssh",
                &format!("default={socket}"),
                "-t",
                "ssh:2",
            ],
        );
        assert_ok(&again);
        let err = String::from_utf8_lossy(&again.stderr).into_owned();
        assert_eq!(err.matches("CACHED").count(), 5, "{id:?}: {err}");
        // Nothing of the forwards or the key agent is left in the store's scratch.
        let tmp = w.store().join("tmp");
        let left: Vec<String> = walk_names(&tmp)
            .into_iter()
            .filter(|n| n.starts_with("ssh-"))
            .collect();
        assert!(left.is_empty(), "{id:?}: left in the store: {left:?}");
    }
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_required_agent_that_was_not_given_fails_the_step_and_an_optional_one_is_absent() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("{BUSYBOX}RUN --mount=type=ssh test ! -e /run/buildkit/ssh_agent.0 && echo absent > /opt\n"),
        );
        assert_ok(&w.build(&ctx, &["-t", "optional:1"]));
        assert_eq!(w.image("optional:1").text("opt"), "absent\n", "{id:?}");

        let ctx = w.context(
            "ctx2",
            &format!("{BUSYBOX}RUN --mount=type=ssh,id=deploy,required=true true\n"),
        );
        let out = w.build(&ctx, &["-t", "required:1"]);
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("ssh deploy: no agent given"), "{id:?}: {err}");
        assert!(err.contains("Dockerfile:5"), "{id:?}: {err}");
        let images = w.kiln(&["images"]);
        assert!(
            !String::from_utf8_lossy(&images.stdout).contains("required"),
            "{id:?}"
        );
    }
}

#[test]
fn ssh_flag_values_are_checked() {
    let w = World::new(Identity::Rootless);
    let ctx = w.context("ctx", &format!("{BUSYBOX}RUN true\n"));
    // No SSH_AUTH_SOCK in kiln's (cleared) environment.
    let out = w.build(&ctx, &["--ssh", "default"]);
    assert_refused(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("--ssh default: SSH_AUTH_SOCK is not set"),
        "{err}"
    );
    let out = w.build(&ctx, &["--ssh", "default=/nonexistent/key"]);
    assert_refused(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("--ssh default=/nonexistent/key"), "{err}");
}
