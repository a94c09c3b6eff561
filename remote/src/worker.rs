//! `kiln worker`'s side of the farm: a bot of the scheduler (Remote Workers API) that takes
//! the Actions of kiln's execution scheme ([`crate::exec`]), stages their input root from
//! the CAS (the step spec, and the parent layers into the worker's store), has the step run
//! (by the caller's [`RunStep`]: kiln's sandbox), and uploads the layer and its record as
//! the ActionResult.
//!
//! One lease at a time: a worker is one sandbox slot; run several workers for more. While
//! a step runs the session is still updated on schedule (the scheduler requeues the lease
//! of a bot that goes silent), and a lease the server cancels is dropped.

use crate::RemoteError;
use crate::action::{self, BlobDigest, RemoteRecord};
use crate::bots::{
    BOT_OK, BotSession, Device, LEASE_ACTIVE, LEASE_CANCELLED, LEASE_COMPLETED, LEASE_PENDING,
    Property, Worker,
};
use crate::endpoint::{Conn, Endpoint};
use crate::exec::{EXEC_COMMAND, PLATFORM_KEY, PLATFORM_VALUE, STEP_FILE, STEP_LIMIT};
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::protobuf::Any;
use bazel_remote_apis::google::rpc::Status;
use kiln_store::{LayerRef, Store};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Runs a step spec on layers already in the store; returns the layer it stored.
pub type RunStep = Arc<
    dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Result<LayerRef, String>> + Send>> + Send + Sync,
>;

/// The deadline of a Bots call: BuildGrid answers a long poll at 80% of it, and gives no
/// lease at all below about 3.75 s.
const POLL: Duration = Duration::from_secs(5);
/// How often a bot running a step tells the server it is alive (BuildGrid drops a session
/// silent for its keepalive timeout, 30 s by default).
const KEEPALIVE: Duration = Duration::from_secs(10);
const ACTION_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Action";
const RESULT_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";
/// Small blobs of an Action (Command, Directory) are far below this.
const SMALL_LIMIT: u64 = 1 << 20;

/// Serves the farm at `endpoint` as bot `bot_id` until the connection fails, running
/// steps with `run` in `store`; `log` is told what happens, a line at a time.
pub async fn serve(
    endpoint: &Endpoint,
    certs_dirs: &[PathBuf],
    store: Store,
    bot_id: &str,
    run: RunStep,
    log: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<(), RemoteError> {
    let conn = endpoint.connect(certs_dirs).await?;
    let device_properties = vec![Property {
        key: PLATFORM_KEY.into(),
        value: PLATFORM_VALUE.into(),
    }];
    let mut session = BotSession {
        bot_id: bot_id.to_string(),
        status: BOT_OK,
        worker: Some(Worker {
            devices: vec![Device {
                handle: bot_id.to_string(),
                properties: device_properties,
            }],
            properties: Vec::new(),
        }),
        // `version` is the server's (BuildGrid counts the session's updates in it).
        ..Default::default()
    };
    session = conn.create_bot_session(session, POLL).await?;
    log(format!(
        "joined {} as bot {} ({})",
        endpoint.url, bot_id, session.name
    ));
    let mut running: Option<(String, tokio::task::JoinHandle<Outcome>)> = None;
    // Leases this bot finished, with what it reports for them until the server drops them.
    let mut finished: HashMap<String, Outcome> = HashMap::new();
    loop {
        if let Some((id, handle)) = running.take_if(|(_, h)| h.is_finished()) {
            let outcome = handle
                .await
                .unwrap_or_else(|e| (None, status(13, format!("the step's task failed: {e}"))));
            log(format!(
                "lease {id}: done ({})",
                if outcome.1.code == 0 {
                    "ok"
                } else {
                    &outcome.1.message
                }
            ));
            finished.insert(id, outcome);
        }
        let ids: BTreeSet<String> = session.leases.iter().map(|l| l.id.clone()).collect();
        finished.retain(|id, _| ids.contains(id));
        for lease in &mut session.leases {
            if let Some((result, st)) = finished.get(&lease.id) {
                lease.state = LEASE_COMPLETED;
                lease.result = result.clone();
                lease.status = Some(st.clone());
                continue;
            }
            let ours = running.as_ref().is_some_and(|(id, _)| *id == lease.id);
            if lease.state == LEASE_CANCELLED {
                if ours && let Some((_, handle)) = running.take() {
                    handle.abort();
                    log(format!("lease {}: cancelled by the server", lease.id));
                }
                continue;
            }
            if ours {
                lease.state = LEASE_ACTIVE;
                continue;
            }
            // BuildGrid hands leases over already ACTIVE: a lease this bot has not
            // started is new work, PENDING or not.
            if (lease.state == LEASE_PENDING || lease.state == LEASE_ACTIVE) && running.is_none() {
                let Some(payload) = lease.payload.clone() else {
                    lease.state = LEASE_COMPLETED;
                    lease.status = Some(status(3, "a lease without a payload".into()));
                    continue;
                };
                log(format!("lease {}: started", lease.id));
                let job = job(
                    conn.clone(),
                    store.clone(),
                    payload,
                    run.clone(),
                    bot_id.to_string(),
                );
                running = Some((lease.id.clone(), tokio::spawn(job)));
                lease.state = LEASE_ACTIVE;
            }
        }
        session.status = BOT_OK;
        // While a step runs, the session is updated when it ends or, to keep the session
        // alive, every KEEPALIVE: a long poll now would hold the step's result back until
        // the server has other work or the poll's deadline.
        if let Some((_, handle)) = &mut running
            && !handle.is_finished()
        {
            let _ = tokio::time::timeout(KEEPALIVE, wait_finished(handle)).await;
            if running.as_ref().is_some_and(|(_, h)| h.is_finished()) {
                continue;
            }
        }
        session = match conn.update_bot_session(session.clone(), POLL).await {
            Ok(updated) => updated,
            // The long poll ran out with nothing to say: ask again.
            Err(RemoteError::Call {
                code: tonic::Code::DeadlineExceeded,
                ..
            }) => session,
            Err(e) => return Err(e),
        };
    }
}

/// Waits until `handle`'s task has finished, without taking its output.
async fn wait_finished(handle: &mut tokio::task::JoinHandle<Outcome>) {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a lease ends with: its result (an ActionResult) and its status.
type Outcome = (Option<Any>, Status);

fn status(code: i32, message: String) -> Status {
    Status {
        code,
        message,
        details: Vec::new(),
    }
}

/// One lease: the result to report (an ActionResult, exit code 1 and the error as stderr
/// when the step failed) and the lease's status (not OK only when the worker could not
/// take the work at all, so the scheduler may give it to another).
async fn job(conn: Conn, store: Store, payload: Any, run: RunStep, bot_id: String) -> Outcome {
    let result = match stage(&conn, &store, &payload).await {
        Ok(step) => match run(step).await {
            Ok(layer) => match upload(&conn, &store, &layer).await {
                Ok(result) => result,
                Err(e) => return (None, status(14, format!("uploading the layer: {e}"))),
            },
            Err(failed) => re::ActionResult {
                exit_code: 1,
                stderr_raw: failed.into_bytes(),
                ..Default::default()
            },
        },
        Err(e) => return (None, status(9, e.to_string())),
    };
    let result = re::ActionResult {
        execution_metadata: Some(re::ExecutedActionMetadata {
            worker: bot_id,
            ..Default::default()
        }),
        ..result
    };
    let any = Any {
        type_url: RESULT_TYPE.into(),
        value: result.encode_to_vec(),
    };
    (Some(any), status(0, String::new()))
}

/// Reads the lease's Action, checks it is a kiln step, and stages its input root: the
/// parent layers into the store, the step spec returned.
async fn stage(conn: &Conn, store: &Store, payload: &Any) -> Result<Vec<u8>, RemoteError> {
    if payload.type_url != ACTION_TYPE {
        return Err(RemoteError::Garbage(format!(
            "a lease of {:?}, not an Action",
            payload.type_url
        )));
    }
    let action = re::Action::decode(payload.value.as_slice())
        .map_err(|e| RemoteError::Garbage(format!("an Action that does not decode: {e}")))?;
    let digest = |d: &Option<re::Digest>, what: &str| {
        d.as_ref()
            .ok_or_else(|| RemoteError::Garbage(format!("an Action without {what}")))
            .and_then(BlobDigest::from_proto)
    };
    let command = conn
        .read_small(&digest(&action.command_digest, "a command")?, SMALL_LIMIT)
        .await?;
    let command = re::Command::decode(command.as_slice())
        .map_err(|e| RemoteError::Garbage(format!("a Command that does not decode: {e}")))?;
    if command.arguments.first().map(String::as_str) != Some(EXEC_COMMAND)
        || command.arguments.get(1).map(String::as_str) != Some(action::SCHEME)
    {
        return Err(RemoteError::Garbage(format!(
            "not a kiln step of scheme {}: {:?}",
            action::SCHEME,
            command.arguments
        )));
    }
    let root = conn
        .read_small(
            &digest(&action.input_root_digest, "an input root")?,
            SMALL_LIMIT,
        )
        .await?;
    let root = re::Directory::decode(root.as_slice())
        .map_err(|e| RemoteError::Garbage(format!("a Directory that does not decode: {e}")))?;
    let mut step = None;
    for file in &root.files {
        let d = digest(&file.digest, "a file digest")?;
        if file.name == STEP_FILE {
            step = Some(conn.read_small(&d, STEP_LIMIT).await?);
        } else if file.name.starts_with("layer-") {
            if !store.has_blob(&d.oci()) {
                conn.read_into_store(store, &d).await?;
            }
        } else {
            return Err(RemoteError::Garbage(format!(
                "an input root with {:?}",
                file.name
            )));
        }
    }
    step.ok_or_else(|| RemoteError::Garbage(format!("an input root without {STEP_FILE}")))
}

/// Uploads `layer` and its record; the ActionResult naming them.
async fn upload(
    conn: &Conn,
    store: &Store,
    layer: &LayerRef,
) -> Result<re::ActionResult, RemoteError> {
    let digest = BlobDigest::from_oci(&layer.digest, layer.size)?;
    let record = RemoteRecord::new(layer.clone()).to_bytes()?;
    let small = BTreeMap::from([(BlobDigest::of(&record), record.clone())]);
    conn.upload_missing(store, small, BTreeSet::from([digest.clone()]))
        .await?;
    Ok(action::action_result(&digest, &record))
}
