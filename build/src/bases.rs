//! Base images while lowering: looked up in the store by name, a missing one (or every
//! one, with `--pull`) pulled from its registry first, so the solver finds it there. The
//! images used are recorded, so `--verify-reproducible` can give its scratch stores the
//! very same bases. `kiln build --check` reads the store only, pulling nothing.

use kiln_parser::{BaseImage, BaseResolver};
use kiln_store::{ImageRef, Store};
use std::sync::Mutex;

/// A [`BaseResolver`] over a store.
pub struct StoreResolver<'a> {
    store: &'a Store,
    pull: bool,
    /// Never pull: an image missing from the store resolves as an empty config
    /// (`kiln build --check`, which builds nothing).
    offline: bool,
    registry: &'a kiln_registry::RegistryOptions,
    /// What the build is for: a stored base of another platform is refused.
    platform: &'a kiln_parser::Platform,
    /// Every image resolved, by its normalized name.
    used: Mutex<Vec<(String, ImageRef)>>,
}

impl<'a> StoreResolver<'a> {
    pub fn new(
        store: &'a Store,
        pull: bool,
        registry: &'a kiln_registry::RegistryOptions,
        platform: &'a kiln_parser::Platform,
    ) -> StoreResolver<'a> {
        StoreResolver {
            store,
            pull,
            offline: false,
            registry,
            platform,
            used: Mutex::default(),
        }
    }

    /// A resolver that only reads the store: what is missing is an empty image.
    pub fn offline(
        store: &'a Store,
        registry: &'a kiln_registry::RegistryOptions,
        platform: &'a kiln_parser::Platform,
    ) -> StoreResolver<'a> {
        StoreResolver {
            offline: true,
            ..StoreResolver::new(store, false, registry, platform)
        }
    }

    /// The images resolved so far, by normalized name.
    pub fn used(&self) -> Vec<(String, ImageRef)> {
        self.used.lock().map(|u| u.clone()).unwrap_or_default()
    }
}

impl BaseResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str) -> Result<BaseImage, String> {
        let name = kiln_store::normalize_ref(reference).map_err(|e| e.to_string())?;
        let mut found = self.store.get_ref(&name).map_err(|e| e.to_string())?;
        if found.is_none() && self.offline {
            return Ok(BaseImage::default());
        }
        if found.is_none() || self.pull {
            let pulled = kiln_registry::pull_into_store(self.store, reference, self.registry)
                .map_err(|e| format!("pulling {reference}: {e}"))?;
            found = Some(pulled.image);
        }
        let Some(image) = found else {
            return Err(format!("{reference}: not in the store"));
        };
        let (_, config) = kiln_solver::images::read_image(self.store, reference, &image)
            .map_err(|e| e.to_string())?;
        let theirs = kiln_parser::Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        };
        // An image without a platform in its config (some hand-made ones) is taken as is;
        // the checks (offline) report a mismatch as BuildKit's InvalidBaseImagePlatform.
        let ours = self.platform;
        let arm64_v8 = |p: &kiln_parser::Platform| {
            p.architecture == "arm64" && p.variant.as_deref().is_none_or(|v| v == "v8")
        };
        let same = theirs.os == ours.os
            && theirs.architecture == ours.architecture
            && (theirs.variant == ours.variant
                || arm64_v8(&theirs) && arm64_v8(ours)
                || ours.variant.is_none());
        if !self.offline && !config.architecture.is_empty() && !same {
            return Err(format!(
                "{reference}: the stored image is for {theirs}, the build for {ours}; \
                 `kiln pull --platform {ours} {reference}` fetches the other one"
            ));
        }
        if let Ok(mut used) = self.used.lock() {
            used.push((name, image));
        }
        Ok(base_image(&config))
    }
}

/// What lowering needs of an image's config.
pub(crate) fn base_image(config: &kiln_image::ImageConfig) -> BaseImage {
    let platform = kiln_parser::Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
    };
    let state = kiln_solver::oci_config::state_from_config(config);
    BaseImage {
        env: state.config.env,
        working_dir: state.config.working_dir,
        user: state.config.user,
        shell: state.config.shell.unwrap_or_default(),
        on_build: state.config.on_build,
        platform: Some(platform),
    }
}
