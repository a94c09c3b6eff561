//! Benchmark: write a large generated layer (2 GiB by default) and report
//! throughput and peak RSS (VmHWM). Memory must stay flat (< 200 MB) because
//! the layer is streamed tar → sha256 → compressor → sha256 → out.
//!
//! `cargo bench -p kiln-image --bench layer`; environment:
//! `KILN_BENCH_BYTES` (total file bytes, default 2 GiB), `KILN_BENCH_COMPRESSION`
//! (`gzip`, `zstd`, `none` or a comma list; default `none,zstd,gzip`),
//! `KILN_BENCH_DIR` (where to generate files; default a temp dir).

use kiln_image::layer::{Compression, LayerOptions, write_layer};
use std::io::Write;
use std::time::Instant;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Fills `dir` with `total` bytes in 64 MiB files plus 2,000 small files.
/// Content is a mix of text-like and pseudo-random bytes so compressors work
/// as on real layers (neither all zeros nor incompressible).
fn generate(dir: &std::path::Path, total: u64) -> std::io::Result<()> {
    let chunk = 1 << 20;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; chunk];
    let mut written = 0u64;
    let mut n = 0;
    while written < total {
        let sub = dir.join(format!("d{:02}", n % 16));
        std::fs::create_dir_all(&sub)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(sub.join(format!("big{n:04}")))?);
        let size = (64u64 << 20).min(total - written);
        let mut left = size;
        while left > 0 {
            for (i, b) in buf.iter_mut().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = if i % 4 == 0 {
                    (seed & 0xff) as u8
                } else {
                    b"kiln layer bench "[i % 17]
                };
            }
            let take = left.min(chunk as u64) as usize;
            f.write_all(&buf[..take])?;
            left -= take as u64;
        }
        written += size;
        n += 1;
    }
    let small = dir.join("small");
    std::fs::create_dir_all(&small)?;
    for i in 0..2000 {
        std::fs::write(
            small.join(format!("f{i:05}.txt")),
            format!("small file {i}\n").repeat(i % 50 + 1),
        )?;
    }
    Ok(())
}

fn main() {
    let total: u64 = std::env::var("KILN_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2 << 30);
    let which = std::env::var("KILN_BENCH_COMPRESSION").unwrap_or_else(|_| "none,zstd,gzip".into());
    let tmp = match std::env::var("KILN_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d),
        Err(_) => tempfile::tempdir(),
    }
    .expect("creating the bench directory");
    eprintln!(
        "generating {} MiB of files in {}",
        total >> 20,
        tmp.path().display()
    );
    generate(tmp.path(), total).expect("generating files");
    let base = vm_hwm_kib();
    println!("baseline VmHWM after generation: {} MiB", base / 1024);
    for name in which.split(',') {
        let Some(compression) = Compression::from_name(name.trim()) else {
            eprintln!("unknown compression {name:?}");
            std::process::exit(2);
        };
        let opts = LayerOptions {
            compression,
            source_date_epoch: Some(0),
            level: None,
            reuse: None,
            xattr_free: None,
        };
        let start = Instant::now();
        let d = write_layer(tmp.path(), std::io::sink(), &opts).expect("writing the layer");
        let secs = start.elapsed().as_secs_f64();
        let hwm = vm_hwm_kib();
        println!(
            "{name:>5}: {} MiB tar input in {secs:.1}s = {:.0} MiB/s, blob {} MiB, peak RSS (VmHWM) {} MiB{}",
            total >> 20,
            (total >> 20) as f64 / secs,
            d.size >> 20,
            hwm / 1024,
            if hwm / 1024 < 200 {
                " (under 200 MiB)"
            } else {
                " (OVER 200 MiB!)"
            }
        );
    }
}
