//! One layer step, hit or run: key it, reuse its recorded layer when allowed, otherwise
//! execute it into a fresh layer directory, commit that layer and record it under the key.
//!
//! Which op it is matters only to [`crate::ops`]; ordering lives in [`crate::engine`] and
//! [`crate::stage`].

use crate::blocking::blocking;
use crate::error::{SolveError, StepError};
use crate::explain::explain;
use crate::images::ensure_verified;
use crate::ops::{KeyContext, LayerOp, StepContext};
use crate::progress::{Event, Stream};
use crate::result::Layer;
use crate::session::BuildSession;
use kiln_executor::commit::{
    CommitError, CommitOrDefer, CommitRequest, FilledLayer, WrittenBlob, commit_or_defer,
};
use kiln_parser::Step;
use kiln_store::{CacheRecord, LayerRef};

/// A solved step: its key, its layer, and whether the layer came from the cache.
pub(crate) struct Solved {
    pub key: String,
    /// With `pending`, a stand-in until [`PendingCommit::settle`]: the files at their
    /// staging path, no digests.
    pub layer: Layer,
    pub cached: bool,
    /// A new layer whose blob is still being written (see [`solve_step`]'s `defer`).
    pub pending: Option<PendingCommit>,
}

/// A step's layer being compressed on a blocking thread while the next step
/// runs on its files: what is left to do once the blob is written (publish the snapshot,
/// record the layer under its key, save the explain inputs, say which layer it wrote).
pub(crate) struct PendingCommit {
    /// The step's directory, held here as well as by the blob's thread: whatever becomes
    /// of that thread, the directory stays until the settle, as the next step runs on it.
    filled: std::sync::Arc<FilledLayer>,
    blob: tokio::task::JoinHandle<Result<WrittenBlob, CommitError>>,
    key: String,
    place: String,
    /// The step's cache record before it ran.
    stored: Option<CacheRecord>,
    inputs: Box<dyn FnOnce() -> crate::explain::KeyInputs + Send>,
}

impl PendingCommit {
    /// Waits for the blob and stores the layer: call once nothing reads the stand-in's
    /// staging path any more (the next step is done). `ctx` is the step's own.
    pub(crate) async fn settle(self, ctx: &StepContext<'_>) -> Result<Layer, SolveError> {
        let PendingCommit {
            filled,
            blob,
            key,
            place,
            stored,
            inputs,
        } = self;
        let session = ctx.session;
        let (id, progress) = (ctx.id, ctx.progress);
        // On an error the directory goes (maybe a big one), on a blocking thread.
        let drop_off = |filled: std::sync::Arc<FilledLayer>| {
            tokio::task::spawn_blocking(move || drop(filled));
        };
        let written = match blob.await {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => {
                drop_off(filled);
                return Err(ctx.at(e));
            }
            Err(e) => {
                drop_off(filled);
                return Err(ctx.at(StepError::Worker(e)));
            }
        };
        // The blob's thread is done, and its hold on the directory with it.
        let filled = std::sync::Arc::try_unwrap(filled).map_err(|filled| {
            drop_off(filled);
            ctx.at(StepError::LayerStillInUse)
        })?;
        let (s, note) = (session.clone(), info_line(progress, id));
        let committed =
            blocking(move || filled.publish(written, &s.store, s.layer_format(), &note))
                .await
                .map_err(|e| ctx.at(e))?;
        record_layer(ctx, &key, &place, committed, stored.as_ref(), inputs)
    }
}

/// A step's committed layer as the stage lists it, after recording it under `key`, saving
/// the inputs it was keyed on for `place` and saying which layer it is.
///
/// `stored`: the step's record before it ran. A --no-cache step that gave that record's
/// layer again, recorded lately, leaves the record as it is (as a cache hit does):
/// rewriting it would only refresh its time, and the build would then have a record to
/// sync.
fn record_layer(
    ctx: &StepContext<'_>,
    key: &str,
    place: &str,
    committed: kiln_executor::commit::CommittedLayer,
    stored: Option<&CacheRecord>,
    inputs: impl FnOnce() -> crate::explain::KeyInputs + Send + 'static,
) -> Result<Layer, SolveError> {
    let fresh = stored.is_some_and(|r| {
        r.layer.as_ref() == Some(&committed.layer) && now_unix() - r.created < RECORD_FRESH_SECS
    });
    let layer = Layer {
        diff_id: committed.layer.diff_id,
        digest: committed.layer.digest,
        size: committed.layer.size,
        media_type: committed.layer.media_type,
        snapshot: committed.snapshot,
    };
    if !fresh {
        let _phase = kiln_base::phase::start("step: record");
        record(ctx.session, key, layer.layer_ref()).map_err(|e| ctx.at(e))?;
    }
    let _explain_phase = kiln_base::phase::start("step: explain record");
    ctx.session.explain.save(place, key, inputs);
    ctx.progress.send(Event::Log {
        id: ctx.id,
        stream: Stream::Info,
        line: if committed.reused {
            format!("reusing stored layer {}", layer.digest)
        } else {
            format!("writing layer {}", layer.digest)
        },
    });
    Ok(layer)
}

/// What the commit tells the user (a full tmpfs, reused chunks): a line of step `id`.
fn info_line(progress: &crate::progress::Progress, id: usize) -> impl Fn(&str) + Sync + use<> {
    let progress = progress.clone();
    move |line| {
        progress.send(Event::Log {
            id,
            stream: Stream::Info,
            line: line.to_string(),
        })
    }
}

/// Solves the layer step of `ctx`; `no_cache` skips the lookup (the step still records
/// its layer, unless a fresh record names that layer already).
/// `defer`: a COPY that writes a new layer, or a RUN that never gave one before, may return
/// once its files are in the store, with its blob still being written
/// ([`Solved::pending`]; the caller settles it).
pub(crate) async fn solve_step(
    ctx: &StepContext<'_>,
    op: LayerOp<'_>,
    no_cache: bool,
    defer: bool,
) -> Result<Solved, SolveError> {
    let session = ctx.session;
    let step = ctx.step;
    let stage_keys: Vec<(usize, String)> = ctx
        .inputs
        .iter()
        .map(|(i, r)| (*i, r.key.clone()))
        .collect();
    let keyed = if op.keyed_without_io() {
        // Strings hashed, nothing read: not worth a thread.
        let kc = KeyContext {
            session,
            parent: &ctx.current.key,
            stage_keys: &stage_keys,
        };
        op.key(&kc).map_err(|e| ctx.at(e))?
    } else {
        let session = session.clone();
        let step = step.clone();
        let parent = ctx.current.key.clone();
        blocking(move || {
            let kc = KeyContext {
                session: &session,
                parent: &parent,
                stage_keys: &stage_keys,
            };
            match LayerOp::of(&step.op) {
                Some(op) => op.key(&kc),
                None => Err(StepError::NotALayerStep),
            }
        })
        .await
        .map_err(|e| ctx.at(e))?
    };
    let key = keyed.inputs.key.clone();
    let Some(shared) = &session.options.shared_steps else {
        return hit_or_run(ctx, op, no_cache, keyed, defer).await;
    };
    // The first solve to reach the key makes the layer; the others wait and take it, as
    // from the cache (a failed one leaves the next to try for itself).
    let cell = shared.cell(&key);
    // Whether this solve made the layer by running the step (else it came from the
    // cache or from another solve).
    let ran = std::sync::atomic::AtomicBool::new(false);
    let layer = cell
        .get_or_try_init(|| async {
            // Another solve may take the layer at once: no stand-in.
            let solved = hit_or_run(ctx, op, no_cache, keyed, false).await?;
            ran.store(!solved.cached, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, SolveError>(solved.layer)
        })
        .await?;
    let cached = !ran.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Solved {
        key,
        layer: layer.clone(),
        cached,
        pending: None,
    })
}

/// [`solve_step`] for a keyed step: reuse its recorded layer when allowed, else execute.
async fn hit_or_run(
    ctx: &StepContext<'_>,
    op: LayerOp<'_>,
    no_cache: bool,
    mut keyed: crate::ops::Keyed,
    defer: bool,
) -> Result<Solved, SolveError> {
    let session = ctx.session;
    let (step, id, progress) = (ctx.step, ctx.id, ctx.progress);
    let key = keyed.inputs.key.clone();
    let options = &session.options;
    let place = place(session, step);
    // Even under --no-cache the record tells what the step gave last time: the layer
    // it will most likely give again (see `kiln_executor::commit`).
    let stored = session.store.get_record(&key).map_err(|e| ctx.at(e))?;
    let recorded = stored.as_ref().and_then(|r| r.layer.clone());
    if !no_cache
        && recorded.is_none()
        && let Some(layer) = session.remote.fetch(session, &key, progress, id).await
    {
        session.explain.save(&place, &key, keyed.take_full_inputs());
        return Ok(Solved {
            key,
            layer,
            cached: true,
            pending: None,
        });
    }
    if !no_cache && let Some(layer) = recorded.clone() {
        let s = session.clone();
        // A record imported from a registry or directory cache is checked here, once.
        if let Ok(layer) = blocking(move || ensure_verified(&s.store, &layer)).await {
            session.explain.save(&place, &key, keyed.take_full_inputs());
            return Ok(Solved {
                key,
                layer,
                cached: true,
                pending: None,
            });
        }
    }
    if options.explain_cache {
        let reasons = if no_cache {
            vec!["--no-cache".to_string()]
        } else {
            explain(
                session.explain.previous(&place).as_ref(),
                &keyed.full_inputs(),
            )
        };
        for reason in reasons {
            progress.send(Event::Explain { id, reason });
        }
    }
    // The recorded layer is what the step most likely gives again: the executor uses it
    // to reuse a stored layer instead of writing it again. The layer this place gave in
    // the previous build (another key: an input changed) shares most of its compressed
    // chunks with the new one.
    let previous = match recorded {
        Some(_) => None,
        None => previous_layer(session, &place, &key),
    };
    // A COPY's files that did not change since, when the saved inputs are that layer's.
    let unchanged = previous
        .as_ref()
        .filter(|_| matches!(op, LayerOp::Copy(_)))
        .and_then(|(_, previous_key)| {
            session
                .explain
                .unchanged_files(&place, previous_key, keyed.files())
        });
    let previous = previous.map(|(layer, _)| layer);
    if let LayerOp::Run(run) = &op
        && let Some(layer) = session
            .remote_runner
            .run(session, run, &ctx.current.layers, no_cache, progress, id)
            .await
    {
        record(session, &key, layer.layer_ref()).map_err(|e| ctx.at(e))?;
        session.explain.save(&place, &key, keyed.take_full_inputs());
        return Ok(Solved {
            key,
            layer,
            cached: false,
            pending: None,
        });
    }
    // This step runs, so every RUN after it in its stage will: their sandbox's overlay
    // probe and first helper are made while this step works, not after it.
    if ctx.run_follows && !matches!(op, LayerOp::Run(_)) {
        session.prepare_for_runs(progress);
    }
    let exec_phase = kiln_base::phase::start("step: exec");
    let source = op.exec(ctx, &keyed).await?;
    exec_phase.end();
    let commit_phase = kiln_base::phase::start("step: commit");
    let (s, note) = (session.clone(), info_line(progress, id));
    // A RUN only when this place never gave a layer: one it gave before is likely given
    // again, and the steps after must then run on the stored snapshot, as they did last
    // time (what they see of its files, e.g. their real mtimes, is what they made then:
    // a --no-cache rebuild gives the same layers), not on this run's fresh copy.
    let deferrable = defer
        && match op {
            LayerOp::Copy(_) => true,
            LayerOp::Run(_) => recorded.is_none() && previous.is_none(),
            LayerOp::Workdir(_) => false,
        };
    let (recorded2, previous2) = (recorded.clone(), previous.clone());
    let request = move |s: &BuildSession, note: &(dyn Fn(&str) + Sync)| {
        let req = CommitRequest {
            store: &s.store,
            format: s.layer_format(),
            recorded: recorded2.as_ref(),
            previous: previous2.as_ref(),
            unchanged,
            source,
            note,
        };
        if deferrable {
            commit_or_defer(req)
        } else {
            kiln_executor::commit::commit_layer(req).map(CommitOrDefer::Committed)
        }
    };
    let outcome = if deferrable && matches!(op, LayerOp::Run(_)) {
        // A RUN's directory is handed back as it is, no file touched: not worth a thread.
        request(session, &note).map_err(StepError::from)
    } else {
        blocking(move || request(&s, &note)).await
    }
    .map_err(|e| ctx.at(e))?;
    let committed = match outcome {
        CommitOrDefer::Committed(committed) => committed,
        CommitOrDefer::Filled(filled) => {
            commit_phase.end();
            // The chunks of the layer the step gave last, as commit_layer takes them.
            let chunks_of = recorded.or(previous);
            let snapshot = filled.path().to_path_buf();
            let filled = std::sync::Arc::new(filled);
            let (s, note, writing) = (session.clone(), info_line(progress, id), filled.clone());
            let blob = tokio::task::spawn_blocking(move || {
                writing.write_blob(&s.store, s.layer_format(), chunks_of.as_ref(), &note)
            });
            // A stand-in the next step can run on: its files, no digests yet. Its diff_id
            // is unlike any layer's, so no lower is dropped as its duplicate.
            let layer = Layer {
                diff_id: format!("pending:{}", snapshot.display()),
                digest: String::new(),
                size: 0,
                media_type: String::new(),
                snapshot,
            };
            return Ok(Solved {
                key: key.clone(),
                layer,
                cached: false,
                pending: Some(PendingCommit {
                    filled,
                    blob,
                    key,
                    place,
                    stored,
                    inputs: Box::new(keyed.take_full_inputs()),
                }),
            });
        }
    };
    commit_phase.end();
    let layer = record_layer(
        ctx,
        &key,
        &place,
        committed,
        stored.as_ref(),
        keyed.take_full_inputs(),
    )?;
    Ok(Solved {
        key,
        layer,
        cached: false,
        pending: None,
    })
}

/// The layer the previous build of `place` gave and its key, when that key differs from
/// `key` and its record is still stored.
fn previous_layer(session: &BuildSession, place: &str, key: &str) -> Option<(LayerRef, String)> {
    let previous = session.explain.previous_key(place)?;
    if previous == key {
        return None;
    }
    let layer = session.store.get_record(&previous).ok()??.layer?;
    Some((layer, previous))
}

/// Where `step` stands, for `--explain-cache` and a changed COPY's relinking: the context,
/// the Dockerfile and the line. The paths are canonical, as the stat cache's: `kiln build .`
/// and `kiln build /abs/dir` of the same directory are one place (else the second finds no
/// previous build and copies a big context again), and `.` in two directories two.
fn place(session: &BuildSession, step: &Step) -> String {
    let options = &session.options;
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
    format!(
        "{}\0{}\0{}:{}",
        canonical(&options.context_dir).display(),
        canonical(&options.dockerfile).display(),
        step.span.line,
        step.span.column
    )
}

/// Records `layer` under `key` in the store. Records carry the real time for prune's
/// "oldest first"; the image never sees it.
pub(crate) fn record(
    session: &BuildSession,
    key: &str,
    layer: LayerRef,
) -> Result<(), kiln_store::StoreError> {
    let record = CacheRecord {
        created: now_unix(),
        layer: Some(layer),
    };
    session.store.put_record(key, &record)
}

/// How long an unchanged record counts as fresh (see [`record_layer`]). Prune's
/// `--keep-storage` drops the oldest records first; a step rebuilt with `--no-cache` at
/// least daily keeps its record among the new ones.
const RECORD_FRESH_SECS: i64 = 24 * 60 * 60;

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entitlements::NetworkDefault;
    use crate::image_state::ImageState;
    use crate::progress::Progress;
    use crate::result::StageResult;
    use crate::test_session::{Fixture, fixture, serve, step};
    use kiln_parser::{CopyOp, CopySource, Op, Source};
    use std::sync::atomic::Ordering;

    fn copy(add: bool, sources: Vec<CopySource>, dest: &str) -> Op {
        Op::Copy(CopyOp {
            add,
            from: Source::Context,
            sources,
            dest: dest.into(),
            workdir: "/".into(),
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: Vec::new(),
            checksum: None,
            unpack: None,
            keep_git_dir: false,
        })
    }

    /// Solves `op` on an empty rootfs.
    async fn solve(f: &Fixture, op: Op, no_cache: bool) -> Solved {
        solve_maybe_deferred(f, op, no_cache, false).await.0
    }

    /// [`solve`] with `defer`, a pending blob settled (after checking the stand-in's files
    /// are there and the step is not recorded yet); true when it was pending.
    async fn solve_maybe_deferred(
        f: &Fixture,
        op: Op,
        no_cache: bool,
        defer: bool,
    ) -> (Solved, bool) {
        let step = step(op);
        let current = StageResult {
            key: crate::key::scratch_key(),
            layers: Vec::new(),
            state: ImageState::scratch(),
            base_history: 0,
            keys: Vec::new(),
        };
        let inputs = Vec::new();
        let progress = Progress::discard();
        let ctx = StepContext {
            session: &f.session,
            step: &step,
            current: &current,
            inputs: &inputs,
            id: 1,
            progress: &progress,
            run_follows: false,
        };
        let op = LayerOp::of(&step.op).expect("a layer step");
        let mut solved = match solve_step(&ctx, op, no_cache, defer).await {
            Ok(solved) => solved,
            Err(e) => panic!("{}", e.message),
        };
        if let Some(pending) = solved.pending.take() {
            // The stand-in: the files, at a staging path, not recorded yet.
            let stand_in = solved.layer.snapshot.clone();
            assert_eq!(
                std::fs::read(stand_in.join("app/a.txt")).unwrap(),
                b"alpha\n"
            );
            assert!(solved.layer.digest.is_empty());
            assert!(f.session.store.get_record(&solved.key).unwrap().is_none());
            solved.layer = match pending.settle(&ctx).await {
                Ok(layer) => layer,
                Err(e) => panic!("{}", e.message),
            };
            assert!(!stand_in.exists(), "the staging directory was moved");
            return (solved, true);
        }
        (solved, false)
    }

    #[tokio::test]
    async fn a_deferred_copy_stores_the_layer_an_undeferred_one_does() {
        let op = || copy(false, vec![CopySource::Path("src".into())], "/app/");
        let (deferring, plain) = (
            fixture(NetworkDefault::Host, Some(0)),
            fixture(NetworkDefault::Host, Some(0)),
        );
        let (deferred, was_pending) = solve_maybe_deferred(&deferring, op(), false, true).await;
        assert!(was_pending, "a new COPY layer is deferred");
        let undeferred = solve(&plain, op(), false).await;
        assert!(undeferred.pending.is_none());
        assert_eq!(deferred.key, undeferred.key);
        let (a, b) = (&deferred.layer, &undeferred.layer);
        assert_eq!(
            (&a.diff_id, &a.digest, a.size, &a.media_type),
            (&b.diff_id, &b.digest, b.size, &b.media_type)
        );
        assert!(a.snapshot.join("app/sub/b.sh").is_file());
        let record = deferring.session.store.get_record(&deferred.key).unwrap();
        assert_eq!(record.and_then(|r| r.layer), Some(a.layer_ref()));
        // Once stored, the step hits, deferred or not.
        let (again, was_pending) = solve_maybe_deferred(&deferring, op(), false, true).await;
        assert!(again.cached && !was_pending);
        assert_eq!(again.layer, deferred.layer);
    }

    #[test]
    fn a_place_is_the_same_whatever_path_names_the_context() {
        let f = fixture(NetworkDefault::Host, Some(0));
        let step = step(copy(false, vec![CopySource::Path("src".into())], "/app/"));
        let session_at = |context: std::path::PathBuf| {
            let mut options = f.session.options.clone();
            options.context_dir = context;
            BuildSession::new(f.session.store.clone(), options).unwrap()
        };
        let context = f.dir.path().join("context");
        let roundabout = session_at(context.join("src/../src/sub/../.."));
        assert_eq!(place(&f.session, &step), place(&roundabout, &step));
        let other = session_at(context.join("src"));
        assert_ne!(place(&f.session, &step), place(&other, &step));
    }

    #[tokio::test]
    async fn a_step_runs_once_then_hits_until_what_it_reads_changes() {
        let f = fixture(NetworkDefault::Host, Some(0));
        let op = || copy(false, vec![CopySource::Path("src".into())], "/app/");
        let first = solve(&f, op(), false).await;
        assert!(!first.cached);
        let copied = first.layer.snapshot.join("app/a.txt");
        assert_eq!(std::fs::read(copied).unwrap(), b"alpha\n");
        assert!(f.session.store.get_record(&first.key).unwrap().is_some());

        let again = solve(&f, op(), false).await;
        assert!(again.cached);
        assert_eq!((&again.key, &again.layer), (&first.key, &first.layer));

        // --no-cache runs it again: same key, and the same bytes give the same layer.
        let forced = solve(&f, op(), true).await;
        assert!(!forced.cached);
        assert_eq!(forced.key, first.key);
        assert_eq!(forced.layer.diff_id, first.layer.diff_id);

        std::fs::write(f.dir.path().join("context/src/a.txt"), b"beta\n").unwrap();
        let changed = solve(&f, op(), false).await;
        assert!(!changed.cached);
        assert_ne!(changed.key, first.key);
        assert_ne!(changed.layer.diff_id, first.layer.diff_id);
    }

    /// A `--no-cache` step that gives its recorded layer again leaves a fresh record as a
    /// hit would (not written again), and renews a stale one.
    #[tokio::test]
    async fn a_no_cache_step_giving_its_recorded_layer_rewrites_only_a_stale_record() {
        let f = fixture(NetworkDefault::Host, Some(0));
        let op = || copy(false, vec![CopySource::Path("src".into())], "/app/");
        let first = solve(&f, op(), false).await;
        let store = &f.session.store;
        let aged = |secs: i64| {
            let record = CacheRecord {
                created: now_unix() - secs,
                layer: Some(first.layer.layer_ref()),
            };
            store.put_record(&first.key, &record).unwrap();
            store.sync_records();
            record
        };
        let inode = || {
            let file = store
                .root()
                .join("cache")
                .join(format!("{}.json", first.key));
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(file).unwrap())
        };
        let fresh = aged(60);
        let before = inode();
        let forced = solve(&f, op(), true).await;
        assert!(!forced.cached);
        assert_eq!(forced.layer.layer_ref(), first.layer.layer_ref());
        assert_eq!(store.get_record(&first.key).unwrap(), Some(fresh));
        assert_eq!(inode(), before, "the record file was not rewritten");

        let stale = aged(RECORD_FRESH_SECS + 60);
        solve(&f, op(), true).await;
        let renewed = store.get_record(&first.key).unwrap().unwrap();
        assert!(renewed.created > stale.created);
        assert_eq!(renewed.layer, stale.layer);
    }

    /// A power cut may keep a cache record and lose the rename of the blob it names
    /// (`Store::commit_new_layer`): the step then runs again (and stores the blob again)
    /// instead of hitting on the snapshot alone, which would give an image without its blob.
    #[tokio::test]
    async fn a_record_whose_blob_is_gone_is_a_miss() {
        let f = fixture(NetworkDefault::Host, Some(0));
        let op = || copy(false, vec![CopySource::Path("src".into())], "/app/");
        let first = solve(&f, op(), false).await;
        let blob = f.session.store.blob_path(&first.layer.digest).unwrap();
        std::fs::remove_file(&blob).unwrap();
        assert!(first.layer.snapshot.is_dir());
        let again = solve(&f, op(), false).await;
        assert!(!again.cached);
        assert_eq!(again.layer.digest, first.layer.digest);
        assert!(blob.is_file());
        assert!(solve(&f, op(), false).await.cached);
    }

    #[tokio::test]
    async fn add_copies_the_bytes_its_key_was_made_of() {
        let f = fixture(NetworkDefault::Host, None);
        // Each request gets another answer: a second download would copy other bytes.
        let (url, served) = serve(|n| format!("answer {n}\n").into_bytes());
        let add = copy(true, vec![CopySource::Url(url)], "/tool");
        let solved = solve(&f, add.clone(), false).await;
        assert_eq!(served.load(Ordering::SeqCst), 1, "downloaded once");
        let copied = std::fs::read(solved.layer.snapshot.join("tool")).unwrap();
        assert_eq!(copied, b"answer 0\n");
        let keyed = f.session.explain.previous(&place(&f.session, &step(add)));
        let keyed = keyed.expect("the key's inputs are saved");
        let digest = kiln_base::digest::sha256_digest(&copied);
        assert_eq!(keyed.inputs[1].1, format!("{digest} 784887151"));
    }
}
