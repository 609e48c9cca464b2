//! The browser JSON protocol (`docs/protocol.md`) on one side, the core's `chat.v1` protobuf
//! events on the other. This module owns the translation and nothing else: it checks the *shape*
//! of client frames (JSON syntax, known `type`, required fields with the right JSON types, id and
//! list bounds, enum values) and turns server events into the exact JSON field names browsers
//! rely on. Content length, access and rate limits are the core's job; sockets and closing are
//! the bridge's.
//!
//! Decoding never panics, whatever the input: a frame that does not fit becomes a [`FrameError`]
//! (code 400, or 413 for an oversized `context`) that names the offending field and echoes the
//! client's `messageId` when one could be read.

use chat_proto::pb::chat::{
    self as pb, ClientEvent, ServerEvent, client_event::Event as ClientKind,
    server_event::Event as ServerKind,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Number, Value};

/// A client frame that failed to decode. The bridge answers it with
/// `{"type":"error","data":{code,message,retryable:false,messageId?,field?}}` ([`Self::into_frame`])
/// and keeps the connection open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct FrameError {
    /// 400 for a malformed frame or field, 413 for a `context` over the size limit.
    pub code: u16,
    /// Human-readable, names the field: "data.chatId must be a string".
    pub message: String,
    /// The offending field as a path: "data.chatId", "data.chats[2].lastSeq", "type".
    pub field: Option<String>,
    /// The client's `messageId` of the failed frame, when it could be read and was valid.
    pub message_id: Option<String>,
}

impl FrameError {
    /// A whole-frame problem ("Invalid JSON"), with no field to blame.
    fn frame(message: &str) -> Self {
        Self {
            code: 400,
            message: message.to_owned(),
            field: None,
            message_id: None,
        }
    }

    fn unknown_type() -> Self {
        Self {
            field: Some("type".to_owned()),
            ..Self::frame("Unknown message type")
        }
    }

    /// A field-level problem: the message is the field path followed by what is wrong with it.
    fn invalid(field: impl Into<String>, problem: &str) -> Self {
        let field = field.into();
        Self {
            code: 400,
            message: format!("{field} {problem}"),
            field: Some(field),
            message_id: None,
        }
    }

    /// The JSON error frame for this failure (`retryable: false`: resending it cannot help).
    #[allow(
        clippy::wrong_self_convention,
        reason = "the bridge's API takes `&self`: it logs the error after rendering it"
    )]
    pub fn into_frame(&self) -> String {
        error_frame(
            self.code,
            &self.message,
            false,
            self.message_id.as_deref(),
            self.field.as_deref(),
        )
    }
}

/// Bounds the edge enforces while decoding. The defaults are the protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest client `messageId`, in characters (Unicode scalar values).
    pub max_message_id_chars: usize,
    /// Largest `message.context`, in bytes of compact JSON; larger is error 413.
    pub max_context_bytes: usize,
    /// Most ids in one `read_receipt`.
    pub max_receipt_ids: usize,
    /// Largest `history.limit`.
    pub max_history_limit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_id_chars: 64,
            max_context_bytes: 8192,
            max_receipt_ids: 100,
            max_history_limit: 100,
        }
    }
}

// ---------------------------------------------------------------- client frames -> protobuf

/// Decodes one JSON text frame from a browser into the protobuf event the core expects.
///
/// Checks shape and types only (see `docs/protocol.md`, "What the edge checks"). Fails with a
/// [`FrameError`] of code 400 naming the field for anything malformed ("Invalid JSON",
/// "Unknown message type", "data.chatId must be a string", ...), and 413 for a `context` larger
/// than `limits.max_context_bytes`. Unknown extra fields are ignored; `null` counts as absent for
/// optional fields.
pub fn decode_client_frame(text: &str, limits: &Limits) -> Result<ClientEvent, FrameError> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::frame("Invalid JSON"));
    };
    let Value::Object(frame) = value else {
        return Err(FrameError::frame("Frame must be a JSON object"));
    };
    decode_frame(&frame, limits).map_err(|mut err| {
        err.message_id = echoable_message_id(&frame, limits);
        err
    })
}

/// Every client frame `type`, in the order of the protocol's table.
pub const CLIENT_FRAME_TYPES: [&str; 13] = [
    "message",
    "typing",
    "read_receipt",
    "chat_update",
    "history",
    "stop",
    "resume",
    "help_request",
    "presence",
    "auth",
    "ping",
    "takeover",
    "release",
];

/// Every server frame `type`.
pub const SERVER_FRAME_TYPES: [&str; 13] = [
    "session",
    "ack",
    "message",
    "message_chunk",
    "typing",
    "read_receipt",
    "chat_update",
    "history",
    "presence",
    "operator_joined",
    "operator_left",
    "pong",
    "error",
];

/// The `chat_update` actions, as clients spell them.
const CHAT_ACTIONS: [(&str, pb::ChatAction); 8] = [
    ("join", pb::ChatAction::Join),
    ("leave", pb::ChatAction::Leave),
    ("create", pb::ChatAction::Create),
    ("rename", pb::ChatAction::Rename),
    ("select_model", pb::ChatAction::SelectModel),
    ("end", pb::ChatAction::End),
    ("add_member", pb::ChatAction::AddMember),
    ("remove_member", pb::ChatAction::RemoveMember),
];

fn decode_frame(frame: &Map<String, Value>, limits: &Limits) -> Result<ClientEvent, FrameError> {
    let top = Fields::top(frame);
    let kind = match frame.get("type") {
        None => return Err(FrameError::invalid("type", "is required")),
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(FrameError::invalid("type", "must be a string")),
    };
    if !CLIENT_FRAME_TYPES.contains(&kind) {
        return Err(FrameError::unknown_type());
    }
    let empty = Map::new();
    let data = match frame.get("data") {
        None | Some(Value::Null) => Fields {
            map: &empty,
            path: "data".to_owned(),
        },
        Some(Value::Object(map)) => Fields {
            map,
            path: "data".to_owned(),
        },
        Some(_) => return Err(FrameError::invalid("data", "must be an object")),
    };
    // The top-level id wins; `data.messageId` is the older spelling.
    let message_id = match top.opt_id("messageId")? {
        Some(id) => Some((id, "messageId")),
        None => data.opt_id("messageId")?.map(|id| (id, "data.messageId")),
    };
    if let Some((id, field)) = &message_id
        && id.chars().count() > limits.max_message_id_chars
    {
        let problem = format!("must be at most {} characters", limits.max_message_id_chars);
        return Err(FrameError::invalid(*field, &problem));
    }
    let message_id = message_id.map(|(id, _)| id).unwrap_or_default();
    let timestamp_ms = top.opt_millis("timestamp")?;

    let event = match kind {
        "message" => ClientKind::Message(decode_message(&data, &message_id, limits)?),
        "typing" => ClientKind::Typing(pb::TypingUpdate {
            chat_id: data.id("chatId")?,
            is_typing: data.flag("isTyping")?,
        }),
        "read_receipt" => ClientKind::ReadReceipt(pb::ReadReceipt {
            chat_id: data.id("chatId")?,
            message_ids: data.receipt_ids("messageIds", limits.max_receipt_ids)?,
        }),
        "chat_update" => ClientKind::ChatUpdate(decode_chat_update(&data)?),
        "history" => ClientKind::History(pb::HistoryRequest {
            chat_id: data.id("chatId")?,
            before: data.opt_cursor("before")?,
            limit: data.opt_limit("limit", limits.max_history_limit)?,
        }),
        "stop" => ClientKind::Stop(pb::StopReply {
            chat_id: data.id("chatId")?,
        }),
        "resume" => ClientKind::Resume(decode_resume(&data)?),
        "help_request" => ClientKind::HelpRequest(pb::HelpRequest {
            chat_id: data.id("chatId")?,
            reason: data.opt_text("reason")?,
        }),
        "presence" => ClientKind::Presence(pb::PresenceUpdate {
            status: data.presence("status")? as i32,
        }),
        "auth" => ClientKind::Auth(pb::Auth {
            token: data.id("token")?,
        }),
        "ping" => ClientKind::Ping(pb::Ping {
            timestamp: data.opt_millis("timestamp")?.or(timestamp_ms).unwrap_or(0),
        }),
        "takeover" => ClientKind::Takeover(pb::Takeover {
            chat_id: data.id("chatId")?,
        }),
        "release" => ClientKind::Release(pb::Release {
            chat_id: data.id("chatId")?,
        }),
        _ => return Err(FrameError::unknown_type()),
    };
    Ok(ClientEvent {
        message_id,
        timestamp_ms: timestamp_ms.unwrap_or(0),
        event: Some(event),
    })
}

fn decode_message(
    data: &Fields<'_>,
    message_id: &str,
    limits: &Limits,
) -> Result<pb::SendMessage, FrameError> {
    if message_id.is_empty() {
        return Err(FrameError::invalid("data.messageId", "is required"));
    }
    Ok(pb::SendMessage {
        chat_id: data.opt_id("chatId")?.unwrap_or_default(),
        content: data.text("content")?,
        message_id: message_id.to_owned(),
        agent_id: data.opt_id("agentId")?.unwrap_or_default(),
        attachments: data.opt_ids("attachments")?.unwrap_or_default(),
        context: data.opt_context("context", limits.max_context_bytes)?,
    })
}

/// `chat_update` needs different fields per action: `create` is the only one without a chat.
fn decode_chat_update(data: &Fields<'_>) -> Result<pb::ChatUpdate, FrameError> {
    let action = data.action("action")?;
    let chat_id = match action {
        pb::ChatAction::Create => data.opt_id("chatId")?.unwrap_or_default(),
        _ => data.id("chatId")?,
    };
    let title = match action {
        pb::ChatAction::Rename => Some(data.text("title")?),
        _ => data.opt_text("title")?,
    };
    let model = match action {
        pb::ChatAction::SelectModel => Some(data.id("model")?),
        _ => data.opt_id("model")?,
    };
    let user_id = match action {
        pb::ChatAction::AddMember | pb::ChatAction::RemoveMember => Some(data.id("userId")?),
        _ => data.opt_id("userId")?,
    };
    Ok(pb::ChatUpdate {
        action: action as i32,
        chat_id,
        title,
        model,
        agent_id: data.opt_id("agentId")?,
        user_id,
    })
}

fn decode_resume(data: &Fields<'_>) -> Result<pb::Resume, FrameError> {
    let chats = data.array("chats")?;
    let chats = chats
        .iter()
        .enumerate()
        .map(|(i, chat)| {
            let chat = Fields::nested(chat, format!("data.chats[{i}]"))?;
            let streaming = match chat.present("streaming") {
                None => None,
                Some(streaming) => {
                    let streaming = Fields::nested(streaming, chat.name("streaming"))?;
                    Some(pb::ResumeStreaming {
                        message_id: streaming.id("messageId")?,
                        last_index: streaming.count("lastIndex")?,
                    })
                }
            };
            Ok(pb::ResumeChat {
                chat_id: chat.id("chatId")?,
                last_seq: chat.count("lastSeq")?,
                streaming,
            })
        })
        .collect::<Result<_, FrameError>>()?;
    Ok(pb::Resume { chats })
}

/// The `messageId` to echo in an error: the first well-formed one, top level first. A malformed
/// or oversized id is not echoed back.
fn echoable_message_id(frame: &Map<String, Value>, limits: &Limits) -> Option<String> {
    let in_data = frame
        .get("data")
        .and_then(Value::as_object)
        .and_then(|data| data.get("messageId"));
    [frame.get("messageId"), in_data]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|id| !id.is_empty() && id.chars().count() <= limits.max_message_id_chars)
        .map(str::to_owned)
}

/// One JSON object being decoded, with its path for error messages ("data", "data.chats[2]").
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    fn top(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            path: String::new(),
        }
    }

    fn nested(value: &'a Value, path: String) -> Result<Self, FrameError> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            _ => Err(FrameError::invalid(path, "must be an object")),
        }
    }

    /// The path of one of this object's fields.
    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, problem: &str) -> FrameError {
        FrameError::invalid(self.name(key), problem)
    }

    /// A field that must be there; an explicit `null` is there, and then has the wrong type.
    fn required(&self, key: &str) -> Result<&'a Value, FrameError> {
        self.map
            .get(key)
            .ok_or_else(|| self.error(key, "is required"))
    }

    /// An optional field; `null` counts as absent.
    fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Any string, empty included (free text: its length is the core's business).
    fn text(&self, key: &str) -> Result<String, FrameError> {
        self.as_text(key, self.required(key)?)
    }

    fn opt_text(&self, key: &str) -> Result<Option<String>, FrameError> {
        self.present(key)
            .map(|value| self.as_text(key, value))
            .transpose()
    }

    fn as_text(&self, key: &str, value: &Value) -> Result<String, FrameError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.error(key, "must be a string"))
    }

    /// A non-empty string: chat, user, model, message ids and tokens.
    fn id(&self, key: &str) -> Result<String, FrameError> {
        self.as_id(&self.name(key), self.required(key)?)
    }

    fn opt_id(&self, key: &str) -> Result<Option<String>, FrameError> {
        self.present(key)
            .map(|value| self.as_id(&self.name(key), value))
            .transpose()
    }

    fn as_id(&self, field: &str, value: &Value) -> Result<String, FrameError> {
        match value {
            Value::String(id) if id.is_empty() => {
                Err(FrameError::invalid(field, "must not be empty"))
            }
            Value::String(id) => Ok(id.clone()),
            _ => Err(FrameError::invalid(field, "must be a string")),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, FrameError> {
        self.required(key)?
            .as_bool()
            .ok_or_else(|| self.error(key, "must be a boolean"))
    }

    /// A non-negative integer that fits an `int64` (sequence numbers, chunk indexes).
    fn count(&self, key: &str) -> Result<i64, FrameError> {
        self.required(key)?
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| self.error(key, "must be a non-negative integer"))
    }

    /// Milliseconds since the epoch. Fractions (`performance.now()`-style) are truncated and
    /// out-of-range values saturate rather than fail: a timestamp is informational.
    fn opt_millis(&self, key: &str) -> Result<Option<i64>, FrameError> {
        match self.present(key) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .or_else(|| value.as_f64().map(|ms| ms as i64))
                .map(Some)
                .ok_or_else(|| self.error(key, "must be a number")),
        }
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, FrameError> {
        self.required(key)?
            .as_array()
            .ok_or_else(|| self.error(key, "must be an array"))
    }

    /// An optional list of ids: `attachments`.
    fn opt_ids(&self, key: &str) -> Result<Option<Vec<String>>, FrameError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.error(key, "must be an array of strings"))?;
        self.as_ids(key, items).map(Some)
    }

    /// `read_receipt.messageIds`: 1 to `max` ids.
    fn receipt_ids(&self, key: &str, max: usize) -> Result<Vec<String>, FrameError> {
        let items = self
            .required(key)?
            .as_array()
            .ok_or_else(|| self.error(key, "must be an array of strings"))?;
        if items.is_empty() || items.len() > max {
            return Err(self.error(key, &format!("must have 1 to {max} entries")));
        }
        self.as_ids(key, items)
    }

    fn as_ids(&self, key: &str, items: &[Value]) -> Result<Vec<String>, FrameError> {
        let field = self.name(key);
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.as_id(&format!("{field}[{i}]"), item))
            .collect()
    }

    /// `history.before`: an opaque cursor, a string or (older clients) a number. An empty string
    /// is "no cursor", since that is what `history.cursor` holds when a chat has no messages.
    fn opt_cursor(&self, key: &str) -> Result<Option<String>, FrameError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(cursor)) if cursor.is_empty() => Ok(None),
            Some(Value::String(cursor)) => Ok(Some(cursor.clone())),
            Some(Value::Number(cursor)) => Ok(Some(cursor.to_string())),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    fn opt_limit(&self, key: &str, max: u32) -> Result<Option<u32>, FrameError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=max).contains(n))
            .map(Some)
            .ok_or_else(|| self.error(key, &format!("must be an integer from 1 to {max}")))
    }

    fn opt_context(
        &self,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<prost_types::Struct>, FrameError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        let context = value
            .as_object()
            .ok_or_else(|| self.error(key, "must be an object"))?;
        // Serialising a `Value` cannot fail; a failure would count as too large.
        let size = serde_json::to_vec(value).map_or(usize::MAX, |json| json.len());
        if size > max_bytes {
            let problem = format!("must be at most {max_bytes} bytes as JSON");
            return Err(FrameError {
                code: 413,
                ..self.error(key, &problem)
            });
        }
        Ok(Some(struct_from_json(context)))
    }

    fn action(&self, key: &str) -> Result<pb::ChatAction, FrameError> {
        let name = self
            .required(key)?
            .as_str()
            .ok_or_else(|| self.error(key, "must be a string"))?;
        CHAT_ACTIONS.iter().find(|(known, _)| *known == name).map(|(_, action)| *action).ok_or_else(|| {
            self.error(
                key,
                "must be one of join, leave, create, rename, select_model, end, add_member, remove_member",
            )
        })
    }

    /// Clients may only say they are here or away; `offline` is the server's to announce.
    fn presence(&self, key: &str) -> Result<pb::PresenceStatus, FrameError> {
        match self.required(key)?.as_str() {
            Some("online") => Ok(pb::PresenceStatus::Online),
            Some("away") => Ok(pb::PresenceStatus::Away),
            _ => Err(self.error(key, "must be online or away")),
        }
    }
}

// ---------------------------------------------------------------- google.protobuf.Struct <-> JSON

/// A JSON object as a `google.protobuf.Struct` (numbers become doubles, as Struct requires).
pub fn struct_from_json(object: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), pb_value_from_json(value)))
            .collect(),
    }
}

fn pb_value_from_json(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        // Always `Some` without serde_json's `arbitrary_precision`.
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(0.0)),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(pb_value_from_json).collect(),
        }),
        Value::Object(object) => Kind::StructValue(struct_from_json(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object. Whole numbers within the exactly representable
/// range come out as integers (`3`, not `3.0`); NaN and infinities, which JSON lacks, as `null`.
pub fn struct_to_json(object: &prost_types::Struct) -> Map<String, Value> {
    object
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), pb_value_to_json(value)))
        .collect()
}

fn pb_value_to_json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => number_to_json(*number),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(pb_value_to_json).collect())
        }
        Some(Kind::StructValue(object)) => Value::Object(struct_to_json(object)),
    }
}

fn number_to_json(number: f64) -> Value {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    if number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER {
        Value::from(number as i64)
    } else {
        Number::from_f64(number).map_or(Value::Null, Value::Number)
    }
}

// ---------------------------------------------------------------- protobuf -> server frames

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
                code: 500,
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
    code: u16,
    message: &str,
    retryable: bool,
    message_id: Option<&str>,
    field: Option<&str>,
) -> String {
    let error = pb::Error {
        code: code.into(),
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
fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
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
            ])),
        ),
    ])
}

/// `2024-05-01T12:00:00.123Z`; `null` for a timestamp chrono cannot represent.
fn rfc3339(timestamp: &prost_types::Timestamp) -> Value {
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
        ("operator", operator),
    ])
}

/// `{id, name}`: models, agents and operators.
fn named(id: &str, name: &str) -> Value {
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

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::User) => "user",
        Ok(pb::Role::Assistant) => "assistant",
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::System) => "system",
        Ok(pb::Role::Unspecified) | Err(_) => "unspecified",
    }
}

fn message_status_name(status: i32) -> &'static str {
    match pb::MessageStatus::try_from(status) {
        Ok(pb::MessageStatus::Complete) => "complete",
        Ok(pb::MessageStatus::Stopped) => "stopped",
        Ok(pb::MessageStatus::Failed) => "failed",
        Ok(pb::MessageStatus::Unspecified) | Err(_) => "unspecified",
    }
}

fn presence_name(status: i32) -> &'static str {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode(frame: Value) -> Result<ClientEvent, FrameError> {
        decode_client_frame(&frame.to_string(), &Limits::default())
    }

    fn decoded(frame: Value) -> ClientKind {
        decode(frame.clone())
            .unwrap_or_else(|err| panic!("{frame} failed: {err}"))
            .event
            .unwrap()
    }

    fn rendered(event: ServerKind) -> Value {
        let ev = ServerEvent {
            timestamp_ms: 1_700_000_000_000,
            seq: None,
            event: Some(event),
        };
        serde_json::from_str(&encode_server_event(&ev)).unwrap()
    }

    // ------------------------------------------------------------ test-only inverse codecs

    /// ClientEvent -> JSON frame, the way a browser would send it (the inverse of decoding).
    fn encode_client_event(ev: &ClientEvent) -> String {
        let text = |s: &str| Some(Value::from(s));
        let id = |s: &str| (!s.is_empty()).then(|| Value::from(s));
        let opt = |s: &Option<String>| s.clone().map(Value::from);
        let (kind, data) = match ev.event.as_ref().expect("an event") {
            ClientKind::Message(m) => (
                "message",
                object([
                    ("chatId", id(&m.chat_id)),
                    ("content", text(&m.content)),
                    ("messageId", text(&m.message_id)),
                    ("agentId", id(&m.agent_id)),
                    (
                        "attachments",
                        (!m.attachments.is_empty()).then(|| m.attachments.clone().into()),
                    ),
                    (
                        "context",
                        m.context.as_ref().map(|c| Value::Object(struct_to_json(c))),
                    ),
                ]),
            ),
            ClientKind::Typing(t) => (
                "typing",
                object([
                    ("chatId", text(&t.chat_id)),
                    ("isTyping", Some(t.is_typing.into())),
                ]),
            ),
            ClientKind::ReadReceipt(r) => (
                "read_receipt",
                object([
                    ("chatId", text(&r.chat_id)),
                    ("messageIds", Some(r.message_ids.clone().into())),
                ]),
            ),
            ClientKind::ChatUpdate(u) => {
                let action = CHAT_ACTIONS
                    .iter()
                    .find(|(_, a)| *a as i32 == u.action)
                    .expect("known action")
                    .0;
                (
                    "chat_update",
                    object([
                        ("action", text(action)),
                        ("chatId", id(&u.chat_id)),
                        ("title", opt(&u.title)),
                        ("model", opt(&u.model)),
                        ("agentId", opt(&u.agent_id)),
                        ("userId", opt(&u.user_id)),
                    ]),
                )
            }
            ClientKind::History(h) => (
                "history",
                object([
                    ("chatId", text(&h.chat_id)),
                    ("before", opt(&h.before)),
                    ("limit", h.limit.map(Value::from)),
                ]),
            ),
            ClientKind::Stop(s) => ("stop", object([("chatId", text(&s.chat_id))])),
            ClientKind::Resume(r) => {
                let chats = r
                    .chats
                    .iter()
                    .map(|c| {
                        object([
                            ("chatId", text(&c.chat_id)),
                            ("lastSeq", Some(c.last_seq.into())),
                            (
                                "streaming",
                                c.streaming.as_ref().map(|s| {
                                    object([
                                        ("messageId", text(&s.message_id)),
                                        ("lastIndex", Some(s.last_index.into())),
                                    ])
                                }),
                            ),
                        ])
                    })
                    .collect();
                ("resume", object([("chats", Some(chats))]))
            }
            ClientKind::HelpRequest(h) => (
                "help_request",
                object([("chatId", text(&h.chat_id)), ("reason", opt(&h.reason))]),
            ),
            ClientKind::Presence(p) => (
                "presence",
                object([("status", text(presence_name(p.status)))]),
            ),
            ClientKind::Auth(a) => ("auth", object([("token", text(&a.token))])),
            ClientKind::Ping(p) => ("ping", object([("timestamp", Some(p.timestamp.into()))])),
            ClientKind::Takeover(t) => ("takeover", object([("chatId", text(&t.chat_id))])),
            ClientKind::Release(r) => ("release", object([("chatId", text(&r.chat_id))])),
        };
        let top_id = match ev.event {
            Some(ClientKind::Message(_)) => None, // carried in data.messageId
            _ => id(&ev.message_id),
        };
        object([
            ("type", text(kind)),
            ("data", Some(data)),
            ("messageId", top_id),
            (
                "timestamp",
                (ev.timestamp_ms != 0).then(|| ev.timestamp_ms.into()),
            ),
        ])
        .to_string()
    }

    /// A JSON object read strictly: missing or mistyped fields are errors.
    struct Obj<'a>(&'a Map<String, Value>, &'static str);

    impl<'a> Obj<'a> {
        fn of(value: &'a Value, what: &'static str) -> Result<Self, String> {
            value
                .as_object()
                .map(|map| Obj(map, what))
                .ok_or_else(|| format!("{what} must be an object"))
        }
        fn get(&self, key: &str) -> Result<&'a Value, String> {
            self.0
                .get(key)
                .ok_or_else(|| format!("{}.{key} missing", self.1))
        }
        fn opt(&self, key: &str) -> Option<&'a Value> {
            self.0.get(key).filter(|v| !v.is_null())
        }
        fn s(&self, key: &str) -> Result<String, String> {
            self.get(key)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{}.{key} not a string", self.1))
        }
        fn opt_s(&self, key: &str) -> Result<Option<String>, String> {
            self.opt(key).map(|_| self.s(key)).transpose()
        }
        fn i(&self, key: &str) -> Result<i64, String> {
            self.get(key)?
                .as_i64()
                .ok_or_else(|| format!("{}.{key} not an integer", self.1))
        }
        fn opt_i(&self, key: &str) -> Result<Option<i64>, String> {
            self.opt(key).map(|_| self.i(key)).transpose()
        }
        fn u(&self, key: &str) -> Result<u32, String> {
            u32::try_from(self.i(key)?).map_err(|e| e.to_string())
        }
        fn b(&self, key: &str) -> Result<bool, String> {
            self.get(key)?
                .as_bool()
                .ok_or_else(|| format!("{}.{key} not a boolean", self.1))
        }
        fn list(&self, key: &str) -> Result<&'a Vec<Value>, String> {
            self.get(key)?
                .as_array()
                .ok_or_else(|| format!("{}.{key} not an array", self.1))
        }
        fn strings(&self, key: &str) -> Result<Vec<String>, String> {
            self.list(key)?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or(format!("{key}[] not strings"))
                })
                .collect()
        }
        fn named(&self, key: &str) -> Result<(String, String), String> {
            let o = Obj::of(self.get(key)?, "named")?;
            Ok((o.s("id")?, o.s("name")?))
        }
    }

    fn enum_value(name: &str, names: &[(&str, i32)]) -> Result<i32, String> {
        names
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or(format!("unknown enum value {name}"))
    }

    fn chat_message_from(value: &Value) -> Result<pb::ChatMessage, String> {
        let m = Obj::of(value, "message")?;
        let at = DateTime::parse_from_rfc3339(&m.s("timestamp")?).map_err(|e| e.to_string())?;
        let meta = Obj::of(m.get("metadata")?, "metadata")?;
        let attachments = m
            .list("attachments")?
            .iter()
            .map(|a| {
                let a = Obj::of(a, "attachment")?;
                Ok(pb::Attachment {
                    id: a.s("id")?,
                    name: a.s("name")?,
                    mime: a.s("mime")?,
                    size: a.i("size")?,
                    url: a.s("url")?,
                })
            })
            .collect::<Result<_, String>>()?;
        let roles = [("user", 1), ("assistant", 2), ("admin", 3), ("system", 4)];
        let statuses = [("complete", 1), ("stopped", 2), ("failed", 3)];
        Ok(pb::ChatMessage {
            id: m.s("id")?,
            chat_id: m.s("chatId")?,
            seq: m.i("seq")?,
            user_id: m.s("userId")?,
            agent_id: m.s("agentId")?,
            role: enum_value(&m.s("role")?, &roles)?,
            content: m.s("content")?,
            status: enum_value(&m.s("status")?, &statuses)?,
            created_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: at.timestamp_subsec_nanos() as i32,
            }),
            attachments,
            metadata: Some(pb::MessageMetadata {
                model: meta.opt_s("model")?,
                prompt_tokens: meta.opt_i("promptTokens")?,
                completion_tokens: meta.opt_i("completionTokens")?,
                ttft_ms: meta.opt_i("ttftMs")?,
                latency_ms: meta.opt_i("latencyMs")?,
                operator_name: meta.opt_s("operatorName")?,
            }),
        })
    }

    /// JSON server frame -> ServerEvent (the inverse of `encode_server_event`), for checking the
    /// examples of docs/protocol.md.
    fn decode_server_frame(text: &str) -> Result<ServerEvent, String> {
        let frame: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let top = Obj::of(&frame, "frame")?;
        let d = Obj::of(top.get("data")?, "data")?;
        let presence = [("online", 1), ("away", 2), ("offline", 3)];
        let operator = |o: &Obj<'_>| -> Result<pb::OperatorEvent, String> {
            let (id, name) = o.named("operator")?;
            Ok(pb::OperatorEvent {
                chat_id: o.s("chatId")?,
                operator: Some(pb::Operator { id, name }),
            })
        };
        let event = match top.s("type")?.as_str() {
            "session" => {
                let limits = Obj::of(d.get("limits")?, "limits")?;
                let named = |key: &str| -> Result<Vec<(String, String)>, String> {
                    d.list(key)?
                        .iter()
                        .map(|v| {
                            let o = Obj::of(v, "named")?;
                            Ok((o.s("id")?, o.s("name")?))
                        })
                        .collect()
                };
                ServerKind::Session(pb::Session {
                    connection_id: d.s("connectionId")?,
                    user_id: d.s("userId")?,
                    name: d.s("name")?,
                    roles: d.strings("roles")?,
                    heartbeat_interval_ms: d.i("heartbeatIntervalMs")?,
                    limits: Some(pb::Limits {
                        max_message_chars: limits.u("maxMessageChars")?,
                        max_frame_bytes: limits.u("maxFrameBytes")?,
                    }),
                    models: named("models")?
                        .into_iter()
                        .map(|(id, name)| pb::ModelInfo { id, name })
                        .collect(),
                    default_model: d.s("defaultModel")?,
                    agents: named("agents")?
                        .into_iter()
                        .map(|(id, name)| pb::AgentInfo { id, name })
                        .collect(),
                    active_chat_id: {
                        d.get("activeChatId")?; // present, possibly null
                        d.opt_s("activeChatId")?
                    },
                })
            }
            "ack" => ServerKind::Ack(pb::Ack {
                message_id: d.s("messageId")?,
                id: d.s("id")?,
                chat_id: d.s("chatId")?,
                seq: d.i("seq")?,
                status: d.s("status")?,
                duplicate: d.b("duplicate")?,
            }),
            "message" => ServerKind::Message(pb::MessageEvent {
                chat_id: d.s("chatId")?,
                message: Some(chat_message_from(d.get("message")?)?),
                message_id: d.opt_s("messageId")?,
            }),
            "message_chunk" => ServerKind::MessageChunk(pb::MessageChunk {
                chat_id: d.s("chatId")?,
                message_id: d.s("messageId")?,
                index: d.i("index")?,
                delta: d.s("delta")?,
            }),
            "typing" => ServerKind::Typing(pb::TypingEvent {
                chat_id: d.s("chatId")?,
                user_id: d.s("userId")?,
                agent_id: d.opt_s("agentId")?,
                is_typing: d.b("isTyping")?,
            }),
            "read_receipt" => ServerKind::ReadReceipt(pb::ReadReceiptEvent {
                chat_id: d.s("chatId")?,
                message_ids: d.strings("messageIds")?,
                user_id: d.s("userId")?,
                confirmed: d.b("confirmed")?,
            }),
            "chat_update" => {
                let u = Obj::of(d.get("updates")?, "updates")?;
                let (operator_changed, operator) = match u.0.get("operator") {
                    None => (false, None),
                    Some(Value::Null) => (true, None),
                    Some(_) => {
                        let (id, name) = u.named("operator")?;
                        (true, Some(pb::Operator { id, name }))
                    }
                };
                ServerKind::ChatUpdate(pb::ChatUpdated {
                    chat_id: d.s("chatId")?,
                    updates: Some(pb::ChatChanges {
                        title: u.opt_s("title")?,
                        message_count: u.opt_i("messageCount")?,
                        last_message: u.opt_s("lastMessage")?,
                        model: u.opt_s("model")?,
                        status: u.opt_s("status")?,
                        needs_help: u.opt("needsHelp").map(|_| u.b("needsHelp")).transpose()?,
                        operator_changed,
                        operator,
                    }),
                })
            }
            "history" => ServerKind::History(pb::History {
                chat_id: d.s("chatId")?,
                messages: d
                    .list("messages")?
                    .iter()
                    .map(chat_message_from)
                    .collect::<Result<_, _>>()?,
                has_more: d.b("hasMore")?,
                cursor: d.s("cursor")?,
                last_seq: d.i("lastSeq")?,
                reset: d
                    .opt("reset")
                    .map(|_| d.b("reset"))
                    .transpose()?
                    .unwrap_or(false),
            }),
            "presence" => ServerKind::Presence(pb::PresenceEvent {
                user_id: d.s("userId")?,
                status: enum_value(&d.s("status")?, &presence)?,
                chat_id: d.opt_s("chatId")?,
            }),
            "operator_joined" => ServerKind::OperatorJoined(operator(&d)?),
            "operator_left" => ServerKind::OperatorLeft(operator(&d)?),
            "pong" => ServerKind::Pong(pb::Pong {
                timestamp: d.i("timestamp")?,
            }),
            "error" => ServerKind::Error(pb::Error {
                code: d.u("code")?,
                message: d.s("message")?,
                retryable: d.b("retryable")?,
                retry_after_ms: d.opt_i("retryAfterMs")?,
                message_id: d.opt_s("messageId")?,
                field: d.opt_s("field")?,
                close_code: None,
            }),
            other => return Err(format!("unknown server frame type {other}")),
        };
        Ok(ServerEvent {
            timestamp_ms: top.i("timestamp")?,
            seq: top.opt_i("seq")?,
            event: Some(event),
        })
    }

    // ------------------------------------------------------------ decoding: failures

    #[test]
    fn malformed_frames_are_rejected_with_the_field_named() {
        let long_id = "x".repeat(65);
        let big_context = json!({ "blob": "y".repeat(8200) });
        let ids_101: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
        let msg = |data: Value| json!({"type": "message", "data": data});
        let cases: Vec<(Value, u16, Option<&str>, &str)> = vec![
            // Envelope.
            (json!([1, 2]), 400, None, "Frame must be a JSON object"),
            (json!("message"), 400, None, "Frame must be a JSON object"),
            (json!({}), 400, Some("type"), "type is required"),
            (
                json!({"type": 5}),
                400,
                Some("type"),
                "type must be a string",
            ),
            (
                json!({"type": "shout"}),
                400,
                Some("type"),
                "Unknown message type",
            ),
            (
                json!({"type": "Message"}),
                400,
                Some("type"),
                "Unknown message type",
            ),
            (
                json!({"type": "stop", "data": [1]}),
                400,
                Some("data"),
                "data must be an object",
            ),
            (
                json!({"type": "stop", "data": "c1"}),
                400,
                Some("data"),
                "data must be an object",
            ),
            (
                json!({"type": "ping", "messageId": 5}),
                400,
                Some("messageId"),
                "messageId must be a string",
            ),
            (
                json!({"type": "ping", "messageId": ""}),
                400,
                Some("messageId"),
                "messageId must not be empty",
            ),
            (
                json!({"type": "ping", "messageId": long_id}),
                400,
                Some("messageId"),
                "messageId must be at most 64 characters",
            ),
            (
                json!({"type": "ping", "data": {"messageId": long_id}}),
                400,
                Some("data.messageId"),
                "data.messageId must be at most 64 characters",
            ),
            (
                json!({"type": "ping", "data": {"messageId": true}}),
                400,
                Some("data.messageId"),
                "data.messageId must be a string",
            ),
            (
                json!({"type": "ping", "timestamp": "now"}),
                400,
                Some("timestamp"),
                "timestamp must be a number",
            ),
            // message
            (
                msg(json!({"content": "hi"})),
                400,
                Some("data.messageId"),
                "data.messageId is required",
            ),
            (
                msg(json!({"messageId": "c1"})),
                400,
                Some("data.content"),
                "data.content is required",
            ),
            (
                msg(json!({"messageId": "c1", "content": 5})),
                400,
                Some("data.content"),
                "data.content must be a string",
            ),
            (
                msg(json!({"messageId": "c1", "content": null})),
                400,
                Some("data.content"),
                "data.content must be a string",
            ),
            (
                msg(json!({"messageId": "c1", "content": ["hi"]})),
                400,
                Some("data.content"),
                "data.content must be a string",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "chatId": 7})),
                400,
                Some("data.chatId"),
                "data.chatId must be a string",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "chatId": ""})),
                400,
                Some("data.chatId"),
                "data.chatId must not be empty",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "agentId": {}})),
                400,
                Some("data.agentId"),
                "data.agentId must be a string",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "attachments": "f1"})),
                400,
                Some("data.attachments"),
                "data.attachments must be an array of strings",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "attachments": [1]})),
                400,
                Some("data.attachments[0]"),
                "data.attachments[0] must be a string",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "attachments": ["f1", ""]})),
                400,
                Some("data.attachments[1]"),
                "data.attachments[1] must not be empty",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "context": [1]})),
                400,
                Some("data.context"),
                "data.context must be an object",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "context": "x"})),
                400,
                Some("data.context"),
                "data.context must be an object",
            ),
            (
                msg(json!({"messageId": "c1", "content": "hi", "context": big_context})),
                413,
                Some("data.context"),
                "data.context must be at most 8192 bytes as JSON",
            ),
            // typing
            (
                json!({"type": "typing", "data": {"isTyping": true}}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "typing", "data": {"chatId": 1, "isTyping": true}}),
                400,
                Some("data.chatId"),
                "data.chatId must be a string",
            ),
            (
                json!({"type": "typing", "data": {"chatId": "c"}}),
                400,
                Some("data.isTyping"),
                "data.isTyping is required",
            ),
            (
                json!({"type": "typing", "data": {"chatId": "c", "isTyping": "yes"}}),
                400,
                Some("data.isTyping"),
                "data.isTyping must be a boolean",
            ),
            (
                json!({"type": "typing", "data": {"chatId": "c", "isTyping": 1}}),
                400,
                Some("data.isTyping"),
                "data.isTyping must be a boolean",
            ),
            // read_receipt
            (
                json!({"type": "read_receipt", "data": {"messageIds": ["m"]}}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "read_receipt", "data": {"chatId": "c"}}),
                400,
                Some("data.messageIds"),
                "data.messageIds is required",
            ),
            (
                json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": []}}),
                400,
                Some("data.messageIds"),
                "data.messageIds must have 1 to 100 entries",
            ),
            (
                json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ids_101}}),
                400,
                Some("data.messageIds"),
                "data.messageIds must have 1 to 100 entries",
            ),
            (
                json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": "m1"}}),
                400,
                Some("data.messageIds"),
                "data.messageIds must be an array of strings",
            ),
            (
                json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ["m1", 2]}}),
                400,
                Some("data.messageIds[1]"),
                "data.messageIds[1] must be a string",
            ),
            // chat_update
            (
                json!({"type": "chat_update", "data": {"chatId": "c"}}),
                400,
                Some("data.action"),
                "data.action is required",
            ),
            (
                json!({"type": "chat_update", "data": {"action": 1, "chatId": "c"}}),
                400,
                Some("data.action"),
                "data.action must be a string",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "explode", "chatId": "c"}}),
                400,
                Some("data.action"),
                "data.action must be one of join, leave, create, rename, select_model, end, add_member, remove_member",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "join"}}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "leave", "chatId": ""}}),
                400,
                Some("data.chatId"),
                "data.chatId must not be empty",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "end", "chatId": false}}),
                400,
                Some("data.chatId"),
                "data.chatId must be a string",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "rename", "chatId": "c"}}),
                400,
                Some("data.title"),
                "data.title is required",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "rename", "chatId": "c", "title": 5}}),
                400,
                Some("data.title"),
                "data.title must be a string",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "select_model", "chatId": "c"}}),
                400,
                Some("data.model"),
                "data.model is required",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "select_model", "chatId": "c", "model": ""}}),
                400,
                Some("data.model"),
                "data.model must not be empty",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "add_member", "chatId": "c"}}),
                400,
                Some("data.userId"),
                "data.userId is required",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "remove_member", "chatId": "c", "userId": 9}}),
                400,
                Some("data.userId"),
                "data.userId must be a string",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "create", "agentId": 5}}),
                400,
                Some("data.agentId"),
                "data.agentId must be a string",
            ),
            (
                json!({"type": "chat_update", "data": {"action": "create", "title": []}}),
                400,
                Some("data.title"),
                "data.title must be a string",
            ),
            // history
            (
                json!({"type": "history", "data": {}}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "limit": 0}}),
                400,
                Some("data.limit"),
                "data.limit must be an integer from 1 to 100",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "limit": 101}}),
                400,
                Some("data.limit"),
                "data.limit must be an integer from 1 to 100",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "limit": -5}}),
                400,
                Some("data.limit"),
                "data.limit must be an integer from 1 to 100",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "limit": 2.5}}),
                400,
                Some("data.limit"),
                "data.limit must be an integer from 1 to 100",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "limit": "10"}}),
                400,
                Some("data.limit"),
                "data.limit must be an integer from 1 to 100",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "before": true}}),
                400,
                Some("data.before"),
                "data.before must be a string",
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "before": {}}}),
                400,
                Some("data.before"),
                "data.before must be a string",
            ),
            // stop, takeover, release, help_request
            (
                json!({"type": "stop"}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "stop", "data": {"chatId": 12}}),
                400,
                Some("data.chatId"),
                "data.chatId must be a string",
            ),
            (
                json!({"type": "takeover", "data": {}}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "takeover", "data": {"chatId": ""}}),
                400,
                Some("data.chatId"),
                "data.chatId must not be empty",
            ),
            (
                json!({"type": "release", "data": {"chatId": null}}),
                400,
                Some("data.chatId"),
                "data.chatId must be a string",
            ),
            (
                json!({"type": "help_request", "data": {}}),
                400,
                Some("data.chatId"),
                "data.chatId is required",
            ),
            (
                json!({"type": "help_request", "data": {"chatId": "c", "reason": 5}}),
                400,
                Some("data.reason"),
                "data.reason must be a string",
            ),
            // resume
            (
                json!({"type": "resume", "data": {}}),
                400,
                Some("data.chats"),
                "data.chats is required",
            ),
            (
                json!({"type": "resume", "data": {"chats": {}}}),
                400,
                Some("data.chats"),
                "data.chats must be an array",
            ),
            (
                json!({"type": "resume", "data": {"chats": [1]}}),
                400,
                Some("data.chats[0]"),
                "data.chats[0] must be an object",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"lastSeq": 1}]}}),
                400,
                Some("data.chats[0].chatId"),
                "data.chats[0].chatId is required",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c"}]}}),
                400,
                Some("data.chats[0].lastSeq"),
                "data.chats[0].lastSeq is required",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1}, {"chatId": "d", "lastSeq": -1}]}}),
                400,
                Some("data.chats[1].lastSeq"),
                "data.chats[1].lastSeq must be a non-negative integer",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1.5}]}}),
                400,
                Some("data.chats[0].lastSeq"),
                "data.chats[0].lastSeq must be a non-negative integer",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": "4"}]}}),
                400,
                Some("data.chats[0].lastSeq"),
                "data.chats[0].lastSeq must be a non-negative integer",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1, "streaming": 3}]}}),
                400,
                Some("data.chats[0].streaming"),
                "data.chats[0].streaming must be an object",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1, "streaming": {"messageId": "m"}}]}}),
                400,
                Some("data.chats[0].streaming.lastIndex"),
                "data.chats[0].streaming.lastIndex is required",
            ),
            (
                json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1, "streaming": {"lastIndex": 0}}]}}),
                400,
                Some("data.chats[0].streaming.messageId"),
                "data.chats[0].streaming.messageId is required",
            ),
            // presence, auth, ping
            (
                json!({"type": "presence", "data": {}}),
                400,
                Some("data.status"),
                "data.status is required",
            ),
            (
                json!({"type": "presence", "data": {"status": "offline"}}),
                400,
                Some("data.status"),
                "data.status must be online or away",
            ),
            (
                json!({"type": "presence", "data": {"status": 1}}),
                400,
                Some("data.status"),
                "data.status must be online or away",
            ),
            (
                json!({"type": "auth", "data": {}}),
                400,
                Some("data.token"),
                "data.token is required",
            ),
            (
                json!({"type": "auth", "data": {"token": ""}}),
                400,
                Some("data.token"),
                "data.token must not be empty",
            ),
            (
                json!({"type": "auth", "data": {"token": ["a"]}}),
                400,
                Some("data.token"),
                "data.token must be a string",
            ),
            (
                json!({"type": "ping", "data": {"timestamp": "noon"}}),
                400,
                Some("data.timestamp"),
                "data.timestamp must be a number",
            ),
        ];
        for (frame, code, field, message) in cases {
            let err = decode(frame.clone()).expect_err(&format!("{frame} should fail"));
            assert_eq!(
                (err.code, err.field.as_deref(), err.message.as_str()),
                (code, field, message),
                "for {frame}"
            );
        }
    }

    #[test]
    fn text_that_is_not_json_is_invalid_json() {
        for text in [
            "",
            "{",
            "hello",
            "{\"type\":\"ping\",}",
            "{'type':'ping'}",
            "\u{0}",
        ] {
            let err = decode_client_frame(text, &Limits::default()).unwrap_err();
            assert_eq!(
                err,
                FrameError {
                    code: 400,
                    message: "Invalid JSON".into(),
                    field: None,
                    message_id: None
                }
            );
        }
    }

    #[test]
    fn errors_echo_the_clients_message_id_when_it_is_well_formed() {
        let err = decode(json!({"type": "stop", "messageId": "c-1", "data": {}})).unwrap_err();
        assert_eq!(err.message_id.as_deref(), Some("c-1"));
        let err = decode(json!({"type": "message", "data": {"messageId": "c-2", "content": 4}}))
            .unwrap_err();
        assert_eq!(err.message_id.as_deref(), Some("c-2"));
        let err = decode(json!({"type": "nope", "messageId": "c-3"})).unwrap_err();
        assert_eq!(err.message_id.as_deref(), Some("c-3"));
        // A malformed top-level id is not echoed; a good one in data still is.
        let err = decode(json!({"type": "stop", "messageId": 5, "data": {"messageId": "c-4"}}))
            .unwrap_err();
        assert_eq!(err.message_id.as_deref(), Some("c-4"));
        let err = decode(json!({"type": "stop", "messageId": "x".repeat(65)})).unwrap_err();
        assert_eq!(err.message_id, None);
    }

    #[test]
    fn limits_are_configurable() {
        let limits = Limits {
            max_message_id_chars: 4,
            max_context_bytes: 10,
            max_receipt_ids: 2,
            max_history_limit: 20,
        };
        let check = |frame: Value, message: &str| {
            let err = decode_client_frame(&frame.to_string(), &limits).unwrap_err();
            assert_eq!(err.message, message);
        };
        check(
            json!({"type": "ping", "messageId": "abcde"}),
            "messageId must be at most 4 characters",
        );
        check(
            json!({"type": "message", "data": {"messageId": "a", "content": "", "context": {"k": "0123456789"}}}),
            "data.context must be at most 10 bytes as JSON",
        );
        check(
            json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ["a", "b", "c"]}}),
            "data.messageIds must have 1 to 2 entries",
        );
        check(
            json!({"type": "history", "data": {"chatId": "c", "limit": 21}}),
            "data.limit must be an integer from 1 to 20",
        );
        // Characters, not bytes: four two-byte characters fit.
        assert!(
            decode_client_frame(
                &json!({"type": "ping", "messageId": "éééé"}).to_string(),
                &limits
            )
            .is_ok()
        );
    }

    // ------------------------------------------------------------ decoding: successes

    #[test]
    fn a_message_frame_decodes_every_field() {
        let ev = decode(json!({
            "type": "message",
            "timestamp": 1_700_000_000_123_i64,
            "data": {
                "chatId": "c1", "content": "  hello ", "messageId": "cm-1", "agentId": "tutor",
                "attachments": ["f1", "f2"],
                "context": {"page": "/lesson/3", "score": 3, "ratio": 0.5, "tags": ["a", null, true], "nested": {"x": {}}},
                "someFutureField": {"ignored": true}
            }
        }))
        .unwrap();
        let context = struct_from_json(
            json!({"page": "/lesson/3", "score": 3, "ratio": 0.5, "tags": ["a", null, true], "nested": {"x": {}}})
                .as_object()
                .unwrap(),
        );
        assert_eq!(
            ev,
            ClientEvent {
                message_id: "cm-1".into(),
                timestamp_ms: 1_700_000_000_123,
                event: Some(ClientKind::Message(pb::SendMessage {
                    chat_id: "c1".into(),
                    content: "  hello ".into(),
                    message_id: "cm-1".into(),
                    agent_id: "tutor".into(),
                    attachments: vec!["f1".into(), "f2".into()],
                    context: Some(context),
                })),
            }
        );
    }

    #[test]
    fn a_message_needs_no_chat_and_may_have_empty_content() {
        let ClientKind::Message(m) =
            decoded(json!({"type": "message", "messageId": "m1", "data": {"content": ""}}))
        else {
            panic!("not a message")
        };
        assert_eq!(
            (
                m.chat_id.as_str(),
                m.content.as_str(),
                m.message_id.as_str()
            ),
            ("", "", "m1")
        );
        assert_eq!((m.attachments.len(), m.context), (0, None));
    }

    #[test]
    fn the_top_level_message_id_wins_over_the_one_in_data() {
        let ev = decode(json!({"type": "message", "messageId": "top", "data": {"messageId": "inner", "content": "x"}})).unwrap();
        assert_eq!(ev.message_id, "top");
        let Some(ClientKind::Message(m)) = ev.event else {
            panic!("not a message")
        };
        assert_eq!(m.message_id, "top");
        // Any frame may carry one, in either place.
        assert_eq!(
            decode(json!({"type": "stop", "data": {"chatId": "c", "messageId": "s1"}}))
                .unwrap()
                .message_id,
            "s1"
        );
        assert_eq!(
            decode(json!({"type": "stop", "data": {"chatId": "c"}}))
                .unwrap()
                .message_id,
            ""
        );
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let ClientKind::Message(m) = decoded(
            json!({"type": "message", "messageId": null, "timestamp": null, "data": {
                "messageId": "m1", "content": "x", "chatId": null, "agentId": null, "attachments": null, "context": null
            }}),
        ) else {
            panic!("not a message")
        };
        assert_eq!(
            m,
            pb::SendMessage {
                content: "x".into(),
                message_id: "m1".into(),
                ..Default::default()
            }
        );
        let ClientKind::History(h) = decoded(
            json!({"type": "history", "data": {"chatId": "c", "before": null, "limit": null}}),
        ) else {
            panic!("not history")
        };
        assert_eq!((h.before, h.limit), (None, None));
        assert!(decode(json!({"type": "ping", "data": null})).is_ok());
    }

    #[test]
    fn every_simple_frame_decodes_into_its_proto_message() {
        let cases: Vec<(Value, ClientKind)> = vec![
            (
                json!({"type": "typing", "data": {"chatId": "c", "isTyping": true}}),
                ClientKind::Typing(pb::TypingUpdate {
                    chat_id: "c".into(),
                    is_typing: true,
                }),
            ),
            (
                json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ["a", "b"]}}),
                ClientKind::ReadReceipt(pb::ReadReceipt {
                    chat_id: "c".into(),
                    message_ids: vec!["a".into(), "b".into()],
                }),
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "before": "cur", "limit": 100}}),
                ClientKind::History(pb::HistoryRequest {
                    chat_id: "c".into(),
                    before: Some("cur".into()),
                    limit: Some(100),
                }),
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "before": 1_700_000_000_000_i64}}),
                ClientKind::History(pb::HistoryRequest {
                    chat_id: "c".into(),
                    before: Some("1700000000000".into()),
                    limit: None,
                }),
            ),
            (
                json!({"type": "history", "data": {"chatId": "c", "before": ""}}),
                ClientKind::History(pb::HistoryRequest {
                    chat_id: "c".into(),
                    before: None,
                    limit: None,
                }),
            ),
            (
                json!({"type": "stop", "data": {"chatId": "c"}}),
                ClientKind::Stop(pb::StopReply {
                    chat_id: "c".into(),
                }),
            ),
            (
                json!({"type": "takeover", "data": {"chatId": "c"}}),
                ClientKind::Takeover(pb::Takeover {
                    chat_id: "c".into(),
                }),
            ),
            (
                json!({"type": "release", "data": {"chatId": "c"}}),
                ClientKind::Release(pb::Release {
                    chat_id: "c".into(),
                }),
            ),
            (
                json!({"type": "help_request", "data": {"chatId": "c", "reason": "stuck"}}),
                ClientKind::HelpRequest(pb::HelpRequest {
                    chat_id: "c".into(),
                    reason: Some("stuck".into()),
                }),
            ),
            (
                json!({"type": "help_request", "data": {"chatId": "c"}}),
                ClientKind::HelpRequest(pb::HelpRequest {
                    chat_id: "c".into(),
                    reason: None,
                }),
            ),
            (
                json!({"type": "presence", "data": {"status": "online"}}),
                ClientKind::Presence(pb::PresenceUpdate {
                    status: pb::PresenceStatus::Online as i32,
                }),
            ),
            (
                json!({"type": "presence", "data": {"status": "away"}}),
                ClientKind::Presence(pb::PresenceUpdate {
                    status: pb::PresenceStatus::Away as i32,
                }),
            ),
            (
                json!({"type": "auth", "data": {"token": "jwt"}}),
                ClientKind::Auth(pb::Auth {
                    token: "jwt".into(),
                }),
            ),
            (
                json!({"type": "resume", "data": {"chats": []}}),
                ClientKind::Resume(pb::Resume { chats: vec![] }),
            ),
            (
                json!({"type": "resume", "data": {"chats": [
                    {"chatId": "a", "lastSeq": 0},
                    {"chatId": "b", "lastSeq": 41, "streaming": {"messageId": "m9", "lastIndex": 7}},
                    {"chatId": "c", "lastSeq": 3, "streaming": null}
                ]}}),
                ClientKind::Resume(pb::Resume {
                    chats: vec![
                        pb::ResumeChat {
                            chat_id: "a".into(),
                            last_seq: 0,
                            streaming: None,
                        },
                        pb::ResumeChat {
                            chat_id: "b".into(),
                            last_seq: 41,
                            streaming: Some(pb::ResumeStreaming {
                                message_id: "m9".into(),
                                last_index: 7,
                            }),
                        },
                        pb::ResumeChat {
                            chat_id: "c".into(),
                            last_seq: 3,
                            streaming: None,
                        },
                    ],
                }),
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(decoded(frame.clone()), expected, "for {frame}");
        }
    }

    #[test]
    fn every_chat_update_action_decodes() {
        let update = |action: pb::ChatAction, chat_id: &str| pb::ChatUpdate {
            action: action as i32,
            chat_id: chat_id.into(),
            ..Default::default()
        };
        let cases: Vec<(Value, pb::ChatUpdate)> = vec![
            (
                json!({"action": "join", "chatId": "c"}),
                update(pb::ChatAction::Join, "c"),
            ),
            (
                json!({"action": "leave", "chatId": "c"}),
                update(pb::ChatAction::Leave, "c"),
            ),
            (
                json!({"action": "end", "chatId": "c"}),
                update(pb::ChatAction::End, "c"),
            ),
            (
                json!({"action": "create"}),
                update(pb::ChatAction::Create, ""),
            ),
            (
                json!({"action": "create", "title": "Algebra", "agentId": "tutor", "model": "gpt"}),
                pb::ChatUpdate {
                    title: Some("Algebra".into()),
                    agent_id: Some("tutor".into()),
                    model: Some("gpt".into()),
                    ..update(pb::ChatAction::Create, "")
                },
            ),
            (
                json!({"action": "rename", "chatId": "c", "title": ""}),
                pb::ChatUpdate {
                    title: Some(String::new()),
                    ..update(pb::ChatAction::Rename, "c")
                },
            ),
            (
                json!({"action": "select_model", "chatId": "c", "model": "m"}),
                pb::ChatUpdate {
                    model: Some("m".into()),
                    ..update(pb::ChatAction::SelectModel, "c")
                },
            ),
            (
                json!({"action": "add_member", "chatId": "c", "userId": "u"}),
                pb::ChatUpdate {
                    user_id: Some("u".into()),
                    ..update(pb::ChatAction::AddMember, "c")
                },
            ),
            (
                json!({"action": "remove_member", "chatId": "c", "userId": "u"}),
                pb::ChatUpdate {
                    user_id: Some("u".into()),
                    ..update(pb::ChatAction::RemoveMember, "c")
                },
            ),
        ];
        for (data, expected) in cases {
            assert_eq!(
                decoded(json!({"type": "chat_update", "data": data})),
                ClientKind::ChatUpdate(expected),
                "for {data}"
            );
        }
    }

    #[test]
    fn ping_takes_its_timestamp_from_data_then_the_envelope_then_zero() {
        let ping = |frame: Value| match decoded(frame) {
            ClientKind::Ping(p) => p.timestamp,
            other => panic!("not a ping: {other:?}"),
        };
        assert_eq!(
            ping(json!({"type": "ping", "timestamp": 5, "data": {"timestamp": 7}})),
            7
        );
        assert_eq!(ping(json!({"type": "ping", "timestamp": 5})), 5);
        assert_eq!(ping(json!({"type": "ping"})), 0);
        assert_eq!(
            ping(json!({"type": "ping", "data": {"timestamp": 12.9}})),
            12
        );
        let ev = decode(json!({"type": "ping", "timestamp": 1_700_000_000_000.5_f64})).unwrap();
        assert_eq!(ev.timestamp_ms, 1_700_000_000_000);
    }

    // ------------------------------------------------------------ encoding

    fn sample_message() -> pb::ChatMessage {
        pb::ChatMessage {
            id: "m1".into(),
            chat_id: "c1".into(),
            seq: 4,
            user_id: "u1".into(),
            agent_id: "tutor".into(),
            role: pb::Role::Assistant as i32,
            content: "Hi".into(),
            status: pb::MessageStatus::Stopped as i32,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_714_564_800,
                nanos: 123_456_789,
            }),
            attachments: vec![pb::Attachment {
                id: "f1".into(),
                name: "a.png".into(),
                mime: "image/png".into(),
                size: 42,
                url: "/files/f1".into(),
            }],
            metadata: Some(pb::MessageMetadata {
                model: Some("gpt".into()),
                ttft_ms: Some(120),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_envelope_has_type_data_timestamp_and_seq_only_when_set() {
        let pong = ServerKind::Pong(pb::Pong { timestamp: 9 });
        let with_seq = ServerEvent {
            timestamp_ms: 11,
            seq: Some(3),
            event: Some(pong.clone()),
        };
        let frame: Value = serde_json::from_str(&encode_server_event(&with_seq)).unwrap();
        assert_eq!(
            frame,
            json!({"type": "pong", "data": {"timestamp": 9}, "timestamp": 11, "seq": 3})
        );

        let before = Utc::now().timestamp_millis();
        let frame: Value = serde_json::from_str(&encode_server_event(&ServerEvent {
            event: Some(pong),
            ..Default::default()
        }))
        .unwrap();
        let stamped = frame["timestamp"].as_i64().unwrap();
        assert!(stamped >= before && stamped <= Utc::now().timestamp_millis());
        assert!(frame.get("seq").is_none());
    }

    #[test]
    fn a_message_renders_enums_as_words_and_time_as_rfc3339_millis() {
        let frame = rendered(ServerKind::Message(pb::MessageEvent {
            chat_id: "c1".into(),
            message: Some(sample_message()),
            message_id: None,
        }));
        assert_eq!(
            frame["data"],
            json!({"chatId": "c1", "message": {
                "id": "m1", "chatId": "c1", "seq": 4, "userId": "u1", "agentId": "tutor", "role": "assistant",
                "content": "Hi", "status": "stopped", "timestamp": "2024-05-01T12:00:00.123Z",
                "attachments": [{"id": "f1", "name": "a.png", "mime": "image/png", "size": 42, "url": "/files/f1"}],
                "metadata": {"model": "gpt", "ttftMs": 120}
            }})
        );
        let own = rendered(ServerKind::Message(pb::MessageEvent {
            chat_id: "c1".into(),
            message: Some(pb::ChatMessage {
                metadata: None,
                ..sample_message()
            }),
            message_id: Some("cm-1".into()),
        }));
        assert_eq!(own["data"]["messageId"], "cm-1");
        assert_eq!(own["data"]["message"]["metadata"], json!({}));
    }

    #[test]
    fn enum_words_cover_every_value() {
        let words: Vec<_> = (0..6).map(role_name).collect();
        assert_eq!(
            words,
            [
                "unspecified",
                "user",
                "assistant",
                "admin",
                "system",
                "unspecified"
            ]
        );
        let words: Vec<_> = (0..5).map(message_status_name).collect();
        assert_eq!(
            words,
            [
                "unspecified",
                "complete",
                "stopped",
                "failed",
                "unspecified"
            ]
        );
        let words: Vec<_> = (0..5).map(presence_name).collect();
        assert_eq!(
            words,
            ["unspecified", "online", "away", "offline", "unspecified"]
        );
    }

    #[test]
    fn timestamps_out_of_range_render_as_null_and_odd_nanos_are_normalised() {
        assert_eq!(
            rfc3339(&prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            Value::Null
        );
        assert_eq!(
            rfc3339(&prost_types::Timestamp {
                seconds: i64::MIN,
                nanos: -5
            }),
            Value::Null
        );
        assert_eq!(
            rfc3339(&prost_types::Timestamp {
                seconds: 1,
                nanos: -1
            }),
            json!("1970-01-01T00:00:00.999Z")
        );
        assert_eq!(
            rfc3339(&prost_types::Timestamp {
                seconds: 0,
                nanos: 1_500_000_000
            }),
            json!("1970-01-01T00:00:01.500Z")
        );
    }

    #[test]
    fn a_session_has_active_chat_id_null_when_absent() {
        let session = pb::Session {
            connection_id: "k".into(),
            user_id: "u".into(),
            name: "Ada".into(),
            roles: vec!["user".into()],
            heartbeat_interval_ms: 30_000,
            limits: Some(pb::Limits {
                max_message_chars: 10_000,
                max_frame_bytes: 65_536,
            }),
            models: vec![pb::ModelInfo {
                id: "m".into(),
                name: "M".into(),
            }],
            default_model: "m".into(),
            agents: vec![pb::AgentInfo {
                id: "a".into(),
                name: "A".into(),
            }],
            active_chat_id: None,
        };
        let frame = rendered(ServerKind::Session(session.clone()));
        assert_eq!(
            frame["data"],
            json!({"connectionId": "k", "userId": "u", "name": "Ada", "roles": ["user"], "heartbeatIntervalMs": 30000,
                   "limits": {"maxMessageChars": 10000, "maxFrameBytes": 65536}, "models": [{"id": "m", "name": "M"}],
                   "defaultModel": "m", "agents": [{"id": "a", "name": "A"}], "activeChatId": null})
        );
        let frame = rendered(ServerKind::Session(pb::Session {
            active_chat_id: Some("c".into()),
            ..session
        }));
        assert_eq!(frame["data"]["activeChatId"], "c");
    }

    #[test]
    fn chat_update_carries_only_what_changed_and_operator_only_when_it_changed() {
        let render = |changes: pb::ChatChanges| {
            rendered(ServerKind::ChatUpdate(pb::ChatUpdated {
                chat_id: "c".into(),
                updates: Some(changes),
            }))["data"]
                .clone()
        };
        assert_eq!(
            render(pb::ChatChanges {
                title: Some("T".into()),
                ..Default::default()
            }),
            json!({"chatId": "c", "updates": {"title": "T"}})
        );
        let op = pb::Operator {
            id: "a1".into(),
            name: "Ann".into(),
        };
        assert_eq!(
            render(pb::ChatChanges {
                operator: Some(op.clone()),
                ..Default::default()
            }),
            json!({"chatId": "c", "updates": {}}),
            "operator is left out when operator_changed is false"
        );
        assert_eq!(
            render(pb::ChatChanges {
                operator_changed: true,
                operator: Some(op),
                ..Default::default()
            }),
            json!({"chatId": "c", "updates": {"operator": {"id": "a1", "name": "Ann"}}})
        );
        assert_eq!(
            render(pb::ChatChanges {
                operator_changed: true,
                needs_help: Some(false),
                message_count: Some(0),
                ..Default::default()
            }),
            json!({"chatId": "c", "updates": {"operator": null, "needsHelp": false, "messageCount": 0}})
        );
        let none = rendered(ServerKind::ChatUpdate(pb::ChatUpdated {
            chat_id: "c".into(),
            updates: None,
        }));
        assert_eq!(none["data"], json!({"chatId": "c", "updates": {}}));
    }

    #[test]
    fn small_server_frames_render_their_exact_fields() {
        let cases: Vec<(ServerKind, &str, Value)> = vec![
            (
                ServerKind::Ack(pb::Ack {
                    message_id: "cm".into(),
                    id: "m".into(),
                    chat_id: "c".into(),
                    seq: 2,
                    status: String::new(),
                    duplicate: true,
                }),
                "ack",
                json!({"messageId": "cm", "id": "m", "chatId": "c", "seq": 2, "status": "sent", "duplicate": true}),
            ),
            (
                ServerKind::MessageChunk(pb::MessageChunk {
                    chat_id: "c".into(),
                    message_id: "m".into(),
                    index: 0,
                    delta: "He".into(),
                }),
                "message_chunk",
                json!({"chatId": "c", "messageId": "m", "index": 0, "delta": "He"}),
            ),
            (
                ServerKind::Typing(pb::TypingEvent {
                    chat_id: "c".into(),
                    user_id: "assistant".into(),
                    agent_id: None,
                    is_typing: false,
                }),
                "typing",
                json!({"chatId": "c", "userId": "assistant", "isTyping": false}),
            ),
            (
                ServerKind::Typing(pb::TypingEvent {
                    chat_id: "c".into(),
                    user_id: "assistant".into(),
                    agent_id: Some("t".into()),
                    is_typing: true,
                }),
                "typing",
                json!({"chatId": "c", "userId": "assistant", "agentId": "t", "isTyping": true}),
            ),
            (
                ServerKind::ReadReceipt(pb::ReadReceiptEvent {
                    chat_id: "c".into(),
                    message_ids: vec!["m".into()],
                    user_id: "u".into(),
                    confirmed: true,
                }),
                "read_receipt",
                json!({"chatId": "c", "messageIds": ["m"], "userId": "u", "confirmed": true}),
            ),
            (
                ServerKind::History(pb::History {
                    chat_id: "c".into(),
                    messages: vec![],
                    has_more: false,
                    cursor: String::new(),
                    last_seq: 0,
                    reset: false,
                }),
                "history",
                json!({"chatId": "c", "messages": [], "hasMore": false, "cursor": "", "lastSeq": 0}),
            ),
            (
                ServerKind::History(pb::History {
                    chat_id: "c".into(),
                    messages: vec![],
                    has_more: true,
                    cursor: "x".into(),
                    last_seq: 9,
                    reset: true,
                }),
                "history",
                json!({"chatId": "c", "messages": [], "hasMore": true, "cursor": "x", "lastSeq": 9, "reset": true}),
            ),
            (
                ServerKind::Presence(pb::PresenceEvent {
                    user_id: "u".into(),
                    status: pb::PresenceStatus::Offline as i32,
                    chat_id: None,
                }),
                "presence",
                json!({"userId": "u", "status": "offline"}),
            ),
            (
                ServerKind::Presence(pb::PresenceEvent {
                    user_id: "u".into(),
                    status: pb::PresenceStatus::Away as i32,
                    chat_id: Some("c".into()),
                }),
                "presence",
                json!({"userId": "u", "status": "away", "chatId": "c"}),
            ),
            (
                ServerKind::OperatorJoined(pb::OperatorEvent {
                    chat_id: "c".into(),
                    operator: Some(pb::Operator {
                        id: "a".into(),
                        name: "Ann".into(),
                    }),
                }),
                "operator_joined",
                json!({"chatId": "c", "operator": {"id": "a", "name": "Ann"}}),
            ),
            (
                ServerKind::OperatorLeft(pb::OperatorEvent {
                    chat_id: "c".into(),
                    operator: Some(pb::Operator {
                        id: "a".into(),
                        name: "Ann".into(),
                    }),
                }),
                "operator_left",
                json!({"chatId": "c", "operator": {"id": "a", "name": "Ann"}}),
            ),
            (
                ServerKind::Error(pb::Error {
                    code: 403,
                    message: "Access denied to chat".into(),
                    close_code: Some(1008),
                    ..Default::default()
                }),
                "error",
                json!({"code": 403, "message": "Access denied to chat", "retryable": false}),
            ),
            (
                ServerKind::Error(pb::Error {
                    code: 429,
                    message: "Rate limited".into(),
                    retryable: true,
                    retry_after_ms: Some(1500),
                    message_id: Some("cm".into()),
                    field: Some("data.content".into()),
                    close_code: None,
                }),
                "error",
                json!({"code": 429, "message": "Rate limited", "retryable": true, "retryAfterMs": 1500, "messageId": "cm", "field": "data.content"}),
            ),
        ];
        for (event, kind, data) in cases {
            let frame = rendered(event);
            assert_eq!(
                (frame["type"].as_str().unwrap(), &frame["data"]),
                (kind, &data)
            );
        }
    }

    #[test]
    fn an_event_without_a_variant_renders_as_an_internal_error() {
        let frame: Value =
            serde_json::from_str(&encode_server_event(&ServerEvent::default())).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(
            frame["data"],
            json!({"code": 500, "message": "internal error", "retryable": false})
        );
    }

    #[test]
    fn error_frames_for_the_bridge_and_for_decoding_failures() {
        let frame: Value = serde_json::from_str(&error_frame(
            401,
            "Authentication failed",
            false,
            None,
            None,
        ))
        .unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(
            frame["data"],
            json!({"code": 401, "message": "Authentication failed", "retryable": false})
        );
        assert!(frame["timestamp"].as_i64().unwrap() > 0);

        let err = decode(json!({"type": "typing", "messageId": "t1", "data": {"chatId": "c"}}))
            .unwrap_err();
        let frame: Value = serde_json::from_str(&err.into_frame()).unwrap();
        assert_eq!(
            frame["data"],
            json!({"code": 400, "message": "data.isTyping is required", "retryable": false, "messageId": "t1", "field": "data.isTyping"})
        );
        let frame: Value = serde_json::from_str(
            &decode_client_frame("{", &Limits::default())
                .unwrap_err()
                .into_frame(),
        )
        .unwrap();
        assert_eq!(
            frame["data"],
            json!({"code": 400, "message": "Invalid JSON", "retryable": false})
        );
    }

    #[test]
    fn struct_numbers_come_back_as_integers_when_whole() {
        let object = json!({"n": 3, "f": 2.5, "neg": -7, "big": 1e300, "list": [1, "a", null, {"b": false}]});
        let back = struct_to_json(&struct_from_json(object.as_object().unwrap()));
        assert_eq!(Value::Object(back), object);
        assert_eq!(number_to_json(f64::NAN), Value::Null);
        assert_eq!(number_to_json(f64::INFINITY), Value::Null);
        assert_eq!(
            pb_value_to_json(&prost_types::Value { kind: None }),
            Value::Null
        );
    }

    // ------------------------------------------------------------ docs/protocol.md stays true

    const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

    /// The ```json client / ```json server blocks of the doc, with the line each starts on.
    fn doc_examples(side: &str) -> Vec<(usize, String)> {
        let fence = format!("```json {side}");
        let mut examples = Vec::new();
        let mut lines = PROTOCOL_DOC.lines().enumerate();
        while let Some((number, line)) = lines.next() {
            if line.trim_end() == fence {
                let body: Vec<&str> = lines
                    .by_ref()
                    .map(|(_, l)| l)
                    .take_while(|l| l.trim_end() != "```")
                    .collect();
                examples.push((number + 1, body.join("\n")));
            }
        }
        examples
    }

    fn example_types(side: &str) -> std::collections::BTreeSet<String> {
        doc_examples(side)
            .iter()
            .map(|(line, json)| {
                let value: Value =
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("docs line {line}: {e}"));
                value["type"]
                    .as_str()
                    .unwrap_or_else(|| panic!("docs line {line}: no type"))
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn every_client_example_in_the_docs_decodes() {
        let examples = doc_examples("client");
        assert!(!examples.is_empty());
        for (line, json) in examples {
            if let Err(err) = decode_client_frame(&json, &Limits::default()) {
                panic!("docs/protocol.md line {line}: {err:?}");
            }
        }
    }

    #[test]
    fn every_server_example_in_the_docs_is_exactly_what_the_encoder_produces() {
        let examples = doc_examples("server");
        assert!(!examples.is_empty());
        for (line, json) in examples {
            let event = decode_server_frame(&json)
                .unwrap_or_else(|e| panic!("docs/protocol.md line {line}: {e}"));
            let expected: Value = serde_json::from_str(&json).unwrap();
            let actual: Value = serde_json::from_str(&encode_server_event(&event)).unwrap();
            assert_eq!(actual, expected, "docs/protocol.md line {line}");
        }
    }

    #[test]
    fn the_docs_show_every_frame_type() {
        let all = |types: &[&str]| {
            types
                .iter()
                .map(|t| (*t).to_owned())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(example_types("client"), all(&CLIENT_FRAME_TYPES));
        assert_eq!(example_types("server"), all(&SERVER_FRAME_TYPES));
    }

    // ------------------------------------------------------------ properties

    /// Arbitrary JSON, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "(?s).{0,12}".prop_map(Value::from),
            Just(Value::from("")),
            Just(Value::from("x".repeat(70))),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((field_name(), inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// Mostly the protocol's own field names, so random values land where the decoder looks.
    fn field_name() -> impl Strategy<Value = String> {
        const NAMES: [&str; 24] = [
            "chatId",
            "content",
            "messageId",
            "agentId",
            "attachments",
            "context",
            "isTyping",
            "messageIds",
            "action",
            "title",
            "model",
            "userId",
            "before",
            "limit",
            "chats",
            "reason",
            "status",
            "token",
            "timestamp",
            "lastSeq",
            "streaming",
            "lastIndex",
            "type",
            "data",
        ];
        prop_oneof![4 => prop::sample::select(NAMES.as_slice()).prop_map(str::to_owned), 1 => "(?s).{0,8}"]
    }

    /// A frame of a random (mostly known) type, with random values in random fields.
    fn any_frame() -> impl Strategy<Value = Value> {
        let kind = prop_oneof![
            4 => prop::sample::select(CLIENT_FRAME_TYPES.as_slice()).prop_map(Value::from),
            1 => any_json(),
        ];
        let action = prop::sample::select(
            CHAT_ACTIONS
                .iter()
                .map(|(name, _)| Value::from(*name))
                .collect::<Vec<_>>(),
        );
        let value =
            prop_oneof![3 => any_json(), 1 => action, 1 => "[a-z]{1,3}".prop_map(Value::from)];
        let data = prop_oneof![
            4 => prop::collection::vec((field_name(), value), 0..8).prop_map(|fields| Value::Object(fields.into_iter().collect())),
            1 => any_json(),
        ];
        (
            kind,
            data,
            prop::option::of(any_json()),
            prop::option::of(any_json()),
        )
            .prop_map(|(kind, data, id, timestamp)| {
                let mut frame = Map::new();
                frame.insert("type".into(), kind);
                frame.insert("data".into(), data);
                if let Some(id) = id {
                    frame.insert("messageId".into(), id);
                }
                if let Some(timestamp) = timestamp {
                    frame.insert("timestamp".into(), timestamp);
                }
                Value::Object(frame)
            })
    }

    /// What every decode result must satisfy, whatever the input.
    fn check_outcome(outcome: &Result<ClientEvent, FrameError>) {
        match outcome {
            Ok(ev) => {
                assert!(ev.message_id.chars().count() <= 64);
                assert!(ev.event.is_some());
                if let Some(ClientKind::Message(m)) = &ev.event {
                    assert!(!m.message_id.is_empty());
                    assert_eq!(m.message_id, ev.message_id);
                }
            }
            Err(err) => {
                assert!(err.code == 400 || err.code == 413, "{err:?}");
                assert!(!err.message.is_empty());
                assert!(
                    err.message_id
                        .as_ref()
                        .is_none_or(|id| !id.is_empty() && id.chars().count() <= 64)
                );
            }
        }
    }

    fn id() -> impl Strategy<Value = String> {
        "\\PC{1,24}"
    }

    fn client_message_id() -> impl Strategy<Value = String> {
        "\\PC{1,64}"
    }

    fn any_context() -> impl Strategy<Value = prost_types::Struct> {
        use prost_types::value::Kind;
        // Doubles that survive JSON text exactly: whole numbers and quarters.
        let leaf = prop_oneof![
            Just(Kind::NullValue(0)),
            any::<bool>().prop_map(Kind::BoolValue),
            any::<i32>().prop_map(|n| Kind::NumberValue(f64::from(n))),
            any::<i32>().prop_map(|n| Kind::NumberValue(f64::from(n) / 4.0)),
            "(?s).{0,10}".prop_map(Kind::StringValue),
        ]
        .prop_map(|kind| prost_types::Value { kind: Some(kind) });
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| Kind::ListValue(prost_types::ListValue { values })),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                    .prop_map(|fields| Kind::StructValue(prost_types::Struct { fields })),
            ]
            .prop_map(|kind| prost_types::Value { kind: Some(kind) })
        });
        prop::collection::btree_map("\\PC{0,8}", value, 0..5)
            .prop_map(|fields| prost_types::Struct { fields })
    }

    fn any_client_kind() -> impl Strategy<Value = ClientKind> {
        let opt_id = || prop_oneof![Just(String::new()), id()];
        let text = || "(?s).{0,40}";
        let action = prop::sample::select(
            CHAT_ACTIONS
                .iter()
                .map(|(_, action)| *action)
                .collect::<Vec<_>>(),
        );
        let chat_update = (
            action,
            id(),
            prop::option::of(text()),
            prop::option::of(id()),
            prop::option::of(id()),
            prop::option::of(id()),
        )
            .prop_map(|(action, chat_id, title, model, agent_id, user_id)| {
                let (chat_id, title, model, user_id) = match action {
                    pb::ChatAction::Create => (String::new(), title, model, user_id),
                    pb::ChatAction::Rename => {
                        (chat_id, title.or(Some(String::new())), model, user_id)
                    }
                    pb::ChatAction::SelectModel => {
                        (chat_id, title, model.or(Some("m".into())), user_id)
                    }
                    pb::ChatAction::AddMember | pb::ChatAction::RemoveMember => {
                        (chat_id, title, model, user_id.or(Some("u".into())))
                    }
                    _ => (chat_id, title, model, user_id),
                };
                ClientKind::ChatUpdate(pb::ChatUpdate {
                    action: action as i32,
                    chat_id,
                    title,
                    model,
                    agent_id,
                    user_id,
                })
            });
        let resume_chat = (id(), 0..=i64::MAX, prop::option::of((id(), 0..=i64::MAX))).prop_map(
            |(chat_id, last_seq, streaming)| pb::ResumeChat {
                chat_id,
                last_seq,
                streaming: streaming.map(|(message_id, last_index)| pb::ResumeStreaming {
                    message_id,
                    last_index,
                }),
            },
        );
        prop_oneof![
            (
                opt_id(),
                text(),
                client_message_id(),
                opt_id(),
                prop::collection::vec(id(), 0..4),
                prop::option::of(any_context())
            )
                .prop_map(
                    |(chat_id, content, message_id, agent_id, attachments, context)| {
                        ClientKind::Message(pb::SendMessage {
                            chat_id,
                            content,
                            message_id,
                            agent_id,
                            attachments,
                            context,
                        })
                    }
                ),
            (id(), any::<bool>()).prop_map(|(chat_id, is_typing)| ClientKind::Typing(
                pb::TypingUpdate { chat_id, is_typing }
            )),
            (id(), prop::collection::vec(id(), 1..=100)).prop_map(|(chat_id, message_ids)| {
                ClientKind::ReadReceipt(pb::ReadReceipt {
                    chat_id,
                    message_ids,
                })
            }),
            chat_update,
            (id(), prop::option::of(id()), prop::option::of(1..=100_u32)).prop_map(
                |(chat_id, before, limit)| ClientKind::History(pb::HistoryRequest {
                    chat_id,
                    before,
                    limit
                })
            ),
            id().prop_map(|chat_id| ClientKind::Stop(pb::StopReply { chat_id })),
            prop::collection::vec(resume_chat, 0..4)
                .prop_map(|chats| ClientKind::Resume(pb::Resume { chats })),
            (id(), prop::option::of(text())).prop_map(|(chat_id, reason)| ClientKind::HelpRequest(
                pb::HelpRequest { chat_id, reason }
            )),
            prop::sample::select(vec![pb::PresenceStatus::Online, pb::PresenceStatus::Away])
                .prop_map(|status| ClientKind::Presence(pb::PresenceUpdate {
                    status: status as i32
                })),
            id().prop_map(|token| ClientKind::Auth(pb::Auth { token })),
            any::<i64>().prop_map(|timestamp| ClientKind::Ping(pb::Ping { timestamp })),
            id().prop_map(|chat_id| ClientKind::Takeover(pb::Takeover { chat_id })),
            id().prop_map(|chat_id| ClientKind::Release(pb::Release { chat_id })),
        ]
    }

    fn any_client_event() -> impl Strategy<Value = ClientEvent> {
        let message_id = prop_oneof![Just(String::new()), client_message_id()];
        let timestamp_ms = prop_oneof![Just(0_i64), any::<i64>()];
        (message_id, timestamp_ms, any_client_kind()).prop_map(
            |(message_id, timestamp_ms, kind)| {
                // A message's idempotency key is the frame's messageId.
                let message_id = match &kind {
                    ClientKind::Message(m) => m.message_id.clone(),
                    _ => message_id,
                };
                ClientEvent {
                    message_id,
                    timestamp_ms,
                    event: Some(kind),
                }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn decoding_arbitrary_text_never_panics(text in "(?s).{0,200}") {
            check_outcome(&decode_client_frame(&text, &Limits::default()));
        }

        #[test]
        fn decoding_arbitrary_bytes_as_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            check_outcome(&decode_client_frame(&String::from_utf8_lossy(&bytes), &Limits::default()));
        }

        #[test]
        fn decoding_arbitrary_json_shaped_frames_never_panics(frame in any_frame()) {
            check_outcome(&decode_client_frame(&frame.to_string(), &Limits::default()));
        }

        #[test]
        fn valid_client_events_survive_a_trip_through_json(event in any_client_event()) {
            let text = encode_client_event(&event);
            let decoded = decode_client_frame(&text, &Limits::default());
            prop_assert_eq!(decoded, Ok(event), "frame: {}", text);
        }

        #[test]
        fn server_events_render_as_json_objects_with_a_type(event in any_client_event()) {
            // Reuse client strings as server payloads: odd text must still render as valid JSON.
            let (chat_id, text) = match event.event {
                Some(ClientKind::Message(m)) => (m.chat_id, m.content),
                _ => (event.message_id, String::new()),
            };
            let ev = ServerEvent {
                timestamp_ms: event.timestamp_ms,
                seq: None,
                event: Some(ServerKind::MessageChunk(pb::MessageChunk { chat_id: chat_id.clone(), message_id: "m".into(), index: 1, delta: text.clone() })),
            };
            let frame: Value = serde_json::from_str(&encode_server_event(&ev)).unwrap();
            prop_assert_eq!(&frame["data"]["delta"], &Value::from(text));
            prop_assert_eq!(&frame["data"]["chatId"], &Value::from(chat_id));
        }
    }
}
