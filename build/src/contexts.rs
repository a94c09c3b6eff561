//! Named build contexts (`--build-context NAME=VALUE`): what a value means, and each
//! context made ready before lowering, as BuildKit's `NamedContext` and buildx take them.
//!
//! - a local directory (`NAME=../dir`, `NAME=/abs`): read by the solver by name, keyed by
//!   content with the directory's own `.dockerignore`, as the main context is;
//! - `docker-image://REF[:tag|@digest]`: the image REF, found in the store or pulled as a
//!   FROM base is (lowering writes REF where NAME stood);
//! - `oci-layout://DIR[:tag][@digest]`: an image of an OCI layout directory, loaded into the
//!   store's blobs (unnamed) and handed to lowering (its config) and the solver (by name);
//! - `https://...` (or `http://`) not naming a git repository: the one file it serves,
//!   downloaded into the build's scratch space as a directory holding it (named after the
//!   URL's path, mode 0600, as BuildKit's HTTP source is);
//! - a git URL (`https://host/repo.git#ref:subdir`, `git@host:repo`, the query form): the
//!   commit checked out as a git build context is ([`crate::git_context`]), then read
//!   like a directory.
//!
//! A fetched directory (URL, git) is read without a stat cache: its path is new each build.

use crate::BuildError;
use crate::blobs::StoreBlobs;
use kiln_parser::{BaseImage, NamedContext};
use kiln_solver::NamedSource;
use kiln_store::{ImageRef, Store};
use std::path::PathBuf;

/// What a `--build-context` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSpec {
    /// A local directory.
    Dir(PathBuf),
    /// `docker-image://REF`.
    Image(String),
    /// `oci-layout://DIR[:TAG][@DIGEST]`; without either, tag `latest` or the one image.
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
        digest: Option<String>,
    },
    /// A file served over http(s).
    Url(String),
    /// A git repository, as ADD's git sources and a git build context take one.
    Git(kiln_parser::GitRef),
}

/// `--build-context NAME=VALUE`: the name as contexts are looked up by
/// ([`kiln_parser::context_name`]: `docker.io/library/alpine:latest` is `alpine`) and what
/// the value names.
pub fn parse(flag: &str) -> Result<(String, ContextSpec), BuildError> {
    let bad = |why: String| BuildError::Request(format!("--build-context {flag:?}: {why}"));
    let Some((name, value)) = flag.split_once('=') else {
        return Err(bad("expected NAME=VALUE".into()));
    };
    let key = kiln_parser::context_name(name).ok_or_else(|| {
        let why = match kiln_store::normalize_ref(name) {
            Err(e) => e.to_string(),
            Ok(_) => "not an image or stage name".into(),
        };
        bad(format!("invalid context name {name:?}: {why}"))
    })?;
    let spec = if let Some(reference) = value.strip_prefix("docker-image://") {
        kiln_store::normalize_ref(reference).map_err(|e| bad(e.to_string()))?;
        ContextSpec::Image(reference.to_string())
    } else if let Some(rest) = value.strip_prefix("oci-layout://") {
        // As buildx cuts it: the digest after `@`, then the tag after the first `:`.
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                kiln_base::digest::digest_hex(d)
                    .map_err(|_| bad(format!("invalid digest {d:?}")))?;
                (r, Some(d.to_string()))
            }
            None => (rest, None),
        };
        let (dir, tag) = match rest.split_once(':') {
            Some((dir, tag)) => (dir, Some(tag.to_string())),
            None => (rest, None),
        };
        if dir.is_empty() {
            return Err(bad("oci-layout:// needs a directory".into()));
        }
        ContextSpec::OciLayout {
            dir: PathBuf::from(dir),
            tag,
            digest,
        }
    } else if let Some(git) = git_ref(value).map_err(|e| bad(e.to_string()))? {
        ContextSpec::Git(git)
    } else if value.starts_with("http://") || value.starts_with("https://") {
        ContextSpec::Url(value.to_string())
    } else if let Some((scheme, _)) = value.split_once("://") {
        return Err(bad(format!(
            "unsupported context source {scheme}:// (a directory, docker-image://, \
             oci-layout://)"
        )));
    } else if value.is_empty() {
        return Err(bad(
            "expected a directory, docker-image:// or oci-layout://".into(),
        ));
    } else {
        ContextSpec::Dir(PathBuf::from(value))
    };
    Ok((key, spec))
}

/// The git reference `value` is, when it is one and no local path of that name exists (a
/// directory wins, as for the main context).
fn git_ref(value: &str) -> Result<Option<kiln_parser::GitRef>, kiln_parser::GitRefError> {
    if std::fs::symlink_metadata(value).is_ok() {
        return Ok(None);
    }
    kiln_parser::parse_git_ref(value)
}

/// The named contexts made ready for one build.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// For lowering.
    pub lower: Vec<(String, NamedContext)>,
    /// For the solver.
    pub solve: Vec<(String, NamedSource)>,
    /// Images the build holds (loaded from layouts), which `--verify-reproducible` gives
    /// its scratch stores.
    pub held: Vec<ImageRef>,
    /// Downloaded URL contexts, removed when the last clone of this is dropped.
    pub downloads: Vec<std::sync::Arc<tempfile::TempDir>>,
    /// Checked-out git contexts, likewise.
    pub checkouts: Vec<std::sync::Arc<crate::git_context::GitContext>>,
}

/// Makes every context ready: a directory checked, a layout's image loaded into `store`,
/// a git repository checked out (over ssh with the `default` agent of `ssh`).
pub fn prepare(
    store: &Store,
    specs: &[(String, ContextSpec)],
    ssh: &[(String, kiln_solver::SshSource)],
) -> Result<Prepared, BuildError> {
    let mut out = Prepared::default();
    for (name, spec) in specs {
        match spec {
            ContextSpec::Dir(dir) => {
                match std::fs::metadata(dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(BuildError::Request(format!(
                            "build context {name}: {}: not a directory",
                            dir.display()
                        )));
                    }
                    Err(e) => {
                        return Err(BuildError::io(format!(
                            "build context {name}: {}",
                            dir.display()
                        ))(e));
                    }
                }
                out.lower.push((name.clone(), NamedContext::Files));
                out.solve
                    .push((name.clone(), NamedSource::Dir(dir.clone())));
            }
            ContextSpec::Image(reference) => {
                out.lower
                    .push((name.clone(), NamedContext::Image(reference.clone())));
            }
            ContextSpec::OciLayout { dir, tag, digest } => {
                let image = load_layout(store, name, dir, tag.as_deref(), digest.as_deref())?;
                let config = held_config(store, name, &image)?;
                out.lower.push((name.clone(), NamedContext::Held(config)));
                out.solve
                    .push((name.clone(), NamedSource::Image(image.clone())));
                out.held.push(image);
            }
            ContextSpec::Url(url) => {
                let dir = download(store, name, url)?;
                out.lower.push((name.clone(), NamedContext::Files));
                out.solve
                    .push((name.clone(), NamedSource::Fetched(dir.path().to_path_buf())));
                out.downloads.push(std::sync::Arc::new(dir));
            }
            ContextSpec::Git(git) => {
                let checkout = crate::git_context::GitContext::checkout(store, git, ssh)
                    .map_err(|e| BuildError::Request(format!("build context {name}: {e}")))?;
                out.lower.push((name.clone(), NamedContext::Files));
                out.solve
                    .push((name.clone(), NamedSource::Fetched(checkout.dir.clone())));
                out.checkouts.push(std::sync::Arc::new(checkout));
            }
        }
    }
    Ok(out)
}

/// Downloads the file `url` serves into a new directory of the store's scratch space.
fn download(store: &Store, name: &str, url: &str) -> Result<tempfile::TempDir, BuildError> {
    let what = format!("build context {name}: {url}");
    let scratch = store
        .scratch_dir()
        .map_err(BuildError::store(format!("{what}: the scratch space")))?;
    let dir = tempfile::tempdir_in(scratch).map_err(BuildError::io(what.clone()))?;
    let file = kiln_executor::copy::http::download(url, None, None, dir.path())
        .map_err(|e| BuildError::Request(format!("{what}: {e}")))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join(file),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(BuildError::io(what))?;
    Ok(dir)
}

/// Loads the image of layout `dir` that `tag` or `digest` names (else tag `latest`, else
/// its one image) into `store`'s blobs, unnamed.
fn load_layout(
    store: &Store,
    name: &str,
    dir: &std::path::Path,
    tag: Option<&str>,
    digest: Option<&str>,
) -> Result<ImageRef, BuildError> {
    let what = format!("build context {name}: oci-layout {}", dir.display());
    let index_path = dir.join("index.json");
    let file = std::fs::File::open(&index_path).map_err(BuildError::io(format!(
        "{what}: reading {}",
        index_path.display()
    )))?;
    let bytes = kiln_image::limits::read_capped(file, kiln_image::limits::MAX_JSON_SIZE, &what)
        .map_err(|e| BuildError::Request(e.to_string()))?;
    let index = match kiln_image::parse_manifest_or_index(&bytes) {
        Ok(kiln_image::oci::ManifestKind::Index(index)) => index,
        Ok(_) => {
            return Err(BuildError::Request(format!(
                "{what}: index.json is not an index"
            )));
        }
        Err(e) => return Err(BuildError::Request(format!("{what}: index.json: {e}"))),
    };
    let wanted = match (digest, tag) {
        (Some(d), _) => index
            .manifests
            .iter()
            .find(|m| m.digest == d)
            .ok_or_else(|| {
                BuildError::Request(format!("{what}: index.json lists no manifest {d}"))
            })?,
        (None, Some(t)) => find_tag(&index, t).ok_or_else(|| {
            BuildError::Request(format!(
                "{what}: no image tagged {t:?} (tags: {})",
                tags(&index)
            ))
        })?,
        (None, None) => match find_tag(&index, "latest") {
            Some(m) => m,
            None if index.manifests.len() == 1 => &index.manifests[0],
            None => {
                return Err(BuildError::Request(format!(
                    "{what}: {} images and none tagged latest: name one with :TAG or @DIGEST \
                     (tags: {})",
                    index.manifests.len(),
                    tags(&index)
                )));
            }
        },
    };
    let manifest_digest = wanted.digest.clone();
    kiln_image::read_archive(dir, &StoreBlobs(store)).map_err(|source| BuildError::Archive {
        what: what.clone(),
        source,
    })?;
    let manifest_bytes = store
        .read_blob(&manifest_digest)
        .map_err(BuildError::store(format!(
            "{what}: reading {manifest_digest}"
        )))?;
    let manifest = kiln_image::parse_manifest(&manifest_bytes).map_err(|e| {
        BuildError::Request(format!(
            "{what}: {manifest_digest}: {e} (kiln reads one-platform images)"
        ))
    })?;
    Ok(ImageRef {
        index: None,
        config: manifest.config.digest.clone(),
        manifest: manifest_digest,
    })
}

/// The manifest `tag` names: its `org.opencontainers.image.ref.name` (or containerd's
/// name) is `tag`, or a name whose tag is `tag` (`app:1` for `1`).
fn find_tag<'i>(index: &'i kiln_image::Index, tag: &str) -> Option<&'i kiln_image::Descriptor> {
    let names = |m: &'i kiln_image::Descriptor| {
        [
            kiln_image::oci::ANNOTATION_REF_NAME,
            kiln_image::oci::ANNOTATION_CONTAINERD_NAME,
        ]
        .into_iter()
        .filter_map(move |a| m.annotations.get(a))
    };
    let tag_of = |n: &str| {
        let last = n.rfind('/').map_or(0, |i| i + 1);
        n[last..].rsplit_once(':').map(|(_, t)| t.to_string())
    };
    index
        .manifests
        .iter()
        .find(|m| names(m).any(|n| n == tag))
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|m| names(m).any(|n| tag_of(n).as_deref() == Some(tag)))
        })
}

/// The tags of a layout's images, for messages.
fn tags(index: &kiln_image::Index) -> String {
    let tags: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|m| m.annotations.get(kiln_image::oci::ANNOTATION_REF_NAME))
        .map(String::as_str)
        .collect();
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

/// What lowering needs of a held image's config.
fn held_config(store: &Store, name: &str, image: &ImageRef) -> Result<BaseImage, BuildError> {
    let (_, config) =
        kiln_solver::images::read_image(store, &format!("build context {name}"), image)
            .map_err(|e| BuildError::Request(e.to_string()))?;
    Ok(crate::bases::base_image(&config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_their_kind_and_names_are_buildkits() {
        let p = |s: &str| parse(s).unwrap();
        assert_eq!(
            p("src=../dir"),
            ("src".into(), ContextSpec::Dir("../dir".into()))
        );
        assert_eq!(
            p("docker.io/library/alpine:latest=docker-image://busybox:1"),
            ("alpine".into(), ContextSpec::Image("busybox:1".into()))
        );
        assert_eq!(
            p("base=oci-layout:///tmp/l:v1"),
            (
                "base".into(),
                ContextSpec::OciLayout {
                    dir: "/tmp/l".into(),
                    tag: Some("v1".into()),
                    digest: None
                }
            )
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            p(&format!("b=oci-layout://l@{d}")).1,
            ContextSpec::OciLayout {
                dir: "l".into(),
                tag: None,
                digest: Some(d)
            }
        );
        let git = |s: &str| match p(s).1 {
            ContextSpec::Git(g) => (g.remote, g.reference, g.subdir),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            git("g=https://example.com/r.git#main:sub"),
            (
                "https://example.com/r.git".into(),
                "main".into(),
                "sub".into()
            )
        );
        assert_eq!(git("g=git@example.com:r.git").0, "git@example.com:r.git");
        assert_eq!(
            p("f=https://example.com/f.tar.gz").1,
            ContextSpec::Url("https://example.com/f.tar.gz".into())
        );
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(err("src"), "--build-context \"src\": expected NAME=VALUE");
        assert!(err("Src=.").contains("invalid context name \"Src\""));
        assert!(err("a=ftp://x").contains("unsupported context source ftp://"));
        assert!(err("a=docker-image://Bad").contains("lowercase"));
    }
}
