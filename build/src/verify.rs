//! `--verify-reproducible`: two `--no-cache` builds of one request, at once, in two
//! scratch stores, compared with the image crate's compare engine.
//!
//! Base images are inputs, not part of what is checked: the Dockerfile is lowered once
//! (per platform) against the user's store (a base missing there is pulled into it once, as a plain build
//! would), and every base it names is copied into both scratch stores, so both builds
//! start from the same bytes, a base made with `kiln import` or `kiln load` included (and
//! the images of `oci-layout://` named contexts, unnamed). The
//! user's store is only read until the builds agree; then the image is copied into it and
//! exported as a plain build's would be.
//!
//! A request for several platforms is built whole by each build, every platform at once
//! and tied in an index, as a plain build ([`crate::build`]); the two index digests
//! decide, and builds that differ are compared platform by platform, so the report names
//! the platforms that are not reproducible.
//!
//! The two builds run in this process, so they share its RUN limits: on cgroup v1 as root,
//! the one pids cgroup of the process holds the RUNs of both.

use crate::Notice;
use crate::blobs::copy_image;
use crate::build::{lower_all, solve_all};
use crate::compare::{Diff, compare_platforms, open_manifest};
use crate::exporter::{Exports, export};
use crate::{BuildError, BuildRequest, BuiltImage};
use kiln_image::compare::compare;
use kiln_solver::progress::{Event, Progress};
use kiln_store::{ImageRef, Store};
use std::collections::VecDeque;

/// Events kept of each build, for showing a failed one: its last ones, bounded however
/// much its steps print.
const KEPT_EVENTS: usize = 10_000;

/// How the check came out.
pub enum Verdict {
    /// Both builds gave this image; it is now in the user's store and exported.
    Reproducible(BuiltImage),
    /// The builds gave different images: what differs (platform by platform for several)
    /// and the two builds' image digests (their indexes' for several platforms, else
    /// their manifests').
    Differs { diff: Diff, digests: [String; 2] },
    /// Build `build` (1 or 2) failed: its last progress events and its error.
    Failed {
        build: usize,
        events: Vec<Event>,
        error: BuildError,
    },
}

/// Runs the check for `request` (whose `no_cache` is forced on) and, when the builds
/// agree, puts the image into `store` and applies `exports`.
pub async fn verify(
    store: &Store,
    request: &BuildRequest,
    exports: &Exports,
    notify: &(dyn Fn(Notice) + Sync),
) -> Result<Verdict, BuildError> {
    let mut request = request.clone();
    request.no_cache = true;
    kiln_executor::cgroup::configure(request.limits, request.cgroup_parent.as_deref());
    let platforms = request.target_platforms()?;
    let lowered = lower_all(store, &request, &platforms, notify)?;
    let scratch = tempfile::Builder::new()
        .prefix("kiln-verify-")
        .tempdir()
        .map_err(BuildError::io("making scratch stores"))?;
    let open = |name: &str| -> Result<Store, BuildError> {
        let scratch_store = Store::open(&scratch.path().join(name))
            .map_err(BuildError::store(format!("opening scratch store {name}")))?;
        for lowered in &lowered {
            give_bases(store, &scratch_store, &lowered.bases)?;
        }
        // One set of named contexts serves every platform's lowering.
        for image in lowered.iter().take(1).flat_map(|l| &l.contexts.held) {
            copy_image(store, &scratch_store, image)?;
        }
        Ok(scratch_store)
    };
    let stores = [open("a")?, open("b")?];
    // Both builds run here, from scratch: no remote cache or farm.
    let local = crate::build::Remotes::default();
    let ([a, b], [events_a, events_b]) = {
        let run = |n: usize| {
            let (progress, mut rx) = Progress::channel();
            let kept = tokio::spawn(async move {
                let mut kept = VecDeque::new();
                while let Some(event) = rx.recv().await {
                    if kept.len() == KEPT_EVENTS {
                        kept.pop_front();
                    }
                    kept.push_back(event);
                }
                Vec::from(kept)
            });
            let built = solve_all(
                &stores[n],
                &request,
                platforms.clone(),
                &lowered,
                &local,
                progress,
            );
            async move {
                let built = built.await;
                (built, kept.await.unwrap_or_default())
            }
        };
        let ((a, ea), (b, eb)) = tokio::join!(run(0), run(1));
        ([a, b], [ea, eb])
    };
    let (image_a, image_b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(error), _) => return Ok(failed(1, events_a, error)),
        (_, Err(error)) => return Ok(failed(2, events_b, error)),
    };
    // An index names every platform's manifest: one digest decides for all.
    let top = |i: &BuiltImage| i.index.clone().unwrap_or_else(|| i.manifest_digest.clone());
    if top(&image_a) != top(&image_b) {
        let diff = match (&image_a.index, &image_b.index) {
            (Some(index_a), Some(index_b)) => {
                let children_a = crate::index::children(&stores[0], index_a, "build 1")?;
                let children_b = crate::index::children(&stores[1], index_b, "build 2")?;
                let platforms = compare_platforms(
                    [&stores[0], &stores[1]],
                    [&children_a, &children_b],
                    ["build 1", "build 2"],
                )?;
                Diff::Platforms {
                    names: ["build 1".into(), "build 2".into()],
                    platforms,
                }
            }
            _ => {
                let opened_a = open_manifest(&stores[0], "build 1", &image_a.manifest_digest)?;
                let opened_b = open_manifest(&stores[1], "build 2", &image_b.manifest_digest)?;
                let comparison = compare(&opened_a, &opened_b).map_err(BuildError::Compare)?;
                Diff::Image(Box::new(comparison))
            }
        };
        return Ok(Verdict::Differs {
            diff,
            digests: [top(&image_a), top(&image_b)],
        });
    }
    let stored = ImageRef {
        index: image_a.index.clone(),
        config: image_a.config_digest.clone(),
        manifest: image_a.manifest_digest.clone(),
    };
    copy_image(&stores[0], store, &stored)?;
    let registry = request.registry_options(None);
    export(store, &stores[0], &image_a, exports, &registry, notify)?;
    Ok(Verdict::Reproducible(image_a))
}

fn failed(build: usize, events: Vec<Event>, error: BuildError) -> Verdict {
    Verdict::Failed {
        build,
        events,
        error,
    }
}

/// Copies the bases the Dockerfile names from the user's store into a scratch store,
/// under the names the solver looks them up by.
fn give_bases(from: &Store, to: &Store, bases: &[(String, ImageRef)]) -> Result<(), BuildError> {
    for (name, image) in bases {
        copy_image(from, to, image)?;
        to.set_ref(name, image.clone())
            .map_err(BuildError::store(format!(
                "naming the base {name} in a scratch store"
            )))?;
    }
    Ok(())
}
