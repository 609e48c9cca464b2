//! Socket.IO v4 at `/socket.io/` for seed 003's clients (`socket.io-client`, websocket and
//! polling transports, served by socketioxide). Each Socket.IO socket gets one core
//! `ChatService.Connect` stream, exactly like a WebSocket in [`crate::bridge`], so the edge stays
//! stateless; [`session`] translates seed 003's events to and from that stream.
//!
//! Admission happens in the namespace's connect middleware, before the client is told it is
//! connected: the token (handshake `auth: {token}`, or the `token` / `auth` query parameter) is
//! verified and the edge's connection limit checked; a refusal is the client's `connect_error`
//! with the reason as its message. The middleware also registers the socket's handlers, because
//! socketioxide drops events that arrive before a handler exists and acknowledges the connect
//! before the connect handler runs.
//!
//! Ordering: socketioxide runs each event handler in a task of its own, so two events of one
//! socket could be handled out of order. Extractors, though, run in arrival order on the
//! connection's read task, so [`Enqueued`] hands each event to the socket's queue right there
//! and the handler itself does nothing.

mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, Value as WireValue};
use socketioxide::socket::Socket;
use socketioxide::{SocketIo, TransportType, layer::SocketIoLayer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::bridge::Live;

/// Client events waiting for the socket's session task; past this the client is told to slow
/// down (the frame rate limit refuses a client well before).
const INBOX: usize = 64;

/// One client event, in arrival order.
struct Inbound {
    event: String,
    /// The first argument (`Err` when there was none, or it was not JSON).
    data: Option<Value>,
    /// The client's ack callback, when it passed one.
    ack: Option<AckSender<LocalAdapter>>,
}

/// Where a socket's events go (in the socket's extensions).
#[derive(Clone)]
struct Inlet(mpsc::Sender<Inbound>);

/// What the handshake said, besides the token.
#[derive(Debug, Clone, Default)]
struct Handshake {
    token: String,
    /// Seed 003's `connectionId`: the chat whose history is sent on connect.
    connection_id: Option<String>,
}

/// The Socket.IO layer for the edge's router, and its namespace `/`.
pub fn layer(state: Arc<EdgeState>) -> SocketIoLayer<LocalAdapter> {
    let limits = &state.settings.limits;
    let (layer, io) = SocketIo::builder()
        .transports([TransportType::Polling, TransportType::Websocket])
        // Per connection: packets waiting to be written (a client that does not read its
        // events is dropped, like a WebSocket that does not read its frames).
        .max_buffer_size(limits.send_queue_frames.max(16))
        // A polling POST, and one websocket message, at most what a WebSocket frame may be.
        .max_payload(chat_proto::limits::MAX_FRAME_BYTES.into())
        .ws_max_message_size(chat_proto::limits::MAX_FRAME_BYTES as usize)
        .ws_max_frame_size(chat_proto::limits::MAX_FRAME_BYTES as usize)
        .build_layer();
    let admit = {
        let state = state.clone();
        move |socket: SocketRef, TryData(auth): TryData<Value>| {
            let state = state.clone();
            async move { admit(state, socket, auth.ok()) }
        }
    };
    io.ns("/", (async |_: SocketRef| {}).with(admit));
    layer
}

/// Why a connection is refused (the client's `connect_error` message).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("Authentication failed")]
    Unauthenticated,
    #[error("Too many connections")]
    Full,
    #[error("Server restarting")]
    ShuttingDown,
    #[error("Origin not allowed")]
    Origin,
}

/// The connect middleware: verifies the token, takes a connection slot, registers the
/// socket's handlers and starts its session.
fn admit(state: Arc<EdgeState>, socket: SocketRef, auth: Option<Value>) -> Result<(), Refused> {
    if state.shutdown.is_cancelled() {
        return Err(Refused::ShuttingDown);
    }
    if !crate::routes::origin_allowed(&state.settings.allowed_origins, &socket.req_parts().headers)
    {
        return Err(Refused::Origin);
    }
    let handshake = handshake(&socket, auth.as_ref());
    if let Err(reason) = state.verifier.verify(&handshake.token) {
        // The reason only (no token, expired, bad signature, ...): never the token.
        tracing::info!(reason = %reason, transport = "socket.io", "authentication failed");
        return Err(Refused::Unauthenticated);
    }
    if state.connections.fetch_add(1, Ordering::Relaxed) >= state.settings.limits.max_connections {
        state.connections.fetch_sub(1, Ordering::Relaxed);
        return Err(Refused::Full);
    }
    let live = Live::new(state.clone());
    let (tx, inbox) = mpsc::channel(INBOX);
    socket.extensions.insert(Inlet(tx));
    socket.on_fallback(async |_: Enqueued| {});
    let closed = CancellationToken::new();
    socket.on_disconnect({
        let closed = closed.clone();
        async move || closed.cancel()
    });
    let tasks = state.tasks.clone();
    tasks.spawn(session::run(state, socket, inbox, closed, handshake, live));
    Ok(())
}

/// The token from the handshake's `auth: {token}`, else the `token` or `auth` query
/// parameter; `connectionId` from `auth` or the query.
fn handshake(socket: &SocketRef, auth: Option<&Value>) -> Handshake {
    let query: std::collections::HashMap<String, String> = socket
        .req_parts()
        .uri
        .query()
        .and_then(form_urlencoded_pairs)
        .unwrap_or_default();
    let from_auth = |name: &str| {
        auth.and_then(|a| a.get(name))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let token = from_auth("token")
        .or_else(|| crate::routes::query_token(&query).map(str::to_owned))
        .unwrap_or_default();
    let connection_id = from_auth("connectionId")
        .or_else(|| query.get("connectionId").filter(|v| !v.is_empty()).cloned());
    Handshake {
        token,
        connection_id,
    }
}

/// The query's pairs, decoded (`None` when it cannot be read: no token then).
fn form_urlencoded_pairs(query: &str) -> Option<std::collections::HashMap<String, String>> {
    serde_urlencoded::from_str(query).ok()
}

/// The extractor that queues an event in arrival order (see the module comment).
struct Enqueued;

impl FromMessageParts<LocalAdapter> for Enqueued {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut WireValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let event = Event::from_message_parts(s, v, ack_id)
            .map(|e| e.0)
            .unwrap_or_default();
        let Ok(TryData(data)) = TryData::<Value>::from_message_parts(s, v, ack_id);
        let ack = match ack_id {
            Some(_) => AckSender::from_message_parts(s, v, ack_id).ok(),
            None => None,
        };
        let Some(Inlet(tx)) = s.extensions.get::<Inlet>() else {
            return Ok(Self);
        };
        let inbound = Inbound {
            event,
            data: data.ok(),
            ack,
        };
        if let Err(mpsc::error::TrySendError::Full(refused)) = tx.try_send(inbound) {
            let error = json!({"messageId": Value::Null, "error": "Too many events: slow down", "code": 429});
            match refused.ack {
                Some(ack) => {
                    let _ = ack.send(&error);
                }
                None => {
                    let _ = s.emit("chat:message:error", &error);
                }
            }
        }
        Ok(Self)
    }
}
