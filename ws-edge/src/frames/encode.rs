//! Protobuf -> server frames: `{"type", "data", "timestamp", "seq"?}` with the exact field names
//! of `docs/protocol.md`, enums as words and timestamps as RFC 3339. REST responses reuse the
//! same mapping ([`event_data`]).

use chat_proto::limits::code;
use chat_proto::pb::chat::{self as pb, ServerEvent, server_event::Event as ServerKind};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Renders a server event as the JSON text frame browsers receive:
/// `{"type", "data", "timestamp", "seq"?}`. `timestamp` is the event's `timestamp_ms`, or now when
/// the core left it 0; `seq` appears only when set. `Error.close_code` is never rendered: closing is
/// the bridge's job. An event with no variant set (a core bug) renders as an internal error.
pub fn encode_server_event(ev: &ServerEvent) -> String {
    let (kind, data) = match &ev.event {
        Some(event) => encode_event(event),
        None => (
            "error",
            error_data(&pb::Error {
                code: code::INTERNAL,
                message: "internal error".to_owned(),
                ..Default::default()
            }),
        ),
    };
    let timestamp = if ev.timestamp_ms != 0 {
        ev.timestamp_ms
    } else {
        Utc::now().timestamp_millis()
    };
    let mut frame = Map::new();
    frame.insert("type".to_owned(), kind.into());
    frame.insert("data".to_owned(), data);
    frame.insert("timestamp".to_owned(), timestamp.into());
    if let Some(seq) = ev.seq {
        frame.insert("seq".to_owned(), seq.into());
    }
    Value::Object(frame).to_string()
}

/// An error frame for the bridge's own failures (auth, binary frames, overload), stamped now.
pub fn error_frame(
    code: u32,
    message: &str,
    retryable: bool,
    message_id: Option<&str>,
    field: Option<&str>,
) -> String {
    let error = pb::Error {
        code,
        message: message.to_owned(),
        retryable,
        message_id: message_id.map(str::to_owned),
        field: field.map(str::to_owned),
        ..Default::default()
    };
    encode_server_event(&ServerEvent {
        event: Some(ServerKind::Error(error)),
        ..Default::default()
    })
}

/// Builds a JSON object from `(key, value)` pairs, skipping the pairs whose value is `None`.
pub(super) fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect(),
    )
}

fn encode_event(event: &ServerKind) -> (&'static str, Value) {
    match event {
        ServerKind::Session(session) => ("session", session_data(session)),
        ServerKind::Ack(ack) => (
            "ack",
            object([
                ("messageId", Some(ack.message_id.clone().into())),
                ("id", Some(ack.id.clone().into())),
                ("chatId", Some(ack.chat_id.clone().into())),
                ("seq", Some(ack.seq.into())),
                // The protocol knows one status; a core that left it blank means that one.
                (
                    "status",
                    Some(if ack.status.is_empty() {
                        "sent".into()
                    } else {
                        ack.status.clone().into()
                    }),
                ),
                ("duplicate", Some(ack.duplicate.into())),
            ]),
        ),
        ServerKind::Message(message) => (
            "message",
            object([
                ("chatId", Some(message.chat_id.clone().into())),
                (
                    "message",
                    Some(
                        message
                            .message
                            .as_ref()
                            .map_or(Value::Null, chat_message_json),
                    ),
                ),
                ("messageId", message.message_id.clone().map(Value::from)),
            ]),
        ),
        ServerKind::MessageChunk(chunk) => (
            "message_chunk",
            object([
                ("chatId", Some(chunk.chat_id.clone().into())),
                ("messageId", Some(chunk.message_id.clone().into())),
                ("index", Some(chunk.index.into())),
                ("delta", Some(chunk.delta.clone().into())),
            ]),
        ),
        ServerKind::Typing(typing) => (
            "typing",
            object([
                ("chatId", Some(typing.chat_id.clone().into())),
                ("userId", Some(typing.user_id.clone().into())),
                ("agentId", typing.agent_id.clone().map(Value::from)),
                ("isTyping", Some(typing.is_typing.into())),
            ]),
        ),
        ServerKind::ReadReceipt(receipt) => (
            "read_receipt",
            object([
                ("chatId", Some(receipt.chat_id.clone().into())),
                ("messageIds", Some(receipt.message_ids.clone().into())),
                ("userId", Some(receipt.user_id.clone().into())),
                ("confirmed", Some(receipt.confirmed.into())),
            ]),
        ),
        ServerKind::ChatUpdate(update) => (
            "chat_update",
            object([
                ("chatId", Some(update.chat_id.clone().into())),
                ("updates", Some(chat_changes_json(update.updates.as_ref()))),
            ]),
        ),
        ServerKind::History(history) => (
            "history",
            object([
                ("chatId", Some(history.chat_id.clone().into())),
                (
                    "messages",
                    Some(Value::Array(
                        history.messages.iter().map(chat_message_json).collect(),
                    )),
                ),
                ("hasMore", Some(history.has_more.into())),
                ("cursor", Some(history.cursor.clone().into())),
                ("lastSeq", Some(history.last_seq.into())),
                ("reset", history.reset.then_some(Value::Bool(true))),
            ]),
        ),
        ServerKind::Presence(presence) => (
            "presence",
            object([
                ("userId", Some(presence.user_id.clone().into())),
                ("status", Some(presence_name(presence.status).into())),
                ("chatId", presence.chat_id.clone().map(Value::from)),
            ]),
        ),
        ServerKind::OperatorJoined(operator) => ("operator_joined", operator_event_json(operator)),
        ServerKind::OperatorLeft(operator) => ("operator_left", operator_event_json(operator)),
        ServerKind::Pong(pong) => ("pong", object([("timestamp", Some(pong.timestamp.into()))])),
        ServerKind::Error(error) => ("error", error_data(error)),
    }
}

fn session_data(session: &pb::Session) -> Value {
    let limits = session.limits.unwrap_or_default();
    object([
        ("connectionId", Some(session.connection_id.clone().into())),
        ("userId", Some(session.user_id.clone().into())),
        ("name", Some(session.name.clone().into())),
        ("roles", Some(session.roles.clone().into())),
        (
            "heartbeatIntervalMs",
            Some(session.heartbeat_interval_ms.into()),
        ),
        (
            "limits",
            Some(object([
                ("maxMessageChars", Some(limits.max_message_chars.into())),
                ("maxFrameBytes", Some(limits.max_frame_bytes.into())),
            ])),
        ),
        (
            "models",
            Some(
                session
                    .models
                    .iter()
                    .map(|model| named(&model.id, &model.name))
                    .collect(),
            ),
        ),
        ("defaultModel", Some(session.default_model.clone().into())),
        (
            "agents",
            Some(
                session
                    .agents
                    .iter()
                    .map(|agent| named(&agent.id, &agent.name))
                    .collect(),
            ),
        ),
        (
            "activeChatId",
            Some(
                session
                    .active_chat_id
                    .clone()
                    .map_or(Value::Null, Value::from),
            ),
        ),
        ("voice", Some(session.voice.into())),
    ])
}

fn chat_message_json(message: &pb::ChatMessage) -> Value {
    let metadata = message.metadata.clone().unwrap_or_default();
    object([
        ("id", Some(message.id.clone().into())),
        ("chatId", Some(message.chat_id.clone().into())),
        ("seq", Some(message.seq.into())),
        ("userId", Some(message.user_id.clone().into())),
        ("agentId", Some(message.agent_id.clone().into())),
        ("role", Some(role_name(message.role).into())),
        ("content", Some(message.content.clone().into())),
        ("status", Some(message_status_name(message.status).into())),
        (
            "timestamp",
            Some(message.created_at.as_ref().map_or(Value::Null, rfc3339)),
        ),
        (
            "attachments",
            Some(Value::Array(
                message
                    .attachments
                    .iter()
                    .map(|file| {
                        object([
                            ("id", Some(file.id.clone().into())),
                            ("name", Some(file.name.clone().into())),
                            ("mime", Some(file.mime.clone().into())),
                            ("size", Some(file.size.into())),
                            ("url", Some(file.url.clone().into())),
                        ])
                    })
                    .collect(),
            )),
        ),
        (
            "metadata",
            Some(object([
                ("model", metadata.model.map(Value::from)),
                ("promptTokens", metadata.prompt_tokens.map(Value::from)),
                (
                    "completionTokens",
                    metadata.completion_tokens.map(Value::from),
                ),
                ("ttftMs", metadata.ttft_ms.map(Value::from)),
                ("latencyMs", metadata.latency_ms.map(Value::from)),
                ("operatorName", metadata.operator_name.map(Value::from)),
                ("finishReason", metadata.finish_reason.map(Value::from)),
                ("messageIndex", metadata.message_index.map(Value::from)),
                ("totalMessages", metadata.total_messages.map(Value::from)),
                ("transcribed", metadata.transcribed.map(Value::from)),
                ("speechError", metadata.speech_error.map(Value::from)),
            ])),
        ),
    ])
}

/// `2024-05-01T12:00:00.123Z`; `null` for a timestamp chrono cannot represent.
pub(super) fn rfc3339(timestamp: &prost_types::Timestamp) -> Value {
    let timestamp = timestamp.normalized();
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::<Utc>::from_timestamp(timestamp.seconds, nanos))
        .map_or(Value::Null, |at| {
            at.to_rfc3339_opts(SecondsFormat::Millis, true).into()
        })
}

/// `updates` carries only what changed. `operator` is there only when it changed: the new holder,
/// or `null` once released.
fn chat_changes_json(changes: Option<&pb::ChatChanges>) -> Value {
    let Some(changes) = changes else {
        return Value::Object(Map::new());
    };
    let operator = changes
        .operator_changed
        .then(|| changes.operator.as_ref().map_or(Value::Null, operator_json));
    object([
        ("title", changes.title.clone().map(Value::from)),
        ("messageCount", changes.message_count.map(Value::from)),
        ("lastMessage", changes.last_message.clone().map(Value::from)),
        ("model", changes.model.clone().map(Value::from)),
        ("status", changes.status.clone().map(Value::from)),
        ("needsHelp", changes.needs_help.map(Value::from)),
        ("spokenReplies", changes.spoken_replies.map(Value::from)),
        ("operator", operator),
    ])
}

/// `{id, name}`: models, agents and operators.
pub fn named(id: &str, name: &str) -> Value {
    object([("id", Some(id.into())), ("name", Some(name.into()))])
}

fn operator_json(operator: &pb::Operator) -> Value {
    named(&operator.id, &operator.name)
}

fn operator_event_json(event: &pb::OperatorEvent) -> Value {
    object([
        ("chatId", Some(event.chat_id.clone().into())),
        (
            "operator",
            Some(event.operator.as_ref().map_or(Value::Null, operator_json)),
        ),
    ])
}

fn error_data(error: &pb::Error) -> Value {
    object([
        ("code", Some(error.code.into())),
        ("message", Some(error.message.clone().into())),
        ("retryable", Some(error.retryable.into())),
        ("retryAfterMs", error.retry_after_ms.map(Value::from)),
        ("messageId", error.message_id.clone().map(Value::from)),
        ("field", error.field.clone().map(Value::from)),
    ])
}

// Enum values outside the protocol's vocabulary (UNSPECIFIED, or a number this build does not
// know) render as "unspecified" rather than being guessed.

pub(super) fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::User) => "user",
        Ok(pb::Role::Assistant) => "assistant",
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::System) => "system",
        Ok(pb::Role::Unspecified) | Err(_) => "unspecified",
    }
}

pub(super) fn message_status_name(status: i32) -> &'static str {
    match pb::MessageStatus::try_from(status) {
        Ok(pb::MessageStatus::Complete) => "complete",
        Ok(pb::MessageStatus::Stopped) => "stopped",
        Ok(pb::MessageStatus::Failed) => "failed",
        Ok(pb::MessageStatus::Unspecified) | Err(_) => "unspecified",
    }
}

pub(super) fn presence_name(status: i32) -> &'static str {
    match pb::PresenceStatus::try_from(status) {
        Ok(pb::PresenceStatus::Online) => "online",
        Ok(pb::PresenceStatus::Away) => "away",
        Ok(pb::PresenceStatus::Offline) => "offline",
        Ok(pb::PresenceStatus::Unspecified) | Err(_) => "unspecified",
    }
}

/// The `data` object of a server event (REST responses reuse the frame mapping).
pub fn event_data(event: &ServerKind) -> Value {
    encode_event(event).1
}

/// A protobuf timestamp as the RFC 3339 text the protocol uses.
pub fn rfc3339_string(timestamp: &prost_types::Timestamp) -> String {
    match rfc3339(timestamp) {
        Value::String(text) => text,
        _ => String::new(),
    }
}
