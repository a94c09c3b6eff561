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
        Err(HttpError::TooLarge { ref cause, .. }) => {
            assert_eq!(cause.size, size);
            assert_eq!(cause.limit, limit);
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
        download_limited(&url, None, None, dir.path(), 1 << 20),
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
        download_limited(&url, None, None, dir.path(), 1 << 20),
        Some(64 << 30),
        1 << 20,
    );
}

#[test]
fn add_url_body_of_exactly_the_cap_is_accepted() {
    let url = serve(Some(1 << 20), 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let name = download_limited(&url, None, None, dir.path(), 1 << 20).unwrap();
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

/// CRC-32 (IEEE), for re-sealing a patched xz block header.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn an_xz_archive_asking_for_a_huge_dictionary_is_refused() {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
    e.write_all(b"not much").unwrap();
    let mut xz = e.finish().unwrap();
    // Stream header (12 bytes), then the block header: its size byte, flags, the LZMA2
    // filter (id 0x21, one property byte: the dictionary size), padding and a CRC-32.
    let header_len = (usize::from(xz[12]) + 1) * 4;
    let header = 12..12 + header_len;
    let props = xz[header.clone()]
        .windows(2)
        .position(|w| w == [0x21, 0x01])
        .map(|i| 12 + i + 2)
        .expect("an LZMA2 filter in the block header");
    xz[props] = 38; // (2 | 0) << (38 / 2 + 11): a 2 GiB dictionary
    let crc = crc32(&xz[12..12 + header_len - 4]).to_le_bytes();
    xz[12 + header_len - 4..12 + header_len].copy_from_slice(&crc);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-dict.xz");
    std::fs::write(&path, &xz).unwrap();
    let mut out = Vec::new();
    let err = std::io::Read::read_to_end(
        &mut kiln_executor::copy::archive::open_decompressed(&path).unwrap(),
        &mut out,
    )
    .expect_err("the decoder must refuse the dictionary");
    assert!(err.to_string().to_lowercase().contains("memory"), "{err}");
}
