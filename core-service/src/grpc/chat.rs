//! `chat.v1.ChatService`: the stream every client connection uses, and unary calls for
//! internal services. Each call authenticates, converts ([`super::convert`]) and calls the
//! engine.

use std::pin::Pin;
use std::sync::Arc;

use chat_proto::pb::chat as pb;
use chat_proto::pb::chat::chat_service_server::ChatService;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::auth::authenticate;
use crate::chat::Engine;
use crate::chat::command::HistoryQuery;

pub struct ChatApi {
    engine: Arc<Engine>,
}

impl ChatApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ServerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ChatService for ChatApi {
    type ConnectStream = EventStream;

    /// Opens the connection in the engine and returns its bounded outbox as the response.
    /// The client's stream ends the connection when it ends or fails.
    async fn connect(
        &self,
        request: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<EventStream>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let inbound = futures::stream::unfold(Some(request.into_inner()), |frames| async move {
            let mut frames = frames?;
            match frames.next().await? {
                Ok(frame) => Some((convert::inbound(frame), Some(frames))),
                // tonic cannot go on after a failure: say why when the client can act on it,
                // then end the connection.
                Err(status) => {
                    tracing::debug!(status = %status.code(), "client stream failed");
                    convert::stream_failure(&status).map(|last| (last, None))
                }
            }
        });
        let outbox = self
            .engine
            .connect(who, Box::pin(inbound))
            .map_err(convert::status)?;
        let events = ReceiverStream::new(outbox).map(|out| Ok(convert::server_event(&out)));
        Ok(Response::new(events.boxed()))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let sessions = self
            .engine
            .list_sessions(&who, request.get_ref().limit)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(convert::session_summary).collect(),
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::History>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let req = request.into_inner();
        let query = HistoryQuery {
            chat_id: req.chat_id,
            before: req.before,
            limit: req.limit,
        };
        let history = self
            .engine
            .history(&who, &query)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::history(&history)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        authenticate(self.engine.verifier(), request.metadata())?;
        Ok(Response::new(convert::catalogue(&self.engine.catalogue())))
    }

    async fn post_message(
        &self,
        request: Request<pb::SendMessage>,
    ) -> Result<Response<pb::Ack>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let message = convert::send_message(request.into_inner());
        let ack = self
            .engine
            .send_message(&who, message, None)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::ack(&ack)))
    }

    async fn set_user_context(
        &self,
        request: Request<pb::SetUserContextRequest>,
    ) -> Result<Response<pb::UserContext>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let req = request.into_inner();
        let document = req
            .document
            .as_ref()
            .map(chat_proto::json::struct_to_json)
            .unwrap_or_default();
        let stored = self
            .engine
            .set_user_context(&who, &req.user_id, document)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::user_context(&stored)))
    }

    async fn get_user_context(
        &self,
        request: Request<pb::GetUserContextRequest>,
    ) -> Result<Response<pb::UserContext>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let stored = self
            .engine
            .user_context(&who, &request.get_ref().user_id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::user_context(&stored)))
    }

    /// Counts only: no token needed, so health probes of the edge can report them.
    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        let stats = self.engine.stats();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::Stats {
            connections: count(stats.connections),
            active_chats: count(stats.active_chats),
            uptime_seconds: stats.uptime.as_secs(),
        }))
    }
}
