//! `kiln login` / `kiln logout`: check credentials against the registry's `/v2/`
//! handshake (basic, or a bearer token fetched with them), then record or forget them in
//! the docker config file.

use crate::auth::Credentials;
use crate::client::Client;
use crate::error::Result;
use crate::name::RegistryRef;
use crate::options::RegistryOptions;

fn domain_of(server: &str) -> String {
    let s = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => crate::name::DOCKER_HUB_DOMAIN.into(),
        h => h.to_string(),
    }
}

/// Verifies `creds` against `server` (`host[:port]`, a URL, or `docker.io`) and stores
/// them in the docker config. Returns the config file written.
pub fn login(
    server: &str,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<std::path::PathBuf> {
    let domain = domain_of(server);
    // Validate the name the way references are validated.
    RegistryRef::parse(&format!("{domain}/probe"))?;
    let opts = RegistryOptions {
        credentials: Some(creds.clone()),
        ..opts.clone()
    };
    Client::connect(&domain, &opts, &[])?;
    let mut cfg = opts.docker_config()?;
    cfg.store_credentials(&domain, creds)?;
    cfg.save()?;
    Ok(cfg.path().to_path_buf())
}

/// Forgets `server`'s credentials. True if there were any.
pub fn logout(server: &str, opts: &RegistryOptions) -> Result<bool> {
    let domain = domain_of(server);
    let mut cfg = opts.docker_config()?;
    let found = cfg.erase_credentials(&domain)?;
    if found {
        cfg.save()?;
    }
    Ok(found)
}
