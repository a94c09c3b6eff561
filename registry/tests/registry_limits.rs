//! A hostile registry on 127.0.0.1 (a few lines of HTTP, not `docker-registry`): oversized
//! manifests (with and without a `Content-Length`), an oversized token response and a
//! manifest whose config is too big are refused with `RegistryError::TooLarge` naming
//! what was too big, without reading it into memory and without storing or tagging
//! anything.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use kiln_image::limits::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use kiln_image::oci::{Descriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, Manifest, json_blob};
use kiln_registry::{RegistryError, pull_into_store};
use support::{isolated_opts, new_store};

/// 100 MiB: what a hostile registry sends where a manifest belongs.
const HUGE: u64 = 100 << 20;

/// What the hostile registry answers for a manifest (or the token realm).
#[derive(Clone)]
enum Body {
    /// `HUGE` bytes of `{`, announced by `Content-Length`.
    HugeWithLength,
    /// `HUGE` bytes of `{`, close-delimited (no length to check up front).
    HugeUnannounced,
    /// These bytes.
    Bytes(Vec<u8>),
    /// A 500 with `HUGE` bytes of `x`, close-delimited.
    HugeError,
}

/// Serves `/v2/` (200, or a bearer challenge when `token` is set), the manifest of
/// `repo:latest`, and the token realm; records every request line.
struct Hostile {
    host: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn send(s: &mut impl Write, status: &str, extra: &str, body: &Body) {
    let chunk = vec![b'{'; 64 << 10];
    match body {
        Body::HugeWithLength => {
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {MEDIA_TYPE_MANIFEST}\r\nContent-Length: {HUGE}\r\n{extra}Connection: close\r\n\r\n"
            );
            let mut sent = 0;
            // Stops as soon as kiln hangs up, which is the point.
            while sent < HUGE && s.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
        }
        Body::HugeUnannounced => {
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {MEDIA_TYPE_MANIFEST}\r\n{extra}Connection: close\r\n\r\n"
            );
            let mut sent = 0;
            while sent < HUGE && s.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
        }
        Body::HugeError => {
            let _ = write!(
                s,
                "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n"
            );
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = 0;
            while sent < HUGE && s.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
        }
        Body::Bytes(b) => {
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {MEDIA_TYPE_MANIFEST}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                b.len()
            );
            let _ = s.write_all(b);
        }
    }
}

impl Hostile {
    fn start(manifest: Body, token: Option<Body>) -> Hostile {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = l.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let realm = format!("http://{host}/token");
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                // kiln tries HTTPS first: hang up on a TLS hello so it falls back to HTTP.
                if r.fill_buf()
                    .map(|b| b.first() == Some(&0x16))
                    .unwrap_or(true)
                {
                    continue;
                }
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                log.lock().unwrap().push(first.trim().to_string());
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let empty = Body::Bytes(b"{}".to_vec());
                if path == "/v2/" {
                    match &token {
                        Some(_) => {
                            let challenge = format!(
                                "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"hostile\"\r\n"
                            );
                            send(&mut s, "401 Unauthorized", &challenge, &empty)
                        }
                        None => send(&mut s, "200 OK", "", &empty),
                    }
                } else if path.starts_with("/token") {
                    send(&mut s, "200 OK", "", token.as_ref().unwrap_or(&empty));
                } else if path.starts_with("/v2/evil/manifests/") {
                    send(&mut s, "200 OK", "", &manifest);
                } else {
                    send(&mut s, "404 Not Found", "", &empty);
                }
            }
        });
        Hostile { host, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn pull(h: &Hostile) -> (RegistryError, kiln_store::Store, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let (dir, store) = new_store();
    let err = pull_into_store(
        &store,
        &format!("{}/evil:latest", h.host),
        &isolated_opts(home.path()),
    )
    .expect_err("the pull must be refused");
    assert_eq!(
        store.get_ref(&format!("{}/evil:latest", h.host)).unwrap(),
        None,
        "nothing is tagged"
    );
    (err, store, dir)
}

fn assert_too_large(err: &RegistryError, what: &str, limit: u64) {
    match err {
        RegistryError::TooLarge { cause, .. } => {
            assert!(cause.what.contains(what), "{err}");
            assert_eq!(cause.limit, limit, "{err}");
        }
        other => panic!("expected TooLarge naming {what:?}, got {other:?}: {other}"),
    }
    assert!(err.to_string().contains("too large"), "{err}");
}

#[test]
fn a_100_mib_manifest_with_a_content_length_is_refused_before_reading() {
    let h = Hostile::start(Body::HugeWithLength, None);
    let (err, _store, _dir) = pull(&h);
    assert_too_large(&err, "manifest evil:latest", MAX_MANIFEST_SIZE);
    assert_eq!(
        err.to_string().matches(&HUGE.to_string()).count(),
        1,
        "the declared size is named: {err}"
    );
}

#[test]
fn a_100_mib_manifest_without_a_length_is_cut_off_at_the_cap() {
    let h = Hostile::start(Body::HugeUnannounced, None);
    let (err, _store, _dir) = pull(&h);
    assert_too_large(&err, "manifest evil:latest", MAX_MANIFEST_SIZE);
}

#[test]
fn a_100_mib_error_body_is_quoted_in_part() {
    let h = Hostile::start(Body::HugeError, None);
    let (err, _store, _dir) = pull(&h);
    match &err {
        RegistryError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert!(message.starts_with("Internal Server Error: xxx"), "{err}");
            assert!(message.len() < 300, "{err}");
        }
        other => panic!("expected a 500, got {other:?}"),
    }
}

#[test]
fn an_oversized_token_response_is_refused() {
    let h = Hostile::start(Body::Bytes(b"{}".to_vec()), Some(Body::HugeUnannounced));
    let (err, _store, _dir) = pull(&h);
    assert_too_large(&err, "token response", 1 << 20);
}

#[test]
fn a_config_over_the_cap_is_refused_before_it_is_downloaded() {
    let config = Descriptor::new(
        MEDIA_TYPE_CONFIG,
        &format!("sha256:{}", "c".repeat(64)),
        MAX_CONFIG_SIZE + 1,
    );
    let (bytes, _, _) = json_blob(&Manifest::new(config, vec![]));
    let h = Hostile::start(Body::Bytes(bytes), None);
    let (err, store, _dir) = pull(&h);
    assert_too_large(&err, "config sha256:cccc", MAX_CONFIG_SIZE);
    assert!(
        !h.requests().iter().any(|r| r.contains("/blobs/")),
        "no blob was requested: {:?}",
        h.requests()
    );
    assert!(support::tmp_files(&store).is_empty());
}
