//! Context checksum benchmark: a generated 20,000-file, 160 MB context, checksummed cold
//! (empty stat cache: every file read and hashed) and warm (stat cache loaded from disk:
//! nothing read). Target: warm under 100 ms.
//!
//! `cargo bench -p kiln-context --bench context` (set KILN_BENCH_DIR to generate the context
//! somewhere other than the system temp dir). Cold runs read from the page cache, since
//! the files were just written; dropping caches would disturb other users of the machine.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_context::{ChecksumOptions, Context, IgnoreMatcher};

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;
const TOTAL_BYTES: usize = 160 * 1024 * 1024;

fn generate(root: &Path) -> usize {
    let avg = TOTAL_BYTES / (DIRS * FILES_PER_DIR);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut total = 0;
    for d in 0..DIRS {
        let dir = root.join(format!("pkg{:03}/src", d));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            // Sizes from avg/2 to 3*avg/2, deterministic.
            let size = avg / 2 + (next() as usize % avg);
            let mut buf = vec![0u8; size];
            for chunk in buf.chunks_mut(8) {
                let v = next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            std::fs::write(dir.join(format!("file{f:03}.rs")), &buf).unwrap();
            total += size;
        }
    }
    total
}

/// CPU time of the whole process (all threads): on a machine shared with other builds
/// wall time mostly measures the run queue, CPU time measures our work.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

type Run = (Duration, kiln_context::ChecksumStats, String, Duration);

/// One build's worth: open (loads the stat cache), checksum the whole context, save.
/// The last field is the time spent in `Context::open`.
fn run(root: &Path, cache: &Path) -> Run {
    let start = Instant::now();
    let ctx = Context::open(
        root,
        IgnoreMatcher::parse("**/*.tmp\n").unwrap(),
        Some(cache.to_path_buf()),
    )
    .unwrap();
    let opened = start.elapsed();
    let opts = ChecksumOptions {
        follow_links: true,
        wildcard: true,
        excludes: vec![],
    };
    let sum = ctx.checksum(".", &opts).unwrap();
    ctx.save_stat_cache().unwrap();
    (start.elapsed(), sum.stats, sum.digest, opened)
}

/// The floor: a sequential walk that only lists and stats every entry (what `find -printf
/// %s` does), to compare against on a machine whose load makes absolute times noisy.
fn stat_walk(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += 1;
        if m.is_dir() {
            n += stat_walk(&e.path());
        }
    }
    n
}

fn main() {
    let base = std::env::var_os("KILN_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let cache = std::env::var_os("KILN_BENCH_STATCACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("statcache"));
    // KILN_BENCH_CONTEXT: reuse (or create and keep) a generated context there, so a
    // profiler can watch the checksum runs without the generation.
    let root = match std::env::var_os("KILN_BENCH_CONTEXT") {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("context"),
    };
    if !root.join("pkg000").exists() {
        let t = Instant::now();
        let bytes = generate(&root);
        println!(
            "generated {} files, {:.1} MB in {:.2?}",
            DIRS * FILES_PER_DIR,
            bytes as f64 / 1e6,
            t.elapsed()
        );
        // Let every file age past the stat cache's racy window.
        std::thread::sleep(Duration::from_millis(1200));
    }

    let (cold, stats, digest, _) = run(&root, &cache);
    println!(
        "cold: {:>8.1} ms  ({} files hashed, {:.1} MB, {} cache hits; {} cores)",
        cold.as_secs_f64() * 1e3,
        stats.files_hashed,
        stats.bytes_hashed as f64 / 1e6,
        stats.cache_hits,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let mut warm = Vec::new();
    let mut warm_cpu = Vec::new();
    let mut opens = Vec::new();
    for _ in 0..7 {
        let cpu0 = process_cpu();
        let (t, stats, d, opened) = run(&root, &cache);
        opens.push(opened);
        warm_cpu.push(process_cpu() - cpu0);
        assert_eq!(d, digest, "warm digest differs from cold");
        assert_eq!(stats.files_hashed, 0, "warm run re-hashed files");
        warm.push(t);
    }
    warm.sort();
    println!(
        "warm: {:>8.1} ms median, {:.1} ms min, {:.1} ms max over {} runs (open + load stat cache + walk + digest)",
        warm[warm.len() / 2].as_secs_f64() * 1e3,
        warm[0].as_secs_f64() * 1e3,
        warm[warm.len() - 1].as_secs_f64() * 1e3,
        warm.len()
    );
    warm_cpu.sort();
    opens.sort();
    println!(
        "  of which Context::open (stat cache load): {:.1} ms median",
        opens[opens.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "warm CPU time (all threads): {:.1} ms median, {:.1} ms min",
        warm_cpu[warm_cpu.len() / 2].as_secs_f64() * 1e3,
        warm_cpu[0].as_secs_f64() * 1e3
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average during the run: {}", load.trim());
    }
    let mut floor = Vec::new();
    let mut floor_cpu = Vec::new();
    for _ in 0..7 {
        let (t, c) = (Instant::now(), process_cpu());
        stat_walk(&root);
        floor.push(t.elapsed());
        floor_cpu.push(process_cpu() - c);
    }
    floor.sort();
    floor_cpu.sort();
    println!(
        "floor (list + stat every entry, no hashing): {:.1} ms median wall, {:.1} ms CPU; warm/floor = {:.2}x wall",
        floor[floor.len() / 2].as_secs_f64() * 1e3,
        floor_cpu[floor_cpu.len() / 2].as_secs_f64() * 1e3,
        warm[warm.len() / 2].as_secs_f64() / floor[floor.len() / 2].as_secs_f64()
    );
    let target = Duration::from_millis(100);
    println!(
        "target warm < 100 ms: {}",
        if warm[warm.len() / 2] < target {
            "met"
        } else {
            "NOT met"
        }
    );
}
