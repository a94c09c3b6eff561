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
        self.resolve_with(reference, self.platform, self.registry)
    }

    /// A stage for another platform (`FROM --platform=$BUILDPLATFORM`) gets, and pulls,
    /// that platform's image.
    fn resolve_for(
        &self,
        reference: &str,
        platform: &kiln_parser::Platform,
    ) -> Result<BaseImage, String> {
        let registry = kiln_registry::RegistryOptions {
            platform: Some(platform.to_string()),
            ..self.registry.clone()
        };
        self.resolve_with(reference, platform, &registry)
    }
}

impl StoreResolver<'_> {
    fn resolve_with(
        &self,
        reference: &str,
        ours: &kiln_parser::Platform,
        registry: &kiln_registry::RegistryOptions,
    ) -> Result<BaseImage, String> {
        let name = kiln_store::normalize_ref(reference).map_err(|e| e.to_string())?;
        let stored = self.store.get_ref(&name).map_err(|e| e.to_string())?;
        // The stored image for this platform: the one named, or its index's child.
        let mut image = match &stored {
            Some(s) if !self.pull => {
                kiln_solver::images::for_platform(self.store, reference, s, ours)
                    .map_err(|e| e.to_string())?
            }
            _ => None,
        };
        // `--check` builds nothing and pulls nothing: what is missing is empty, and a
        // stored image of another platform is taken as is below (the checks report the
        // mismatch, as BuildKit's InvalidBaseImagePlatform).
        if self.offline && image.is_none() && stored.is_none() {
            return Ok(BaseImage::default());
        }
        let pulled_for_another = stored.as_ref().is_some_and(|s| s.index.is_some());
        if image.is_none() && !self.offline && (stored.is_none() || self.pull || pulled_for_another)
        {
            let pulled = kiln_registry::pull_into_store(self.store, reference, registry)
                .map_err(|e| format!("pulling {reference}: {e}"))?;
            // A base pulled for another platform of the same index keeps its name on the
            // image it named (both are in the store now, the index finds each); with
            // `--pull` too, so the platforms of one build leave the name as the first did.
            if let Some(before) = &stored
                && before.index.is_some()
                && before.index == pulled.image.index
            {
                self.store
                    .set_ref(&name, before.clone())
                    .map_err(|e| e.to_string())?;
            }
            image = Some(pulled.image);
        }
        // A stored image of another platform that no registry index stands behind (built
        // or loaded here) is not replaced by a pull: the user decides (below).
        let Some(image) = image.or(stored) else {
            return Err(format!("{reference}: not in the store"));
        };
        let (_, config) = kiln_solver::images::read_image(self.store, reference, &image)
            .map_err(|e| e.to_string())?;
        let theirs = config.platform();
        // An image without a platform in its config (some hand-made ones) is taken as is;
        // the checks (offline) report a mismatch as BuildKit's InvalidBaseImagePlatform.
        if !self.offline && !config.architecture.is_empty() && !theirs.serves(ours) {
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
    let platform = config.platform();
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
