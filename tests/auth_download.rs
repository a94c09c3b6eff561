//! `ADD <url>` from a server that wants credentials, given as BuildKit's per-host build
//! secrets `HTTP_AUTH_TOKEN_<host>` (a bearer token) and `HTTP_AUTH_HEADER_<host>` (the
//! whole header). The server is a loopback one of the test's; the credentials must reach
//! it and nothing else: not the image, not the store, not a message.

mod common;

use common::identity::{World, assert_ok, assert_refused, both, identities};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

const TOKEN: &str = "t0ken-kiln-3f9a";
const BASIC: &str = "Basic a2lsbjpzM2NyM3Q=";

/// Serves `/bearer.txt` to `Bearer TOKEN` and `/basic.txt` to `BASIC`, 401 otherwise.
fn serve() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let Ok(read) = s.try_clone() else { continue };
            let mut r = BufReader::new(read);
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    auth = v.trim().to_string();
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = match (path.as_str(), auth.as_str()) {
                ("/bearer.txt", a) if a == format!("Bearer {TOKEN}") => ("200 OK", "bearer ok"),
                ("/basic.txt", a) if a == BASIC => ("200 OK", "basic ok"),
                _ => ("401 Unauthorized", "who are you"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    });
    format!("http://{addr}")
}

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn per_host_secrets_authorize_add_downloads_and_go_nowhere_else() {
    let base = serve();
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("FROM scratch\nADD {base}/bearer.txt /b\nADD {base}/basic.txt /c\n"),
        );
        let ctx = ctx.to_str().expect("utf-8");
        let secrets = w.user_dir("secrets");
        let basic_file = secrets.join("basic");
        std::fs::write(&basic_file, format!("{BASIC}\n")).expect("write secret");
        common::open_up(&secrets);
        let token_secret = "id=HTTP_AUTH_TOKEN_127.0.0.1,env=KILN_TEST_TOKEN";
        let header_secret = format!("id=HTTP_AUTH_HEADER_127.0.0.1,src={}", basic_file.display());

        // Without credentials the server refuses: the step fails naming its line.
        let out = w.kiln_env(
            &["build", "--progress", "plain", "-t", "auth:1", ctx],
            &[("KILN_TEST_TOKEN", TOKEN)],
        );
        assert_refused(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("server answered HTTP 401"), "{id:?}: {err}");
        assert!(err.contains("Dockerfile:2"), "{id:?}: {err}");
        assert!(!String::from_utf8_lossy(&w.kiln(&["images"]).stdout).contains("auth"));

        // The token for one file, the whole header for the other (one host: the token
        // wins when both are given, so each build gives one).
        let ctx_b = w.context(
            "ctx-b",
            &format!("FROM scratch\nADD {base}/bearer.txt /b\n"),
        );
        let out = w.kiln_env(
            &[
                "build",
                "--progress",
                "plain",
                "--secret",
                token_secret,
                "-t",
                "auth:b",
                ctx_b.to_str().expect("utf-8"),
            ],
            &[("KILN_TEST_TOKEN", TOKEN)],
        );
        assert_ok(&out);
        assert_eq!(w.image("auth:b").text("b"), "bearer ok", "{id:?}");
        let ctx_c = w.context("ctx-c", &format!("FROM scratch\nADD {base}/basic.txt /c\n"));
        let out = w.kiln_env(
            &[
                "build",
                "--progress",
                "plain",
                "--secret",
                &header_secret,
                "-t",
                "auth:c",
                ctx_c.to_str().expect("utf-8"),
            ],
            &[],
        );
        assert_ok(&out);
        let img = w.image("auth:c");
        assert_eq!(img.text("c"), "basic ok", "{id:?}");

        // With --checksum the copier downloads, with the same credentials.
        let ctx_d = w.context(
            "ctx-d",
            &format!(
                "FROM scratch\nADD --checksum={} {base}/bearer.txt /b\n",
                sha256_of(b"bearer ok")
            ),
        );
        let out = w.kiln_env(
            &[
                "build",
                "--progress",
                "plain",
                "--secret",
                token_secret,
                "-t",
                "auth:d",
                ctx_d.to_str().expect("utf-8"),
            ],
            &[("KILN_TEST_TOKEN", TOKEN)],
        );
        assert_ok(&out);
        assert_eq!(w.image("auth:d").text("b"), "bearer ok", "{id:?}");

        // A wrong token: refused, and the message does not repeat it.
        let out = w.kiln_env(
            &[
                "build",
                "--progress",
                "plain",
                "--no-cache",
                "--secret",
                token_secret,
                "-t",
                "auth:e",
                ctx_b.to_str().expect("utf-8"),
            ],
            &[("KILN_TEST_TOKEN", "wrong-token-77")],
        );
        assert_refused(&out);
        assert!(
            !both(&out).contains("wrong-token-77"),
            "{id:?}: {}",
            both(&out)
        );

        // Nothing of the credentials in the store (blobs, records, history, scratch).
        for needle in [TOKEN, "a2lsbjpzM2NyM3Q="] {
            let found = files_holding(&w.store(), needle.as_bytes());
            assert!(found.is_empty(), "{id:?}: {needle} stored in {found:?}");
        }
        let history = String::from_utf8_lossy(&w.kiln(&["history", "auth:c"]).stdout).into_owned();
        assert!(!history.contains("a2lsbjpzM2NyM3Q="), "{id:?}: {history}");
    }
}

fn sha256_of(data: &[u8]) -> String {
    kiln_base::digest::sha256_digest(data)
}
