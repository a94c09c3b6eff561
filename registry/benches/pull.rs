//! Pull benchmark: a generated 5-layer image (KILN_BENCH_MB total, default 500 MB of
//! incompressible data) pushed to Debian's `docker-registry` on 127.0.0.1, then
//!
//! 1. `kiln` pull into a fresh store (parallel, verified), then unpacking every layer
//!    (as `FROM` does on first use), and
//! 2. `skopeo copy docker://... oci:DIR` of the same image.
//!
//! Run: `cargo bench -p kiln-registry --bench pull` (KILN_BENCH_MB=100 for a quick one).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use kiln_registry::{pull_into_store, push_from_store};
use support::*;

fn main() {
    let total_mb: u64 = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let layer = total_mb * 1_000_000 / 5;
    let reg = Registry::start(None, Auth::None);
    let home = tempfile::tempdir().unwrap();
    let opts = isolated_opts(home.path());
    let (_a, src) = new_store();
    let t = Instant::now();
    let image = make_image(&src, "bench:1", 7, &[layer; 5]);
    eprintln!(
        "generated {total_mb} MB image in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let dest = format!("{}/bench:1", reg.host());
    let t = Instant::now();
    push_from_store(&src, "bench:1", &dest, &opts).unwrap();
    let push_s = t.elapsed().as_secs_f64();
    let manifest = kiln_image::parse_manifest(&src.read_blob(&image.manifest).unwrap()).unwrap();
    let bytes: u64 = manifest.layers.iter().map(|l| l.size).sum();
    let mb = bytes as f64 / 1e6;

    let mut kiln_pull = Vec::new();
    let mut kiln_total = Vec::new();
    let mut skopeo = Vec::new();
    for _ in 0..3 {
        let (_b, dst) = new_store();
        let t = Instant::now();
        let pulled = pull_into_store(&dst, &dest, &opts).unwrap();
        let pull_s = t.elapsed().as_secs_f64();
        assert_eq!(pulled.image, image);
        // Unpack each layer into its own directory, in parallel, as snapshots are made.
        let unpack_root = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for (i, l) in manifest.layers.iter().enumerate() {
                let dst = &dst;
                let dir = unpack_root.path().join(i.to_string());
                s.spawn(move || {
                    std::fs::create_dir_all(&dir).unwrap();
                    let f = std::io::BufReader::new(dst.open_blob(&l.digest).unwrap());
                    let gz = flate2::read::GzDecoder::new(f);
                    kiln_image::unpack_layer(gz, &dir, &kiln_image::UnpackOptions::default())
                        .unwrap();
                });
            }
        });
        kiln_pull.push(pull_s);
        kiln_total.push(t.elapsed().as_secs_f64());

        let out = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let status = std::process::Command::new("/usr/bin/skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{dest}"))
            .arg(format!("oci:{}:bench", out.path().join("layout").display()))
            .status()
            .unwrap();
        assert!(status.success());
        skopeo.push(t.elapsed().as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    println!("image: 5 layers, {mb:.0} MB compressed; push (kiln) {push_s:.2}s");
    println!(
        "kiln pull (download+verify into store): best {:.2}s  ({:.0} MB/s)  runs {:?}",
        best(&kiln_pull),
        mb / best(&kiln_pull),
        kiln_pull
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
    );
    println!(
        "kiln pull + unpack all layers:          best {:.2}s  runs {:?}",
        best(&kiln_total),
        kiln_total
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
    );
    println!(
        "skopeo copy docker:// -> oci:DIR:       best {:.2}s  ({:.0} MB/s)  runs {:?}",
        best(&skopeo),
        mb / best(&skopeo),
        skopeo.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>()
    );
}
