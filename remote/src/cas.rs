//! The content store side of REAPI: which blobs the server lacks, small blobs in batches,
//! big ones as ByteStream streams, every blob read back checked against its digest.

use crate::RemoteError;
use crate::action::BlobDigest;
use crate::endpoint::{Auth, CALL_TIMEOUT, Conn, STREAM_IDLE_TIMEOUT, within};
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream as bs;
use futures_util::StreamExt;
use kiln_store::Store;
use re::content_addressable_storage_client::ContentAddressableStorageClient;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use tokio::io::AsyncReadExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Cas = ContentAddressableStorageClient<InterceptedService<Channel, Auth>>;
type ByteStream = bs::byte_stream_client::ByteStreamClient<InterceptedService<Channel, Auth>>;

/// Blobs up to this size go in batches (BuildGrid allows 4 MiB − 1 KiB a batch, and the
/// REAPI default message limit is 4 MiB); bigger ones are streamed.
const BATCH_LIMIT: u64 = 2 << 20;
/// ByteStream write chunk.
const WRITE_CHUNK: usize = 1 << 20;
/// Digests per FindMissingBlobs call.
const FIND_BATCH: usize = 1000;
/// The largest message a read may get (ByteStream servers send ≤ 4 MiB at a time).
const MAX_MESSAGE: usize = 16 << 20;

impl Conn {
    fn cas(&self) -> Cas {
        ContentAddressableStorageClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> ByteStream {
        bs::byte_stream_client::ByteStreamClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE)
    }

    fn resource(&self, rest: String) -> String {
        if self.instance.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    /// Which of `digests` the server lacks.
    pub(crate) async fn find_missing(
        &self,
        digests: &[BlobDigest],
    ) -> Result<BTreeSet<BlobDigest>, RemoteError> {
        let mut missing = BTreeSet::new();
        for batch in digests.chunks(FIND_BATCH) {
            let mut cas = self.cas();
            let request = re::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: batch.iter().map(BlobDigest::to_proto).collect(),
                ..Default::default()
            };
            let response = within(
                "FindMissingBlobs",
                CALL_TIMEOUT,
                cas.find_missing_blobs(request),
            )
            .await?;
            for d in &response.missing_blob_digests {
                missing.insert(BlobDigest::from_proto(d)?);
            }
        }
        Ok(missing)
    }

    /// Uploads small blobs in batches.
    pub(crate) async fn upload_batch(
        &self,
        blobs: Vec<(BlobDigest, Vec<u8>)>,
    ) -> Result<(), RemoteError> {
        let mut rest = blobs.into_iter().peekable();
        while rest.peek().is_some() {
            let mut requests = Vec::new();
            let mut size = 0;
            while let Some((digest, _)) = rest.peek() {
                if !requests.is_empty() && size + digest.size > BATCH_LIMIT {
                    break;
                }
                let Some((digest, data)) = rest.next() else {
                    break;
                };
                size += digest.size;
                requests.push(re::batch_update_blobs_request::Request {
                    digest: Some(digest.to_proto()),
                    data,
                    ..Default::default()
                });
            }
            let mut cas = self.cas();
            let request = re::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                ..Default::default()
            };
            let response = within(
                "BatchUpdateBlobs",
                CALL_TIMEOUT,
                cas.batch_update_blobs(request),
            )
            .await?;
            for r in response.responses {
                if let Some(status) = r.status.filter(|s| s.code != 0) {
                    return Err(RemoteError::status("BatchUpdateBlobs", &status));
                }
            }
        }
        Ok(())
    }

    /// Uploads the store's blob `digest` as one ByteStream write.
    pub(crate) async fn upload_stream(
        &self,
        store: &Store,
        digest: &BlobDigest,
    ) -> Result<(), RemoteError> {
        let path = store
            .blob_path(&digest.oci())
            .map_err(RemoteError::store(format!("finding blob {digest}")))?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(RemoteError::io(format!("opening blob {digest}")))?;
        let resource = self.resource(format!(
            "uploads/{}/blobs/{}/{}",
            uuid()?,
            digest.hash,
            digest.size
        ));
        let total = digest.size;
        // 1 MiB a message; the first names the resource, the last says finish.
        let requests =
            futures_util::stream::unfold((file, 0u64, false), move |(mut file, offset, done)| {
                let resource = resource.clone();
                async move {
                    if done {
                        return None;
                    }
                    let want = (total - offset).min(WRITE_CHUNK as u64) as usize;
                    let mut data = vec![0u8; want];
                    // A failed read ends the stream early: the server refuses the write as
                    // unfinished, and the upload fails.
                    file.read_exact(&mut data).await.ok()?;
                    let next = offset + want as u64;
                    let request = bs::WriteRequest {
                        resource_name: if offset == 0 { resource } else { String::new() },
                        write_offset: offset as i64,
                        finish_write: next == total,
                        data,
                    };
                    Some((request, (file, next, next == total)))
                }
            });
        // The answer comes once every byte is sent: allow 1 s a MiB on top of a call.
        let limit = CALL_TIMEOUT + std::time::Duration::from_secs(total >> 20);
        let mut bytestream = self.bytestream();
        let response = within("ByteStream.Write", limit, bytestream.write(requests)).await?;
        // A server may answer a blob it already has early, with its full size.
        if response.committed_size != total as i64 {
            return Err(RemoteError::Garbage(format!(
                "ByteStream.Write of {digest} committed {} bytes",
                response.committed_size
            )));
        }
        Ok(())
    }

    /// Uploads what the server lacks of `small` (blobs with their bytes) and `layers`
    /// (blobs of `store`); returns how many blobs, and bytes, went up.
    pub(crate) async fn upload_missing(
        &self,
        store: &Store,
        small: BTreeMap<BlobDigest, Vec<u8>>,
        layers: BTreeSet<BlobDigest>,
    ) -> Result<(usize, u64), RemoteError> {
        let all: Vec<BlobDigest> = small.keys().chain(&layers).cloned().collect();
        let missing = self.find_missing(&all).await?;
        let (mut blobs, mut bytes) = (0, 0);
        let mut batch = Vec::new();
        for (digest, data) in small.into_iter().filter(|(d, _)| missing.contains(d)) {
            blobs += 1;
            bytes += digest.size;
            batch.push((digest, data));
        }
        for layer in layers.iter().filter(|d| missing.contains(d)) {
            blobs += 1;
            bytes += layer.size;
            if layer.size <= BATCH_LIMIT {
                let data = store
                    .read_blob(&layer.oci())
                    .map_err(RemoteError::store(format!("reading blob {layer}")))?;
                batch.push((layer.clone(), data));
            } else {
                self.upload_stream(store, layer).await?;
            }
        }
        self.upload_batch(batch).await?;
        Ok((blobs, bytes))
    }

    /// Reads a small blob (at most `limit` bytes) and checks it against its digest.
    pub(crate) async fn read_small(
        &self,
        digest: &BlobDigest,
        limit: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        if digest.size > limit {
            return Err(RemoteError::Garbage(format!(
                "blob {digest} is bigger than the {limit} bytes it may have"
            )));
        }
        let mut cas = self.cas();
        let request = re::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: vec![digest.to_proto()],
            ..Default::default()
        };
        let response = within(
            "BatchReadBlobs",
            CALL_TIMEOUT,
            cas.batch_read_blobs(request),
        )
        .await?;
        let [blob] = <[_; 1]>::try_from(response.responses).map_err(|r| {
            RemoteError::Garbage(format!("BatchReadBlobs gave {} answers for one", r.len()))
        })?;
        if let Some(status) = blob.status.filter(|s| s.code != 0) {
            return Err(RemoteError::status("BatchReadBlobs", &status));
        }
        if BlobDigest::of(&blob.data) != *digest {
            return Err(RemoteError::Garbage(format!(
                "blob {digest} read back with other content"
            )));
        }
        Ok(blob.data)
    }

    /// Streams the blob `digest` into `store`, which keeps it only if it hashes to it.
    pub(crate) async fn read_into_store(
        &self,
        store: &Store,
        digest: &BlobDigest,
    ) -> Result<(), RemoteError> {
        let what = || format!("storing blob {digest}");
        let mut writer = store.blob_writer().map_err(RemoteError::store(what()))?;
        let mut bytestream = self.bytestream();
        let request = bs::ReadRequest {
            resource_name: self.resource(format!("blobs/{}/{}", digest.hash, digest.size)),
            read_offset: 0,
            read_limit: 0,
        };
        let mut stream = within("ByteStream.Read", CALL_TIMEOUT, bytestream.read(request)).await?;
        loop {
            let next = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.next())
                .await
                .map_err(|_| RemoteError::Timeout("ByteStream.Read"))?;
            let Some(message) = next else { break };
            let message = message.map_err(RemoteError::call("ByteStream.Read"))?;
            if writer.size() + message.data.len() as u64 > digest.size {
                return Err(RemoteError::Garbage(format!(
                    "blob {digest} is longer than its size"
                )));
            }
            writer
                .write_all(&message.data)
                .map_err(RemoteError::io(what()))?;
        }
        // The store refuses (and drops) bytes that do not hash to the digest.
        writer
            .commit_verified(&digest.oci())
            .map_err(RemoteError::store(what()))?;
        Ok(())
    }
}

/// A random UUID (version 4), as upload resource names want.
fn uuid() -> Result<String, RemoteError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| RemoteError::io("reading random bytes")(std::io::Error::other(e)))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}
