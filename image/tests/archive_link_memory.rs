//! `read_archive` (what `kiln load` runs) on a gzip of symlinks with 1 MB link targets
//! (PAX `linkpath`s or GNU long links): a few hundred KB on disk that the first pass
//! used to keep whole, one target per entry, a gigabyte for a few thousand entries.
//! Targets past PATH_MAX are passed over, so the most ever allocated at once stays a
//! few MB whatever the number of entries.
//!
//! Its own test binary: the allocator below counts every allocation of the process, and
//! one test alone keeps the peak it sees that test's own.

// A global allocator is an `unsafe impl`; it only forwards to `System` and counts.
#![allow(unsafe_code)]

mod common;

use common::DirStore;
use kiln_image::archive::read_archive;
use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live now and the most live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn megabyte_symlink_targets_are_not_kept() {
    const ENTRIES: usize = 300;
    const TARGET: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            BufWriter::new(File::create(&path).unwrap()),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        let mut target = "a".repeat(TARGET);
        for i in 0..ENTRIES {
            target.truncate(TARGET);
            target.push_str(&i.to_string());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, format!("l{i}"), &target).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &b"[]"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let sink = DirStore::new(out.path());
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let images = read_archive(&path, &sink).expect("an archive of no image loads as none");
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(images.is_empty());
    // Kept whole, the targets alone would be 300 MB; read one at a time, each is held
    // once or twice while its entry is parsed.
    assert!(
        peak < 32 << 20,
        "the load allocated {peak} bytes at its peak: link targets were kept"
    );
}
