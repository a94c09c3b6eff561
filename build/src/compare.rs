//! `kiln diff A B`: two images opened where they are (the store, an OCI layout, an OCI or
//! docker archive) and compared with the image crate's compare engine
//! (`kiln_image::compare`). The store is opened only when one of them is in it.
//!
//! Two images of several platforms in the store (each with an index) are compared
//! platform by platform ([`Diff::Platforms`]): their images are paired by platform, and a
//! platform only one of them has is a difference. `--platform` compares that platform's
//! image of each instead (an index's child, or a single image that must be for it).
//! `--verify-reproducible` reports its two builds of several platforms the same way.

use crate::BuildError;
use crate::blobs::StoreBlobs;
use crate::index::{Child, platform_list};
use crate::location::open_store;
use kiln_image::compare::{Comparison, ImageLocation, OpenImage, compare, open_location};
use kiln_parser::Platform;
use kiln_store::{ImageRef, LookupError, Store};
use std::path::PathBuf;

/// What `kiln diff` found.
#[derive(Debug)]
pub enum Diff {
    /// Two images compared as one image each.
    Image(Box<Comparison>),
    /// Two images of several platforms, compared platform by platform.
    Platforms {
        /// What the user called A and B.
        names: [String; 2],
        /// Every platform of either, A's in their order, then those only B has.
        platforms: Vec<PlatformDiff>,
    },
}

/// One platform of two images of several platforms.
#[derive(Debug)]
pub struct PlatformDiff {
    pub platform: Platform,
    pub outcome: PlatformOutcome,
}

/// How one platform's images compare.
#[derive(Debug)]
pub enum PlatformOutcome {
    /// Both have an image for it.
    Compared(Box<Comparison>),
    /// Only A (0) or only B (1) has one.
    OnlyIn(usize),
}

impl PlatformDiff {
    pub fn identical(&self) -> bool {
        matches!(&self.outcome, PlatformOutcome::Compared(c) if c.identical)
    }
}

impl Diff {
    /// True when nothing differs (on any platform).
    pub fn identical(&self) -> bool {
        match self {
            Diff::Image(c) => c.identical,
            Diff::Platforms { platforms, .. } => platforms.iter().all(PlatformDiff::identical),
        }
    }

    /// The platforms that differ (none for [`Diff::Image`]).
    pub fn differing_platforms(&self) -> Vec<&Platform> {
        match self {
            Diff::Image(_) => Vec::new(),
            Diff::Platforms { platforms, .. } => platforms
                .iter()
                .filter(|p| !p.identical())
                .map(|p| &p.platform)
                .collect(),
        }
    }

    /// One line per difference; for several platforms, grouped under one heading line
    /// per platform (`platform linux/arm64: differs`).
    pub fn render_text(&self) -> String {
        let (names, platforms) = match self {
            Diff::Image(c) => return c.render_text(),
            Diff::Platforms { names, platforms } => (names, platforms),
        };
        let mut out = String::new();
        for p in platforms {
            match &p.outcome {
                PlatformOutcome::Compared(c) if c.identical => {
                    out.push_str(&format!("platform {}: identical\n", p.platform));
                }
                PlatformOutcome::Compared(c) => {
                    out.push_str(&format!("platform {}: differs\n", p.platform));
                    out.push_str(&c.render_text());
                }
                PlatformOutcome::OnlyIn(side) => {
                    out.push_str(&format!(
                        "platform {}: only in {}\n",
                        p.platform, names[*side]
                    ));
                }
            }
        }
        out
    }

    /// The JSON report: [`Comparison`]'s for one image; for several platforms
    /// `{"identical", "a", "b", "platforms": [{"platform", "identical", "comparison" |
    /// "only_in": "a" | "b"}]}`.
    pub fn render_json(&self) -> String {
        let (names, platforms) = match self {
            Diff::Image(c) => return c.render_json(),
            Diff::Platforms { names, platforms } => (names, platforms),
        };
        let platforms: Vec<serde_json::Value> = platforms
            .iter()
            .map(|p| {
                let mut doc = serde_json::json!({
                    "platform": p.platform.to_string(),
                    "identical": p.identical(),
                });
                match &p.outcome {
                    PlatformOutcome::Compared(c) => doc["comparison"] = serde_json::json!(c),
                    PlatformOutcome::OnlyIn(side) => doc["only_in"] = ["a", "b"][*side].into(),
                }
                doc
            })
            .collect();
        let doc = serde_json::json!({
            "identical": self.identical(),
            "a": names[0],
            "b": names[1],
            "platforms": platforms,
        });
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// Compares the images `a` and `b` name; `root` is the `--root` flag; `platform` is
/// `--platform`. An OCI layout or archive is loaded into a scratch store first, so an
/// index in one is compared platform by platform as a stored one is.
pub fn compare_images(
    a: &str,
    b: &str,
    root: Option<PathBuf>,
    platform: Option<&str>,
) -> Result<Diff, BuildError> {
    let wanted = platform
        .map(|p| {
            Platform::parse_normalized(p)
                .map_err(|e| BuildError::Request(format!("--platform {p}: {e}")))
        })
        .transpose()?;
    let names = [a.to_string(), b.to_string()];
    let a = ImageLocation::parse(a);
    let b = ImageLocation::parse(b);
    let store = match (&a, &b) {
        (ImageLocation::Store(_), _) | (_, ImageLocation::Store(_)) => Some(open_store(root)?),
        _ => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("kiln-diff-")
        .tempdir()
        .map_err(BuildError::io(
            "making a scratch directory for archive blobs",
        ))?;
    let scratch_store = |sub: &str| -> Result<Store, BuildError> {
        Store::open(&scratch.path().join(sub)).map_err(BuildError::store(format!(
            "opening a scratch store for {sub}"
        )))
    };
    let loaded = [scratch_store("a")?, scratch_store("b")?];
    // Each side as a stored image: a store reference, or a layout or archive of one image
    // (or one index) loaded into its scratch store; `None` for what stays an archive.
    let stored =
        |loc: &ImageLocation, n: usize| -> Result<Option<(&Store, ImageRef)>, BuildError> {
            match (loc, &store) {
                (ImageLocation::Store(reference), Some(store)) => {
                    Ok(Some((store, find_stored(store, reference)?)))
                }
                (ImageLocation::OciLayout(path) | ImageLocation::OciArchive(path), _) => {
                    // What does not load as one image is read as before, which says why.
                    match crate::load::load(&loaded[n], path).as_deref() {
                        Ok([one]) => Ok(Some((&loaded[n], one.image.clone()))),
                        _ => Ok(None),
                    }
                }
                _ => Ok(None),
            }
        };
    let (stored_a, stored_b) = (stored(&a, 0)?, stored(&b, 1)?);
    // Images of several platforms are indexes their store holds whole (a pulled base's
    // index is its registry's, mostly of images never pulled).
    let whole = |side: &Option<(&Store, ImageRef)>| -> Option<String> {
        let (store, image) = side.as_ref()?;
        let index = image.index.as_ref()?;
        (store.whole_image(image) == *index).then(|| index.clone())
    };
    if wanted.is_none()
        && let (Some(ia), Some(ib)) = (whole(&stored_a), whole(&stored_b))
        && let (Some((sa, _)), Some((sb, _))) = (&stored_a, &stored_b)
    {
        let children_a = crate::index::children(sa, &ia, &names[0])?;
        let children_b = crate::index::children(sb, &ib, &names[1])?;
        let platforms = compare_platforms(
            [sa, sb],
            [&children_a, &children_b],
            [names[0].as_str(), names[1].as_str()],
        )?;
        return Ok(Diff::Platforms { names, platforms });
    }
    let wanted = wanted.as_ref();
    let image_a = open_side(
        &a,
        &stored_a,
        &names[0],
        &scratch.path().join("a-blobs"),
        wanted,
    )?;
    let image_b = open_side(
        &b,
        &stored_b,
        &names[1],
        &scratch.path().join("b-blobs"),
        wanted,
    )?;
    let comparison = compare(&image_a, &image_b).map_err(BuildError::Compare)?;
    Ok(Diff::Image(Box::new(comparison)))
}

/// One side of a comparison opened: the stored image (for `wanted`, when given) or the
/// archive at `loc` read with its blobs under `blobs`.
fn open_side<'s>(
    loc: &ImageLocation,
    side: &Option<(&'s Store, ImageRef)>,
    name: &str,
    blobs: &std::path::Path,
    wanted: Option<&Platform>,
) -> Result<OpenImage<'s>, BuildError> {
    let opened = match side {
        Some((store, image)) => {
            let manifest = match wanted {
                Some(w) => select(store, image, name, w)?,
                None => image.manifest.clone(),
            };
            open_manifest(store, name, &manifest)?
        }
        None => open_location(loc, blobs).map_err(BuildError::Compare)?,
    };
    if let Some(w) = wanted {
        let has = opened.config.platform();
        if !has.serves(w) {
            return Err(BuildError::Request(format!(
                "{name} is an image for {has}, not {w}"
            )));
        }
    }
    Ok(opened)
}

/// Pairs the images of `children` (A's, B's) by platform and compares each pair: A's
/// platforms in their order, then those only B has. `names` are what A and B are called.
pub(crate) fn compare_platforms(
    stores: [&Store; 2],
    children: [&[Child]; 2],
    names: [&str; 2],
) -> Result<Vec<PlatformDiff>, BuildError> {
    let mut out = Vec::new();
    for a in children[0] {
        let outcome = match children[1].iter().find(|b| b.platform == a.platform) {
            Some(b) => {
                let opened_a = open_manifest(stores[0], names[0], &a.manifest)?;
                let opened_b = open_manifest(stores[1], names[1], &b.manifest)?;
                let comparison = compare(&opened_a, &opened_b).map_err(BuildError::Compare)?;
                PlatformOutcome::Compared(Box::new(comparison))
            }
            None => PlatformOutcome::OnlyIn(0),
        };
        out.push(PlatformDiff {
            platform: a.platform.clone(),
            outcome,
        });
    }
    for b in children[1] {
        if !children[0].iter().any(|a| a.platform == b.platform) {
            out.push(PlatformDiff {
                platform: b.platform.clone(),
                outcome: PlatformOutcome::OnlyIn(1),
            });
        }
    }
    Ok(out)
}

/// The manifest of `image`'s image for `wanted`: its index's child for it (one the store
/// holds), or its own manifest when it has no index (whose config [`compare_images`] then
/// checks).
fn select(
    store: &Store,
    image: &ImageRef,
    name: &str,
    wanted: &Platform,
) -> Result<String, BuildError> {
    let Some(index) = &image.index else {
        return Ok(image.manifest.clone());
    };
    let mut children = crate::index::children(store, index, name)?;
    children.retain(|c| store.has_blob(&c.manifest));
    match children.iter().find(|c| c.platform.serves(wanted)) {
        Some(c) => Ok(c.manifest.clone()),
        None => Err(BuildError::Request(format!(
            "{name} has no image for {wanted}; its platforms are {}",
            platform_list(children.iter().map(|c| &c.platform))
        ))),
    }
}

/// Finds a store image for comparison.
fn find_stored(store: &Store, reference: &str) -> Result<ImageRef, BuildError> {
    match store.find_image(reference) {
        Ok(found) => Ok(found.image),
        Err(LookupError::NotFound { .. }) => Err(BuildError::Request(format!(
            "{reference}: no such image in the store (other sources: oci:DIR, \
             oci-archive:FILE, docker-archive:FILE)"
        ))),
        Err(e) => Err(BuildError::Lookup(e)),
    }
}

/// Opens the stored image of the manifest `digest` for comparison, called `name`.
pub(crate) fn open_manifest<'s>(
    store: &'s Store,
    name: &str,
    digest: &str,
) -> Result<OpenImage<'s>, BuildError> {
    OpenImage::from_blobs(name, digest, Box::new(StoreBlobs(store))).map_err(BuildError::Compare)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::compare::ImageIds;

    fn comparison(identical: bool) -> Box<Comparison> {
        let ids = |name: &str| ImageIds {
            name: name.into(),
            manifest_digest: "sha256:m".into(),
            config_digest: "sha256:c".into(),
        };
        let mut c = Comparison {
            identical,
            a: ids("a"),
            b: ids("b"),
            files: Vec::new(),
            config: Vec::new(),
            history: Vec::new(),
            same_files_different_layering: false,
        };
        if !identical {
            c.same_files_different_layering = true;
        }
        Box::new(c)
    }

    fn platform(p: &str, outcome: PlatformOutcome) -> PlatformDiff {
        PlatformDiff {
            platform: Platform::parse(p).unwrap(),
            outcome,
        }
    }

    #[test]
    fn platforms_are_reported_each_under_its_heading() {
        let diff = Diff::Platforms {
            names: ["x:1".into(), "x:2".into()],
            platforms: vec![
                platform("linux/amd64", PlatformOutcome::Compared(comparison(true))),
                platform("linux/arm64", PlatformOutcome::Compared(comparison(false))),
                platform("linux/s390x", PlatformOutcome::OnlyIn(1)),
            ],
        };
        assert!(!diff.identical());
        assert_eq!(
            diff.differing_platforms()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["linux/arm64", "linux/s390x"]
        );
        assert_eq!(
            diff.render_text(),
            "platform linux/amd64: identical\n\
             platform linux/arm64: differs\n\
             same files, different layering\n\
             platform linux/s390x: only in x:2\n"
        );
        let json: serde_json::Value = serde_json::from_str(&diff.render_json()).unwrap();
        assert_eq!(json["identical"], false);
        assert_eq!(json["platforms"][0]["identical"], true);
        assert_eq!(
            json["platforms"][1]["comparison"]["same_files_different_layering"],
            true
        );
        assert_eq!(json["platforms"][2]["only_in"], "b");
        assert!(json["platforms"][2].get("comparison").is_none());
    }

    #[test]
    fn platforms_all_alike_are_identical() {
        let diff = Diff::Platforms {
            names: ["x:1".into(), "x:2".into()],
            platforms: vec![platform(
                "linux/amd64",
                PlatformOutcome::Compared(comparison(true)),
            )],
        };
        assert!(diff.identical());
        assert!(diff.differing_platforms().is_empty());
    }
}
