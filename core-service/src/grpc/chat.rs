//! `chat.v1.ChatService`: the stream every client connection uses, and unary calls for
//! internal services.

use std::pin::Pin;
use std::sync::Arc;

use chat_proto::pb::chat as pb;
use chat_proto::pb::chat::chat_service_server::ChatService;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::authenticate;
use crate::chat::Engine;
use crate::chat::handler::Handler;
use crate::chat::rooms::Conn;

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

    /// Spawns the connection's [`Handler`] and returns its bounded outbox as the response.
    async fn connect(
        &self,
        request: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<EventStream>, Status> {
        let who = authenticate(&self.engine.verifier, request.metadata())?;
        if self.engine.shutdown.is_cancelled() {
            return Err(Status::unavailable("Shutting down"));
        }
        let (tx, rx) = mpsc::channel(self.engine.settings.outbound_buffer);
        let id = crate::chat::new_id();
        let conn = Conn {
            id: id.as_str().into(),
            user_id: who.user_id.as_str().into(),
            tx,
            kill: self.engine.shutdown.child_token(),
        };
        let span = tracing::info_span!("conn", conn = %id, user = %who.user_id);
        let handler = Handler::new(self.engine.clone(), who, conn);
        let inbound = request.into_inner();
        self.engine
            .tasks
            .spawn(handler.run(inbound).instrument(span));
        let events = ReceiverStream::new(rx).map(|ev| Ok(Arc::unwrap_or_clone(ev)));
        Ok(Response::new(events.boxed()))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let who = authenticate(&self.engine.verifier, request.metadata())?;
        let sessions = self
            .engine
            .list_sessions(&who, request.get_ref().limit)
            .await?;
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::History>, Status> {
        let who = authenticate(&self.engine.verifier, request.metadata())?;
        let req = request.into_inner();
        Ok(Response::new(
            self.engine
                .history(&who, &req.chat_id, req.before.as_deref(), req.limit)
                .await?,
        ))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        authenticate(&self.engine.verifier, request.metadata())?;
        Ok(Response::new(self.engine.catalogue()))
    }

    async fn post_message(
        &self,
        request: Request<pb::SendMessage>,
    ) -> Result<Response<pb::Ack>, Status> {
        let who = authenticate(&self.engine.verifier, request.metadata())?;
        Ok(Response::new(
            self.engine
                .send_message(&who, request.into_inner(), None)
                .await?,
        ))
    }
}
