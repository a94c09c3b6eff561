//! The files a gzip layer write holds open while it takes a COPY's linked files unread
//! (`pgzip`'s holes): a layer of thousands of small files must stay well inside a soft
//! RLIMIT_NOFILE of 1024, and a descriptor it cannot have must not fail the write. One test
//! in a binary of its own: it counts the process's open files and lowers its limit.

use kiln_image::layer::{ChunkReuse, Compression, LayerOptions, write_layer};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What `pgzip` keeps open for holes at most (`MAX_OPEN_HOLES`), and one more: the file
/// whose holes go on past a chunk taken.
const MAX_HOLE_FILES: usize = 256 + 1;
/// What the walk holds open here at most: the files of a directory looked up ahead (32),
/// the file being read, the directories it is in, and a few besides.
const WALK_FILES: usize = 40;

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

fn opts(reuse: Option<Arc<ChunkReuse>>) -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        // Clamps every mtime, the directories' (changed by the edit) too.
        source_date_epoch: Some(1_000_000_000),
        level: None,
        reuse,
        xattr_free: None,
    }
}

/// The layer of `dir` and the most files open (beyond those before) while writing it, as
/// a thread looking at /proc/self/fd all along saw it (it may miss a moment, never count
/// more than there were).
fn write(dir: &Path, reuse: Option<Arc<ChunkReuse>>) -> (Vec<u8>, kiln_image::LayerDigests, usize) {
    let before = open_fds();
    let done = AtomicBool::new(false);
    let mut out = Vec::new();
    let (digests, peak) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = before;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(open_fds());
            }
            peak
        });
        let digests = write_layer(dir, &mut out, &opts(reuse));
        done.store(true, Ordering::Relaxed);
        (digests, sampler.join().unwrap())
    });
    // The sampler's own look at /proc/self/fd is one of them.
    (out, digests.unwrap(), peak.saturating_sub(before + 1))
}

/// (device, inode) of every regular file under `dir`.
fn inodes(dir: &Path) -> HashSet<(u64, u64)> {
    let mut set = HashSet::new();
    for d in fs::read_dir(dir).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let md = f.unwrap().metadata().unwrap();
            set.insert((md.dev(), md.ino()));
        }
    }
    set
}

fn reuse_of(
    blob: &[u8],
    d: &kiln_image::LayerDigests,
    linked: HashSet<(u64, u64)>,
) -> Arc<ChunkReuse> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(blob).unwrap();
    Arc::new(
        ChunkReuse::new(&d.chunks, f)
            .unwrap()
            .trusting_links(Arc::new(linked)),
    )
}

#[test]
fn many_small_linked_files_keep_few_files_open_and_give_the_bytes_from_scratch() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("ctx");
    // 3000 files of 300 bytes (a header and a padded block each, 1 KiB): 300 and more to a
    // chunk.
    for d in 0..30 {
        let sub = dir.join(format!("d{d:02}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..100u32 {
            let data: Vec<u8> = (0..300u32)
                .map(|j| {
                    ((d * 100 + f) * 7 + j)
                        .wrapping_mul(2_654_435_761)
                        .to_le_bytes()[2]
                        & 0x3f
                })
                .collect();
            fs::write(sub.join(format!("f{f:03}")), data).unwrap();
        }
    }
    let (old_blob, old, plain_peak) = write(&dir, None);
    assert!(
        plain_peak <= WALK_FILES,
        "{plain_peak} files open without holes"
    );
    assert!(old.chunks.len() >= 3, "{} chunks", old.chunks.len());
    assert!(3000 / old.chunks.len() > 256, "{} chunks", old.chunks.len());

    // Nothing changed, every file linked: every chunk is the old one, and the holes keep
    // at most MAX_HOLE_FILES files open beside what the walk holds.
    let reuse = reuse_of(&old_blob, &old, inodes(&dir));
    let (same, d, peak) = write(&dir, Some(reuse));
    assert_eq!(same, old_blob);
    assert_eq!(
        (d.diff_id.as_str(), d.digest.as_str()),
        (old.diff_id.as_str(), old.digest.as_str())
    );
    assert_eq!(d.reused_chunks, old.chunks.len());
    assert!(
        peak <= WALK_FILES + MAX_HOLE_FILES,
        "{peak} files open at most"
    );

    // A late file edited: written beside it and renamed over it, so its inode is a new
    // one, and not linked.
    let late = dir.join("d27/f050");
    let mut data = fs::read(&late).unwrap();
    data[0] ^= 1;
    let tmp = dir.join("d27/tmp");
    fs::write(&tmp, data).unwrap();
    fs::rename(&tmp, &late).unwrap();
    let mut linked = inodes(&dir);
    let md = fs::metadata(&late).unwrap();
    assert!(linked.remove(&(md.dev(), md.ino())));
    let (scratch, fresh, _) = write(&dir, None);
    assert_ne!(scratch, old_blob);
    let reuse = reuse_of(&old_blob, &old, linked.clone());
    let (edited, d, peak) = write(&dir, Some(reuse));
    assert_eq!(edited, scratch);
    assert_eq!(
        (d.diff_id.as_str(), d.digest.as_str()),
        (fresh.diff_id.as_str(), fresh.digest.as_str())
    );
    assert!(d.resumed_chunks > 0 && d.resumed_chunks < fresh.chunks.len());
    assert!(
        peak <= WALK_FILES + MAX_HOLE_FILES,
        "{peak} files open at most"
    );

    // Under a soft limit with room for the walk and the holes it may keep, and not for
    // the holes of a whole chunk of these files (300 and more) beside the last chunk's.
    let reuse = reuse_of(&old_blob, &old, linked);
    let limit = getrlimit(Resource::Nofile);
    let low = (open_fds() + WALK_FILES + MAX_HOLE_FILES + 24) as u64;
    assert!(limit.current.is_none_or(|c| c > low));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| write(&dir, Some(reuse)));
    setrlimit(Resource::Nofile, limit).unwrap();
    let (limited, d, _) = result.unwrap();
    assert_eq!(limited, scratch);
    assert_eq!(d.digest, fresh.digest);
}
