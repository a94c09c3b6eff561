//! Between [`ImageState`] and the OCI image config and manifest ([`kiln_image::oci`]).
//!
//! Output follows what BuildKit writes: Docker's field names, empty fields omitted, history
//! comments, base-image history kept with its own times.

use crate::image_state::{HistoryEntry, ImageState, RuntimeConfig};
use crate::result::StageResult;
use kiln_image::oci::{self, ContainerConfig, Descriptor, Empty, History, ImageConfig, Manifest};
use kiln_parser::{Healthcheck, Platform};
use std::collections::BTreeMap;

/// Reads the parts of an image config (ours or another tool's) that a stage inherits.
pub fn state_from_config(config: &ImageConfig) -> ImageState {
    let c = &config.config;
    let env = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let keys = |m: &Option<BTreeMap<String, Empty>>| -> Vec<String> {
        m.as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let healthcheck = c.healthcheck.as_ref().map(|h| Healthcheck {
        test: h.test.clone(),
        interval: h.interval.max(0) as u64,
        timeout: h.timeout.max(0) as u64,
        start_period: h.start_period.max(0) as u64,
        start_interval: h.start_interval.max(0) as u64,
        retries: h.retries.clamp(0, i64::from(u32::MAX)) as u32,
    });
    let history = config
        .history
        .iter()
        .map(|h| HistoryEntry {
            created_by: h.created_by.clone().unwrap_or_default(),
            comment: h.comment.clone(),
            empty_layer: h.empty_layer,
            created: h.created.clone(),
            author: h.author.clone(),
        })
        .collect();
    ImageState::from_parts(
        RuntimeConfig {
            user: c.user.clone().unwrap_or_default(),
            exposed_ports: keys(&c.exposed_ports),
            env,
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            volumes: keys(&c.volumes),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            labels: c.labels.clone().unwrap_or_default().into_iter().collect(),
            stop_signal: c.stop_signal.clone(),
            healthcheck,
            shell: c.shell.clone(),
            on_build: c.on_build.clone().unwrap_or_default(),
            args_escaped: c.args_escaped.unwrap_or(false),
        },
        config.author.clone(),
        history,
    )
}

/// The image config for a finished stage. `created` is the RFC 3339 build time.
pub fn image_config(
    result: &StageResult,
    platform: &Platform,
    created: &str,
    extra_labels: &[(String, String)],
) -> ImageConfig {
    let c = &result.state.config;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let set = |keys: &[String]| -> Option<BTreeMap<String, Empty>> {
        (!keys.is_empty()).then(|| keys.iter().map(|k| (k.clone(), Empty {})).collect())
    };
    let mut labels: BTreeMap<String, String> = c.labels.iter().cloned().collect();
    labels.extend(extra_labels.iter().cloned());
    let container = ContainerConfig {
        user: non_empty(&c.user),
        exposed_ports: set(&c.exposed_ports),
        env: (!c.env.is_empty()).then(|| c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        volumes: set(&c.volumes),
        // BuildKit always records a working directory, "/" when none was set.
        working_dir: Some(if c.working_dir.is_empty() {
            "/".to_string()
        } else {
            c.working_dir.clone()
        }),
        labels: (!labels.is_empty()).then_some(labels),
        stop_signal: c.stop_signal.clone(),
        healthcheck: c.healthcheck.as_ref().map(|h| oci::Healthcheck {
            test: h.test.clone(),
            interval: h.interval as i64,
            timeout: h.timeout as i64,
            start_period: h.start_period as i64,
            start_interval: h.start_interval as i64,
            retries: i64::from(h.retries),
        }),
        shell: c.shell.clone(),
        on_build: (!c.on_build.is_empty()).then(|| c.on_build.clone()),
        args_escaped: c.args_escaped.then_some(true),
    };
    let history = result
        .state
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| History {
            // Entries inherited from a base image keep their own times.
            created: match (&h.created, i < result.base_history) {
                (Some(t), true) => Some(t.clone()),
                _ => Some(created.to_string()),
            },
            created_by: Some(h.created_by.clone()),
            author: h.author.clone(),
            comment: h.comment.clone(),
            empty_layer: h.empty_layer,
        })
        .collect();
    ImageConfig {
        created: Some(created.to_string()),
        author: result.state.author.clone(),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: container,
        rootfs: oci::RootFs {
            kind: "layers".into(),
            diff_ids: result.layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history,
    }
}

/// The OCI manifest for `result` with its config blob described by (`digest`, `size`).
pub fn manifest(result: &StageResult, config_digest: &str, config_size: u64) -> Manifest {
    Manifest::new(
        Descriptor::new(oci::MEDIA_TYPE_CONFIG, config_digest, config_size),
        result
            .layers
            .iter()
            .map(|l| Descriptor::new(&l.media_type, &l.digest, l.size))
            .collect(),
    )
}
