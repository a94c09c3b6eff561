//! Registry credentials go only where they belong: to the registry itself, or to a token
//! realm its challenge names over https (plain http only between loopback hosts). A
//! hostile registry that names a plain-http realm on another host, hands out an upload
//! `Location` on another host, or redirects a blob there gets nothing from kiln's
//! `Authorization` header. The registries here are scripted HTTP servers that record what
//! reaches them.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use kiln_registry::{Credentials, RegistryOptions, pull_into_store, push_from_store};
use support::{isolated_opts, make_image, new_store};

/// One request as a scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
}

/// What a scripted server answers: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// An HTTP/1.1 server on `addr` answering every request with `script` and recording it.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn start(
        addr: SocketAddr,
        script: impl Fn(&Seen, SocketAddr) -> Answer + Send + 'static,
    ) -> Scripted {
        let listener = TcpListener::bind(addr).expect("bind scripted server");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut stream) = conn else { return };
                let Ok(read_half) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(read_half);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let (mut authorization, mut length) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_string());
                        } else if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let request = Seen {
                    method,
                    target,
                    authorization,
                };
                let (status, headers, body) = script(&request, addr);
                log.lock().expect("log").push(request);
                let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Scripted { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

fn loopback(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("address")
}

fn creds() -> Credentials {
    Credentials {
        username: "alice".into(),
        password: "wonderland".into(),
    }
}

fn opts_with_creds(home: &std::path::Path) -> RegistryOptions {
    RegistryOptions {
        credentials: Some(creds()),
        ..isolated_opts(home)
    }
}

const BASIC_ALICE: &str = "Basic YWxpY2U6d29uZGVybGFuZA==";

/// A registry at 127.0.0.1 that wants Basic auth for everything.
fn basic_auth_gate(req: &Seen) -> Option<Answer> {
    if req.authorization.as_deref() == Some(BASIC_ALICE) {
        return None;
    }
    Some((
        401,
        vec![(
            "WWW-Authenticate".into(),
            r#"Basic realm="kiln-test""#.into(),
        )],
        Vec::new(),
    ))
}

fn assert_never_authorized(server: &Scripted, what: &str) {
    let seen = server.seen();
    assert!(
        !seen.is_empty(),
        "{what}: kiln never came (the test's premise)"
    );
    let leaked: Vec<&Seen> = seen.iter().filter(|s| s.authorization.is_some()).collect();
    assert!(leaked.is_empty(), "{what} got credentials: {leaked:?}");
}

/// This machine's host name when it resolves to a local address: a name kiln cannot know
/// is loopback, standing for "another host" without leaving the machine.
fn non_loopback_name() -> Option<(String, SocketAddr)> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_string();
    let addr = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .find(|a| a.is_ipv4())?;
    TcpListener::bind(addr).ok()?;
    Some((name, addr))
}

#[test]
fn basic_credentials_never_go_to_a_plain_http_realm_on_another_host() {
    let Some((name, addr)) = non_loopback_name() else {
        eprintln!("note: the host name does not resolve to a local address; skipped");
        return;
    };
    let realm = Scripted::start(addr, |_, _| {
        (200, Vec::new(), br#"{"token":"anonymous"}"#.to_vec())
    });
    let realm_url = format!("http://{name}:{}/token", realm.addr.port());
    let registry = Scripted::start(loopback("127.0.0.1"), move |req, _| {
        if req.authorization.as_deref() == Some("Bearer anonymous") {
            return (404, Vec::new(), Vec::new());
        }
        let challenge = format!(r#"Bearer realm="{realm_url}",service="kiln-test""#);
        (
            401,
            vec![("WWW-Authenticate".into(), challenge)],
            Vec::new(),
        )
    });
    let home = tempfile::tempdir().expect("home");
    let (_d, store) = new_store();
    let err = pull_into_store(
        &store,
        &format!("{}/app:1", registry.host()),
        &opts_with_creds(home.path()),
    );
    assert!(err.is_err(), "nothing to pull there");
    assert_never_authorized(&realm, "a plain-http realm on another host");
}

#[test]
fn a_loopback_registry_still_sends_credentials_to_its_loopback_realm() {
    let realm = Scripted::start(loopback("127.0.0.2"), |req, _| {
        match req.authorization.as_deref() {
            Some(BASIC_ALICE) => (200, Vec::new(), br#"{"token":"for-alice"}"#.to_vec()),
            _ => (401, Vec::new(), Vec::new()),
        }
    });
    let realm_url = format!("http://{}/token", realm.host());
    let registry = Scripted::start(loopback("127.0.0.1"), move |req, _| {
        if req.authorization.as_deref() == Some("Bearer for-alice") {
            return (404, Vec::new(), Vec::new());
        }
        let challenge = format!(r#"Bearer realm="{realm_url}",service="kiln-test""#);
        (
            401,
            vec![("WWW-Authenticate".into(), challenge)],
            Vec::new(),
        )
    });
    let home = tempfile::tempdir().expect("home");
    let (_d, store) = new_store();
    let _ = pull_into_store(
        &store,
        &format!("{}/app:1", registry.host()),
        &opts_with_creds(home.path()),
    );
    assert!(
        realm
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(BASIC_ALICE)),
        "the realm got the credentials: {:?}",
        realm.seen()
    );
    assert!(
        registry
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some("Bearer for-alice")),
        "the registry got the token: {:?}",
        registry.seen()
    );
}

#[test]
fn an_upload_location_on_another_host_gets_no_authorization() {
    // The storage host takes the upload, answering as a registry would.
    let storage = Scripted::start(loopback("127.0.0.2"), |req, _| match req.method.as_str() {
        "PUT" => (201, Vec::new(), Vec::new()),
        _ => (202, Vec::new(), Vec::new()),
    });
    let upload_url = format!("http://{}/upload/session-1", storage.host());
    let registry = Scripted::start(loopback("127.0.0.1"), move |req, _| {
        if let Some(refused) = basic_auth_gate(req) {
            return refused;
        }
        match (req.method.as_str(), req.target.as_str()) {
            ("GET", "/v2/") => (200, Vec::new(), Vec::new()),
            ("HEAD", _) => (404, Vec::new(), Vec::new()),
            ("POST", t) if t.contains("/blobs/uploads/") => (
                202,
                vec![("Location".into(), upload_url.clone())],
                Vec::new(),
            ),
            ("PUT", t) if t.contains("/manifests/") => (201, Vec::new(), Vec::new()),
            _ => (404, Vec::new(), Vec::new()),
        }
    });
    let home = tempfile::tempdir().expect("home");
    let (_d, store) = new_store();
    make_image(&store, "app:1", 7, &[4096]);
    let _ = push_from_store(
        &store,
        "app:1",
        &format!("{}/app:1", registry.host()),
        &opts_with_creds(home.path()),
    );
    assert_never_authorized(&storage, "an upload Location on another host");
    assert!(
        registry
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(BASIC_ALICE)),
        "the registry itself got the credentials: {:?}",
        registry.seen()
    );
}

#[test]
fn a_blob_redirect_to_another_host_carries_no_authorization() {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let config_digest = kiln_base::digest::sha256_digest(config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [],
    })
    .to_string()
    .into_bytes();
    let storage = Scripted::start(loopback("127.0.0.2"), move |_, _| {
        (200, Vec::new(), config.to_vec())
    });
    let blob_url = format!("http://{}/blob/config", storage.host());
    let registry = Scripted::start(loopback("127.0.0.1"), move |req, _| {
        if let Some(refused) = basic_auth_gate(req) {
            return refused;
        }
        let t = req.target.as_str();
        if t == "/v2/" {
            (200, Vec::new(), Vec::new())
        } else if t.contains("/manifests/") {
            (
                200,
                vec![(
                    "Content-Type".into(),
                    "application/vnd.oci.image.manifest.v1+json".into(),
                )],
                manifest.clone(),
            )
        } else if t.contains("/blobs/") {
            (307, vec![("Location".into(), blob_url.clone())], Vec::new())
        } else {
            (404, Vec::new(), Vec::new())
        }
    });
    let home = tempfile::tempdir().expect("home");
    let (_d, store) = new_store();
    let _ = pull_into_store(
        &store,
        &format!("{}/app:1", registry.host()),
        &opts_with_creds(home.path()),
    );
    assert_never_authorized(&storage, "a blob redirect to another host");
}

/// A storage host's own 401 is not the registry's challenge: the realm it names never gets
/// the registry's credentials (the last, replayable PUT of a chunked upload would retry
/// through it).
#[test]
fn a_challenge_from_an_upload_host_starts_no_token_fetch() {
    let realm = Scripted::start(loopback("127.0.0.3"), |_, _| {
        (200, Vec::new(), br#"{"token":"stolen"}"#.to_vec())
    });
    let realm_url = format!("http://{}/token", realm.host());
    let storage = Scripted::start(loopback("127.0.0.2"), move |req, addr| {
        match req.method.as_str() {
            "PATCH" => (
                202,
                vec![("Location".into(), format!("http://{addr}/upload/session-1"))],
                Vec::new(),
            ),
            _ => (
                401,
                vec![(
                    "WWW-Authenticate".into(),
                    format!(r#"Bearer realm="{realm_url}",service="storage""#),
                )],
                Vec::new(),
            ),
        }
    });
    let upload_url = format!("http://{}/upload/session-1", storage.host());
    let registry = Scripted::start(loopback("127.0.0.1"), move |req, _| {
        if let Some(refused) = basic_auth_gate(req) {
            return refused;
        }
        match (req.method.as_str(), req.target.as_str()) {
            ("GET", "/v2/") => (200, Vec::new(), Vec::new()),
            ("POST", t) if t.contains("/blobs/uploads/") => (
                202,
                vec![("Location".into(), upload_url.clone())],
                Vec::new(),
            ),
            _ => (404, Vec::new(), Vec::new()),
        }
    });
    let home = tempfile::tempdir().expect("home");
    let (_d, store) = new_store();
    make_image(&store, "app:1", 9, &[4096]);
    let opts = RegistryOptions {
        monolithic_max: 0,
        chunk_size: 1024,
        ..opts_with_creds(home.path())
    };
    let pushed = push_from_store(
        &store,
        "app:1",
        &format!("{}/app:1", registry.host()),
        &opts,
    );
    assert!(pushed.is_err(), "the storage host refused the upload");
    assert!(
        storage.seen().iter().any(|s| s.method == "PUT"),
        "the upload reached its last PUT (the test's premise): {:?}",
        storage.seen()
    );
    let leaked: Vec<Seen> = realm
        .seen()
        .into_iter()
        .filter(|s| s.authorization.is_some())
        .collect();
    assert!(
        leaked.is_empty(),
        "the upload host's realm got credentials: {leaked:?}"
    );
    assert_never_authorized(&storage, "the upload host");
}
