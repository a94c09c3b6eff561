//! `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`): credentials under `auths`
//! (base64 `user:password`), per-registry `credHelpers` and the default `credsStore`,
//! both run as `docker-credential-<name> get|store|erase`. `kiln login/logout` write the
//! same format, keeping every key they do not own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use crate::auth::{Credentials, decode_basic, encode_basic};
use crate::error::{RegistryError, Result};
use crate::name::{DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN};

/// The key Docker uses for Hub in `auths`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_config_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".docker").join("config.json")
}

/// The key a domain is stored under (`docker.io` → Hub's historic URL).
pub fn auth_key(domain: &str) -> String {
    if is_hub(domain) {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        domain.to_string()
    }
}

fn is_hub(domain: &str) -> bool {
    matches!(
        domain,
        DOCKER_HUB_DOMAIN | "index.docker.io" | DOCKER_HUB_API_HOST | DOCKER_HUB_AUTH_KEY
    )
}

/// `https://host/v1/` → `host`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// A loaded docker config file.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    value: Map<String, Value>,
    helper_dir: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl DockerConfig {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let value = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(RegistryError::Config {
                        path: path.to_path_buf(),
                        reason: "not a JSON object".into(),
                    });
                }
                Err(e) => {
                    return Err(RegistryError::Config {
                        path: path.to_path_buf(),
                        reason: format!("invalid JSON: {e}"),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            value,
            helper_dir: None,
        })
    }

    /// Runs credential helpers from `dir` instead of `$PATH`.
    pub fn set_helper_dir(&mut self, dir: Option<PathBuf>) {
        self.helper_dir = dir;
    }

    /// The file this config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn helper_for(&self, domain: &str) -> Option<String> {
        let key = auth_key(domain);
        if let Some(Value::Object(helpers)) = self.value.get("credHelpers") {
            for (k, v) in helpers {
                if (k == &key || key_host(k) == key_host(&key))
                    && let Value::String(name) = v
                {
                    return Some(name.clone());
                }
            }
        }
        match self.value.get("credsStore") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }

    fn auths_entry(&self, domain: &str) -> Option<&Map<String, Value>> {
        let Some(Value::Object(auths)) = self.value.get("auths") else {
            return None;
        };
        let key = auth_key(domain);
        if let Some(Value::Object(e)) = auths.get(&key) {
            return Some(e);
        }
        auths.iter().find_map(|(k, v)| match v {
            Value::Object(e)
                if key_host(k) == key_host(&key) || (is_hub(domain) && is_hub(key_host(k))) =>
            {
                Some(e)
            }
            _ => None,
        })
    }

    /// Credentials for `domain`: its credential helper (credHelpers, then credsStore),
    /// then `auths`. `None` when nothing is configured (anonymous).
    pub fn credentials_for(&self, domain: &str) -> Result<Option<Credentials>> {
        if let Some(helper) = self.helper_for(domain)
            && let Some(c) = self.helper_get(&helper, domain)?
        {
            return Ok(Some(c));
        }
        let Some(entry) = self.auths_entry(domain) else {
            return Ok(None);
        };
        if let Some(Value::String(auth)) = entry.get("auth")
            && !auth.is_empty()
        {
            return decode_basic(auth)
                .map(Some)
                .ok_or_else(|| RegistryError::Config {
                    path: self.path.clone(),
                    reason: format!(
                        "auths.{:?}.auth is not base64 of user:password",
                        auth_key(domain)
                    ),
                });
        }
        match (entry.get("username"), entry.get("password")) {
            (Some(Value::String(u)), Some(Value::String(p))) => Ok(Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            })),
            _ => Ok(None),
        }
    }

    fn helper_command(&self, helper: &str) -> Command {
        let program = format!("docker-credential-{helper}");
        match &self.helper_dir {
            Some(dir) => Command::new(dir.join(program)),
            None => Command::new(program),
        }
    }

    fn run_helper(
        &self,
        helper: &str,
        action: &'static str,
        domain: &str,
        input: &[u8],
    ) -> Result<std::process::Output> {
        let err = |reason: String| RegistryError::CredentialHelper {
            helper: helper.to_string(),
            action,
            registry: domain.to_string(),
            reason,
        };
        let mut child = self
            .helper_command(helper)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run it: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| err(format!("writing its input: {e}")))?;
        }
        child
            .wait_with_output()
            .map_err(|e| err(format!("waiting for it: {e}")))
    }

    fn helper_get(&self, helper: &str, domain: &str) -> Result<Option<Credentials>> {
        let key = auth_key(domain);
        let out = self.run_helper(helper, "get", domain, key.as_bytes())?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            if text.contains("credentials not found")
                || String::from_utf8_lossy(&out.stderr).contains("credentials not found")
            {
                return Ok(None);
            }
            return Err(RegistryError::CredentialHelper {
                helper: helper.to_string(),
                action: "get",
                registry: domain.to_string(),
                reason: format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let parsed: HelperOutput =
            serde_json::from_slice(&out.stdout).map_err(|e| RegistryError::CredentialHelper {
                helper: helper.to_string(),
                action: "get",
                registry: domain.to_string(),
                reason: format!("output is not JSON: {e}"),
            })?;
        Ok(Some(Credentials {
            username: parsed.username,
            password: parsed.secret,
        }))
    }

    /// Records credentials for `domain` (through its helper when one is configured, else
    /// in `auths`). Call [`DockerConfig::save`] afterwards.
    pub fn store_credentials(&mut self, domain: &str, creds: &Credentials) -> Result<()> {
        let key = auth_key(domain);
        if let Some(helper) = self.helper_for(domain) {
            let input = serde_json::json!({
                "ServerURL": key,
                "Username": creds.username,
                "Secret": creds.password,
            });
            let out = self.run_helper(
                helper.as_str(),
                "store",
                domain,
                input.to_string().as_bytes(),
            )?;
            if !out.status.success() {
                return Err(RegistryError::CredentialHelper {
                    helper,
                    action: "store",
                    registry: domain.to_string(),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            return Ok(());
        }
        let auths = self
            .value
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            let mut entry = Map::new();
            entry.insert(
                "auth".into(),
                Value::String(encode_basic(&creds.username, &creds.password)),
            );
            auths.insert(key, Value::Object(entry));
        }
        Ok(())
    }

    /// Forgets `domain`'s credentials (helper `erase`, and its `auths` entry). True if
    /// there was an entry.
    pub fn erase_credentials(&mut self, domain: &str) -> Result<bool> {
        let key = auth_key(domain);
        let mut found = false;
        if let Some(helper) = self.helper_for(domain) {
            let out = self.run_helper(helper.as_str(), "erase", domain, key.as_bytes())?;
            found |= out.status.success();
        }
        if let Some(Value::Object(auths)) = self.value.get_mut("auths") {
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| **k == key || key_host(k) == key_host(&key))
                .cloned()
                .collect();
            for k in keys {
                found = true;
                auths.remove(&k);
            }
        }
        Ok(found)
    }

    /// Writes the file atomically with mode 0600 (it holds secrets).
    pub fn save(&self) -> Result<()> {
        use kiln_base::atomic::AtomicFile;
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io { op, path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let bytes = serde_json::to_vec_pretty(&Value::Object(self.value.clone())).map_err(|e| {
            RegistryError::Config {
                path: self.path.clone(),
                reason: format!("cannot encode: {e}"),
            }
        })?;
        let mut f = AtomicFile::create(&self.path, 0o600).map_err(io("create", &self.path))?;
        f.write_all(&bytes).map_err(io("write", &self.path))?;
        f.write_all(b"\n").map_err(io("write", &self.path))?;
        f.commit().map_err(io("write", &self.path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_entries_are_found_by_host_and_hub_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"https://reg.example:5000":{{"auth":"{}"}}}},"other":1}}"#,
                encode_basic("hub", "pw1"),
                encode_basic("bob", "pw2")
            ),
        )
        .unwrap();
        let cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.credentials_for("docker.io").unwrap().unwrap().username,
            "hub"
        );
        let c = cfg.credentials_for("reg.example:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bob", "pw2"));
        assert!(cfg.credentials_for("other.example").unwrap().is_none());
    }

    #[test]
    fn login_writes_auths_and_keeps_other_keys_then_logout_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"psFormat":"x"}"#).unwrap();
        let mut cfg = DockerConfig::load(&path).unwrap();
        cfg.store_credentials(
            "127.0.0.1:5000",
            &Credentials {
                username: "alice".into(),
                password: "pw".into(),
            },
        )
        .unwrap();
        cfg.save().unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(
            v["auths"]["127.0.0.1:5000"]["auth"],
            encode_basic("alice", "pw")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut cfg = DockerConfig::load(&path).unwrap();
        assert!(cfg.erase_credentials("127.0.0.1:5000").unwrap());
        cfg.save().unwrap();
        let cfg = DockerConfig::load(&path).unwrap();
        assert!(cfg.credentials_for("127.0.0.1:5000").unwrap().is_none());
    }

    #[test]
    fn credential_helpers_are_asked_first() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$1\" = get ] && [ \"$host\" = reg.example ]; then echo '{\"ServerURL\":\"reg.example\",\"Username\":\"helped\",\"Secret\":\"tok\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example":"fake"}}"#).unwrap();
        let mut cfg = DockerConfig::load(&path).unwrap();
        cfg.set_helper_dir(Some(dir.path().to_path_buf()));
        let c = cfg.credentials_for("reg.example").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("helped", "tok")
        );
        assert!(cfg.credentials_for("else.example").unwrap().is_none());
    }

    #[test]
    fn broken_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{nope").unwrap();
        let e = DockerConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: invalid JSON", path.display())),
            "{e}"
        );
    }
}
