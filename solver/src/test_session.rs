//! A build session for tests: a fresh temp-dir store and a context with fixed contents and
//! modes, no namespaces; and a local HTTP server for ADD's URLs.

use crate::entitlements::NetworkDefault;
use crate::session::{BuildSession, SolveOptions};
use kiln_parser::{Op, Platform, Span, Step};
use kiln_store::Store;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A build session over a fresh store and a context with fixed contents and modes.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub session: Arc<BuildSession>,
}

pub(crate) fn fixture(network: NetworkDefault, source_date_epoch: Option<i64>) -> Fixture {
    fixture_with(network, source_date_epoch, Default::default())
}

/// [`fixture`] with what the command line adds to every RUN.
pub(crate) fn fixture_with(
    network: NetworkDefault,
    source_date_epoch: Option<i64>,
    run_options: kiln_executor::sandbox::RunOptions,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    std::fs::create_dir_all(context.join("src/sub")).unwrap();
    let files: [(&str, &[u8], u32); 3] = [
        ("src/a.txt", b"alpha\n", 0o644),
        ("src/sub/b.sh", b"#!/bin/sh\necho b\n", 0o755),
        ("go.mod", b"module example\n", 0o600),
    ];
    for (path, content, mode) in files {
        let path = context.join(path);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for d in ["", "src", "src/sub"] {
        std::fs::set_permissions(context.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dockerfile = context.join("Dockerfile");
    let store = Store::open(&dir.path().join("store")).unwrap();
    let options = SolveOptions {
        progress_scope: Default::default(),
        shared_steps: None,
        remote_caches: Vec::new(),
        remote_executor: None,
        context_dir: context,
        context_stat_cache: true,
        dockerfile,
        no_cache: false,
        no_cache_filter: Vec::new(),
        compression: kiln_image::Compression::Gzip,
        source_date_epoch,
        network,
        entitlements: Default::default(),
        snapshotter: None,
        secrets: Vec::new(),
        ssh: Vec::new(),
        explain_cache: false,
        platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        },
        run_options,
        named_contexts: Vec::new(),
    };
    let session = Arc::new(BuildSession::new(store, options).unwrap());
    Fixture { dir, session }
}

/// A step of `op` at line 3.
pub(crate) fn step(op: Op) -> Step {
    Step {
        span: Span {
            line: 3,
            column: 1,
            end_line: 3,
        },
        source: "STEP".into(),
        created_by: "STEP # buildkit".into(),
        op,
    }
}

/// Serves `body(n)` to the `n`th request (from 0) on 127.0.0.1, with a fixed
/// `Last-Modified`; returns a URL of the server and the count of requests answered.
pub(crate) fn serve(
    body: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let Ok(clone) = s.try_clone() else { continue };
            let mut r = BufReader::new(clone);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = body(count.fetch_add(1, Ordering::SeqCst));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 15 Nov 1994 08:12:31 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (format!("http://{addr}/files/tool.tar.gz"), served)
}
