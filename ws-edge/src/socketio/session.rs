//! One Socket.IO socket's session: its core `ChatService.Connect` stream, and seed 003's
//! events translated both ways (the table is in `docs/protocol.md`, "Socket.IO").
//!
//! Client events become the JSON protocol's frames and go through the same decoder as a
//! WebSocket's ([`crate::frames::decode_client_frame`]), so every field is checked the same way;
//! `connectionId` becomes the core's chat key (`SendMessage.chat_key`). What the session keeps
//! is per socket and lost with it: which chat each `connectionId` named, the ack callbacks
//! waiting for the core, and the ids of recent messages (for `chat:ack` read receipts).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chat_proto::pb::chat::{self as pb, client_event::Event as In, server_event::Event as Out};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::{SendError, SocketError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Handshake, Inbound};
use crate::EdgeState;
use crate::bridge::{FrameGate, Live, Verdict};
use crate::frames::{self, Limits};
use crate::upstream;

/// Events buffered from the socket towards the core.
const TO_CORE_BUFFER: usize = 64;
/// `chat:message` acks waiting for the core at once; more are refused (429).
const MAX_PENDING: usize = 64;
/// Recent messages remembered for `chat:ack` (read receipts name a message id only).
const RECENT_MESSAGES: usize = 512;
/// Chats one socket may name by `connectionId` (each is also a core chat, rate limited there).
const MAX_KEYS: usize = 1000;

/// Why the session loop stops.
struct Stop;

pub(super) async fn run(
    state: Arc<EdgeState>,
    socket: SocketRef,
    mut inbox: mpsc::Receiver<Inbound>,
    closed: CancellationToken,
    handshake: Handshake,
    _live: Live,
) {
    // On the best core, as a WebSocket's stream.
    let upstream::Connected {
        to_core,
        mut from_core,
        guard,
    } = match state
        .upstream
        .connect(&handshake.token, TO_CORE_BUFFER)
        .await
    {
        Ok(connected) => connected,
        Err(upstream::Refused::Unauthenticated) => return end(&socket, "unauthorized"),
        Err(upstream::Refused::Unavailable(code)) => {
            tracing::warn!(
                ?code,
                transport = "socket.io",
                "core refused or unreachable"
            );
            return end(&socket, "unavailable");
        }
    };
    let limits = &state.settings.limits;
    let mut gate = FrameGate::new(limits.frames_per_minute, limits.abuse_strikes);
    let mut session = Session::new(socket.clone(), to_core, handshake.connection_id);
    let mut announced = false;
    loop {
        let step = tokio::select! {
            () = closed.cancelled() => break,
            () = state.shutdown.cancelled() => {
                // Seed 003's clients reconnect on their own, with backoff.
                end(&socket, "server_restarting");
                break;
            }
            inbound = inbox.recv(), if announced => match inbound {
                None => break,
                Some(inbound) => match gate.check() {
                    Verdict::Pass => session.client(inbound).await,
                    Verdict::Limited(wait) => session.refuse(inbound, 429, "Rate limit exceeded", Some(wait.as_millis() as i64)),
                    Verdict::Abuse => {
                        let _ = session.refuse(inbound, 429, "Too many events: closing", None);
                        end(&socket, "rate_limited");
                        break;
                    }
                },
            },
            event = from_core.next() => match event {
                Some(Ok(event)) => {
                    if matches!(event.event, Some(Out::Session(_))) {
                        announced = true;
                    }
                    session.server(event).await
                }
                // The core ended the stream (restart): the client reconnects.
                Some(Err(_)) => {
                    guard.failed();
                    end(&socket, "disconnected");
                    break;
                }
                None => {
                    end(&socket, "disconnected");
                    break;
                }
            },
        };
        if step.is_err() {
            let _ = socket.clone().disconnect();
            break;
        }
    }
}

/// `connection:status {status}`, then the server's disconnect.
fn end(socket: &SocketRef, status: &str) {
    let _ = socket.emit("connection:status", &json!({ "status": status }));
    let _ = socket.clone().disconnect();
}

struct Session {
    socket: SocketRef,
    to_core: mpsc::Sender<Box<pb::ClientEvent>>,
    user_id: String,
    /// `connectionId` -> chat id, and back, for the chats this socket named.
    keys: HashMap<String, String>,
    chats: HashMap<String, String>,
    /// `chat:message`s sent to the core and not answered yet: messageId -> (key, ack callback).
    pending: HashMap<String, (String, Option<AckSender<LocalAdapter>>)>,
    /// Requests the core answers with `history` (joins, pages), not answered yet, in the
    /// order sent (the core answers a connection's requests in order): (frame id, the
    /// `connectionId` of a keyed join).
    asks: VecDeque<(String, Option<String>)>,
    /// Recent messages: (id the client saw, chat id, server id).
    recent: VecDeque<(String, String, String)>,
    /// The handshake's `connectionId`, joined when the core's `session` arrives.
    opening: Option<String>,
    /// Frame ids handed out, for `asks`.
    asked: u64,
}

impl Session {
    fn new(
        socket: SocketRef,
        to_core: mpsc::Sender<Box<pb::ClientEvent>>,
        opening: Option<String>,
    ) -> Self {
        Self {
            socket,
            to_core,
            user_id: String::new(),
            keys: HashMap::new(),
            chats: HashMap::new(),
            pending: HashMap::new(),
            asks: VecDeque::new(),
            recent: VecDeque::new(),
            opening,
            asked: 0,
        }
    }

    // ------------------------------------------------------------ client -> core

    async fn client(&mut self, inbound: Inbound) -> Result<(), Stop> {
        let Inbound { event, data, ack } = inbound;
        let data = match data {
            Some(Value::Object(map)) => map,
            _ if matches!(
                event.as_str(),
                "chat:message"
                    | "chat:typing:start"
                    | "chat:typing:stop"
                    | "presence:update"
                    | "chat:ack"
                    | "chat:history"
            ) =>
            {
                return self.fail(None, ack, 400, &format!("{event} needs an object"), None);
            }
            _ => Map::new(),
        };
        match event.as_str() {
            "chat:message" => self.send_message(data, ack).await,
            "chat:typing:start" | "chat:typing:stop" => {
                let Some(chat_id) = self.chat_of(&data) else {
                    // No chat has this connectionId yet (its first message creates it).
                    return self.answer(ack, &json!({"status": "ignored"}));
                };
                let frame = json!({"type": "typing", "data": {"chatId": chat_id, "isTyping": event == "chat:typing:start"}});
                self.forward(frame, None, ack).await
            }
            "presence:update" => {
                let frame = json!({"type": "presence", "data": {"status": data.get("status").cloned().unwrap_or(Value::Null)}});
                self.forward(frame, None, ack).await
            }
            "chat:ack" => {
                let id = data
                    .get("messageId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some((chat_id, server_id)) = self
                    .recent
                    .iter()
                    .find(|(seen, _, _)| seen == id)
                    .map(|(_, chat, server)| (chat.clone(), server.clone()))
                else {
                    return self.fail(Some(id), ack, 404, "Unknown message", None);
                };
                let frame = json!({"type": "read_receipt", "data": {"chatId": chat_id, "messageIds": [server_id]}});
                self.forward(frame, None, ack).await
            }
            "chat:history" => {
                if self.asks.len() >= MAX_PENDING {
                    return self.fail(None, ack, 429, "Too many history requests waiting", None);
                }
                let key = key_of(&data).unwrap_or_default();
                match self.keys.get(&key).cloned() {
                    Some(chat_id) => {
                        let mut request = Map::new();
                        request.insert("chatId".into(), chat_id.into());
                        for field in ["before", "limit"] {
                            if let Some(v) = data.get(field) {
                                request.insert(field.into(), v.clone());
                            }
                        }
                        let frame = json!({"type": "history", "data": request});
                        match frames::decode_client_frame(&frame.to_string(), &Limits::PROTOCOL) {
                            Ok(mut event) => {
                                event.message_id = self.ask(None);
                                self.send_core(event).await?;
                                self.answer(ack, &json!({"status": "ok"}))
                            }
                            Err(err) => {
                                let message = err.message.replace("data.", "");
                                self.fail(None, ack, err.code, &message, None)
                            }
                        }
                    }
                    None => self.join_keyed(key).await,
                }
            }
            other => {
                let message = format!("Unknown event: {}", frames_excerpt(other));
                self.fail(None, ack, 400, &message, None)
            }
        }
    }

    /// `chat:message {messageId, content, connectionId, context?}` -> `message` with the
    /// chat key; answered by the core's `ack` or `error` for that messageId.
    async fn send_message(
        &mut self,
        data: Map<String, Value>,
        ack: Option<AckSender<LocalAdapter>>,
    ) -> Result<(), Stop> {
        let message_id = data
            .get("messageId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(key) = key_of(&data) else {
            return self.fail(
                message_id.as_deref(),
                ack,
                400,
                "connectionId is required",
                None,
            );
        };
        if self.pending.len() >= MAX_PENDING {
            return self.fail(
                message_id.as_deref(),
                ack,
                429,
                "Too many messages waiting",
                None,
            );
        }
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS {
            return self.fail(
                message_id.as_deref(),
                ack,
                429,
                "Too many conversations on one socket",
                None,
            );
        }
        let mut fields = Map::new();
        for field in ["content", "messageId", "context"] {
            if let Some(v) = data.get(field) {
                fields.insert(field.into(), v.clone());
            }
        }
        let mut frame = json!({"type": "message", "data": fields});
        if let Some(id) = &message_id {
            frame["messageId"] = id.clone().into();
        }
        let mut event = match frames::decode_client_frame(&frame.to_string(), &Limits::PROTOCOL) {
            Ok(event) => event,
            Err(err) => {
                let message = err.message.replace("data.", "");
                return self.fail(message_id.as_deref(), ack, err.code, &message, None);
            }
        };
        if let Some(In::Message(m)) = &mut event.event {
            m.chat_key = key.clone();
        }
        if let Some(id) = message_id {
            self.pending.insert(id, (key, ack));
        }
        self.send_core(event).await
    }

    /// Joins the caller's chat of `key`: its history comes back as `chat:history` (empty when
    /// the key has no chat yet).
    async fn join_keyed(&mut self, key: String) -> Result<(), Stop> {
        let frame_id = self.ask(Some(key.clone()));
        let event = pb::ClientEvent {
            message_id: frame_id,
            event: Some(In::ChatUpdate(pb::ChatUpdate {
                action: pb::ChatAction::Join as i32,
                chat_key: Some(key),
                ..Default::default()
            })),
            ..Default::default()
        };
        self.send_core(event).await
    }

    /// A protocol frame, decoded and checked like a WebSocket's, to the core; `ack` (when the
    /// client asked for one) gets `{status: "ok"}` once it is on its way.
    async fn forward(
        &mut self,
        frame: Value,
        message_id: Option<&str>,
        ack: Option<AckSender<LocalAdapter>>,
    ) -> Result<(), Stop> {
        match frames::decode_client_frame(&frame.to_string(), &Limits::PROTOCOL) {
            Ok(event) => {
                self.send_core(event).await?;
                self.answer(ack, &json!({"status": "ok"}))
            }
            Err(err) => {
                let message = err.message.replace("data.", "");
                self.fail(message_id, ack, err.code, &message, None)
            }
        }
    }

    /// A frame id for a request answered by `history`, queued in `asks`.
    fn ask(&mut self, key: Option<String>) -> String {
        self.asked += 1;
        let frame_id = format!("sio-{}", self.asked);
        self.asks.push_back((frame_id.clone(), key));
        frame_id
    }

    async fn send_core(&mut self, event: pb::ClientEvent) -> Result<(), Stop> {
        self.to_core.send(Box::new(event)).await.map_err(|_| Stop)
    }

    /// An event refused before it reached the core (rate limit).
    fn refuse(
        &mut self,
        inbound: Inbound,
        code: u32,
        message: &str,
        retry_after_ms: Option<i64>,
    ) -> Result<(), Stop> {
        let id = match (&inbound.event[..], &inbound.data) {
            ("chat:message", Some(Value::Object(d))) => d
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        self.fail(id.as_deref(), inbound.ack, code, message, retry_after_ms)
    }

    /// `chat:message:error {messageId, error, code}`, to the ack callback when there is one.
    fn fail(
        &mut self,
        message_id: Option<&str>,
        ack: Option<AckSender<LocalAdapter>>,
        code: u32,
        error: &str,
        retry_after_ms: Option<i64>,
    ) -> Result<(), Stop> {
        let mut body = json!({
            "messageId": message_id,
            "error": error,
            "code": code,
            "status": "error",
        });
        if let Some(ms) = retry_after_ms {
            body["retryAfterMs"] = ms.into();
        }
        if let Some(ack) = ack {
            let _ = ack.send(&body);
        }
        self.emit("chat:message:error", &body)
    }

    fn answer(&mut self, ack: Option<AckSender<LocalAdapter>>, body: &Value) -> Result<(), Stop> {
        if let Some(ack) = ack {
            let _ = ack.send(body);
        }
        Ok(())
    }

    /// The chat a `connectionId` names on this socket: a key it used, or the id of a chat it
    /// is in (how a member sees another owner's chat).
    fn chat_of(&self, data: &Map<String, Value>) -> Option<String> {
        let key = key_of(data)?;
        self.keys
            .get(&key)
            .cloned()
            .or_else(|| self.chats.contains_key(&key).then_some(key))
    }

    /// Keeps the last [`RECENT_MESSAGES`] messages this socket received, by the id the client
    /// saw, for `chat:ack`.
    fn received(&mut self, seen: String, m: &pb::ChatMessage) {
        self.recent
            .push_back((seen, m.chat_id.clone(), m.id.clone()));
        if self.recent.len() > RECENT_MESSAGES {
            self.recent.pop_front();
        }
    }

    fn remember(&mut self, key: &str, chat_id: &str) {
        if self.keys.len() < MAX_KEYS || self.keys.contains_key(key) {
            self.keys.insert(key.to_owned(), chat_id.to_owned());
            self.chats.insert(chat_id.to_owned(), key.to_owned());
        }
    }

    /// The `connectionId` clients know a chat by: its key, or (a chat made elsewhere) its id.
    fn key_for(&self, chat_id: &str) -> String {
        self.chats
            .get(chat_id)
            .cloned()
            .unwrap_or_else(|| chat_id.to_owned())
    }

    // ------------------------------------------------------------ core -> client

    async fn server(&mut self, event: pb::ServerEvent) -> Result<(), Stop> {
        let at = event.timestamp_ms;
        let Some(event) = event.event else {
            return Ok(());
        };
        match event {
            Out::Session(session) => {
                self.user_id = session.user_id.clone();
                self.emit(
                    "connection:status",
                    &json!({"status": "connected", "userId": session.user_id}),
                )?;
                match self.opening.take() {
                    Some(key) => self.join_keyed(key).await,
                    None => match session.active_chat_id {
                        Some(chat_id) => {
                            let event = pb::ClientEvent {
                                message_id: self.ask(None),
                                event: Some(In::ChatUpdate(pb::ChatUpdate {
                                    action: pb::ChatAction::Join as i32,
                                    chat_id,
                                    ..Default::default()
                                })),
                                ..Default::default()
                            };
                            self.send_core(event).await
                        }
                        None => self.emit(
                            "chat:history",
                            &json!({"messages": [], "connectionId": Value::Null, "hasMore": false}),
                        ),
                    },
                }
            }
            Out::Ack(a) => {
                let (key, ack) = self.pending.remove(&a.message_id).unwrap_or_default();
                if !key.is_empty() {
                    self.remember(&key, &a.chat_id);
                }
                let body = json!({
                    "messageId": a.message_id,
                    "id": a.id,
                    "timestamp": at,
                    "status": "sent",
                    "duplicate": a.duplicate,
                    "connectionId": self.key_for(&a.chat_id),
                    "chatId": a.chat_id,
                    "seq": a.seq,
                });
                self.answer(ack, &body)?;
                self.emit(
                    "chat:message:sent",
                    &json!({"messageId": a.message_id, "timestamp": at}),
                )
            }
            Out::Message(m) => {
                let Some(message) = m.message else {
                    return Ok(());
                };
                let seen = m.message_id.clone().unwrap_or_else(|| message.id.clone());
                self.received(seen, &message);
                let body = self.message_json(&message, m.message_id.as_deref());
                self.emit("chat:message", &body)
            }
            Out::MessageChunk(c) => {
                let body = json!({
                    "messageId": c.message_id,
                    "index": c.index,
                    "delta": c.delta,
                    "connectionId": self.key_for(&c.chat_id),
                });
                self.emit("chat:chunk", &body)
            }
            Out::Typing(t) => {
                let body = json!({
                    "userId": t.user_id,
                    "connectionId": self.key_for(&t.chat_id),
                    "isTyping": t.is_typing,
                });
                self.emit("chat:typing", &body)
            }
            Out::Presence(p) => {
                let status = pb::PresenceStatus::try_from(p.status)
                    .map(|s| match s {
                        pb::PresenceStatus::Online => "online",
                        pb::PresenceStatus::Away => "away",
                        _ => "offline",
                    })
                    .unwrap_or("offline");
                let body = json!({
                    "userId": p.user_id,
                    "status": status,
                    "connectionId": p.chat_id.as_deref().map(|c| self.key_for(c)),
                });
                self.emit("presence:update", &body)
            }
            Out::History(h) => {
                if let Some((_, Some(key))) = self.asks.pop_front() {
                    self.remember(&key, &h.chat_id);
                }
                let messages: Vec<Value> = h
                    .messages
                    .iter()
                    .map(|m| self.message_json(m, None))
                    .collect();
                for m in &h.messages {
                    self.received(m.id.clone(), m);
                }
                let body = json!({
                    "messages": messages,
                    "connectionId": self.key_for(&h.chat_id),
                    "hasMore": h.has_more,
                    "cursor": h.cursor,
                    "lastSeq": h.last_seq,
                });
                self.emit("chat:history", &body)
            }
            Out::Error(e) => self.error(e),
            // Seed 003 has no events for these: summaries, read receipts, operators, pongs.
            Out::ChatUpdate(_)
            | Out::ReadReceipt(_)
            | Out::OperatorJoined(_)
            | Out::OperatorLeft(_)
            | Out::Pong(_) => Ok(()),
        }
    }

    fn error(&mut self, e: pb::Error) -> Result<(), Stop> {
        let closing = e.close_code.is_some();
        let frame_id = e.message_id.clone().unwrap_or_default();
        // An answer to one of the session's own requests names no client message.
        let mut ours = false;
        if let Some(at) = self.asks.iter().position(|(id, _)| *id == frame_id) {
            ours = true;
            // A keyed join of a connectionId without a chat yet: its history is empty.
            if let Some((_, Some(key))) = self.asks.remove(at)
                && e.code == chat_proto::limits::code::NOT_FOUND
            {
                return self.emit(
                    "chat:history",
                    &json!({"messages": [], "connectionId": key, "hasMore": false}),
                );
            }
        }
        let ack = self.pending.remove(&frame_id).and_then(|(_, ack)| ack);
        let id = if ours { None } else { e.message_id.as_deref() };
        self.fail(id, ack, e.code, &e.message, e.retry_after_ms)?;
        if closing {
            let _ = self.socket.clone().disconnect();
            return Err(Stop);
        }
        Ok(())
    }

    /// A stored message as seed 003's `Message`: `timestamp` in milliseconds, `status`
    /// `delivered` (or `error` for a failed reply); `messageId` is the sender's own id on the
    /// sender's messages (so a client matches its pending message), else the server's.
    fn message_json(&self, m: &pb::ChatMessage, client_id: Option<&str>) -> Value {
        let role = match pb::Role::try_from(m.role).unwrap_or(pb::Role::System) {
            pb::Role::User => "user",
            pb::Role::Assistant => "assistant",
            pb::Role::Admin => "admin",
            _ => "system",
        };
        let status = match pb::MessageStatus::try_from(m.status) {
            Ok(pb::MessageStatus::Failed) => "error",
            _ => "delivered",
        };
        let own = m.user_id == self.user_id;
        let message_id = client_id
            .map(str::to_owned)
            .or_else(|| own.then(|| m.client_message_id.clone()).flatten())
            .unwrap_or_else(|| m.id.clone());
        let timestamp = m
            .created_at
            .as_ref()
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .unwrap_or_default();
        json!({
            "messageId": message_id,
            "id": m.id,
            "content": m.content,
            "userId": m.user_id,
            "timestamp": timestamp,
            "status": status,
            "role": role,
            "connectionId": self.key_for(&m.chat_id),
            "seq": m.seq,
        })
    }

    /// Emits to this socket; a socket whose buffer is full is not reading: it is dropped, as a
    /// WebSocket that does not read its frames is closed with 1013.
    fn emit(&self, event: &str, body: &Value) -> Result<(), Stop> {
        match self.socket.emit(event, body) {
            Ok(()) => Ok(()),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                metrics::counter!("chat_edge_slow_sockets_closed_total").increment(1);
                tracing::debug!(
                    transport = "socket.io",
                    "closing a socket that does not read its events"
                );
                Err(Stop)
            }
            Err(_) => Err(Stop),
        }
    }
}

/// `connectionId`, as given (the core checks it like an id: 1..64 characters).
fn key_of(data: &Map<String, Value>) -> Option<String> {
    data.get("connectionId")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// An event name as it may appear in an error: at most 64 characters.
fn frames_excerpt(name: &str) -> String {
    name.chars().take(64).collect()
}
