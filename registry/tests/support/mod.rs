//! Test support: a real `docker-registry` (Debian's distribution 2.8) on 127.0.0.1 with a
//! config written per test (plain, TLS, htpasswd, token auth), generated images in a
//! kiln store, a CA and certificates (rcgen), a bearer-token service, and a TCP proxy
//! that cuts the connection after N bytes (registry down mid-push).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kiln_image::oci::{Descriptor, ImageConfig, Manifest, json_blob};
use kiln_store::{ImageRef, Store};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the registry authenticates.
pub enum Auth {
    None,
    Htpasswd(PathBuf),
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert_bundle: PathBuf,
    },
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Registry {
    pub fn start(tls: Option<(&Path, &Path)>, auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        match auth {
            Auth::None => {}
            Auth::Htpasswd(p) => cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                p.display()
            )),
            Auth::Token {
                realm,
                service,
                issuer,
                root_cert_bundle,
            } => cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert_bundle.display()
            )),
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry runs");
        let reg = Registry { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The file holding a blob's bytes in the registry's storage.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// True if the registry's storage has a tag `tag` in `repo`.
    pub fn has_tag(&self, repo: &str, tag: &str) -> bool {
        self.dir
            .path()
            .join("storage/docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .exists()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deterministic pseudo-random byte stream (xorshift), so layers do not compress away.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// Writes a gzip layer holding one file of `size` noise bytes into the store; returns
/// (descriptor, diff_id).
pub fn make_layer(store: &Store, seed: u64, size: u64) -> (Descriptor, String) {
    let mut w = store.blob_writer().unwrap();
    let diff_id;
    {
        let gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::fast());
        let mut hashing = kiln_image::HashingWriter::new(gz);
        {
            let mut tar = tar::Builder::new(&mut hashing);
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("data/file-{seed}.bin")).unwrap();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append(&h, Noise::new(seed).take(size)).unwrap();
            tar.finish().unwrap();
        }
        let (gz, d, _) = hashing.finish();
        diff_id = d;
        gz.finish().unwrap();
    }
    let info = w.commit().unwrap();
    (
        Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &info.digest,
            info.size,
        ),
        diff_id,
    )
}

/// Builds an image of `layers` noise layers (sizes in bytes) in `store`, tagged `name`.
pub fn make_image(store: &Store, name: &str, seed: u64, sizes: &[u64]) -> ImageRef {
    let mut layers = Vec::new();
    let mut config = ImageConfig::default();
    config.rootfs.kind = "layers".into();
    for (i, size) in sizes.iter().enumerate() {
        let (d, diff) = make_layer(store, seed * 1000 + i as u64, *size);
        layers.push(d);
        config.rootfs.diff_ids.push(diff);
    }
    config.config.cmd = Some(vec!["/bin/true".into()]);
    let (bytes, digest, size) = json_blob(&config);
    store.put_blob_bytes(&bytes).unwrap();
    let manifest = Manifest::new(
        Descriptor::new("application/vnd.oci.image.config.v1+json", &digest, size),
        layers,
    );
    let (mbytes, mdigest, _) = json_blob(&manifest);
    store.put_blob_bytes(&mbytes).unwrap();
    let image = ImageRef {
        index: None,
        config: digest,
        manifest: mdigest,
    };
    store.set_ref(name, image.clone()).unwrap();
    image
}

pub fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

/// Files left under the store's `tmp/` (must be none after any pull).
///
/// A process stages in its own locked `tmp/proc-*` directory (kiln_store::scratch), which
/// lives as long as the process: what counts is what is left inside it.
pub fn tmp_files(store: &Store) -> Vec<String> {
    let list = |dir: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().collect())
            .unwrap_or_default()
    };
    let mut v = Vec::new();
    for e in list(&store.root().join("tmp")) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("proc-") {
            for inner in list(&e.path()) {
                v.push(format!("{name}/{}", inner.file_name().to_string_lossy()));
            }
        } else {
            v.push(name);
        }
    }
    v.sort();
    v
}

/// Options that read no file from the user's home.
pub fn isolated_opts(home: &Path) -> kiln_registry::RegistryOptions {
    kiln_registry::RegistryOptions {
        certs_dirs: vec![home.join("certs.d")],
        docker_config_path: Some(home.join("docker/config.json")),
        ..Default::default()
    }
}

/// A CA, and a server certificate for localhost/127.0.0.1 signed by it, written to `dir`
/// as `ca.crt`, `server.crt`, `server.key`.
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kiln test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let server = server_params.signed_by(&server_key, &ca).unwrap();
    let ca_path = dir.join("ca.crt");
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, server.pem()).unwrap();
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

/// An htpasswd file with one bcrypt user.
pub fn make_htpasswd(path: &Path, user: &str, password: &str) {
    let hash = bcrypt::hash(password, 5).unwrap();
    std::fs::write(path, format!("{user}:{hash}\n")).unwrap();
}

/// A TCP proxy to `target` that forwards until `limit` bytes went upstream, then cuts
/// both connections and refuses new ones (the registry "goes down").
pub struct CuttingProxy {
    pub port: u16,
    pub cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    pub fn start(target: u16, limit: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let cut2 = cut.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (cut_a, sent_a) = (cut2.clone(), sent.clone());
                // client → registry, counting bytes
                std::thread::spawn(move || {
                    let (mut from, mut to) = (client, upstream);
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent_a.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                            cut_a.store(true, Ordering::SeqCst);
                            break;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                });
                // registry → client
                std::thread::spawn(move || {
                    let (mut from, mut to) = (u2, c2);
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
        });
        CuttingProxy { port, cut }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A bearer-token service: `GET /token?service=S&scope=...` with basic auth
/// `user:password` answers `{"token": JWT}`, the JWT signed ES256 by a self-signed key
/// whose certificate goes in the registry's `rootcertbundle`. Wrong or missing
/// credentials: 401.
pub struct TokenService {
    pub port: u16,
    pub cert_path: PathBuf,
    pub issued: Arc<AtomicU64>,
}

impl TokenService {
    pub fn start(
        dir: &Path,
        service: &str,
        issuer: &str,
        user: &str,
        password: &str,
    ) -> TokenService {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kiln test token signer");
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.join("token-signer.crt");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let cert_der = cert.der().to_vec();
        let pkcs8 = key.serialize_der();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(AtomicU64::new(0));
        let (service, issuer) = (service.to_string(), issuer.to_string());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let issued2 = issued.clone();
        std::thread::spawn(move || {
            let rng = ring::rand::SystemRandom::new();
            let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &pkcs8,
                &rng,
            )
            .unwrap();
            for conn in listener.incoming() {
                let Ok(mut stream) = conn else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("authorization")
                    {
                        auth = Some(v.trim().to_string());
                    }
                }
                if auth.as_deref() != Some(expected.as_str()) {
                    let body =
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut access = Vec::new();
                for pair in query.split('&') {
                    let Some(("scope", v)) = pair.split_once('=') else {
                        continue;
                    };
                    let v = percent_decode(v);
                    // repository:NAME:actions
                    let mut parts = v.splitn(3, ':');
                    let (Some(kind), Some(name), Some(actions)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let actions: Vec<&str> = actions.split(',').collect();
                    access
                        .push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let n = issued2.fetch_add(1, Ordering::SeqCst);
                let header = serde_json::json!({
                    "typ": "JWT", "alg": "ES256",
                    "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)],
                });
                let claims = serde_json::json!({
                    "iss": issuer, "sub": "tok-user", "aud": service,
                    "exp": now + 300, "nbf": now - 10, "iat": now - 10,
                    "jti": format!("kiln-test-{n}"), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let sig = signer.sign(&rng, signing_input.as_bytes()).unwrap();
                let jwt = format!("{signing_input}.{}", b64url(sig.as_ref()));
                let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenService {
            port,
            cert_path,
            issued,
        }
    }
}

/// A form value decoded (`+` is a space).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}
