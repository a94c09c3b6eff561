//! Bounds on what a build reads from places it does not control: an `ADD <url>` server
//! that sends more than the cap (announced by `Content-Length` or not), and a base
//! image whose `/etc/passwd` is larger than kiln reads whole for `--chown`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use kiln_executor::copy::http::{HttpError, download_limited};
use kiln_executor::copy::owner::lookup_user;
use kiln_executor::layered::{LayeredError, LayeredFs};
use kiln_image::limits::MAX_IMAGE_FILE_SIZE;

/// Serves every request with `length` (or no) `Content-Length` and `send` bytes of body.
fn serve(length: Option<u64>, send: u64) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let len = length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
            let _ = write!(s, "HTTP/1.1 200 OK\r\n{len}Connection: close\r\n\r\n");
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = 0;
            while sent < send {
                let n = (send - sent).min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..n]).is_err() {
                    break;
                }
                sent += n as u64;
            }
        }
    });
    format!("http://{addr}/file.bin")
}

fn assert_too_large(r: Result<String, HttpError>, size: Option<u64>, limit: u64) {
    match r {
        Err(HttpError::TooLarge { ref source, .. }) => {
            assert_eq!(source.size, size);
            assert_eq!(source.limit, limit);
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("KILN_MAX_DOWNLOAD"), "{msg}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn add_url_body_past_the_cap_is_cut_off() {
    let url = serve(None, 3 << 20);
    let dir = tempfile::tempdir().unwrap();
    assert_too_large(
        download_limited(&url, None, dir.path(), 1 << 20),
        None,
        1 << 20,
    );
}

#[test]
fn add_url_declared_length_past_the_cap_is_refused_up_front() {
    // Announces 64 GiB and sends nothing: refused on the header alone.
    let url = serve(Some(64 << 30), 0);
    let dir = tempfile::tempdir().unwrap();
    assert_too_large(
        download_limited(&url, None, dir.path(), 1 << 20),
        Some(64 << 30),
        1 << 20,
    );
}

#[test]
fn add_url_body_of_exactly_the_cap_is_accepted() {
    let url = serve(Some(1 << 20), 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let name = download_limited(&url, None, dir.path(), 1 << 20).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join(name)).unwrap().len(),
        1 << 20
    );
}

#[test]
fn an_oversized_passwd_in_the_image_is_refused_not_read() {
    let layer = tempfile::tempdir().unwrap();
    std::fs::create_dir(layer.path().join("etc")).unwrap();
    // Sparse: 1 TiB on paper, nothing on disk; a RUN can do the same with `truncate`.
    let f = std::fs::File::create(layer.path().join("etc/passwd")).unwrap();
    f.set_len(1 << 40).unwrap();
    let fs = LayeredFs::new(vec![layer.path().to_path_buf()]);
    match lookup_user(&fs, "app") {
        Err(LayeredError::TooLarge(e)) => {
            assert_eq!(e.size, Some(1 << 40));
            assert_eq!(e.limit, MAX_IMAGE_FILE_SIZE);
            assert!(e.what.contains("/etc/passwd"), "{e}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
