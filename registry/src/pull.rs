//! Pulling: resolve a reference to a manifest (choosing the platform from an index),
//! stream every missing blob into the store in parallel, each verified by digest, then
//! write the manifest and only then tag it. A failure at any point leaves no ref, and
//! only complete, verified blobs in the store.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln_base::digest::{Digest, SHA256_PREFIX};
use kiln_base::platform::Platform;
use kiln_image::limits::{self, CappedReadError, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use kiln_image::oci::{
    Descriptor, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Manifest,
    ManifestKind, parse_manifest_or_index,
};
use kiln_store::{ImageRef, Store, StoreError};
use ureq::http::Method;

use crate::auth::repository_scope;
use crate::client::{Client, Payload};
use crate::error::{RegistryError, Result};
use crate::name::RegistryRef;
use crate::options::{Progress, RegistryOptions};

/// Accept header for manifests: every manifest and index type we read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// What a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The fully qualified reference that was pulled.
    pub reference: RegistryRef,
    /// The local name it was tagged as (what `FROM` and `kiln images` use).
    pub local_name: String,
    /// Config and (platform) manifest digests, as stored under `local_name`.
    pub image: ImageRef,
    /// Digest the reference resolved to (an index's digest for multi-platform images).
    pub resolved_digest: String,
}

/// A manifest as fetched: bytes, digest (verified) and media type.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

/// The platform to pull: `--platform` as given, else this machine's without its variant
/// (an index's first entry for the architecture is taken then, whatever its variant).
fn wanted_platform(given: Option<&str>) -> Result<Platform> {
    match given {
        Some(p) => Platform::parse(p).map_err(|e| RegistryError::InvalidPlatform(e.0)),
        None => Ok(Platform {
            variant: None,
            ..Platform::host()
        }),
    }
}

/// Picks the manifest for `want` from an index: same os and architecture, the wanted
/// variant if one was asked for (else the first entry of that architecture).
pub fn choose_platform<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates = manifests.iter().filter(|d| {
        matches!(
            d.media_type.as_str(),
            MEDIA_TYPE_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST
        ) && d
            .platform
            .as_ref()
            .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
    });
    let mut first = None;
    for d in candidates {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match &want.variant {
            Some(v) if variant == Some(v.as_str()) => return Some(d),
            Some(_) => {}
            None => return Some(d),
        }
        first.get_or_insert(d);
    }
    if want.variant.is_some() { None } else { first }
}

/// GETs a manifest or index by tag or digest and verifies its digest (against the
/// reference when pinned, and against `Docker-Content-Digest` when sent).
pub fn fetch_manifest(
    client: &Client,
    repository: &str,
    reference: &str,
) -> Result<FetchedManifest> {
    let path = format!("/v2/{repository}/manifests/{reference}");
    let request = format!("GET {}", client.url(&path));
    let mut resp = client.call(
        Method::GET,
        &path,
        &[("Accept", MANIFEST_ACCEPT)],
        Payload::Empty,
        &format!("manifest {repository}:{reference}"),
    )?;
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let what = format!("manifest {repository}:{reference}");
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared {
        limits::check_size(what.as_str(), n, MAX_MANIFEST_SIZE).map_err(|e| client.too_large(e))?;
    }
    let bytes = match limits::read_capped(resp.body_mut().as_reader(), MAX_MANIFEST_SIZE, &what) {
        Ok(b) => b,
        Err(CappedReadError::TooLarge(e)) => return Err(client.too_large(e)),
        Err(CappedReadError::Io { source, .. }) => return Err(client.read_error(&request, &source)),
    };
    let digest = Digest::of(&bytes).into_string();
    // A reference that is not a tag is a digest (RegistryRef validated it).
    if reference.starts_with(SHA256_PREFIX) && reference != digest {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_string(),
            what,
            expected: reference.to_string(),
            actual: digest,
        });
    }
    if let Some(h) = header_digest.filter(|h| h.starts_with(SHA256_PREFIX))
        && h != digest
    {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_string(),
            what,
            expected: h,
            actual: digest,
        });
    }
    let media_type = match parse_manifest_or_index(&bytes) {
        Ok(ManifestKind::Manifest(m)) => m
            .media_type
            .or(content_type)
            .unwrap_or_else(|| MEDIA_TYPE_MANIFEST.into()),
        Ok(ManifestKind::Index(i)) => i
            .media_type
            .or(content_type)
            .unwrap_or_else(|| MEDIA_TYPE_INDEX.into()),
        Err(e) => {
            return Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                what,
                reason: e.to_string(),
            });
        }
    };
    Ok(FetchedManifest {
        bytes,
        digest,
        media_type,
    })
}

/// How many times a blob download that broke off is resumed before giving up.
const RESUME_ATTEMPTS: usize = 3;

/// Streams one blob into the store, verifying size and digest. Nothing is stored if
/// either is wrong. A download that breaks off is resumed from where it stopped with an
/// HTTP `Range` request when the registry honours ranges (206); otherwise it restarts.
pub fn fetch_blob_into_store(
    client: &Client,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
) -> Result<()> {
    let path = format!("/v2/{repository}/blobs/{}", desc.digest);
    let request = format!("GET {}", client.url(&path));
    let what = format!("blob {} of {repository}", desc.digest);
    let new_writer = || {
        store
            .blob_writer()
            .map_err(RegistryError::store(format!("writing {what}")))
    };
    let mut writer = new_writer()?;
    let mut attempts = 0;
    loop {
        let offset = writer.size();
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 {
            &[("Range", range.as_str())]
        } else {
            &[]
        };
        let resp = client.call(Method::GET, &path, headers, Payload::Empty, &what)?;
        if offset > 0 && resp.status().as_u16() != 206 {
            // The registry sent the whole blob again: start over with a fresh writer.
            writer = new_writer()?;
        }
        // Read one byte past the descriptor's size so an overlong blob is noticed.
        let remaining = (desc.size + 1).saturating_sub(writer.size());
        let mut body = resp.into_body().into_reader().take(remaining);
        match copy_body(&mut body, &mut writer, store) {
            Ok(()) => break,
            Err(CopyFailure::Store(e)) => return Err(e),
            Err(CopyFailure::Read(e)) => {
                attempts += 1;
                if attempts > RESUME_ATTEMPTS {
                    return Err(client.read_error(&request, &e));
                }
            }
        }
    }
    if writer.size() != desc.size {
        return Err(RegistryError::SizeMismatch {
            registry: client.registry().to_string(),
            what,
            expected: desc.size,
            actual: writer.size(),
        });
    }
    match writer.commit_verified(&desc.digest) {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch { expected, actual }) => {
            Err(RegistryError::DigestMismatch {
                registry: client.registry().to_string(),
                what,
                expected,
                actual,
            })
        }
        Err(e) => Err(RegistryError::Store { what, source: e }),
    }
}

enum CopyFailure {
    /// The network read failed: worth resuming.
    Read(std::io::Error),
    /// Writing into the store failed: final.
    Store(RegistryError),
}

fn copy_body(
    body: &mut impl Read,
    writer: &mut kiln_store::BlobWriter,
    store: &Store,
) -> std::result::Result<(), CopyFailure> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyFailure::Read(e)),
        };
        writer.write_all(&buf[..n]).map_err(|source| {
            CopyFailure::Store(RegistryError::Io {
                op: "write blob into the store at",
                path: store.root().to_path_buf(),
                source,
            })
        })?;
    }
}

/// Runs `job` over `items` on up to `parallel` threads; the first error stops the rest
/// from starting and is returned.
pub(crate) fn run_parallel<T: Sync>(
    items: &[T],
    parallel: usize,
    job: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let workers = parallel.max(1).min(items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { return };
                    if let Err(e) = job(item) {
                        failed.store(true, Ordering::SeqCst);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn put_json_blob(store: &Store, bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let mut w = store
        .blob_writer()
        .map_err(RegistryError::store(format!("writing {what}")))?;
    w.write_all(bytes).map_err(|source| RegistryError::Io {
        op: "write blob into the store at",
        path: store.root().to_path_buf(),
        source,
    })?;
    w.commit_verified(digest)
        .map_err(RegistryError::store(format!("writing {what}")))?;
    Ok(())
}

/// Pulls `reference` into `store` and tags it locally as `kiln_store::normalize_ref`
/// of what was written (so `FROM busybox` finds `busybox:latest`).
pub fn pull_into_store(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
) -> Result<PulledImage> {
    let rref = RegistryRef::parse(reference)?;
    let local_name = kiln_store::normalize_ref(reference)
        .map_err(RegistryError::store(format!("naming {reference}")))?;
    let client = Client::connect(
        &rref.domain,
        opts,
        &[repository_scope(&rref.repository, "pull")],
    )?;
    let top = fetch_manifest(&client, &rref.repository, rref.manifest_reference())?;
    opts.report(Progress::Resolved {
        reference: rref.to_string(),
        digest: top.digest.clone(),
    });
    // An index is kept beside the platform's image: a build for another platform finds
    // that one's child through it (and pulls only that child).
    let mut index_digest = None;
    let (manifest_bytes, manifest_digest, manifest) = match parse_manifest_or_index(&top.bytes) {
        Ok(ManifestKind::Manifest(m)) => (top.bytes.clone(), top.digest.clone(), m),
        Ok(ManifestKind::Index(index)) => {
            let want = wanted_platform(opts.platform.as_deref())?;
            let Some(desc) = choose_platform(&index.manifests, &want) else {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                return Err(RegistryError::NoPlatform {
                    reference: rref.to_string(),
                    platform: want.to_string(),
                    available: if available.is_empty() {
                        "no platforms".into()
                    } else {
                        available.join(", ")
                    },
                });
            };
            // The index's word for the child's size is checked first; the fetch itself
            // is capped whatever the index says.
            limits::check_size(
                format!("manifest {}", desc.digest),
                desc.size,
                MAX_MANIFEST_SIZE,
            )
            .map_err(|e| client.too_large(e))?;
            let child = fetch_manifest(&client, &rref.repository, &desc.digest)?;
            let m = match parse_manifest_or_index(&child.bytes) {
                Ok(ManifestKind::Manifest(m)) => m,
                _ => {
                    return Err(RegistryError::Protocol {
                        registry: client.registry().to_string(),
                        what: format!("manifest {}", desc.digest),
                        reason: "index entry is not an image manifest".into(),
                    });
                }
            };
            index_digest = Some(top.digest.clone());
            (child.bytes, child.digest, m)
        }
        Err(e) => {
            return Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                what: format!("manifest {rref}"),
                reason: e.to_string(),
            });
        }
    };
    check_manifest_types(&client, &manifest, &rref)?;
    // The config is read whole later (by every FROM of this image): refuse an oversized
    // one before downloading it. Its digest is verified, so the size cannot lie.
    limits::check_size(
        format!("config {} of {rref}", manifest.config.digest),
        manifest.config.size,
        MAX_CONFIG_SIZE,
    )
    .map_err(|e| client.too_large(e))?;
    let mut blobs: Vec<&Descriptor> = Vec::new();
    for d in manifest
        .layers
        .iter()
        .chain(std::iter::once(&manifest.config))
    {
        if store.has_blob(&d.digest) {
            opts.report(Progress::BlobExists {
                digest: d.digest.clone(),
            });
        } else if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(d);
        }
    }
    // Biggest first, so the longest download starts at once.
    blobs.sort_by(|a, b| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    run_parallel(&blobs, opts.parallel, |d| {
        fetch_blob_into_store(&client, &rref.repository, d, store)?;
        opts.report(Progress::BlobDone {
            digest: d.digest.clone(),
            size: d.size,
        });
        Ok(())
    })?;
    put_json_blob(store, &manifest_bytes, &manifest_digest, "manifest")?;
    if let Some(index) = &index_digest {
        put_json_blob(store, &top.bytes, index, "index")?;
    }
    opts.report(Progress::ManifestDone {
        digest: manifest_digest.clone(),
    });
    let image = ImageRef {
        index: index_digest,
        config: manifest.config.digest.clone(),
        manifest: manifest_digest,
    };
    store
        .set_ref(&local_name, image.clone())
        .map_err(RegistryError::store(format!("tagging {local_name}")))?;
    crate::sources::record(
        store,
        &rref,
        manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
            .map(|d| d.digest.as_str()),
    );
    Ok(PulledImage {
        reference: rref,
        local_name,
        image,
        resolved_digest: top.digest,
    })
}

fn check_manifest_types(client: &Client, manifest: &Manifest, rref: &RegistryRef) -> Result<()> {
    for d in manifest
        .layers
        .iter()
        .chain(std::iter::once(&manifest.config))
    {
        if kiln_store::parse_digest(&d.digest).is_err() {
            return Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                what: format!("manifest of {rref}"),
                reason: format!(
                    "unsupported digest {:?} (only sha256 is supported)",
                    d.digest
                ),
            });
        }
        if !d.urls.is_empty() {
            return Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                what: format!("manifest of {rref}"),
                reason: format!("foreign layer {} (urls) is not supported", d.digest),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::oci::Platform;

    fn entry(arch: &str, variant: Option<&str>, digest: char) -> Descriptor {
        let mut d = Descriptor::new(
            MEDIA_TYPE_MANIFEST,
            &format!("sha256:{}", digest.to_string().repeat(64)),
            1,
        );
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(str::to_string),
            os_version: None,
        });
        d
    }

    #[test]
    fn index_entry_for_the_wanted_platform_is_chosen() {
        let list = vec![
            entry("arm", Some("v7"), 'a'),
            entry("arm64", Some("v8"), 'b'),
            entry("amd64", None, 'c'),
            entry("arm", Some("v6"), 'd'),
        ];
        let pick = |s: &str| {
            choose_platform(&list, &kiln_base::platform::Platform::parse(s).unwrap())
                .map(|d| d.digest.chars().last().unwrap())
        };
        assert_eq!(pick("linux/amd64"), Some('c'));
        assert_eq!(pick("linux/arm64"), Some('b'));
        assert_eq!(pick("linux/arm/v6"), Some('d'));
        assert_eq!(pick("linux/arm"), Some('a'));
        assert_eq!(pick("linux/s390x"), None);
        assert!(wanted_platform(Some("amd64")).is_err());
    }
}
