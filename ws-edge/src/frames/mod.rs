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
//!
//! By concern: `decode` (client frames -> protobuf, [`decode_client_frame`]), `depth` (how
//! deeply a frame nests), `fields` (the
//! cursor over one JSON object that names the field in every error), `encode` (protobuf ->
//! server frames, [`encode_server_event`]); the tests are in `frames/tests/`.
//! `google.protobuf.Struct` <-> JSON is [`chat_proto::json`], shared with the core.

mod decode;
mod depth;
mod encode;
mod fields;

use chat_proto::limits::{self, code};
use chat_proto::pb::chat as pb;

pub use decode::decode_client_frame;
pub use encode::{encode_server_event, error_frame, event_data, named, rfc3339_string};

/// A client frame that failed to decode. The bridge answers it with
/// `{"type":"error","data":{code,message,retryable:false,messageId?,field?}}` ([`Self::into_frame`])
/// and keeps the connection open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct FrameError {
    /// 400 for a malformed frame or field, 413 for a `context` over the size limit.
    pub code: u32,
    /// Human-readable, names the field: "data.chatId must be a string".
    pub message: String,
    /// The offending field as a path: "data.chatId", "data.chats[2].lastSeq", "type".
    pub field: Option<String>,
    /// The client's `messageId` of the failed frame, when it could be read and was valid.
    pub message_id: Option<String>,
}

impl FrameError {
    /// A whole-frame problem ("Invalid JSON"), with no field to blame.
    pub(super) fn frame(message: &str) -> Self {
        Self {
            code: code::INVALID,
            message: message.to_owned(),
            field: None,
            message_id: None,
        }
    }

    pub(super) fn unknown_type() -> Self {
        Self {
            field: Some("type".to_owned()),
            ..Self::frame("Unknown message type")
        }
    }

    /// A field-level problem: the message is the field path followed by what is wrong with it.
    pub(super) fn invalid(field: impl Into<String>, problem: &str) -> Self {
        let field = field.into();
        Self {
            code: code::INVALID,
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
    /// Deepest nesting of arrays and objects in a frame, the frame itself being level 1;
    /// deeper is error 400 naming the field.
    pub max_depth: usize,
}

/// The deepest a client frame may nest ([`Limits::max_depth`]): `data.context` is level 3, so
/// a context may hold 29 more levels. Far below prost's recursion limit of 100 at the core,
/// where each JSON level of a `google.protobuf.Struct` costs up to three.
pub const MAX_JSON_DEPTH: usize = 32;

impl Limits {
    /// The protocol's bounds, which the bridge enforces on every socket.
    pub const PROTOCOL: Self = Self {
        max_message_id_chars: limits::MAX_ID_CHARS,
        max_context_bytes: limits::MAX_CONTEXT_BYTES,
        max_receipt_ids: limits::MAX_RECEIPT_IDS,
        max_history_limit: limits::MAX_PAGE,
        max_depth: MAX_JSON_DEPTH,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::PROTOCOL
    }
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
const CHAT_ACTIONS: [(&str, pb::ChatAction); 9] = [
    ("join", pb::ChatAction::Join),
    ("leave", pb::ChatAction::Leave),
    ("create", pb::ChatAction::Create),
    ("rename", pb::ChatAction::Rename),
    ("select_model", pb::ChatAction::SelectModel),
    ("end", pb::ChatAction::End),
    ("add_member", pb::ChatAction::AddMember),
    ("remove_member", pb::ChatAction::RemoveMember),
    ("set_spoken_replies", pb::ChatAction::SetSpokenReplies),
];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests;
