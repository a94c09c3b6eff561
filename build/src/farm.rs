//! A build farm behind a REAPI scheduler: `kiln build --remote URL` sends eligible RUN
//! steps there ([`connect_executor`]), and `kiln worker` serves them ([`serve_worker`]).
//! The steps themselves are the solver's ([`kiln_solver::remote_step`]); the wire is
//! kiln-remote's.

use crate::BuildError;
use kiln_solver::remote_step::{self, Executed, RemoteStep, StepExecutor, StepExecutorError};
use kiln_store::{LayerRef, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Parses `URL[,instance=NAME][,token-file=F|token-env=VAR]` (`--remote`, `kiln worker
/// --endpoint`).
pub fn parse_endpoint(spec: &str) -> Result<kiln_remote::Endpoint, BuildError> {
    let bad = |why: String| BuildError::Request(format!("remote {spec:?}: {why}"));
    let mut parts = spec.split(',');
    let url = parts.next().unwrap_or_default();
    let mut endpoint = kiln_remote::Endpoint::parse(url).map_err(|e| bad(e.to_string()))?;
    for part in parts {
        match part.split_once('=') {
            Some(("instance", v)) => endpoint.instance = v.to_string(),
            Some(("token-file", v)) => {
                endpoint.token = Some(kiln_remote::TokenSource::File(v.into()))
            }
            Some(("token-env", v)) => {
                endpoint.token = Some(kiln_remote::TokenSource::Env(v.to_string()))
            }
            _ => return Err(bad(format!("unknown option {part:?}"))),
        }
    }
    Ok(endpoint)
}

#[derive(Debug)]
struct ReapiExecutor(kiln_remote::RemoteExecutor);

impl StepExecutor for ReapiExecutor {
    fn name(&self) -> &str {
        self.0.url()
    }

    fn execute<'a>(
        &'a self,
        step: Vec<u8>,
        layers: &'a [LayerRef],
        store: &'a Store,
        no_cache: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Executed, StepExecutorError>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.execute(&step, layers, store, no_cache).await {
                Ok(done) => Ok(Executed::Done {
                    layer: done.layer,
                    worker: done.worker,
                }),
                Err(kiln_remote::RemoteError::Failed(said)) => Ok(Executed::Failed(said)),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Connects to the farm at `endpoint` for a build to send its steps to.
pub async fn connect_executor(
    endpoint: &kiln_remote::Endpoint,
    registry: &kiln_registry::RegistryOptions,
) -> Result<Arc<dyn StepExecutor>, BuildError> {
    let executor = kiln_remote::RemoteExecutor::connect(endpoint, &registry.certs_dirs)
        .await
        .map_err(|e| BuildError::Remote {
            what: format!("the remote executor {}", endpoint.url),
            source: Box::new(e),
        })?;
    Ok(Arc::new(ReapiExecutor(executor)))
}

/// Serves the farm at `endpoint` as bot `bot_id`, running its kiln steps in `store`,
/// until the connection to the farm fails; `log` is told each lease.
pub async fn serve_worker(
    store: Store,
    endpoint: &kiln_remote::Endpoint,
    bot_id: &str,
    log: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<(), BuildError> {
    let runner_store = store.clone();
    let run: kiln_remote::worker::RunStep = Arc::new(move |bytes: Vec<u8>| {
        let store = runner_store.clone();
        Box::pin(async move {
            let step = RemoteStep::parse(&bytes)?;
            remote_step::execute(&store, &step).await
        })
    });
    let certs = kiln_registry::default_certs_dirs();
    kiln_remote::worker::serve(endpoint, &certs, store, bot_id, run, log)
        .await
        .map_err(|e| BuildError::Remote {
            what: format!("serving the farm {}", endpoint.url),
            source: Box::new(e),
        })
}
