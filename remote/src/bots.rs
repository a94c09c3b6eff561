//! The Remote Workers API (`google.devtools.remoteworkers.v1test2.Bots`), the part of it a
//! bot calls: `CreateBotSession` and `UpdateBotSession`. BuildGrid's scheduler hands its
//! Actions to bots through it. The messages are written here with the field numbers of
//! the published API (worker.proto, bots.proto); `bazel-remote-apis` does not carry them.

use crate::RemoteError;
use crate::endpoint::Conn;
use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;

/// `BotStatus.OK`.
pub const BOT_OK: i32 = 1;
/// `LeaseState` values.
pub const LEASE_PENDING: i32 = 1;
pub const LEASE_ACTIVE: i32 = 2;
pub const LEASE_COMPLETED: i32 = 4;
pub const LEASE_CANCELLED: i32 = 5;

#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(string, tag = "7")]
    pub id: String,
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
    #[prost(int32, tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "4")]
    pub requirements: Option<Worker>,
    #[prost(message, optional, tag = "5")]
    pub expire_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Worker.Property` and `Device.Property` (the same two fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldMask {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
    #[prost(message, optional, tag = "3")]
    pub update_mask: Option<FieldMask>,
}

const CREATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession";
const UPDATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession";

impl Conn {
    /// One Bots call. The server holds it open until it has work or the deadline nears
    /// (a long poll), so every call carries a deadline of `poll`.
    async fn bots_call<Req: prost::Message + 'static>(
        &self,
        path: &'static str,
        call: &'static str,
        request: Req,
        poll: Duration,
    ) -> Result<BotSession, RemoteError> {
        let service = tonic::service::interceptor::InterceptedService::new(
            self.channel.clone(),
            self.auth.clone(),
        );
        let mut grpc = tonic::client::Grpc::new(service);
        grpc.ready().await.map_err(|e| RemoteError::Call {
            call,
            code: tonic::Code::Unavailable,
            message: e.to_string(),
        })?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(poll);
        let codec = tonic_prost::ProstCodec::<Req, BotSession>::default();
        // The server answers by the deadline it was given; a server that does not is
        // a failed call a little after.
        crate::endpoint::within(
            call,
            poll + std::time::Duration::from_secs(5),
            grpc.unary(request, PathAndQuery::from_static(path), codec),
        )
        .await
    }

    pub(crate) async fn create_bot_session(
        &self,
        session: BotSession,
        poll: Duration,
    ) -> Result<BotSession, RemoteError> {
        let request = CreateBotSessionRequest {
            parent: self.instance.clone(),
            bot_session: Some(session),
        };
        self.bots_call(CREATE, "CreateBotSession", request, poll)
            .await
    }

    pub(crate) async fn update_bot_session(
        &self,
        session: BotSession,
        poll: Duration,
    ) -> Result<BotSession, RemoteError> {
        let request = UpdateBotSessionRequest {
            name: session.name.clone(),
            bot_session: Some(session),
            update_mask: None,
        };
        self.bots_call(UPDATE, "UpdateBotSession", request, poll)
            .await
    }
}
