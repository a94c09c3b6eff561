//! The image state a stage accumulates as its steps run (runtime config and history;
//! `crate::oci_config` turns it into the OCI image config).
//!
//! Metadata instructions (ENV, LABEL, CMD, ...) only change this; layer steps add a diff_id.
//! Every step appends a history entry the way BuildKit does (`empty_layer` for metadata).
//! Kept as plain ordered values so the final JSON is the same on every machine.

use kiln_parser::{Healthcheck, Op, Step};

/// The runtime part of an image config (OCI `config`), in the order values were set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    pub user: String,
    pub exposed_ports: Vec<String>,
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: Vec<String>,
    pub working_dir: String,
    pub labels: Vec<(String, String)>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub shell: Option<Vec<String>>,
    pub on_build: Vec<String>,
    pub args_escaped: bool,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub created_by: String,
    pub comment: Option<String>,
    pub empty_layer: bool,
    /// RFC 3339 time from a base image; `None` means "the build's timestamp".
    pub created: Option<String>,
    pub author: Option<String>,
}

/// Config and history of a stage in progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageState {
    pub config: RuntimeConfig,
    pub author: Option<String>,
    pub history: Vec<HistoryEntry>,
    /// Set when the stage itself ran CMD, so a later ENTRYPOINT keeps it.
    cmd_set_here: bool,
}

/// The PATH BuildKit injects when a stage has none (non-Windows).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ImageState {
    /// A state read from an image's config.
    pub fn from_parts(
        config: RuntimeConfig,
        author: Option<String>,
        history: Vec<HistoryEntry>,
    ) -> ImageState {
        ImageState {
            config,
            author,
            history,
            cmd_set_here: false,
        }
    }

    /// The state a stage starts from when built on `base` (an image or another stage).
    /// ONBUILD triggers are consumed by the child, so they are not inherited.
    pub fn inherit(base: &ImageState) -> ImageState {
        let mut state = base.clone();
        state.config.on_build.clear();
        state.cmd_set_here = false;
        state.ensure_path();
        state
    }

    /// A scratch stage: empty config with the default PATH.
    pub fn scratch() -> ImageState {
        let mut state = ImageState::default();
        state.ensure_path();
        state
    }

    fn ensure_path(&mut self) {
        // Appended after the base's variables, as BuildKit does.
        if !self.config.env.iter().any(|(k, _)| k == "PATH") {
            self.config
                .env
                .push(("PATH".to_string(), DEFAULT_PATH.to_string()));
        }
    }

    /// Applies what `step` does to the config and records its history entry.
    /// `empty_layer` is false for steps that committed a layer.
    pub fn apply(&mut self, step: &Step) {
        let c = &mut self.config;
        match &step.op {
            Op::Env(pairs) => {
                for (k, v) in pairs {
                    set_pair(&mut c.env, k, v);
                }
            }
            Op::Label(pairs) => {
                for (k, v) in pairs {
                    set_pair(&mut c.labels, k, v);
                }
            }
            Op::Expose(ports) => {
                for p in ports {
                    if !c.exposed_ports.contains(p) {
                        c.exposed_ports.push(p.clone());
                    }
                }
            }
            Op::Volume(vols) => {
                for v in vols {
                    if !c.volumes.contains(v) {
                        c.volumes.push(v.clone());
                    }
                }
            }
            Op::User(u) => c.user = u.clone(),
            Op::Workdir(w) => c.working_dir = w.path.clone(),
            Op::Cmd(argv) => {
                c.cmd = Some(argv.clone());
                c.args_escaped = true;
                self.cmd_set_here = true;
            }
            Op::Entrypoint(argv) => {
                c.entrypoint = Some(argv.clone());
                if !self.cmd_set_here {
                    c.cmd = None;
                }
                c.args_escaped = true;
            }
            Op::StopSignal(s) => c.stop_signal = Some(s.clone()),
            Op::Healthcheck(h) => c.healthcheck = Some(h.clone()),
            Op::Shell(s) => c.shell = Some(s.clone()),
            Op::OnBuild(t) => c.on_build.push(t.clone()),
            Op::Maintainer(m) => self.author = Some(m.clone()),
            Op::Run(_) | Op::Copy(_) | Op::Arg(_) => {}
        }
        // BuildKit records no history for ONBUILD.
        if !matches!(step.op, Op::OnBuild(_)) {
            self.history.push(HistoryEntry {
                created_by: step.created_by.clone(),
                comment: Some("buildkit.dockerfile.v0".to_string()),
                empty_layer: step.is_metadata_only(),
                created: None,
                author: None,
            });
        }
    }
}

/// Sets `key` in an ordered list of pairs, replacing in place or appending.
fn set_pair(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(pair) => pair.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_parser::Span;

    fn step(op: Op) -> Step {
        Step {
            span: Span::default(),
            source: String::new(),
            created_by: "x".into(),
            op,
        }
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_but_not_one_set_in_the_stage() {
        let mut base = ImageState::scratch();
        base.apply(&step(Op::Cmd(vec!["inherited".into()])));
        let mut child = ImageState::inherit(&base);
        child.apply(&step(Op::Entrypoint(vec!["ep".into()])));
        assert_eq!(child.config.cmd, None);

        let mut child = ImageState::inherit(&base);
        child.apply(&step(Op::Cmd(vec!["mine".into()])));
        child.apply(&step(Op::Entrypoint(vec!["ep".into()])));
        assert_eq!(child.config.cmd, Some(vec!["mine".to_string()]));
    }

    #[test]
    fn env_replaces_in_place_and_default_path_comes_with_the_stage() {
        let mut s = ImageState::scratch();
        s.apply(&step(Op::Env(vec![("A".into(), "1".into())])));
        s.apply(&step(Op::Env(vec![("PATH".into(), "/x".into())])));
        assert_eq!(
            s.config.env,
            vec![("PATH".into(), "/x".into()), ("A".into(), "1".into())]
        );
        assert!(s.history.iter().all(|h| h.empty_layer));
    }

    #[test]
    fn onbuild_triggers_are_not_inherited_and_leave_no_history() {
        let mut base = ImageState::scratch();
        base.apply(&step(Op::OnBuild("RUN x".into())));
        assert!(base.history.is_empty());
        assert_eq!(base.config.on_build, vec!["RUN x".to_string()]);
        assert!(ImageState::inherit(&base).config.on_build.is_empty());
    }
}
