//! [`RemoteCache`]: kiln's step cache in a REAPI Action Cache and CAS, under the scheme
//! of [`crate::action`]: one `GetActionResult` per step looked up, and on a hit the layer
//! blob read into the store; pushing uploads only the blobs `FindMissingBlobs` says the
//! server lacks, then one `UpdateActionResult` per step.

use crate::action::{BlobDigest, RECORD_LIMIT, RECORD_PATH, RemoteRecord, StepAction};
use crate::endpoint::{CALL_TIMEOUT, Conn, Endpoint, within};
use crate::{RemoteError, action};
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use kiln_store::{CacheRecord, LayerRef, Store};
use re::action_cache_client::ActionCacheClient;
use std::path::PathBuf;

/// A connected REAPI cache.
#[derive(Debug)]
pub struct RemoteCache {
    conn: Conn,
}

/// What a push sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Steps whose action result was written.
    pub records: usize,
    /// Blobs the server lacked, and their bytes: on a rebuild with one changed step, the
    /// new layer and its record (plus the new Command and Action, a few hundred bytes).
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
}

impl RemoteCache {
    /// Connects to `endpoint`, trusting for TLS what `certs_dirs` hold for its host.
    pub async fn connect(
        endpoint: &Endpoint,
        certs_dirs: &[PathBuf],
    ) -> Result<RemoteCache, RemoteError> {
        Ok(RemoteCache {
            conn: endpoint.connect(certs_dirs).await?,
        })
    }

    fn action_cache(
        &self,
    ) -> ActionCacheClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            crate::endpoint::Auth,
        >,
    > {
        ActionCacheClient::with_interceptor(self.conn.channel.clone(), self.conn.auth.clone())
    }

    /// Looks up the step keyed `key`. On a hit its layer blob is in `store` (verified
    /// against its digest) when this returns, and the layer it names is returned; what
    /// the layer unpacks to is the caller's to check against its diff_id.
    pub async fn fetch(&self, key: &str, store: &Store) -> Result<Option<LayerRef>, RemoteError> {
        let step = StepAction::for_key(key)?;
        let phase = kiln_base::phase::start("remote: GetActionResult");
        let mut action_cache = self.action_cache();
        let request = re::GetActionResultRequest {
            instance_name: self.conn.instance.clone(),
            action_digest: Some(step.action_digest.to_proto()),
            inline_output_files: vec![RECORD_PATH.into()],
            ..Default::default()
        };
        let answer = within(
            "GetActionResult",
            CALL_TIMEOUT,
            action_cache.get_action_result(request),
        )
        .await;
        phase.end();
        let result = match answer {
            Ok(result) => result,
            Err(RemoteError::Call {
                code: tonic::Code::NotFound,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        take_result(&self.conn, &result, store).await.map(Some)
    }

    /// Pushes the records (with layers) of `records` and their layer blobs from `store`.
    pub async fn push(
        &self,
        store: &Store,
        records: &[(String, CacheRecord)],
    ) -> Result<PushReport, RemoteError> {
        struct Entry {
            step: StepAction,
            layer: BlobDigest,
            record: Vec<u8>,
        }
        let mut entries = Vec::new();
        for (key, record) in records {
            let Some(layer) = &record.layer else { continue };
            entries.push(Entry {
                step: StepAction::for_key(key)?,
                layer: BlobDigest::from_oci(&layer.digest, layer.size)?,
                record: RemoteRecord::new(layer.clone()).to_bytes()?,
            });
        }
        // Every blob an entry needs, once: small ones with their bytes, layers by digest.
        let mut small: std::collections::BTreeMap<BlobDigest, Vec<u8>> = Default::default();
        let mut layers = std::collections::BTreeSet::new();
        for entry in &entries {
            for (digest, bytes) in entry.step.blobs() {
                small.insert(digest, bytes.to_vec());
            }
            small.insert(BlobDigest::of(&entry.record), entry.record.clone());
            layers.insert(entry.layer.clone());
        }
        let (blobs_uploaded, bytes_uploaded) =
            self.conn.upload_missing(store, small, layers).await?;
        let mut report = PushReport {
            blobs_uploaded,
            bytes_uploaded,
            ..Default::default()
        };
        // Results only after their outputs: a server may drop a result whose outputs it
        // lacks, and a reader must never find one.
        for entry in &entries {
            let mut action_cache = self.action_cache();
            let request = re::UpdateActionResultRequest {
                instance_name: self.conn.instance.clone(),
                action_digest: Some(entry.step.action_digest.to_proto()),
                action_result: Some(action::action_result(&entry.layer, &entry.record)),
                ..Default::default()
            };
            within(
                "UpdateActionResult",
                CALL_TIMEOUT,
                action_cache.update_action_result(request),
            )
            .await?;
            report.records += 1;
        }
        Ok(report)
    }
}

/// The layer an ActionResult of kiln's scheme names, its blob read into `store` (checked
/// against its digest) unless it is there already.
pub(crate) async fn take_result(
    conn: &Conn,
    result: &re::ActionResult,
    store: &Store,
) -> Result<LayerRef, RemoteError> {
    let files = action::result_files(result)?;
    let bytes = match files.record_inline {
        Some(bytes) if BlobDigest::of(&bytes) == files.record => bytes,
        Some(_) => {
            return Err(RemoteError::Garbage(format!(
                "the inline {RECORD_PATH} does not match its digest"
            )));
        }
        None => conn.read_small(&files.record, RECORD_LIMIT as u64).await?,
    };
    let record = RemoteRecord::parse(&bytes)?;
    if record.layer.digest != files.layer.oci() || record.layer.size != files.layer.size {
        return Err(RemoteError::Garbage(format!(
            "{RECORD_PATH} names layer {} of {} bytes, the result {}",
            record.layer.digest, record.layer.size, files.layer
        )));
    }
    if !store.has_blob(&record.layer.digest) {
        let _phase = kiln_base::phase::start("remote: read layer blob");
        conn.read_into_store(store, &files.layer).await?;
    }
    Ok(record.layer)
}

/// [`RemoteCache::push`] for a caller outside any async runtime: connects and pushes on
/// a runtime of its own.
pub fn push_blocking(
    endpoint: &Endpoint,
    certs_dirs: &[PathBuf],
    store: &Store,
    records: &[(String, CacheRecord)],
) -> Result<PushReport, RemoteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RemoteError::io("starting an async runtime"))?;
    runtime.block_on(async {
        let cache = RemoteCache::connect(endpoint, certs_dirs).await?;
        cache.push(store, records).await
    })
}
