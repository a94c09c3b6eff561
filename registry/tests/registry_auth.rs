//! Auth and TLS against a real `docker-registry`: HTTPS with a CA made in the test and
//! htpasswd basic auth (login writes the docker config, pull/push read it, a wrong
//! password and an unknown CA are clear errors), and bearer tokens from a token service
//! written for the test in front of the registry (`auth: token`, JWTs signed ES256).

mod support;

use kiln_registry::{Credentials, RegistryError, login, logout, pull_into_store, push_from_store};
use support::*;

struct TlsRegistry {
    reg: Registry,
    home: tempfile::TempDir,
    _files: tempfile::TempDir,
}

fn tls_registry_with_htpasswd() -> TlsRegistry {
    let files = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_tls(files.path());
    let htpasswd = files.path().join("htpasswd");
    make_htpasswd(&htpasswd, "alice", "wonderland");
    let reg = Registry::start(Some((&cert, &key)), Auth::Htpasswd(htpasswd));
    let home = tempfile::tempdir().unwrap();
    let certs = home.path().join("certs.d").join(reg.host());
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    TlsRegistry {
        reg,
        home,
        _files: files,
    }
}

#[test]
fn login_over_tls_then_push_and_pull_use_the_stored_credentials() {
    let t = tls_registry_with_htpasswd();
    let opts = isolated_opts(t.home.path());
    let creds = Credentials {
        username: "alice".into(),
        password: "wonderland".into(),
    };
    let written = login(&t.reg.host(), &creds, &opts).unwrap();
    assert_eq!(written, t.home.path().join("docker/config.json"));
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(
        cfg["auths"][t.reg.host()]["auth"],
        "YWxpY2U6d29uZGVybGFuZA==" // base64("alice:wonderland")
    );

    let (_a, src) = new_store();
    let image = make_image(&src, "app:1", 10, &[150_000]);
    let dest = format!("{}/secure/app:1", t.reg.host());
    push_from_store(&src, "app:1", &dest, &opts).unwrap();
    let (_b, dst) = new_store();
    let pulled = pull_into_store(&dst, &dest, &opts).unwrap();
    assert_eq!(pulled.image, image);

    // After logout the registry refuses us, and says why.
    assert!(logout(&t.reg.host(), &opts).unwrap());
    let (_c, dst2) = new_store();
    let err = pull_into_store(&dst2, &dest, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "registry {h}: GET https://{h}/v2/ returned 401 Unauthorized: the registry requires a login (kiln login)",
            h = t.reg.host()
        )
    );
}

#[test]
fn a_wrong_password_is_refused_and_nothing_is_written() {
    let t = tls_registry_with_htpasswd();
    let opts = isolated_opts(t.home.path());
    let bad = Credentials {
        username: "alice".into(),
        password: "nope".into(),
    };
    let err = login(&t.reg.host(), &bad, &opts).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "registry {h}: GET https://{h}/v2/ returned 401 Unauthorized: the registry refused the credentials of user \"alice\" (wrong user name or password?)",
            h = t.reg.host()
        )
    );
    assert!(!t.home.path().join("docker/config.json").exists());

    let (_b, dst) = new_store();
    let opts = kiln_registry::RegistryOptions {
        credentials: Some(bad),
        ..isolated_opts(t.home.path())
    };
    let err = pull_into_store(&dst, &format!("{}/x:1", t.reg.host()), &opts).unwrap_err();
    assert!(err.to_string().contains("refused the credentials"), "{err}");
    assert!(dst.list_refs().unwrap().is_empty());
}

#[test]
fn an_unknown_ca_is_a_tls_error_naming_the_registry() {
    let t = tls_registry_with_htpasswd();
    // certs.d without our CA.
    let empty = tempfile::tempdir().unwrap();
    let opts = isolated_opts(empty.path());
    let (_b, dst) = new_store();
    let err = pull_into_store(&dst, &format!("{}/x:1", t.reg.host()), &opts).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "registry {h}: GET https://{h}/v2/ failed:",
            h = t.reg.host()
        )),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    // --insecure-registry skips verification.
    let opts = kiln_registry::RegistryOptions {
        insecure_registries: vec![t.reg.host()],
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "wonderland".into(),
        }),
        ..isolated_opts(empty.path())
    };
    let err = pull_into_store(&dst, &format!("{}/x:1", t.reg.host()), &opts).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[test]
fn bearer_tokens_from_a_token_service_authorize_push_and_pull() {
    let files = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(files.path(), "kiln-test", "kiln-issuer", "tok", "en");
    let reg = Registry::start(
        None,
        Auth::Token {
            realm: format!("http://127.0.0.1:{}/token", tokens.port),
            service: "kiln-test".into(),
            issuer: "kiln-issuer".into(),
            root_cert_bundle: tokens.cert_path.clone(),
        },
    );
    let home = tempfile::tempdir().unwrap();
    let opts = kiln_registry::RegistryOptions {
        credentials: Some(Credentials {
            username: "tok".into(),
            password: "en".into(),
        }),
        ..isolated_opts(home.path())
    };
    let (_a, src) = new_store();
    let image = make_image(&src, "app:1", 20, &[120_000, 10]);
    let dest = format!("{}/tokens/app:1", reg.host());
    push_from_store(&src, "app:1", &dest, &opts).unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    let (_b, dst) = new_store();
    let pulled = pull_into_store(&dst, &dest, &opts).unwrap();
    assert_eq!(pulled.image, image);
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    // Anonymous: the token service refuses, and the error says which request.
    let (_c, dst2) = new_store();
    let err = pull_into_store(&dst2, &dest, &isolated_opts(home.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "registry {}: GET http://127.0.0.1:{}/token (token) returned 401 Unauthorized: the registry requires a login (kiln login)",
            reg.host(),
            tokens.port
        )
    );
    assert!(dst2.list_refs().unwrap().is_empty());
}
