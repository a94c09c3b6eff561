//! Also required, bounded reads: what a registry, an archive, a URL or a base image
//! controls never becomes unbounded memory. A 100 MiB manifest from a registry, an
//! archive of tens of thousands of JSON files for `kiln load`, an `ADD <url>` that sends
//! past the download cap and an image whose `/etc/passwd` is bigger than kiln reads whole
//! are each refused with an error naming what was too big, and kiln exits with an error,
//! not a signal (the OOM killer) or a panic.

use crate::support::{BUSYBOX, Tmpfs, World, assert_ok, assert_refused, both, identities};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

/// Answers every request on 127.0.0.1 with `body_len` bytes of `{` (no `Content-Length`,
/// so only the read itself can stop it), except a registry's `/v2/` ping (200, `{}`).
/// Hangs up on TLS hellos so kiln falls back to plain HTTP on loopback.
fn serve_endless(body_len: u64) -> String {
    serve(body_len, false)
}

/// [`serve_endless`], but with `stall` the server sends one chunk and then nothing more,
/// holding the connection open.
fn serve(body_len: u64, stall: bool) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let Ok(clone) = s.try_clone() else { continue };
            let mut r = BufReader::new(clone);
            if r.fill_buf()
                .map(|b| b.first() == Some(&0x16))
                .unwrap_or(true)
            {
                continue;
            }
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            if first.split_whitespace().nth(1) == Some("/v2/") {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
                continue;
            }
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
            );
            let chunk = vec![b'{'; 64 << 10];
            let mut sent = 0;
            while sent < body_len && s.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
                if stall {
                    std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_secs(900));
                        drop(s);
                    });
                    break;
                }
            }
        }
    });
    addr.to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_100_mib_manifest_from_a_registry_is_refused() {
    let host = serve_endless(100 << 20);
    for id in identities() {
        let w = World::new(id);
        let reference = format!("{host}/evil:latest");
        let out = w.kiln(&["pull", &reference]);
        assert_refused(&out);
        let err = stderr(&out);
        assert!(
            err.contains("manifest evil:latest is too large"),
            "{id:?}: the error names what was too big: {}",
            both(&out)
        );
        let images = w.kiln(&["images"]);
        assert!(
            !String::from_utf8_lossy(&images.stdout).contains("evil"),
            "{id:?}: nothing was tagged: {}",
            both(&images)
        );
    }
}

/// A tar at `path` of `n` two-byte JSON files (`{}`), written as it goes.
fn many_json_tar(path: &Path, n: usize) {
    let file = std::fs::File::create(path).expect("create archive");
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    for i in 0..n {
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("j/{i}.json"), &b"{}"[..])
            .expect("append");
    }
    b.into_inner().expect("finish archive");
}

#[test]
fn kiln_load_of_a_hundred_thousand_small_json_files_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("many.tar");
    many_json_tar(&archive, 100_000);
    crate::common::open_up(dir.path());
    for id in identities() {
        let w = World::new(id);
        let out = w.kiln(&["load", "-i", archive.to_str().expect("utf-8 path")]);
        assert_refused(&out);
        assert!(
            stderr(&out).contains("JSON documents"),
            "{id:?}: the error says why: {}",
            both(&out)
        );
    }
}

#[test]
fn add_url_past_the_download_cap_fails_the_build() {
    let host = serve_endless(8 << 20);
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("FROM scratch\nADD http://{host}/big.bin /big.bin\n"),
        );
        let ctx_arg = ctx.to_str().expect("utf-8 path");
        let out = w.kiln_env(
            &["build", "--progress", "plain", ctx_arg],
            &[("KILN_MAX_DOWNLOAD", "1M")],
        );
        assert_refused(&out);
        let err = both(&out);
        assert!(
            err.contains("too large") && err.contains("KILN_MAX_DOWNLOAD"),
            "{id:?}: the error names the cap: {err}"
        );
        // Under the cap the same download goes through.
        let small = serve_endless(100 << 10);
        let ctx = w.context(
            "ctx-small",
            &format!("FROM scratch\nADD http://{small}/small.bin /small.bin\n"),
        );
        let ctx_arg = ctx.to_str().expect("utf-8 path");
        let out = w.kiln_env(
            &["build", "--progress", "plain", ctx_arg],
            &[("KILN_MAX_DOWNLOAD", "1M")],
        );
        assert_ok(&out);
    }
}

/// Runs `cmd` and fails the test if it has not finished after `secs` seconds (killing it):
/// the harm here is a build that never ends.
fn output_within(mut cmd: std::process::Command, secs: u64) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for kiln"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("kiln still waited for a stalled server after {secs} s");
        }
    }
}

#[test]
fn a_server_that_stops_sending_fails_the_transfer_instead_of_hanging_the_build() {
    let host = serve(8 << 20, true);
    let stall = [("KILN_STALL_TIMEOUT", "2")];
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("FROM scratch\nADD http://{host}/big.bin /big.bin\n"),
        );
        let ctx_arg = ctx.to_str().expect("utf-8 path");
        let build = w.kiln_command(
            &["build", "--progress", "plain", "-t", "stalled:1", ctx_arg],
            &stall,
        );
        let out = output_within(build, 120);
        assert_refused(&out);
        let err = both(&out);
        assert!(
            err.contains("the server sent nothing for 2 s (KILN_STALL_TIMEOUT)"),
            "{id:?}: the error says why: {err}"
        );
        assert!(
            err.contains("Dockerfile:2"),
            "{id:?}: the error names the line: {err}"
        );
        let images = w.kiln(&["images"]);
        assert!(!both(&images).contains("stalled"), "{id:?}: nothing tagged");

        let reference = format!("{host}/stalled:latest");
        let pull = w.kiln_command(&["pull", &reference], &stall);
        let out = output_within(pull, 120);
        assert_refused(&out);
        assert!(
            both(&out).contains("the server sent nothing for 2 s"),
            "{id:?}: {}",
            both(&out)
        );
    }
}

#[test]
fn a_passwd_bigger_than_kiln_reads_is_refused_for_chown() {
    for id in identities() {
        let w = World::new(id);
        // 17 MiB of zeros: one MiB over the cap on files read whole from an image.
        let ctx = w.context(
            "ctx",
            &format!(
                "{BUSYBOX}RUN head -c 17825792 /dev/zero > /etc/passwd\nCOPY --chown=app Dockerfile /x\n"
            ),
        );
        let out = w.build(&ctx, &[]);
        assert_refused(&out);
        assert!(
            both(&out).contains("/etc/passwd is too large"),
            "{id:?}: the error names the file: {}",
            both(&out)
        );
    }
}

#[test]
fn an_oversized_dockerfile_or_dockerignore_is_refused() {
    for id in identities() {
        let w = World::new(id);
        // 17 MiB of comments: past the 16 MiB a Dockerfile may have.
        let mut huge = String::from("FROM scratch\n");
        let line = format!("# {}\n", "x".repeat(1021));
        while huge.len() < 17 << 20 {
            huge.push_str(&line);
        }
        let ctx = w.context("big-df", &huge);
        let out = w.build(&ctx, &["-t", "big:1"]);
        assert_refused(&out);
        let err = stderr(&out);
        assert!(
            err.contains("Dockerfile") && err.contains("large"),
            "{id:?}: {err}"
        );
        assert!(
            err.len() < 4096,
            "{id:?}: the error quotes the file: {} bytes",
            err.len()
        );

        let ctx = w.context("big-ignore", "FROM scratch\nCOPY busybox /\n");
        std::fs::write(ctx.join(".dockerignore"), huge.as_bytes()).expect("write");
        crate::common::open_up(&ctx);
        let out = w.build(&ctx, &["-t", "big:2"]);
        assert_refused(&out);
        let err = stderr(&out);
        assert!(
            err.contains(".dockerignore") && err.contains("large"),
            "{id:?}: {err}"
        );
    }
}

#[test]
fn fifos_where_kiln_reads_a_file_fail_instead_of_hanging() {
    for id in identities() {
        let w = World::new(id);
        // A .dockerignore that is a FIFO: opening it would block kiln forever.
        let ctx = w.context("fifo-ignore", "FROM scratch\nCOPY busybox /\n");
        let fifo = ctx.join(".dockerignore");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        crate::common::open_up(&ctx);
        let out = w.build(&ctx, &["-t", "fifo:1"]);
        assert_refused(&out);
        assert!(
            stderr(&out).contains("not a regular file"),
            "{id:?}: {}",
            both(&out)
        );

        // An /etc/passwd a step made a FIFO: the next RUN reads it for its user.
        let ctx = w.context(
            "fifo-passwd",
            &format!("{BUSYBOX}RUN mkdir -p /etc && mkfifo /etc/passwd\nRUN true\n"),
        );
        let out = w.build(&ctx, &["-t", "fifo:2"]);
        assert_refused(&out);
        assert!(
            stderr(&out).contains("/etc/passwd is not a regular file"),
            "{id:?}: {}",
            both(&out)
        );
    }
}

/// A tmpfs of `size` mounted at the identity's store path, unmounted when dropped.
fn small_store(w: &World, size: &str) -> Tmpfs {
    let dir = w.store();
    std::fs::create_dir_all(&dir).expect("mkdir store");
    let mut opts = format!("size={size},mode=0700");
    if let Some(uid) = w.uid {
        opts.push_str(&format!(",uid={uid},gid={uid}"));
    }
    Tmpfs::mount(&dir, &opts)
}

#[test]
fn add_of_a_small_archive_that_inflates_past_the_disk_stops_first() {
    if !crate::support::is_root() {
        eprintln!("SKIP: mounting a small store needs root");
        return;
    }
    for id in identities() {
        let w = World::new(id);
        // 1 GiB of zeros in one file, zstd: a few KB on disk.
        let ctx = w.context(
            "ctx",
            &format!("{BUSYBOX}ADD bomb.tar.zst /x/\nRUN echo never-here\n"),
        );
        let file = std::fs::File::create(ctx.join("bomb.tar.zst")).expect("create");
        let enc = zstd::Encoder::new(file, 3).expect("zstd").auto_finish();
        let mut tar = tar::Builder::new(enc);
        let mut h = tar::Header::new_ustar();
        h.set_size(1 << 30);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), 1 << 30),
        )
        .expect("append");
        drop(tar.into_inner().expect("finish tar"));
        crate::common::open_up(&ctx);
        // 320 MiB of store: extraction must stop while 256 MiB are still free.
        let _store = small_store(&w, "320m");
        let out = w.build(&ctx, &["-t", "bomb:1"]);
        assert_refused(&out);
        let err = stderr(&out);
        assert!(
            err.contains("extracting archive") && err.contains("bytes left"),
            "{id:?}: {}",
            both(&out)
        );
        assert!(!both(&out).contains("never-here\n#"), "{id:?}");
    }
}
