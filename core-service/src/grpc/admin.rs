//! `admin.v1.AdminService`: operator calls. Every call requires role `admin`.
//!
//! The contract is fixed; the bodies arrive with the operator features and answer
//! `UNIMPLEMENTED` (after the admin check) until then.

use std::pin::Pin;
use std::sync::Arc;

use chat_proto::pb::admin as pb;
use chat_proto::pb::admin::admin_service_server::AdminService;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::authenticate_admin;
use crate::chat::Engine;

pub struct AdminApi {
    engine: Arc<Engine>,
}

impl AdminApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    fn later<T>(&self, metadata: &tonic::metadata::MetadataMap, call: &str) -> Result<T, Status> {
        authenticate_admin(self.engine.verifier(), metadata)?;
        Err(Status::unimplemented(format!(
            "AdminService.{call} is not available on this server yet"
        )))
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::SessionChange, Status>> + Send>>;
type TakeoverStream = Pin<Box<dyn Stream<Item = Result<pb::TakeoverEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    type WatchSessionsStream = ChangeStream;
    type TakeoverStream = TakeoverStream;

    async fn list_sessions(
        &self,
        r: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.later(r.metadata(), "ListSessions")
    }

    async fn get_session(
        &self,
        r: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::SessionDetail>, Status> {
        self.later(r.metadata(), "GetSession")
    }

    async fn get_usage(
        &self,
        r: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        self.later(r.metadata(), "GetUsage")
    }

    async fn list_help_requests(
        &self,
        r: Request<pb::ListHelpRequestsRequest>,
    ) -> Result<Response<pb::ListHelpRequestsResponse>, Status> {
        self.later(r.metadata(), "ListHelpRequests")
    }

    async fn resolve_help_request(
        &self,
        r: Request<pb::ResolveHelpRequestRequest>,
    ) -> Result<Response<pb::HelpRequest>, Status> {
        self.later(r.metadata(), "ResolveHelpRequest")
    }

    async fn watch_sessions(
        &self,
        r: Request<pb::WatchSessionsRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        self.later(r.metadata(), "WatchSessions")
    }

    async fn takeover(
        &self,
        r: Request<Streaming<pb::TakeoverRequest>>,
    ) -> Result<Response<TakeoverStream>, Status> {
        self.later(r.metadata(), "Takeover")
    }

    async fn release(
        &self,
        r: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.later(r.metadata(), "Release")
    }
}
