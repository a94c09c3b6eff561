//! The one image lookup every command uses: a name, or the ID of a named image.
//!
//! A name is normalized (`bb` means `bb:latest`, as in docker). Otherwise `sha256:<hex>` or
//! a bare hex prefix of at least 4 characters matches the image IDs (config digests, and
//! the index digest of an image of several platforms) of the named images. A prefix that matches two different images is an error, as docker's
//! "multiple IDs found with provided prefix": taking the first match would act on an
//! image the user did not mean.

use crate::error::StoreError;
use crate::reference::{Reference, normalize_ref};
use crate::refs::ImageRef;
use crate::store::Store;

/// Shortest hex prefix taken as an image ID.
const MIN_ID_PREFIX: usize = 4;

/// An image found by [`Store::find_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundImage {
    /// The name it was found by, or (found by ID) its first name in sorted order.
    pub name: String,
    pub image: ImageRef,
}

/// Why [`Store::find_image`] found nothing.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No name and no ID matched. `wanted` is the normalized name (when `reference` is a
    /// valid name); `similar` the one other tag of that repository, when there is exactly
    /// one (`bb` asked, `bb:1` stored).
    #[error("{}", not_found(reference, wanted.as_deref(), similar.as_deref()))]
    NotFound {
        reference: String,
        wanted: Option<String>,
        similar: Option<String>,
    },
    #[error("{reference}: {count} images have IDs starting with {prefix}")]
    Ambiguous {
        reference: String,
        count: usize,
        prefix: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn not_found(reference: &str, wanted: Option<&str>, similar: Option<&str>) -> String {
    match (wanted, similar) {
        (None, _) => format!("{reference}: no such image"),
        (Some(wanted), Some(only)) => format!("No such image: {wanted} (did you mean {only}?)"),
        (Some(wanted), None) => format!("No such image: {wanted}"),
    }
}

impl Store {
    /// Finds `reference`: a name (normalized), else the ID or a unique ID prefix of a named
    /// image. Names pointing at one image count once.
    pub fn find_image(&self, reference: &str) -> Result<FoundImage, LookupError> {
        let wanted = normalize_ref(reference).ok();
        if let Some(name) = &wanted
            && let Some(image) = self.get_ref(name)?
        {
            return Ok(FoundImage {
                name: name.clone(),
                image,
            });
        }
        let refs = self.list_refs()?;
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if prefix.len() >= MIN_ID_PREFIX && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches: Vec<&(String, ImageRef)> = refs
                .iter()
                .filter(|(_, r)| {
                    // An image of several platforms goes by its index's digest (what its
                    // build printed) as well as by its standing image's config.
                    [Some(&r.config), r.index.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|id| id.trim_start_matches("sha256:").starts_with(prefix))
                })
                .collect();
            // Sorted by name already; one entry per image, under its first name.
            let mut seen = Vec::new();
            matches.retain(|(_, r)| {
                let new = !seen.contains(&r);
                seen.push(r);
                new
            });
            match matches[..] {
                [] => {}
                [(name, image)] => {
                    return Ok(FoundImage {
                        name: name.clone(),
                        image: image.clone(),
                    });
                }
                _ => {
                    return Err(LookupError::Ambiguous {
                        reference: reference.to_string(),
                        count: matches.len(),
                        prefix: prefix.to_string(),
                    });
                }
            }
        }
        let repo = |name: &str| Reference::parse(name).map(|r| r.name).ok();
        let similar = wanted.as_deref().and_then(|wanted| {
            let same_repo: Vec<&String> = refs
                .iter()
                .map(|(name, _)| name)
                .filter(|name| repo(name).is_some() && repo(name) == repo(wanted))
                .collect();
            match same_repo[..] {
                [only] => Some(only.clone()),
                _ => None,
            }
        });
        Err(LookupError::NotFound {
            reference: reference.to_string(),
            wanted,
            similar,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(config_hex: char, manifest_hex: char) -> ImageRef {
        ImageRef {
            index: None,
            config: format!("sha256:{}", config_hex.to_string().repeat(64)),
            manifest: format!("sha256:{}", manifest_hex.to_string().repeat(64)),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn names_are_normalized_and_ids_match_by_unique_prefix() {
        let (_dir, store) = store();
        store.set_ref("a:1", image('a', '1')).unwrap();
        store.set_ref("b", image('b', '2')).unwrap();
        // Two names of one image are one match.
        store.set_ref("c:1", image('b', '2')).unwrap();
        assert_eq!(store.find_image("b").unwrap().name, "b:latest");
        let by_id = store.find_image("bbbb").unwrap();
        assert_eq!(
            (by_id.name.as_str(), by_id.image),
            ("b:latest", image('b', '2'))
        );
        let full = format!("sha256:{}", "a".repeat(64));
        assert_eq!(store.find_image(&full).unwrap().name, "a:1");
        // Too short to be an ID, and no such name.
        assert!(matches!(
            store.find_image("aaa"),
            Err(LookupError::NotFound { .. })
        ));
    }

    #[test]
    fn a_prefix_of_two_images_is_an_error_not_the_first() {
        let (_dir, store) = store();
        store.set_ref("x:1", image('d', '1')).unwrap();
        // Same config, other manifest (another compression): another image to act on.
        store.set_ref("y:1", image('d', '2')).unwrap();
        let err = store.find_image("dddd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dddd: 2 images have IDs starting with dddd"
        );
    }

    #[test]
    fn an_image_of_several_platforms_goes_by_its_index_digest_too() {
        let (_dir, store) = store();
        let mut multi = image('a', '1');
        multi.index = Some(format!("sha256:{}", "9".repeat(64)));
        store.set_ref("multi:1", multi.clone()).unwrap();
        store.set_ref("single:1", image('b', '2')).unwrap();
        assert_eq!(store.find_image("9999").unwrap().image, multi);
        assert_eq!(store.find_image("aaaa").unwrap().image, multi);
        assert!(store.find_image("bbbb").unwrap().image.index.is_none());
    }

    #[test]
    fn not_found_names_the_one_other_tag() {
        let (_dir, store) = store();
        store.set_ref("bb:1", image('e', '1')).unwrap();
        let err = store.find_image("bb").unwrap_err().to_string();
        assert_eq!(err, "No such image: bb:latest (did you mean bb:1?)");
        store.set_ref("bb:2", image('f', '1')).unwrap();
        let err = store.find_image("bb").unwrap_err().to_string();
        assert_eq!(err, "No such image: bb:latest");
        let err = store.find_image("Bad").unwrap_err().to_string();
        assert_eq!(err, "Bad: no such image");
    }
}
