//! Between [`ImageState`] and the OCI image config and manifest JSON.
//!
//! Output follows what BuildKit writes (Docker's field names, empty fields omitted, history
//! comments), built from ordered values and serialized canonically so two builds of the same
//! inputs give the same bytes.

use crate::config::{HistoryEntry, ImageState, RuntimeConfig};
use crate::key::canonical_json;
use crate::stage::StageResult;
use kiln_parser::{Healthcheck, Platform};
use serde_json::{Map, Value, json};

/// OCI media types written by kiln.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Reads the parts of an image config (ours or another tool's) that a stage inherits.
pub fn state_from_config(config: &Value) -> ImageState {
    let c = &config["config"];
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let env = strings(&c["Env"])
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let labels = c["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let healthcheck = c["Healthcheck"].as_object().map(|h| Healthcheck {
        test: strings(&h["Test"]).unwrap_or_default(),
        interval: h["Interval"].as_u64().unwrap_or(0),
        timeout: h["Timeout"].as_u64().unwrap_or(0),
        start_period: h["StartPeriod"].as_u64().unwrap_or(0),
        start_interval: h["StartInterval"].as_u64().unwrap_or(0),
        retries: h["Retries"].as_u64().unwrap_or(0) as u32,
    });
    let history = config["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| HistoryEntry {
                    created_by: h["created_by"].as_str().unwrap_or_default().to_string(),
                    comment: h["comment"].as_str().map(str::to_string),
                    empty_layer: h["empty_layer"].as_bool().unwrap_or(false),
                    created: h["created"].as_str().map(str::to_string),
                    author: h["author"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default();
    ImageState {
        config: RuntimeConfig {
            user: c["User"].as_str().unwrap_or_default().to_string(),
            exposed_ports: keys(&c["ExposedPorts"]),
            env,
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            volumes: keys(&c["Volumes"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            labels,
            stop_signal: c["StopSignal"].as_str().map(str::to_string),
            healthcheck,
            shell: strings(&c["Shell"]),
            on_build: strings(&c["OnBuild"]).unwrap_or_default(),
            args_escaped: c["ArgsEscaped"].as_bool().unwrap_or(false),
        },
        author: config["author"].as_str().map(str::to_string),
        history,
        ..ImageState::default()
    }
}

/// The image config JSON for a finished stage. `created` is the RFC 3339 build time.
pub fn config_json(
    result: &StageResult,
    platform: &Platform,
    created: &str,
    extra_labels: &[(String, String)],
) -> Value {
    let c = &result.state.config;
    let mut rc = Map::new();
    if !c.user.is_empty() {
        rc.insert("User".into(), json!(c.user));
    }
    if !c.exposed_ports.is_empty() {
        rc.insert("ExposedPorts".into(), empty_objects(&c.exposed_ports));
    }
    if !c.env.is_empty() {
        let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rc.insert("Env".into(), json!(env));
    }
    if let Some(ep) = &c.entrypoint {
        rc.insert("Entrypoint".into(), json!(ep));
    }
    if let Some(cmd) = &c.cmd {
        rc.insert("Cmd".into(), json!(cmd));
    }
    if !c.volumes.is_empty() {
        rc.insert("Volumes".into(), empty_objects(&c.volumes));
    }
    if !c.working_dir.is_empty() {
        rc.insert("WorkingDir".into(), json!(c.working_dir));
    }
    let mut labels = c.labels.clone();
    for (k, v) in extra_labels {
        match labels.iter_mut().find(|(lk, _)| lk == k) {
            Some(pair) => pair.1 = v.clone(),
            None => labels.push((k.clone(), v.clone())),
        }
    }
    if !labels.is_empty() {
        let map: Map<String, Value> = labels.into_iter().map(|(k, v)| (k, json!(v))).collect();
        rc.insert("Labels".into(), Value::Object(map));
    }
    if let Some(sig) = &c.stop_signal {
        rc.insert("StopSignal".into(), json!(sig));
    }
    if let Some(h) = &c.healthcheck {
        let mut hc = Map::new();
        hc.insert("Test".into(), json!(h.test));
        for (name, v) in [
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
            ("StartInterval", h.start_interval),
        ] {
            if v != 0 {
                hc.insert(name.into(), json!(v));
            }
        }
        if h.retries != 0 {
            hc.insert("Retries".into(), json!(h.retries));
        }
        rc.insert("Healthcheck".into(), Value::Object(hc));
    }
    if let Some(shell) = &c.shell {
        rc.insert("Shell".into(), json!(shell));
    }
    if !c.on_build.is_empty() {
        rc.insert("OnBuild".into(), json!(c.on_build));
    }
    if c.args_escaped {
        rc.insert("ArgsEscaped".into(), json!(true));
    }

    let history: Vec<Value> = result
        .state
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut e = Map::new();
            // Entries inherited from a base image keep their own times.
            let time = match (&h.created, i < result.base_history) {
                (Some(t), true) => t.clone(),
                _ => created.to_string(),
            };
            e.insert("created".into(), json!(time));
            e.insert("created_by".into(), json!(h.created_by));
            if let Some(comment) = &h.comment {
                e.insert("comment".into(), json!(comment));
            }
            if let Some(author) = &h.author {
                e.insert("author".into(), json!(author));
            }
            if h.empty_layer {
                e.insert("empty_layer".into(), json!(true));
            }
            Value::Object(e)
        })
        .collect();

    let mut root = Map::new();
    root.insert("architecture".into(), json!(platform.architecture));
    root.insert("os".into(), json!(platform.os));
    if let Some(variant) = &platform.variant {
        root.insert("variant".into(), json!(variant));
    }
    root.insert("created".into(), json!(created));
    if let Some(author) = &result.state.author {
        root.insert("author".into(), json!(author));
    }
    root.insert("config".into(), Value::Object(rc));
    let diff_ids: Vec<&str> = result.layers.iter().map(|l| l.diff_id.as_str()).collect();
    root.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    root.insert("history".into(), Value::Array(history));
    Value::Object(root)
}

/// The OCI manifest for `result` with its config blob described by (`digest`, `size`).
pub fn manifest_json(result: &StageResult, config_digest: &str, config_size: u64) -> Value {
    let layers: Vec<Value> = result
        .layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    })
}

/// Canonical bytes of a config or manifest.
pub fn to_bytes(value: &Value) -> Vec<u8> {
    canonical_json(value)
}

fn empty_objects(keys: &[String]) -> Value {
    Value::Object(keys.iter().map(|k| (k.clone(), json!({}))).collect())
}

/// RFC 3339 UTC (`1970-01-01T00:00:00Z`) for seconds since the Unix epoch.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_028_800), "2025-11-25T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
