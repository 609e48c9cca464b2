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
use crate::chat::command::{HistoryQuery, Inbound};

pub struct ChatApi {
    engine: Arc<Engine>,
}

impl ChatApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

/// A connection's client frames as commands. tonic cannot go on after a failure: the stream
/// then ends, after one last command saying why when the client can act on it. (A plain
/// `Stream`, not `unfold`: an `unfold` keeps room for its future beside its state, and every
/// connection holds it.)
struct Frames(Option<Streaming<pb::ClientEvent>>);

impl Stream for Frames {
    type Item = Inbound;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Inbound>> {
        let Some(frames) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let next = std::task::ready!(frames.poll_next_unpin(cx));
        std::task::Poll::Ready(match next {
            Some(Ok(frame)) => Some(convert::inbound(frame)),
            Some(Err(status)) => {
                tracing::debug!(status = %status.code(), "client stream failed");
                self.0 = None;
                convert::stream_failure(&status)
            }
            None => {
                self.0 = None;
                None
            }
        })
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ServerEvent, Status>> + Send>>;
type FileStream = Pin<Box<dyn Stream<Item = Result<pb::FileChunk, Status>> + Send>>;

/// Fills in fresh signed URLs for the attachments of the messages an event carries (URLs are
/// made as events leave, so history and resume never hand out stale ones).
fn sign_urls(engine: &Engine, event: &mut pb::ServerEvent) {
    use pb::server_event::Event as Out;
    match &mut event.event {
        Some(Out::Message(m)) => {
            if let Some(message) = &mut m.message {
                sign_message_urls(engine, std::slice::from_mut(message));
            }
        }
        Some(Out::History(h)) => sign_message_urls(engine, &mut h.messages),
        _ => {}
    }
}

pub(crate) fn sign_message_urls(engine: &Engine, messages: &mut [pb::ChatMessage]) {
    let Ok(files) = engine.files() else {
        return;
    };
    for attachment in messages.iter_mut().flat_map(|m| m.attachments.iter_mut()) {
        attachment.url = files.url(&attachment.id);
    }
}

fn file_info(row: &crate::storage::FileRow, url: String) -> pb::FileInfo {
    pb::FileInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        mime: row.mime.clone(),
        size: row.size,
        url,
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    type ConnectStream = EventStream;
    type ReadFileStream = FileStream;

    /// Opens the connection in the engine and returns its bounded outbox as the response.
    /// The client's stream ends the connection when it ends or fails.
    async fn connect(
        &self,
        request: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<EventStream>, Status> {
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let inbound = Frames(Some(request.into_inner()));
        let outbox = self
            .engine
            .connect(who, Box::pin(inbound))
            .map_err(convert::status)?;
        let engine = self.engine.clone();
        let events = ReceiverStream::new(outbox).map(move |out| {
            let mut event = convert::server_event(&out);
            sign_urls(&engine, &mut event);
            Ok(event)
        });
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
        let mut history = convert::history(&history);
        sign_message_urls(&self.engine, &mut history.messages);
        Ok(Response::new(history))
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

    /// An upload: `UploadStart`, then the bytes; answered with the stored file and its URL.
    async fn upload_file(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::FileInfo>, Status> {
        use pb::upload_chunk::Part;
        let who = authenticate(self.engine.verifier(), request.metadata())?;
        let files = self.engine.files().map_err(convert::status)?;
        self.engine
            .check_upload_rate(&who.user_id)
            .await
            .map_err(convert::status)?;
        let mut chunks = request.into_inner();
        let start = match chunks.message().await? {
            Some(pb::UploadChunk {
                part: Some(Part::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "An upload starts with UploadStart (name, mime)",
                ));
            }
        };
        let data = chunks.map(|chunk| match chunk {
            Ok(pb::UploadChunk {
                part: Some(Part::Data(bytes)),
            }) => Ok(bytes::Bytes::from(bytes)),
            Ok(_) => Err(crate::chat::ChatError::invalid(
                "file",
                "Only one UploadStart per upload",
            )),
            Err(_) => Err(crate::chat::ChatError::Unavailable(
                "The upload was interrupted".into(),
            )),
        });
        let row = files
            .upload(
                self.engine.db(),
                &who.user_id,
                &start.name,
                &start.mime,
                data,
            )
            .await
            .map_err(convert::status)?;
        let url = files.url(&row.id);
        Ok(Response::new(file_info(&row, url)))
    }

    /// A signed URL's bytes: `FileHead`, then the data. The URL is the capability: no token.
    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<FileStream>, Status> {
        use pb::file_chunk::Part;
        let req = request.into_inner();
        let files = self.engine.files().map_err(convert::status)?;
        let range = req.range_start.map(|start| (start, req.range_end));
        let download = files
            .download(self.engine.db(), &req.file_id, req.exp, &req.sig, range)
            .await
            .map_err(convert::status)?;
        let head = pb::FileChunk {
            part: Some(Part::Head(pb::FileHead {
                file: Some(file_info(&download.file, String::new())),
                start: download.start,
                end: download.end,
                partial: download.partial,
            })),
        };
        let data = download.bytes.map(|chunk| {
            chunk
                .map(|bytes| pb::FileChunk {
                    part: Some(Part::Data(bytes.to_vec())),
                })
                .map_err(convert::status)
        });
        Ok(Response::new(
            futures::stream::once(async { Ok(head) })
                .chain(data)
                .boxed(),
        ))
    }
}
