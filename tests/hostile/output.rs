//! Hole 8: a RUN's output never sits whole in kiln's memory. A RUN that prints hundreds of
//! megabytes without a newline and fails leaves kiln's peak RSS far below the output's size,
//! and the error repeats a bounded tail; the progress output still carries every byte.

use crate::common;
use crate::support::{BUSYBOX, USER, World, identities};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// The length of the one line the RUN prints.
const LINE: u64 = 300_000_000;
/// kiln's peak RSS must stay below this (the line alone is 300 MB; before the fix kiln
/// held it several times over).
const MAX_RSS_KB: u64 = 200 * 1024;
/// How much of the end of stderr the test keeps: the error and `time -v`'s report.
const KEEP: usize = 256 << 10;

/// What a build printed on stderr, read as it streams: its size, and its last [`KEEP`]
/// bytes.
struct Streamed {
    status: std::process::ExitStatus,
    total: u64,
    /// How many `A`s came through (the RUN's line, split or not).
    letters: u64,
    tail: Vec<u8>,
}

/// `kiln build --progress plain CTX` as the identity, under busybox's `time -v` (so the
/// peak RSS of kiln and what it waited for is reported at the end of stderr).
fn build_timed(w: &World, ctx: &std::path::Path) -> Streamed {
    let mut cmd = match w.uid {
        Some(_) => {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--"]);
            c.arg("/bin/busybox");
            c
        }
        None => Command::new("/bin/busybox"),
    };
    cmd.args(["time", "-v"])
        .arg(common::kiln_bin())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &w.home)
        .current_dir(&w.home)
        .arg("--root")
        .arg(w.store())
        .args(["build", "--progress", "plain", "-t", "big:1"])
        .arg(ctx)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kiln");
    let mut err = child.stderr.take().expect("stderr");
    let (mut total, mut letters, mut tail) = (0u64, 0u64, Vec::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = err.read(&mut buf).expect("read stderr");
        if n == 0 {
            break;
        }
        total += n as u64;
        letters += buf[..n].iter().filter(|&&b| b == b'A').count() as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * KEEP {
            tail.drain(..tail.len() - KEEP);
        }
    }
    let status = child.wait().expect("wait kiln");
    Streamed {
        status,
        total,
        letters,
        tail,
    }
}

fn max_rss_kb(report: &str) -> Option<u64> {
    report
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_huge_output_line_is_streamed_not_held() {
    for id in identities() {
        let w = World::new(id);
        let ctx = w.context(
            "ctx",
            &format!("{BUSYBOX}RUN head -c {LINE} /dev/zero | tr '\\0' A; false\n"),
        );
        let out = build_timed(&w, &ctx);
        let tail = String::from_utf8_lossy(&out.tail);
        let summary = || {
            let end: String = tail
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!(
                "{id:?}: {:?}, {} bytes of stderr, ending:\n{end}",
                out.status, out.total
            )
        };
        assert!(out.status.signal().is_none(), "{}", summary());
        // busybox time passes the exit status on.
        assert_eq!(out.status.code(), Some(1), "the build fails: {}", summary());
        assert!(tail.contains("ERROR: failed to solve"), "{}", summary());
        // Nothing was clipped from the progress output.
        assert!(
            out.letters >= LINE,
            "{} of {LINE} letters: {}",
            out.letters,
            summary()
        );
        // The error repeats a bounded tail of the output.
        let Some(report_at) = tail.rfind("last output:") else {
            panic!(
                "{id:?}: no last-output block in the last {} KiB of stderr: the error is \
                 longer than that, or missing: {}",
                KEEP >> 10,
                summary()
            );
        };
        let error_end = tail[report_at..]
            .find("Command being timed")
            .map_or(tail.len(), |i| report_at + i);
        assert!(
            error_end - report_at < 32 << 10,
            "{id:?}: the error is {} bytes",
            error_end - report_at
        );
        let rss = max_rss_kb(&tail).expect("time -v reported the peak RSS");
        assert!(
            rss < MAX_RSS_KB,
            "{id:?}: kiln's peak RSS was {} MB for a {} MB line",
            rss / 1024,
            LINE / 1_000_000
        );
    }
}
