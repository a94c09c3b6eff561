//! A blob download that breaks off mid-way is resumed with an HTTP Range request against
//! the real registry, and the pulled image is the one pushed.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln_registry::{pull_into_store, push_from_store};
use support::*;

/// A proxy to `target` that cuts the first response stream after `limit` bytes, once;
/// later connections pass through. Counts requests that asked for a byte range.
struct OnceCutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    range_requests: Arc<AtomicUsize>,
}

impl OnceCutProxy {
    fn start(target: u16, limit: usize) -> OnceCutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let range_requests = Arc::new(AtomicUsize::new(0));
        let (cut2, ranges2) = (cut.clone(), range_requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let ranges = ranges2.clone();
                std::thread::spawn(move || {
                    let (mut from, mut to) = (client, upstream);
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        if text.contains("range: bytes=") {
                            ranges.fetch_add(1, Ordering::SeqCst);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
                let cut = cut2.clone();
                std::thread::spawn(move || {
                    let (mut from, mut to) = (u2, c2);
                    let cut_this = !cut.load(Ordering::SeqCst);
                    let mut passed = 0usize;
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut_this && passed + n > limit && !cut.swap(true, Ordering::SeqCst) {
                            let _ = to.write_all(&buf[..limit - passed]);
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                            return;
                        }
                        passed += n;
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
        });
        OnceCutProxy {
            port,
            cut,
            range_requests,
        }
    }
}

#[test]
fn a_broken_off_blob_download_resumes_with_a_range_request() {
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let opts = isolated_opts(home.path());
    let (_a, src) = new_store();
    let image = make_image(&src, "big:1", 11, &[3_000_000]);
    push_from_store(&src, "big:1", &format!("{}/big:1", reg.host()), &opts).unwrap();

    let proxy = OnceCutProxy::start(reg.port, 1_000_000);
    let (_b, dst) = new_store();
    let pulled = pull_into_store(&dst, &format!("127.0.0.1:{}/big:1", proxy.port), &opts).unwrap();
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy never cut");
    assert!(
        proxy.range_requests.load(Ordering::SeqCst) >= 1,
        "no Range request after the cut"
    );
    assert_eq!(pulled.image.config, image.config);
    assert_eq!(pulled.image.manifest, image.manifest);
    assert!(tmp_files(&dst).is_empty(), "{:?}", tmp_files(&dst));
}
