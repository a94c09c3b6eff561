//! Remote execution of a step (issue 16, part 2): the client side of the REAPI Execution
//! service, and the scheme of the Actions kiln sends to its workers.
//!
//! The scheme (version 1):
//! - the input root holds `step.json`, the step as the solver serializes it (the RUN and
//!   everything its result depends on; opaque here), and the parent's layer blobs as
//!   `layer-0000`, `layer-0001`, ... bottom first;
//! - the Command's arguments are `["kiln-step-exec", "1"]`, its output paths those of
//!   [`crate::action`], and the Command and the Action carry the platform property
//!   `kiln-step=1`, which only kiln workers (`kiln worker`) advertise;
//! - the ActionResult is that of [`crate::action`]: the layer blob and its record.
//!
//! What the scheduler gives for free: queueing, matching Actions to kiln workers by
//! platform property, retries of a lease whose worker vanished, the CAS (each parent layer
//! is uploaded once for every worker and build), and caching results by Action digest.

use crate::RemoteError;
use crate::action::{BlobDigest, LAYER_PATH, RECORD_PATH, SCHEME};
use crate::cache::take_result;
use crate::endpoint::{Auth, CALL_TIMEOUT, Conn, Endpoint, within};
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::longrunning::operation;
use futures_util::StreamExt;
use kiln_store::{LayerRef, Store};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The step's file in the input root.
pub const STEP_FILE: &str = "step.json";
/// The first Command argument of a kiln step Action.
pub const EXEC_COMMAND: &str = "kiln-step-exec";
/// The platform property that sends an Action to kiln workers, and that they advertise.
pub const PLATFORM_KEY: &str = "kiln-step";
pub const PLATFORM_VALUE: &str = "1";
/// A step spec is a RUN with its environment: far below this.
pub const STEP_LIMIT: u64 = 1 << 20;
/// How long an Execute stream may stay silent (BuildGrid sends an update every few
/// seconds while a step runs; a step itself may run far longer).
const EXECUTE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a step may wait in the queue for a kiln worker before it runs here instead
/// (a farm with no kiln worker queues forever).
const QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// `ExecutionStage.QUEUED`.
const STAGE_QUEUED: i32 = 2;

fn layer_file(n: usize) -> String {
    format!("layer-{n:04}")
}

fn platform() -> re::Platform {
    re::Platform {
        properties: vec![re::platform::Property {
            name: PLATFORM_KEY.into(),
            value: PLATFORM_VALUE.into(),
        }],
    }
}

/// The blobs of one step Action: everything but the layers, with their bytes.
pub(crate) struct ExecAction {
    pub action_digest: BlobDigest,
    pub small: BTreeMap<BlobDigest, Vec<u8>>,
    pub layers: BTreeSet<BlobDigest>,
}

impl ExecAction {
    pub fn new(step: &[u8], layers: &[LayerRef]) -> Result<ExecAction, RemoteError> {
        let mut files = Vec::new();
        let mut layer_digests = BTreeSet::new();
        for (n, layer) in layers.iter().enumerate() {
            let digest = BlobDigest::from_oci(&layer.digest, layer.size)?;
            files.push(re::FileNode {
                name: layer_file(n),
                digest: Some(digest.to_proto()),
                ..Default::default()
            });
            layer_digests.insert(digest);
        }
        files.push(re::FileNode {
            name: STEP_FILE.into(),
            digest: Some(BlobDigest::of(step).to_proto()),
            ..Default::default()
        });
        // REAPI wants a directory's entries sorted by name.
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let root = re::Directory {
            files,
            ..Default::default()
        }
        .encode_to_vec();
        // The Command's platform is deprecated since REAPI 2.2 (the Action's counts), but
        // servers of older versions read only it: both carry it.
        #[allow(deprecated)]
        let command = re::Command {
            arguments: vec![EXEC_COMMAND.into(), SCHEME.into()],
            output_paths: vec![LAYER_PATH.into(), RECORD_PATH.into()],
            platform: Some(platform()),
            ..Default::default()
        }
        .encode_to_vec();
        let action = re::Action {
            command_digest: Some(BlobDigest::of(&command).to_proto()),
            input_root_digest: Some(BlobDigest::of(&root).to_proto()),
            platform: Some(platform()),
            ..Default::default()
        }
        .encode_to_vec();
        let action_digest = BlobDigest::of(&action);
        let mut small = BTreeMap::new();
        for bytes in [step.to_vec(), root, command, action] {
            small.insert(BlobDigest::of(&bytes), bytes);
        }
        Ok(ExecAction {
            action_digest,
            small,
            layers: layer_digests,
        })
    }
}

/// A step executed on the farm.
#[derive(Debug, Clone)]
pub struct Executed {
    pub layer: LayerRef,
    /// The worker that ran it, as the server reports it (empty if it does not).
    pub worker: String,
    /// Whether the server answered from its own action cache.
    pub cached: bool,
}

/// A connected REAPI Execution service.
#[derive(Debug)]
pub struct RemoteExecutor {
    conn: Conn,
    url: String,
}

type Execution = re::execution_client::ExecutionClient<InterceptedService<Channel, Auth>>;

impl RemoteExecutor {
    pub async fn connect(
        endpoint: &Endpoint,
        certs_dirs: &[PathBuf],
    ) -> Result<RemoteExecutor, RemoteError> {
        Ok(RemoteExecutor {
            conn: endpoint.connect(certs_dirs).await?,
            url: endpoint.url.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn execution(&self) -> Execution {
        re::execution_client::ExecutionClient::with_interceptor(
            self.conn.channel.clone(),
            self.conn.auth.clone(),
        )
        .max_decoding_message_size(16 << 20)
    }

    /// Executes the step `step` (its spec, opaque here) on the layers `layers` (bottom
    /// first, blobs of `store`): uploads what the server lacks, asks for the execution
    /// (`skip_cache`: even if the server's action cache has its result), waits for it, and
    /// reads the layer it made into `store`.
    pub async fn execute(
        &self,
        step: &[u8],
        layers: &[LayerRef],
        store: &Store,
        skip_cache: bool,
    ) -> Result<Executed, RemoteError> {
        let action = ExecAction::new(step, layers)?;
        self.conn
            .upload_missing(store, action.small, action.layers)
            .await?;
        let mut execution = self.execution();
        let request = re::ExecuteRequest {
            instance_name: self.conn.instance.clone(),
            action_digest: Some(action.action_digest.to_proto()),
            skip_cache_lookup: skip_cache,
            ..Default::default()
        };
        let mut stream = within("Execute", CALL_TIMEOUT, execution.execute(request)).await?;
        let mut queued_since = std::time::Instant::now();
        let response = loop {
            let next = tokio::time::timeout(EXECUTE_IDLE_TIMEOUT, stream.next())
                .await
                .map_err(|_| RemoteError::Timeout("Execute"))?;
            let Some(op) = next else {
                return Err(RemoteError::Garbage(
                    "the Execute stream ended before the operation was done".into(),
                ));
            };
            let op = op.map_err(RemoteError::call("Execute"))?;
            if !op.done {
                let stage = op
                    .metadata
                    .as_ref()
                    .and_then(|m| re::ExecuteOperationMetadata::decode(m.value.as_slice()).ok())
                    .map(|m| m.stage);
                if stage == Some(STAGE_QUEUED) && queued_since.elapsed() > QUEUE_TIMEOUT {
                    return Err(RemoteError::Timeout("waiting for a kiln worker"));
                }
                if stage.is_some_and(|s| s > STAGE_QUEUED) {
                    queued_since = std::time::Instant::now();
                }
                continue;
            }
            match op.result {
                Some(operation::Result::Response(any)) => {
                    break re::ExecuteResponse::decode(any.value.as_slice()).map_err(|e| {
                        RemoteError::Garbage(format!(
                            "an ExecuteResponse that does not decode: {e}"
                        ))
                    })?;
                }
                Some(operation::Result::Error(status)) => {
                    return Err(RemoteError::status("Execute", &status));
                }
                None => {
                    return Err(RemoteError::Garbage(
                        "a done operation without a result".into(),
                    ));
                }
            }
        };
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            return Err(RemoteError::status("Execute", status));
        }
        let result = response
            .result
            .ok_or_else(|| RemoteError::Garbage("an ExecuteResponse without a result".into()))?;
        if result.exit_code != 0 {
            let said = String::from_utf8_lossy(&result.stderr_raw);
            return Err(RemoteError::Failed(said.chars().take(500).collect()));
        }
        let worker = result
            .execution_metadata
            .as_ref()
            .map(|m| m.worker.clone())
            .unwrap_or_default();
        let layer = take_result(&self.conn, &result, store).await?;
        Ok(Executed {
            layer,
            worker,
            cached: response.cached_result,
        })
    }
}
