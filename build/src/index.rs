//! The OCI image index of a build for several platforms: one entry per platform's
//! manifest, in the order `--platform` listed them, each with its platform, written as
//! canonical JSON into the store (so two builds of the same images give one index digest).
//!
//! The image that stands for the whole (its manifest and config named beside the index in
//! the store's refs, [`kiln_store::ImageRef`]) is the build machine's platform's when it
//! was built, else the first platform's: what `kiln run`, `inspect` or a docker archive
//! take from an index.

use crate::{BuildError, BuiltImage};
use kiln_image::oci::{self, Descriptor, Index};
use kiln_parser::Platform;
use kiln_store::Store;

/// One platform's image in a stored index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub platform: Platform,
    /// `sha256:<hex>` of its manifest.
    pub manifest: String,
}

/// The images of the stored index `digest` (of the image called `name` in errors), in
/// its order; an entry naming no platform (kiln writes none) is not one of them.
pub fn children(store: &Store, digest: &str, name: &str) -> Result<Vec<Child>, BuildError> {
    let bytes = store
        .read_blob(digest)
        .map_err(BuildError::store(format!("reading the index of {name}")))?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| BuildError::Request(format!("{name}: its index cannot be read: {e}")))?;
    Ok(index
        .manifests
        .into_iter()
        .filter_map(|d| {
            Some(Child {
                platform: d.platform?.to_platform(),
                manifest: d.digest,
            })
        })
        .collect())
}

/// `platforms` as a list for messages: `linux/amd64, linux/arm64`.
pub fn platform_list<'a>(platforms: impl IntoIterator<Item = &'a Platform>) -> String {
    let names: Vec<String> = platforms.into_iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// Writes the index over `built` (one image per platform, at least two) into `store`; the
/// result is the standing image with the index's digest and every platform's cache keys.
pub(crate) fn store_index(
    store: &Store,
    built: Vec<(Platform, BuiltImage)>,
) -> Result<BuiltImage, BuildError> {
    let mut manifests = Vec::with_capacity(built.len());
    for (platform, image) in &built {
        manifests.push(entry(store, platform, &image.manifest_digest)?);
    }
    let bytes = oci::canonical_json(&Index::new(manifests));
    let blob = store
        .put_blob_bytes(&bytes)
        .map_err(BuildError::store("writing the image index"))?;
    let standing = standing(&built);
    let mut image_keys = Vec::new();
    let mut all_keys = Vec::new();
    for (_, image) in &built {
        image_keys.extend(image.image_keys.iter().cloned());
        all_keys.extend(image.all_keys.iter().cloned());
    }
    for keys in [&mut image_keys, &mut all_keys] {
        keys.sort();
        keys.dedup();
    }
    let mut image = built
        .into_iter()
        .nth(standing)
        .map(|(_, image)| image)
        .ok_or_else(|| BuildError::Request("a build of no platform".into()))?;
    image.index = Some(blob.digest);
    image.image_keys = image_keys;
    image.all_keys = all_keys;
    Ok(image)
}

/// Which of `built` stands for the whole: the build machine's platform, else the first.
fn standing(built: &[(Platform, BuiltImage)]) -> usize {
    let host = kiln_parser::lower::host_platform();
    built.iter().position(|(p, _)| *p == host).unwrap_or(0)
}

/// The media type a stored manifest or index names, an OCI manifest's when it names none
/// (as Docker's schema 2 lets it).
pub(crate) fn media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|m| m["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| oci::MEDIA_TYPE_MANIFEST.to_string())
}

/// The index entry of the stored manifest `digest`, built for `platform`.
fn entry(store: &Store, platform: &Platform, digest: &str) -> Result<Descriptor, BuildError> {
    let bytes = store
        .read_blob(digest)
        .map_err(BuildError::store(format!("reading the manifest {digest}")))?;
    let mut descriptor = Descriptor::new(&media_type(&bytes), digest, bytes.len() as u64);
    descriptor.platform = Some(oci::Platform {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        os_version: None,
    });
    Ok(descriptor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(store: &Store, arch: &str) -> (Platform, BuiltImage) {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#,
            oci::MEDIA_TYPE_MANIFEST,
            arch.len().to_string().repeat(64)
        );
        let blob = store.put_blob_bytes(manifest.as_bytes()).unwrap();
        let platform = Platform::parse(&format!("linux/{arch}")).unwrap();
        let image = BuiltImage {
            manifest_digest: blob.digest,
            config_digest: format!("sha256:{}", "c".repeat(64)),
            layers: Vec::new(),
            image_keys: vec![format!("key-{arch}")],
            all_keys: vec![format!("key-{arch}"), "shared".into()],
            index: None,
        };
        (platform, image)
    }

    #[test]
    fn the_index_lists_each_platform_in_order_and_is_the_same_bytes_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let make = || {
            let a = built(&store, "arm64");
            let b = built(&store, "s390x");
            store_index(&store, vec![a, b]).unwrap()
        };
        let image = make();
        let index = image.index.clone().unwrap();
        assert_eq!(make().index.unwrap(), index);
        let json: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&index).unwrap()).unwrap();
        assert_eq!(json["mediaType"], oci::MEDIA_TYPE_INDEX);
        let archs: Vec<&str> = json["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(archs, ["arm64", "s390x"]);
        assert_eq!(json["manifests"][0]["platform"]["os"], "linux");
        // Neither is this machine's platform (amd64 in CI): the first stands for both.
        assert_eq!(
            json["manifests"][0]["digest"],
            image.manifest_digest.as_str()
        );
        assert_eq!(image.all_keys, ["key-arm64", "key-s390x", "shared"]);
        assert_eq!(image.image_keys, ["key-arm64", "key-s390x"]);
    }

    #[test]
    fn the_build_machines_platform_stands_for_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let host = kiln_parser::lower::host_platform();
        let (_, mut native) = built(&store, "s390x");
        native.config_digest = format!("sha256:{}", "d".repeat(64));
        let image =
            store_index(&store, vec![built(&store, "arm64"), (host, native.clone())]).unwrap();
        assert_eq!(image.manifest_digest, native.manifest_digest);
        assert_eq!(image.config_digest, native.config_digest);
        assert_eq!(image.id(), image.index.as_deref().unwrap());
    }
}
