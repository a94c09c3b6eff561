//! Pushing: for each blob of the image, HEAD to see if the registry has it, mount it from
//! another repository of the same registry when we know one holds it, else upload it
//! (one PUT up to `monolithic_max`, PATCH chunks above); the manifest goes last, so a
//! push that fails anywhere leaves no new tag (at most unreferenced blobs, which the
//! registry's GC owns). An image of several platforms pushes each platform's manifest by
//! its digest, then its index under the tag.

use std::io::Read;

use kiln_image::oci::{Descriptor, MEDIA_TYPE_MANIFEST, ManifestKind, parse_manifest_or_index};
use kiln_store::Store;
use ureq::http::Method;

use crate::auth::repository_scope;
use crate::client::{Client, Payload, with_query};
use crate::error::{RegistryError, Result};
use crate::name::RegistryRef;
use crate::options::{Progress, RegistryOptions};
use crate::pull::run_parallel;

/// What a push produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Where it went.
    pub reference: RegistryRef,
    /// The manifest digest (pull `name@digest` to get exactly this image).
    pub digest: String,
    /// Manifest size in bytes.
    pub size: u64,
}

/// How one blob got into the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    Existed,
    Mounted { from: String },
    Uploaded,
}

/// Reads a blob from the store for upload.
fn open(store: &Store, digest: &str) -> Result<std::fs::File> {
    store
        .open_blob(digest)
        .map_err(RegistryError::store(format!("reading blob {digest}")))
}

/// True if the registry already has `digest` in `repository`.
pub fn blob_exists(client: &Client, repository: &str, digest: &str) -> Result<bool> {
    let path = format!("/v2/{repository}/blobs/{digest}");
    let request = format!("HEAD {}", client.url(&path));
    let resp = client.send(Method::HEAD, &path, &[], Payload::Empty)?;
    match resp.status().as_u16() {
        200..=299 => Ok(true),
        404 => Ok(false),
        _ => client
            .check(resp, &request, &format!("blob {digest}"))
            .map(|_| false),
    }
}

fn location(
    client: &Client,
    resp: &ureq::http::Response<ureq::Body>,
    request: &str,
) -> Result<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| RegistryError::Protocol {
            registry: client.registry().to_string(),
            what: request.to_string(),
            reason: "no Location header in the upload response".into(),
        })
}

/// Uploads `digest` (from the store) to an upload session at `loc`.
fn upload(
    client: &Client,
    store: &Store,
    loc: String,
    digest: &str,
    size: u64,
    opts: &RegistryOptions,
) -> Result<()> {
    let what = format!("upload of blob {digest}");
    if size <= opts.monolithic_max {
        let mut file = open(store, digest)?;
        let url = with_query(&loc, "digest", digest);
        client.call(
            Method::PUT,
            &url,
            &[("Content-Type", "application/octet-stream")],
            Payload::Reader(&mut file, size),
            &what,
        )?;
        return Ok(());
    }
    let mut file = open(store, digest)?;
    let chunk = opts.chunk_size.max(1);
    let mut loc = loc;
    let mut offset = 0u64;
    while offset < size {
        let n = chunk.min(size - offset);
        let range = format!("{}-{}", offset, offset + n - 1);
        let request = format!("PATCH {}", client.url(&loc));
        let mut part = (&mut file).take(n);
        let resp = client.call(
            Method::PATCH,
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            Payload::Reader(&mut part, n),
            &what,
        )?;
        loc = location(client, &resp, &request)?;
        offset += n;
    }
    let url = with_query(&loc, "digest", digest);
    client.call(Method::PUT, &url, &[], Payload::Bytes(&[]), &what)?;
    Ok(())
}

/// Makes sure the registry has `desc` in `repository`: HEAD, then mount from one of
/// `mount_from`, then upload.
pub fn push_blob(
    client: &Client,
    store: &Store,
    repository: &str,
    desc: &Descriptor,
    mount_from: &[String],
    opts: &RegistryOptions,
) -> Result<BlobOutcome> {
    if blob_exists(client, repository, &desc.digest)? {
        return Ok(BlobOutcome::Existed);
    }
    let uploads = format!("/v2/{repository}/blobs/uploads/");
    let what = format!("upload of blob {}", desc.digest);
    let mut session = None;
    // One mount attempt: a refused mount opens an upload session we then use.
    if let Some(from) = mount_from.first() {
        let url = with_query(&with_query(&uploads, "mount", &desc.digest), "from", from);
        let request = format!("POST {}", client.url(&url));
        let resp = client.call(Method::POST, &url, &[], Payload::Bytes(&[]), &what)?;
        if resp.status().as_u16() == 201 {
            return Ok(BlobOutcome::Mounted { from: from.clone() });
        }
        // 202: the registry could not mount and opened an upload session instead.
        session = Some(location(client, &resp, &request)?);
    }
    let loc = match session {
        Some(l) => l,
        None => {
            let request = format!("POST {}", client.url(&uploads));
            let resp = client.call(Method::POST, &uploads, &[], Payload::Bytes(&[]), &what)?;
            location(client, &resp, &request)?
        }
    };
    upload(client, store, loc, &desc.digest, desc.size, opts)?;
    Ok(BlobOutcome::Uploaded)
}

/// Pushes the store's image `local` to `dest` (a registry reference; its tag, else its
/// digest, names the manifest).
pub fn push_from_store(
    store: &Store,
    local: &str,
    dest: &str,
    opts: &RegistryOptions,
) -> Result<PushedImage> {
    let image = store
        .get_ref(local)
        .map_err(RegistryError::store(format!("looking up {local}")))?
        .ok_or_else(|| RegistryError::NotInStore {
            reference: local.to_string(),
        })?;
    let whole = store.whole_image(&image);
    let manifest_bytes = store
        .read_blob(&whole)
        .map_err(RegistryError::store(format!(
            "reading the manifest of {local}"
        )))?;
    let manifest = match parse_manifest_or_index(&manifest_bytes) {
        Ok(ManifestKind::Manifest(m)) => m,
        Ok(ManifestKind::Index(index)) => {
            return push_index(store, &manifest_bytes, &whole, &index, dest, opts, local);
        }
        Err(e) => {
            return Err(RegistryError::Unsupported {
                reference: local.to_string(),
                reason: format!("its manifest cannot be read: {e}"),
            });
        }
    };
    push_manifest(
        store,
        &manifest_bytes,
        &image.manifest,
        &manifest,
        dest,
        opts,
        local,
    )
}

/// PUTs a manifest (or index) under `rref`'s tag or digest; the registry must store it
/// under the digest the bytes have.
fn put_manifest(
    client: &Client,
    rref: &RegistryRef,
    bytes: &[u8],
    digest: &str,
    media_type: &str,
) -> Result<()> {
    let path = format!(
        "/v2/{}/manifests/{}",
        rref.repository,
        rref.manifest_reference()
    );
    let request = format!("PUT {}", client.url(&path));
    let resp = client.call(
        Method::PUT,
        &path,
        &[("Content-Type", media_type)],
        Payload::Bytes(bytes),
        &format!("manifest {rref}"),
    )?;
    if let Some(h) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        && h != digest
    {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_string(),
            what: format!("{request}: manifest as stored by the registry"),
            expected: digest.to_string(),
            actual: h.to_string(),
        });
    }
    Ok(())
}

/// Pushes an index whose manifests are all in the store: each manifest (blobs first) by
/// its digest, the index last, under `dest`'s tag.
fn push_index(
    store: &Store,
    index_bytes: &[u8],
    index_digest: &str,
    index: &kiln_image::oci::Index,
    dest: &str,
    opts: &RegistryOptions,
    label: &str,
) -> Result<PushedImage> {
    let rref = RegistryRef::parse(dest)?;
    for child in &index.manifests {
        let bytes = store
            .read_blob(&child.digest)
            .map_err(RegistryError::store(format!(
                "reading the manifest {} of {label}",
                child.digest
            )))?;
        let manifest = match parse_manifest_or_index(&bytes) {
            Ok(ManifestKind::Manifest(m)) => m,
            Ok(ManifestKind::Index(_)) => {
                return Err(RegistryError::Unsupported {
                    reference: label.to_string(),
                    reason: format!("its index nests another index ({})", child.digest),
                });
            }
            Err(e) => {
                return Err(RegistryError::Unsupported {
                    reference: label.to_string(),
                    reason: format!("its manifest {} cannot be read: {e}", child.digest),
                });
            }
        };
        let by_digest = format!("{}@{}", rref.name(), child.digest);
        push_manifest(
            store,
            &bytes,
            &child.digest,
            &manifest,
            &by_digest,
            opts,
            label,
        )?;
    }
    let client = Client::connect(
        &rref.domain,
        opts,
        &[repository_scope(&rref.repository, "pull,push")],
    )?;
    let media_type = index
        .media_type
        .clone()
        .unwrap_or_else(|| kiln_image::oci::MEDIA_TYPE_INDEX.to_string());
    put_manifest(&client, &rref, index_bytes, index_digest, &media_type)?;
    opts.report(Progress::ManifestDone {
        digest: index_digest.to_string(),
    });
    Ok(PushedImage {
        reference: rref,
        digest: index_digest.to_string(),
        size: index_bytes.len() as u64,
    })
}

/// Pushes a manifest whose blobs are all in the store: blobs first, manifest last.
/// `label` names what is pushed in errors.
pub(crate) fn push_manifest(
    store: &Store,
    manifest_bytes: &[u8],
    manifest_digest: &str,
    manifest: &kiln_image::oci::Manifest,
    dest: &str,
    opts: &RegistryOptions,
    label: &str,
) -> Result<PushedImage> {
    let local = label;
    let rref = RegistryRef::parse(dest)?;
    let blobs: Vec<Descriptor> = {
        let mut v: Vec<Descriptor> = Vec::new();
        for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
            if !v.iter().any(|x| x.digest == d.digest) {
                v.push(d.clone());
            }
        }
        v
    };
    for d in &blobs {
        if !store.has_blob(&d.digest) {
            return Err(RegistryError::Store {
                what: format!("pushing {local}"),
                source: kiln_store::StoreError::BlobNotFound {
                    digest: d.digest.clone(),
                },
            });
        }
    }
    let mounts: Vec<Vec<String>> = blobs
        .iter()
        .map(|d| crate::sources::mount_candidates(store, &d.digest, &rref.domain, &rref.repository))
        .collect();
    let mut scopes = vec![repository_scope(&rref.repository, "pull,push")];
    for from in mounts.iter().flatten() {
        let s = repository_scope(from, "pull");
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let client = Client::connect(&rref.domain, opts, &scopes)?;
    let jobs: Vec<(Descriptor, Vec<String>)> = blobs.into_iter().zip(mounts).collect();
    run_parallel(&jobs, opts.parallel, |(d, from)| {
        match push_blob(&client, store, &rref.repository, d, from, opts)? {
            BlobOutcome::Existed => opts.report(Progress::BlobExists {
                digest: d.digest.clone(),
            }),
            BlobOutcome::Mounted { from } => opts.report(Progress::BlobMounted {
                digest: d.digest.clone(),
                from,
            }),
            BlobOutcome::Uploaded => opts.report(Progress::BlobDone {
                digest: d.digest.clone(),
                size: d.size,
            }),
        }
        Ok(())
    })?;
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| MEDIA_TYPE_MANIFEST.to_string());
    put_manifest(&client, &rref, manifest_bytes, manifest_digest, &media_type)?;
    opts.report(Progress::ManifestDone {
        digest: manifest_digest.to_string(),
    });
    crate::sources::record(
        store,
        &rref,
        std::iter::once(manifest.config.digest.as_str())
            .chain(manifest.layers.iter().map(|d| d.digest.as_str())),
    );
    Ok(PushedImage {
        reference: rref,
        digest: manifest_digest.to_string(),
        size: manifest_bytes.len() as u64,
    })
}
