//! Edits cost what changed: a COPY that runs again because one file of its context changed
//! copies the compressed chunks its new gzip blob shares with the step's previous blob, and
//! the image is byte for byte the one a `--no-cache` build in a fresh store writes.
//!
//! Each edit (at the start, middle and end of the context, a file added, a file deleted, a
//! mode changed) is built incrementally in one store and from scratch in another, as root
//! and as the unprivileged test user; image IDs and manifest digests must match, and the
//! incremental build must have reused all but the chunks around the edit, resumed its
//! diff_id and digest hashes after the chunks before the edit, and linked the unchanged
//! files from the previous snapshot (never the edited one).

mod common;

use common::identity::{BUSYBOX, Identity, World, assert_ok, both, identities, image_id, steps};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// 700 files of 9000 bytes: several megabytes, so several chunks.
const FILES: usize = 700;

fn file_name(i: usize) -> String {
    format!("src/d{}/f{i:04}.txt", i % 7)
}

/// Moderately compressible bytes that differ from file to file.
fn file_bytes(i: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..9000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdef"[(x % 16) as usize]
        })
        .collect()
}

fn make_context(world: &World) -> std::path::PathBuf {
    let ctx = world.context("ctx", "FROM scratch\nCOPY src /src\n");
    for i in 0..FILES {
        let path = ctx.join(file_name(i));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, file_bytes(i)).unwrap();
    }
    // A file with an xattr is never linked from the previous snapshot, and its xattr must
    // reach every layer (the layer writer skips listing only the linked files' xattrs).
    rustix::fs::setxattr(
        ctx.join(file_name(XATTR_FILE)),
        "user.kiln.test",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    common::open_up(&ctx);
    ctx
}

/// The file given an xattr.
const XATTR_FILE: usize = 3;

/// The manifest digest of `tag` in `world`'s store.
fn manifest_digest(world: &World, tag: &str) -> String {
    let out = world.kiln(&["inspect", tag]);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["ManifestDigest"].as_str().unwrap().to_string()
}

/// `(reused, of, resumed, unread)` from the `reused N of M compressed chunks ... (hashes
/// resumed after the first K, U of them not read)` line, if the build printed one.
fn reused_chunks(text: &str) -> Option<(usize, usize, usize, usize)> {
    let line = text.lines().find(|l| l.contains("compressed chunks"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "reused")?;
    let first = words.iter().position(|w| *w == "first")?;
    Some((
        words[at + 1].parse().ok()?,
        words[at + 3].parse().ok()?,
        words.get(first + 1)?.trim_end_matches(',').parse().ok()?,
        words.get(first + 2)?.parse().ok()?,
    ))
}

/// The link count of `rel` in the snapshot whose first file holds `first`.
fn links_in_snapshot_with(world: &World, first: &[u8], rel: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let snapshots = world.store().join("snapshots");
    for dir in fs::read_dir(&snapshots).unwrap() {
        let dir = dir.unwrap().path();
        if fs::read(dir.join(file_name(0))).is_ok_and(|b| b == first) {
            return fs::symlink_metadata(dir.join(rel)).unwrap().nlink();
        }
    }
    panic!("no snapshot in {snapshots:?} has that first file")
}

type Edit = (&'static str, fn(&Path));

fn edits() -> Vec<Edit> {
    vec![
        ("start", |ctx| {
            fs::write(ctx.join(file_name(0)), b"the first file, rewritten").unwrap()
        }),
        ("middle", |ctx| {
            let path = ctx.join(file_name(FILES / 2));
            let mut bytes = fs::read(&path).unwrap();
            bytes[100] = b'X';
            fs::write(path, bytes).unwrap();
        }),
        ("end", |ctx| {
            let path = ctx.join(file_name(FILES - 1));
            let mut bytes = fs::read(&path).unwrap();
            bytes.extend_from_slice(b"one more line\n");
            fs::write(path, bytes).unwrap();
        }),
        ("an added file", |ctx| {
            let path = ctx.join("src/d3/f0300-new.txt");
            fs::write(&path, file_bytes(9999)).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        }),
        ("a deleted file", |ctx| {
            fs::remove_file(ctx.join(file_name(450))).unwrap()
        }),
        ("a mode change", |ctx| {
            fs::set_permissions(ctx.join(file_name(200)), fs::Permissions::from_mode(0o755))
                .unwrap()
        }),
    ]
}

fn edit_then_build(id: Identity) {
    let incremental = World::new(id);
    let scratch = World::new(id);
    let ctx = make_context(&incremental);
    let first = incremental.build(&ctx, &["-t", "inc:1"]);
    assert_ok(&first);
    for (what, edit) in edits() {
        edit(&ctx);
        common::open_up(&ctx);
        let inc = incremental.build(&ctx, &["-t", "inc:1"]);
        assert_ok(&inc);
        let text = both(&inc);
        let (reused, of, resumed, unread) = reused_chunks(&text)
            .unwrap_or_else(|| panic!("{id:?}, {what}: no chunk was reused:\n{text}"));
        assert!(
            of >= 5 && reused + 3 >= of,
            "{id:?}, {what}: reused {reused} of {of} chunks"
        );
        // The diff_id and digest hashes resume after the chunks before the edit (the
        // image below must still be the from-scratch one): none before an edit of the
        // first file, nearly all before one of the last (the tar goes by name, d0 to d6).
        let resumed_ok = match what {
            "start" => resumed == 0,
            "end" => resumed + 3 >= of,
            _ => resumed < of,
        };
        assert!(
            resumed_ok,
            "{id:?}, {what}: hashes resumed after {resumed} of {of} chunks"
        );
        // Of those, the chunks whose files were all linked from the previous snapshot are
        // not even read, up to the chunk with the file that has an xattr (in d3: never
        // linked, so read) or the edit, whichever comes first.
        let unread_ok = match what {
            "start" => unread == 0,
            "end" => unread > 0 && unread < resumed,
            _ => unread <= resumed,
        };
        assert!(
            unread_ok,
            "{id:?}, {what}: {unread} of the {resumed} resumed chunks not read"
        );
        // Every edit comes after "start": any snapshot of this store with that first file.
        assert_eq!(
            links_in_snapshot_with(
                &incremental,
                b"the first file, rewritten",
                &file_name(XATTR_FILE)
            ),
            1,
            "{id:?}, {what}: the file with an xattr was linked"
        );
        if what == "start" {
            let rewritten = b"the first file, rewritten";
            assert_eq!(
                links_in_snapshot_with(&incremental, rewritten, &file_name(0)),
                1
            );
            assert!(links_in_snapshot_with(&incremental, rewritten, &file_name(1)) >= 2);
        }
        let fresh = scratch.build(&ctx, &["--no-cache", "-t", "fresh:1"]);
        assert_ok(&fresh);
        assert_eq!(image_id(&inc), image_id(&fresh), "{id:?}, {what}: image ID");
        assert_eq!(
            manifest_digest(&incremental, "inc:1"),
            manifest_digest(&scratch, "fresh:1"),
            "{id:?}, {what}: manifest digest"
        );
    }
}

#[test]
fn an_edit_reuses_the_compressed_chunks_it_did_not_change_and_gives_the_from_scratch_image() {
    for id in identities() {
        edit_then_build(id);
    }
}

/// The image a failed build's output offers to debug its RUN in (`kiln run --rm -it IMAGE`).
fn debug_image(id: Identity, text: &str) -> &str {
    text.lines()
        .find_map(|l| l.split("run --rm -it ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{id:?}: no debug command in {text}"))
}

/// A COPY's new blob is written while the RUN after it runs on the COPY's files (still at
/// their staging path): the RUN sees every file, the image is the from-scratch one, and when
/// that RUN fails the COPY is stored all the same (the next build hits it).
fn copy_then_run(id: Identity) {
    let world = World::new(id);
    let scratch = World::new(id);
    let ctx = make_context(&world);
    let dockerfile = format!(
        "{BUSYBOX}COPY src /src\nARG FAIL=0\nRUN find /src -type f | wc -l > /count && test \"$FAIL\" = 0\n"
    );
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    common::open_up(&ctx);
    let failed = world.build(&ctx, &["--build-arg", "FAIL=1", "-t", "ran:1"]);
    assert!(!failed.status.success(), "{id:?}: {}", both(&failed));
    assert!(
        both(&failed).contains("did not complete successfully"),
        "{id:?}: {}",
        both(&failed)
    );
    assert!(
        !world.kiln(&["inspect", "ran:1"]).status.success(),
        "{id:?}: tagged"
    );
    // The state kept to debug the failed RUN has the COPY's layer, stored.
    let text = both(&failed);
    let debug = debug_image(id, &text);
    let listed = world.kiln(&[
        "run",
        "--rm",
        debug,
        "sh",
        "-c",
        "find /src -type f | wc -l",
    ]);
    assert_ok(&listed);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        FILES.to_string()
    );
    let built = world.build(&ctx, &["-t", "ran:1"]);
    assert_ok(&built);
    let copy_cached = steps(&built)
        .into_iter()
        .find(|(title, _)| title.ends_with("COPY src /src"))
        .map(|(_, cached)| cached);
    assert_eq!(copy_cached, Some(true), "{id:?}: {}", both(&built));
    let count = world.kiln(&["run", "--rm", "ran:1", "cat", "/count"]);
    assert_ok(&count);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        FILES.to_string()
    );
    let fresh = scratch.build(&ctx, &["--no-cache", "-t", "ran:1"]);
    assert_ok(&fresh);
    assert_eq!(image_id(&built), image_id(&fresh), "{id:?}: image ID");
}

#[test]
fn a_copy_is_stored_whole_while_the_run_after_it_runs_and_when_that_run_fails() {
    for id in identities() {
        copy_then_run(id);
    }
}

/// Where in `text` (a plain progress log) the step whose title has `run` says which layer
/// it gave, and where the step whose title has `next` starts: a step settled while the next
/// one ran says it after that start.
fn settled_after_next_started(id: Identity, text: &str, run: &str, next: &str) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    let header = |title: &str| {
        lines
            .iter()
            .position(|l| l.starts_with('#') && l.contains("] RUN ") && l.contains(title))
            .unwrap_or_else(|| panic!("{id:?}: no {title} in {text}"))
    };
    let (first, second) = (header(run), header(next));
    let vertex = lines[first].split(' ').next().unwrap_or_default();
    let said = lines
        .iter()
        .position(|l| {
            l.starts_with(&format!("{vertex} writing layer"))
                || l.starts_with(&format!("{vertex} reusing stored layer"))
        })
        .unwrap_or_else(|| panic!("{id:?}: {vertex} named no layer: {text}"));
    second < said
}

/// A new RUN's layer is compressed while the step after it runs on its files (its upper
/// directory, still at its staging path): the next RUN sees its files and can delete one,
/// the image is the from-scratch one, and when the next RUN fails the first is stored all
/// the same (the next build hits it). A RUN that gave its layer before is not deferred:
/// a --no-cache rebuild's next steps see the stored snapshot, real mtimes and all, so they
/// give their layers again and the image ID stays.
fn run_then_run(id: Identity) {
    let world = World::new(id);
    let scratch = World::new(id);
    let dockerfile = format!(
        "{BUSYBOX}RUN echo one > /one && mkdir /d && echo x > /d/gone && echo y > /d/kept\n\
         ARG FAIL=0\n\
         ARG SEE=0\n\
         RUN cat /one > /two && rm /d/gone && {{ [ $SEE = 0 ] || stat -c %Y /one > /seen; }} \
         && test \"$FAIL\" = 0\n\
         RUN ls /d > /listed\n"
    );
    let ctx = world.context("runs", &dockerfile);
    let failed = world.build(&ctx, &["--build-arg", "FAIL=1", "-t", "runs:1"]);
    assert!(!failed.status.success(), "{id:?}: {}", both(&failed));
    let text = both(&failed);
    assert!(
        settled_after_next_started(id, &text, "echo one", "cat /one"),
        "{id:?}: a new RUN's layer is written beside the next RUN: {text}"
    );
    // The state kept to debug the failed RUN has the first RUN's layer, stored.
    let debug = debug_image(id, &text);
    let one = world.kiln(&["run", "--rm", debug, "cat", "/one", "/d/gone"]);
    assert_ok(&one);
    assert_eq!(String::from_utf8_lossy(&one.stdout), "one\nx\n");

    let built = world.build(&ctx, &["-t", "runs:1"]);
    assert_ok(&built);
    let cached: Vec<bool> = steps(&built)
        .into_iter()
        .filter(|(title, _)| title.contains("RUN echo one"))
        .map(|(_, cached)| cached)
        .collect();
    assert_eq!(cached, [true], "{id:?}: {}", both(&built));
    let listed = world.kiln(&["run", "--rm", "runs:1", "cat", "/two", "/listed"]);
    assert_ok(&listed);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "one\nkept\n");

    let fresh = scratch.build(&ctx, &["--no-cache", "-t", "runs:1"]);
    assert_ok(&fresh);
    let text = both(&fresh);
    assert!(
        settled_after_next_started(id, &text, "echo one", "cat /one"),
        "{id:?}: a fresh store's RUN is written beside the next RUN: {text}"
    );
    assert_eq!(image_id(&built), image_id(&fresh), "{id:?}: image ID");
    // Later, every RUN runs again and gives the layer it gave before; the second one,
    // which now writes down the first one's mtime, sees its stored files, not this run's
    // copy (another mtime), so the image ID stays.
    let see = |tag: &str| {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let out = world.build(&ctx, &["--no-cache", "--build-arg", "SEE=1", "-t", tag]);
        assert_ok(&out);
        out
    };
    let (seen, again) = (see("runs:seen"), see("runs:again"));
    let text = both(&again);
    assert_eq!(image_id(&again), image_id(&seen), "{id:?}: image ID");
    assert!(
        !settled_after_next_started(id, &text, "echo one", "cat /one"),
        "{id:?}: a RUN that gave its layer before is not deferred: {text}"
    );
    let reused = text.matches("reusing stored layer").count();
    assert!(reused >= 4, "{id:?}: {reused} layers reused: {text}");
}

#[test]
fn a_run_is_stored_whole_while_the_step_after_it_runs_and_when_that_step_fails() {
    for id in identities() {
        run_then_run(id);
    }
}

/// Where a store keeps its snapshots, by diff_id.
const SNAPSHOTS: &str = "snapshots";

/// Every blob of `world`'s store hashes to its name.
fn assert_blobs_whole(world: &World) {
    use sha2::Digest as _;
    let dir = world.store().join("blobs/sha256");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let hex = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            hex,
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no blobs in {}", dir.display());
}

/// A `--no-cache` rebuild checks a big RUN layer against the blob its record names in one
/// pass that writes nothing when the layer is that blob (a key per chunk, no second copy),
/// and writes the whole new blob, the old blob's unchanged start included, when the RUN
/// gave another layer (random bytes after a big file the same as before).
fn run_again_against_its_blob(id: Identity) {
    let world = World::new(id);
    let dockerfile = format!(
        "{BUSYBOX}RUN head -c 3000000 /dev/zero | tr '\\0' a > /big && \
         od -An -N8 -tx8 /dev/urandom > /zz\n\
         RUN head -c 3000000 /dev/zero | tr '\\0' b > /same\n"
    );
    let ctx = world.context("again", &dockerfile);
    let first = world.build(&ctx, &["--no-cache", "-t", "again:1"]);
    assert_ok(&first);
    // A --no-cache build with its phases traced: what it printed, and how many layers it
    // checked against their recorded blobs.
    let rebuild = |tag: &str| {
        let args = ["build", "--progress", "plain", "--no-cache", "-t", tag];
        let path = ctx.to_str().unwrap();
        let out = world.kiln_env(
            &[&args[..], &[path]].concat(),
            &[("KILN_TRACE_PHASES", "1")],
        );
        assert_ok(&out);
        let text = both(&out);
        let checked = text
            .matches("commit: the layer against the recorded blob")
            .count();
        (out, text, checked)
    };
    let (again, text, checked) = rebuild("again:2");
    // Both big RUN layers, and busybox's COPY (a metadata tree on a tmpfs), were checked
    // against their recorded blobs; only the random one was new.
    assert_eq!(checked, 3, "{id:?}: {text}");
    // busybox's COPY, its --install RUN and the RUN of the same bytes gave their layers
    // again; the RUN with random bytes did not.
    let reused = text.matches("reusing stored layer").count();
    assert_eq!(reused, 3, "{id:?}: {text}");
    assert_ne!(image_id(&again), image_id(&first), "{id:?}: {text}");
    assert_blobs_whole(&world);
    let out = world.user_dir("out");
    let archive = out.join("again.tar");
    assert_ok(&world.kiln(&["save", "-o", archive.to_str().unwrap(), "again:2"]));
    let image = common::Image::from_docker_archive(&archive);
    assert_eq!(image.file("big").content, vec![b'a'; 3_000_000], "{id:?}");
    assert_eq!(image.file("same").content, vec![b'b'; 3_000_000], "{id:?}");
    assert_eq!(image.file("zz").content.len(), 18, "{id:?}");

    // A context file given an xattr gives the COPY another key (as in BuildKit), and the
    // steps after it with it: no step has a recorded layer to be checked against, the
    // COPY's new layer and snapshot have the xattr, and the RUN of the same bytes gives
    // the layer stored before.
    rustix::fs::setxattr(
        ctx.join("busybox"),
        "user.kiln.test",
        b"given",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let (_, text, checked) = rebuild("again:3");
    assert_eq!(checked, 0, "{id:?}: {text}");
    assert_blobs_whole(&world);
    let archive = out.join("xattr.tar");
    assert_ok(&world.kiln(&["save", "-o", archive.to_str().unwrap(), "again:3"]));
    let image = common::Image::from_docker_archive(&archive);
    assert_eq!(
        image.file("bin/busybox").content,
        fs::read(ctx.join("busybox")).unwrap(),
        "{id:?}"
    );
    let diff_id = image.config["rootfs"]["diff_ids"][0].as_str().unwrap();
    let snapshot = world
        .store()
        .join(SNAPSHOTS)
        .join(diff_id.trim_start_matches("sha256:"));
    let mut value = [0u8; 16];
    let n = rustix::fs::getxattr(snapshot.join("bin/busybox"), "user.kiln.test", &mut value)
        .unwrap_or_else(|e| panic!("{id:?}: {}: {e}", snapshot.display()));
    assert_eq!(&value[..n], b"given", "{id:?}");
    assert_eq!(
        image.config["rootfs"]["diff_ids"][3],
        image_diff_ids(&world, "again:2")[3],
        "{id:?}: the RUN of the same bytes"
    );
}

/// The diff_ids of `tag`'s image.
fn image_diff_ids(world: &World, tag: &str) -> Vec<serde_json::Value> {
    let image = world.image(tag);
    image.config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A `--no-cache` rebuild of `COPY --from` a stage whose RUN gives other bytes: the COPY
/// has its key (the stage's step, the path), so it is staged as a metadata tree and checked
/// against its recorded blob, found to differ at once, and written, with its snapshot
/// made from the tree.
fn copy_from_a_changed_stage_against_its_blob(id: Identity) {
    let world = World::new(id);
    let dockerfile = format!(
        "{}\nRUN head -c 3000000 /dev/urandom > /r\n\
         FROM scratch\nCOPY --from=gen /r /copied/r\n",
        BUSYBOX
            .replacen("FROM scratch", "FROM scratch AS gen", 1)
            .trim_end()
    );
    let ctx = world.context("from", &dockerfile);
    assert_ok(&world.build(&ctx, &["--no-cache", "-t", "from:1"]));
    let out = world.kiln_env(
        &[
            "build",
            "--progress",
            "plain",
            "--no-cache",
            "-t",
            "from:2",
            ctx.to_str().unwrap(),
        ],
        &[("KILN_TRACE_PHASES", "1")],
    );
    assert_ok(&out);
    let text = both(&out);
    // busybox's COPY, the random RUN's layer and the COPY's, each against its recorded
    // blob; busybox's layers were the stored ones, the other two new.
    assert_eq!(
        text.matches("commit: the layer against the recorded blob")
            .count(),
        3,
        "{id:?}: {text}"
    );
    assert_eq!(
        text.matches("reusing stored layer").count(),
        2,
        "{id:?}: {text}"
    );
    assert_blobs_whole(&world);
    let image = world.image("from:2");
    let r = image.file("copied/r").content.clone();
    assert_eq!(r.len(), 3_000_000, "{id:?}");
    assert_ne!(r, world.image("from:1").file("copied/r").content, "{id:?}");
    // The snapshot made from the tree holds the bytes, not placeholders.
    let diff_id = image.config["rootfs"]["diff_ids"][0].as_str().unwrap();
    let snapshot = world
        .store()
        .join(SNAPSHOTS)
        .join(diff_id.trim_start_matches("sha256:"));
    assert_eq!(fs::read(snapshot.join("copied/r")).unwrap(), r, "{id:?}");
}

#[test]
fn a_no_cache_copy_from_a_stage_that_changed_is_checked_and_written_from_its_tree() {
    for id in identities() {
        copy_from_a_changed_stage_against_its_blob(id);
    }
}

#[test]
fn a_no_cache_rebuild_checks_a_big_run_layer_against_its_blob_and_writes_only_a_new_one() {
    for id in identities() {
        run_again_against_its_blob(id);
    }
}

/// A small deterministic generator (xorshift64*): the random edits below are the same on
/// every run of one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The regular files and symlinks under `ctx/src`, by context-relative path, sorted.
fn context_entries(ctx: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(ctx, &ctx.join("src"), &mut out);
    out.sort();
    out
}

/// The directories under `ctx/src` (itself included), context-relative, sorted.
fn context_dirs(ctx: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        out.push(
            dir.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(ctx, &ctx.join("src"), &mut out);
    out.sort();
    out
}

/// One random edit of the context, described for the failure message. Kinds that change
/// what the COPY's key covers (content, names, modes, links) and kinds it does not (mtime,
/// xattrs), which ride along with a content edit in each round.
fn random_edit(ctx: &Path, rng: &mut Rng, n: usize) -> String {
    let kind = rng.below(14);
    edit_of_kind(ctx, rng, n, kind)
}

/// What [`random_edit`] says of an edit that changes only an mtime: the one edit a COPY's
/// key does not see (as in BuildKit), so its round also changes a content.
const MTIME_EDIT: &str = "set the mtime of";

/// A content edit: a byte flipped, bytes appended or a file emptied.
fn random_edit_of_content(ctx: &Path, rng: &mut Rng, n: usize) -> String {
    let kind = rng.below(3);
    edit_of_kind(ctx, rng, n, kind)
}

/// Edit `kind` of [`random_edit`] (kinds 0 to 2 change a file's content).
fn edit_of_kind(ctx: &Path, rng: &mut Rng, n: usize, kind: usize) -> String {
    let entries = context_entries(ctx);
    let files: Vec<&String> = entries
        .iter()
        .filter(|p| fs::symlink_metadata(ctx.join(p)).unwrap().is_file())
        .collect();
    let pick = |rng: &mut Rng| files[rng.below(files.len())].clone();
    let dirs = context_dirs(ctx);
    match kind {
        0 => {
            let p = pick(rng);
            let mut bytes = fs::read(ctx.join(&p)).unwrap();
            if bytes.is_empty() {
                bytes.push(b'x');
            } else {
                let at = rng.below(bytes.len());
                bytes[at] ^= 0x20;
            }
            fs::write(ctx.join(&p), bytes).unwrap();
            format!("flip a byte of {p}")
        }
        1 => {
            let p = pick(rng);
            let more = file_bytes(5000 + n);
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(ctx.join(&p))
                .unwrap();
            std::io::Write::write_all(&mut f, &more[..rng.below(more.len())]).unwrap();
            format!("append to {p}")
        }
        2 => {
            let p = pick(rng);
            fs::write(ctx.join(&p), b"").unwrap();
            format!("empty {p}")
        }
        3 if files.len() > 20 => {
            let p = pick(rng);
            fs::remove_file(ctx.join(&p)).unwrap();
            format!("delete {p}")
        }
        4 => {
            let d = &dirs[rng.below(dirs.len())];
            let p = format!("{d}/new{n}-{}.txt", rng.below(1000));
            fs::write(ctx.join(&p), &file_bytes(7000 + n)[..rng.below(9000)]).unwrap();
            format!("add {p}")
        }
        5 => {
            let p = pick(rng);
            let d = &dirs[rng.below(dirs.len())];
            let to = format!("{d}/moved{n}.txt");
            fs::rename(ctx.join(&p), ctx.join(&to)).unwrap();
            format!("rename {p} to {to}")
        }
        6 => {
            let p = pick(rng);
            let mode = [0o644, 0o755, 0o444, 0o555][rng.below(4)];
            fs::set_permissions(ctx.join(&p), fs::Permissions::from_mode(mode)).unwrap();
            format!("chmod {mode:o} {p}")
        }
        7 => {
            let p = pick(rng);
            let target = pick(rng);
            fs::remove_file(ctx.join(&p)).unwrap();
            std::os::unix::fs::symlink(format!("/{target}"), ctx.join(&p)).unwrap();
            format!("replace {p} with a symlink to /{target}")
        }
        8 => {
            let d = format!("src/n{n}");
            for i in 0..rng.below(5) + 1 {
                fs::create_dir_all(ctx.join(&d).join(format!("s{i}"))).unwrap();
                fs::write(
                    ctx.join(&d).join(format!("s{i}/g.txt")),
                    file_bytes(8000 + i),
                )
                .unwrap();
            }
            format!("add directory {d}")
        }
        9 if dirs.len() > 3 => {
            let d = &dirs[1 + rng.below(dirs.len() - 1)];
            fs::remove_dir_all(ctx.join(d)).unwrap();
            format!("delete directory {d}")
        }
        10 => {
            let p = pick(rng);
            let to = format!("{p}.link{n}");
            fs::hard_link(ctx.join(&p), ctx.join(&to)).unwrap();
            format!("hard link {p} as {to}")
        }
        11 => {
            let p = pick(rng);
            let t = filetime::FileTime::from_unix_time(1_600_000_000 + rng.below(1000) as i64, 0);
            filetime::set_file_mtime(ctx.join(&p), t).unwrap();
            format!("{MTIME_EDIT} {p}")
        }
        12 => {
            let p = pick(rng);
            rustix::fs::setxattr(
                ctx.join(&p),
                "user.kiln.random",
                format!("v{n}").as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
            format!("set an xattr on {p}")
        }
        _ => {
            let (p, q) = (pick(rng), pick(rng));
            if p != q {
                fs::remove_file(ctx.join(&q)).unwrap();
                fs::hard_link(ctx.join(&p), ctx.join(&q)).unwrap();
            }
            format!("make {q} a hard link of {p}")
        }
    }
}

/// Rounds of random edits (one to three of any kind, and a content edit beside an mtime
/// one), each built incrementally in one store and with `--no-cache` in a fresh one: a
/// COPY whose key saw the edit and whose chunks, hashes and files are reused from its
/// previous layer, and the RUN after it whose layer is written against its previous blob,
/// give the from-scratch image.
/// `KILN_TEST_SEED` replays one seed.
fn random_edits_then_build(id: Identity, seed: u64) {
    let incremental = World::new(id);
    let ctx = make_context(&incremental);
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "{BUSYBOX}COPY src /src\nRUN mkdir /copy && (cp -a /src/d2 /src/d5 /copy || true) && \
             find /src -type f -exec md5sum {{}} + | sort > /sums\n"
        ),
    )
    .unwrap();
    common::open_up(&ctx);
    assert_ok(&incremental.build(&ctx, &["-t", "inc:1"]));
    let mut rng = Rng(seed | 1);
    let mut log = Vec::new();
    // Layers (of the COPY or the RUN) written with compressed chunks of their previous blob.
    let mut reusing = 0;
    for round in 0..ROUNDS {
        let mut edits: Vec<String> = (0..1 + rng.below(3))
            .map(|k| random_edit(&ctx, &mut rng, round * 10 + k))
            .collect();
        if edits.iter().any(|e| e.starts_with(MTIME_EDIT)) {
            edits.push(random_edit_of_content(&ctx, &mut rng, round));
        }
        common::open_up(&ctx);
        log.push(format!("round {round}: {}", edits.join("; ")));
        let why = || format!("{id:?}, seed {seed}:\n{}", log.join("\n"));
        let inc = incremental.build(&ctx, &["-t", "inc:1"]);
        assert!(inc.status.success(), "{}\n{}", why(), both(&inc));
        let text = both(&inc);
        reusing += text
            .lines()
            .filter(|l| l.contains("compressed chunks"))
            .filter(|l| reused_chunks(l).is_some_and(|(reused, ..)| reused > 0))
            .count();
        let scratch = World::new(id);
        let fresh = scratch.build(&ctx, &["--no-cache", "-t", "fresh:1"]);
        assert!(fresh.status.success(), "{}\n{}", why(), both(&fresh));
        assert_eq!(image_id(&inc), image_id(&fresh), "image ID\n{}", why());
        assert_eq!(
            manifest_digest(&incremental, "inc:1"),
            manifest_digest(&scratch, "fresh:1"),
            "manifest digest\n{}",
            why()
        );
    }
    // Most rounds reuse the COPY's chunks, and the RUN's when its layer is big enough (a
    // round whose edits changed nothing, a file linked to itself, is a cache hit).
    assert!(
        reusing >= ROUNDS / 2,
        "{id:?}, seed {seed}: {reusing} layers reused chunks in {ROUNDS} rounds"
    );
    assert_blobs_whole(&incremental);
}

/// Rounds of edits per seed.
const ROUNDS: usize = 8;

#[test]
fn random_edits_built_incrementally_give_the_from_scratch_image() {
    let seeds: Vec<u64> = match std::env::var("KILN_TEST_SEED") {
        Ok(s) => vec![s.parse().expect("KILN_TEST_SEED: a number")],
        Err(_) => vec![0x6b69_6c6e, 20261204],
    };
    for id in identities() {
        for &seed in &seeds {
            random_edits_then_build(id, seed);
        }
    }
}

/// Whether the build's step whose title ends with `step` was cached (`None`: no such step).
fn step_cached(out: &std::process::Output, step: &str) -> Option<bool> {
    steps(out)
        .into_iter()
        .find(|(title, _)| title.ends_with(step))
        .map(|(_, cached)| cached)
}

/// `security.capability` as `setcap cap_net_raw+ep` writes it (VFS_CAP_REVISION_2,
/// effective, CAP_NET_RAW permitted).
const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// An xattr set on a context file (a `user.*` one; as root also a capability, as `setcap`
/// sets it) changes what the COPY copies, so its key: the COPY runs again and the image is
/// the from-scratch one, not the layer cached before the xattr was set.
fn xattr_edit_then_build(id: Identity) {
    let world = World::new(id);
    let ctx = world.context("xattrs", "FROM scratch\nCOPY app /app\n");
    fs::create_dir_all(ctx.join("app")).unwrap();
    fs::write(ctx.join("app/server"), b"#!/bin/sh\necho serving\n").unwrap();
    fs::set_permissions(ctx.join("app/server"), fs::Permissions::from_mode(0o755)).unwrap();
    common::open_up(&ctx);
    assert_ok(&world.build(&ctx, &["-t", "x:1"]));
    let mut edits: Vec<(&str, &str, &[u8])> = vec![("a user xattr", "user.kiln.role", b"server")];
    if common::identity::is_root() {
        edits.push(("a file capability", "security.capability", &CAP_NET_RAW_EP));
    }
    for (what, name, value) in edits {
        rustix::fs::lsetxattr(
            ctx.join("app/server"),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let inc = world.build(&ctx, &["-t", "x:1"]);
        assert_ok(&inc);
        assert_eq!(
            step_cached(&inc, "COPY app /app"),
            Some(false),
            "{id:?}, {what}: {}",
            both(&inc)
        );
        let scratch = World::new(id);
        let fresh = scratch.build(&ctx, &["--no-cache", "-t", "x:1"]);
        assert_ok(&fresh);
        assert_eq!(image_id(&inc), image_id(&fresh), "{id:?}, {what}: image ID");
    }
}

#[test]
fn an_xattr_set_on_a_context_file_runs_its_copy_again() {
    for id in identities() {
        xattr_edit_then_build(id);
    }
}

/// Two context files made one (`ln -f`) are a hard link in the layer a COPY gives: the
/// COPY runs again, and the image is the from-scratch one; made two again, the image is
/// the from-scratch one too (the first build's, from its cache).
fn hard_link_edit_then_build(id: Identity) {
    let world = World::new(id);
    let ctx = world.context("links", "FROM scratch\nCOPY app /app\n");
    fs::create_dir_all(ctx.join("app")).unwrap();
    for name in ["a.txt", "b.txt"] {
        fs::write(ctx.join("app").join(name), b"the same bytes\n").unwrap();
    }
    common::open_up(&ctx);
    assert_ok(&world.build(&ctx, &["-t", "l:1"]));
    let edits: [Edit; 2] = [
        ("linked", |ctx| {
            fs::remove_file(ctx.join("app/b.txt")).unwrap();
            fs::hard_link(ctx.join("app/a.txt"), ctx.join("app/b.txt")).unwrap();
        }),
        ("apart again", |ctx| {
            fs::remove_file(ctx.join("app/b.txt")).unwrap();
            fs::write(ctx.join("app/b.txt"), b"the same bytes\n").unwrap();
        }),
    ];
    for (what, edit) in edits {
        edit(&ctx);
        common::open_up(&ctx);
        let inc = world.build(&ctx, &["-t", "l:1"]);
        assert_ok(&inc);
        if what == "linked" {
            assert_eq!(
                step_cached(&inc, "COPY app /app"),
                Some(false),
                "{id:?}: {}",
                both(&inc)
            );
        }
        let scratch = World::new(id);
        let fresh = scratch.build(&ctx, &["--no-cache", "-t", "l:1"]);
        assert_ok(&fresh);
        assert_eq!(image_id(&inc), image_id(&fresh), "{id:?}, {what}: image ID");
    }
}

#[test]
fn context_files_made_one_by_a_hard_link_run_their_copy_again() {
    for id in identities() {
        hard_link_edit_then_build(id);
    }
}
