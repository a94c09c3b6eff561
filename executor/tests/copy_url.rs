//! ADD of http URLs against a local server on 127.0.0.1 started by each test: file name
//! from the URL path, mode 0600, mtime from Last-Modified, `--checksum` verified, not
//! extracted unless `--unpack=true`, and the COPY/checksum misuse errors.

mod copy_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;

use copy_support::*;
use kiln_executor::copy::{CopyRequest, SourceSpec};
use kiln_executor::layered::LayeredFs;

const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_UNIX: i64 = 1_445_412_480;

fn tar_with_one_file() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inside.txt", &b"in"[..]).unwrap();
    b.into_inner().unwrap()
}

/// Serves a fixed set of paths for at most `max` connections, then stops.
fn serve(max: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let target = first.split_whitespace().nth(1).unwrap_or("/");
            let path = target.split('?').next().unwrap_or("/").to_string();
            let (status, body): (&str, Vec<u8>) = match path.as_str() {
                "/files/hello.txt" | "/" => ("200 OK", b"remote content".to_vec()),
                "/pkg.tar" => ("200 OK", tar_with_one_file()),
                _ => ("404 Not Found", b"no".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn url_req(fx: &Fixture, url: &str, dest: &str) -> CopyRequest {
    let mut r = CopyRequest::new(
        vec![SourceSpec::Url(url.into())],
        fx.ctx_root(),
        dest,
        LayeredFs::new(vec![]),
    );
    r.add = true;
    r
}

#[test]
fn add_url_names_file_from_path_with_mode_0600_and_last_modified_mtime() {
    let base = serve(4);
    let fx = Fixture::new();
    let r = url_req(&fx, &format!("{base}/files/hello.txt?x=1"), "/d/");
    let (out, res) = run(&fx, &r);
    res.unwrap();
    assert_eq!(
        tree(&out),
        lines(&["d /d 0755 0:0", "f /d/hello.txt 0600 0:0 remote content"])
    );
    assert_eq!(
        std::fs::metadata(out.join("d/hello.txt")).unwrap().mtime(),
        LAST_MODIFIED_UNIX
    );
    // Without a trailing slash the destination is the file; an empty path is __unnamed__.
    assert_eq!(
        run_ok(&fx, &url_req(&fx, &format!("{base}/files/hello.txt"), "/x")),
        lines(&["f /x 0600 0:0 remote content"])
    );
    assert_eq!(
        run_ok(&fx, &url_req(&fx, &format!("{base}/"), "/u/")),
        lines(&["d /u 0755 0:0", "f /u/__unnamed__ 0600 0:0 remote content"])
    );
}

#[test]
fn add_url_checksum_is_verified() {
    let base = serve(4);
    let fx = Fixture::new();
    let url = format!("{base}/files/hello.txt");
    let good = "sha256:3e3e1e27fc7bafbe3c3e4a1b0f4c4e8b43fa6cc0e86fa6e5e0cb08ab8d36a5d9";
    // Compute the real digest of the served body.
    let real = kiln_base::digest::sha256_digest(b"remote content");
    let mut r = url_req(&fx, &url, "/f");
    r.checksum = Some(real.clone());
    assert_eq!(run_ok(&fx, &r), lines(&["f /f 0600 0:0 remote content"]));
    r.checksum = Some(good.into());
    assert_eq!(
        run_err(&fx, &r),
        format!("checksum mismatch for {url}: expected {good}, got {real}")
    );
    r.checksum = Some("sha256:xyz".into());
    assert_eq!(
        run_err(&fx, &r),
        "invalid checksum \"sha256:xyz\": expected sha256:<64 hex digits>"
    );
}

#[test]
fn add_url_http_errors_are_reported() {
    let base = serve(2);
    let fx = Fixture::new();
    let url = format!("{base}/missing");
    assert_eq!(
        run_err(&fx, &url_req(&fx, &url, "/f")),
        format!("downloading {url}: server answered HTTP 404")
    );
}

#[test]
fn add_url_archive_is_extracted_only_with_unpack_true() {
    let base = serve(4);
    let fx = Fixture::new();
    let url = format!("{base}/pkg.tar");
    let (out, res) = run(&fx, &url_req(&fx, &url, "/d/"));
    res.unwrap();
    assert_eq!(
        std::fs::read(out.join("d/pkg.tar")).unwrap(),
        tar_with_one_file()
    );
    let mut r = url_req(&fx, &url, "/d/");
    r.unpack = Some(true);
    assert_eq!(
        run_ok(&fx, &r),
        lines(&["d /d 0755 0:0", "f /d/inside.txt 0644 0:0 in"])
    );
}

#[test]
fn url_and_checksum_misuse_errors() {
    let fx = Fixture::new();
    write(&fx.ctx(), "a", "1", 0o644);
    let mut r = url_req(&fx, "http://127.0.0.1:9/x", "/f");
    r.add = false;
    assert_eq!(run_err(&fx, &r), "source can't be a URL for COPY");
    let mut r = req(&fx, &["a"], "/f", LayeredFs::new(vec![]));
    r.checksum = Some("sha256:00".into());
    assert_eq!(run_err(&fx, &r), "checksum can't be specified for COPY");
    r.add = true;
    assert_eq!(run_err(&fx, &r), "checksum requires HTTP(S) or Git sources");
}
