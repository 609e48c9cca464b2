//! What the core tells a connection: the domain's server events. Every event a client can
//! receive is one [`Event`] variant; [`Outgoing`] stamps it with a time and, for durable chat
//! events, the chat's `seq`. The gRPC adapter turns these into `chat.v1.ServerEvent`s; nothing
//! here knows the wire.
//!
//! [`Durable`] is the subset stored in `chat_events` and replayed by `resume` (messages are
//! stored as message rows instead). It is stored as JSON, so its serde form is a storage
//! format: add fields as optional, never rename.

use chrono::{NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ChatError;
use crate::storage::{ChatRow, EventRow, MessageRow};
use crate::types::{ChatStatus, MessageStatus, Presence, Role};

/// An event on its way to connections.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The chat's sequence number, on durable chat events.
    pub seq: Option<i64>,
    pub event: Event,
}

impl Outgoing {
    /// An event stamped now, without `seq`.
    pub fn now(event: Event) -> Self {
        Self {
            timestamp_ms: Utc::now().timestamp_millis(),
            seq: None,
            event,
        }
    }

    pub fn with_seq(mut self, seq: i64) -> Self {
        self.seq = Some(seq);
        self
    }

    /// The `error` event answering the client frame `frame_id`.
    pub fn error(error: ChatError, frame_id: Option<String>) -> Self {
        Self::now(Event::Error {
            error,
            frame_id: frame_id.filter(|id| !id.is_empty()),
        })
    }

    /// The durable `message` event of a stored row, with its `seq`.
    pub fn message(row: &MessageRow) -> Self {
        Self::now(Event::Message(Box::new(MessageEvent {
            chat_id: row.chat_id.clone(),
            message: ChatMessage::from_row(row),
            client_message_id: None,
        })))
        .with_seq(row.seq)
    }

    /// The summary members get after each stored message: `chat_update {messageCount,
    /// lastMessage}` without `seq` (not durable; resume does not replay it).
    pub fn summary(row: &MessageRow) -> Self {
        Self::now(Event::ChatUpdate(ChatUpdate {
            chat_id: row.chat_id.clone(),
            changes: ChatChanges {
                message_count: Some(row.ordinal),
                last_message: Some(preview(&row.content)),
                ..ChatChanges::default()
            },
        }))
    }

    /// A stored durable event as the frame live members saw, stamped with when it was stored.
    /// `None` for a payload this version cannot read (logged).
    pub fn replay(row: &EventRow) -> Option<Self> {
        match serde_json::from_slice::<Durable>(&row.payload) {
            Ok(durable) => Some(Self {
                timestamp_ms: row.created_at.and_utc().timestamp_millis(),
                seq: Some(row.seq),
                event: durable.into_event(),
            }),
            Err(err) => {
                tracing::warn!(chat = %row.chat_id, seq = row.seq, kind = %row.kind, error = %err, "unreadable stored event skipped");
                None
            }
        }
    }
}

/// The longest `lastMessage` preview, in characters.
pub const PREVIEW_CHARS: usize = 100;

/// The first [`PREVIEW_CHARS`] characters of a message, ending in `…` when it was cut.
pub fn preview(content: &str) -> String {
    if content.chars().count() <= PREVIEW_CHARS {
        return content.to_string();
    }
    let mut cut: String = content.chars().take(PREVIEW_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Every event a connection can receive.
#[derive(Debug, Clone)]
pub enum Event {
    /// The first event of every stream, and again after an in-band `auth`.
    Session(Session),
    Ack(Ack),
    /// Boxed: a message is several times larger than any other event.
    Message(Box<MessageEvent>),
    MessageChunk(Chunk),
    Typing(Typing),
    ReadReceipt(Receipts),
    ChatUpdate(ChatUpdate),
    History(History),
    Presence(PresenceChange),
    OperatorJoined(OperatorEvent),
    OperatorLeft(OperatorEvent),
    Pong {
        timestamp: i64,
    },
    /// `frame_id`: the client frame this error answers.
    Error {
        error: ChatError,
        frame_id: Option<String>,
    },
    /// An event another core delivered to its members of a chat this core's members share
    /// (`cluster.rs`): already encoded, passed through as is.
    Remote(Box<crate::cluster::RemoteEvent>),
}

/// Durable chat events other than messages: stored with the chat's next `seq`, delivered to
/// joined connections, replayed by `resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Durable {
    ReadReceipt(Receipts),
    ChatUpdate(ChatUpdate),
    OperatorJoined(OperatorEvent),
    OperatorLeft(OperatorEvent),
}

impl Durable {
    /// The `chat_events.kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ReadReceipt(_) => "read_receipt",
            Self::ChatUpdate(_) => "chat_update",
            Self::OperatorJoined(_) => "operator_joined",
            Self::OperatorLeft(_) => "operator_left",
        }
    }

    pub fn into_event(self) -> Event {
        match self {
            Self::ReadReceipt(r) => Event::ReadReceipt(r),
            Self::ChatUpdate(u) => Event::ChatUpdate(u),
            Self::OperatorJoined(o) => Event::OperatorJoined(o),
            Self::OperatorLeft(o) => Event::OperatorLeft(o),
        }
    }

    /// The stored form.
    pub fn to_payload(&self) -> Vec<u8> {
        // Plain data (strings, numbers, options): serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub connection_id: String,
    pub user_id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub heartbeat_interval_ms: u64,
    pub max_message_chars: u32,
    pub max_frame_bytes: u32,
    pub catalogue: Catalogue,
    /// The user's most recent active chat, to continue.
    pub active_chat_id: Option<String>,
    /// Voice messages and spoken replies work here.
    pub voice: bool,
}

/// Models and agents users can choose from.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    pub models: Vec<Named>,
    pub default_model: String,
    pub agents: Vec<Named>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub id: String,
    pub name: String,
}

/// A stored message acknowledged to its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The client's id.
    pub client_message_id: String,
    /// The server's id.
    pub id: String,
    pub chat_id: String,
    pub seq: i64,
    /// A resend of a message already stored: nothing else happened.
    pub duplicate: bool,
}

impl Ack {
    pub fn of(row: &MessageRow, client_message_id: &str, duplicate: bool) -> Self {
        Self {
            client_message_id: client_message_id.to_string(),
            id: row.id.clone(),
            chat_id: row.chat_id.clone(),
            seq: row.seq,
            duplicate,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageEvent {
    pub chat_id: String,
    pub message: ChatMessage,
    /// The sender's client id, on the copy of a user's own message.
    pub client_message_id: Option<String>,
}

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub id: String,
    pub chat_id: String,
    pub seq: i64,
    pub user_id: String,
    pub agent_id: String,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    pub created_at: NaiveDateTime,
    pub metadata: Metadata,
    /// The sender's idempotency key (user messages).
    pub client_message_id: Option<String>,
    /// Attached files (their URLs are signed as events leave the core).
    pub attachments: Vec<StoredAttachment>,
}

/// An attached file as a message keeps it (the `attachments` column, JSON): files never change,
/// so the record travels with the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAttachment {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub size: i64,
}

impl StoredAttachment {
    pub fn of(row: &crate::storage::FileRow) -> Self {
        Self {
            id: row.id.clone(),
            name: row.name.clone(),
            mime: row.mime.clone(),
            size: row.size,
        }
    }

    pub fn list_json(list: &[Self]) -> String {
        // A list of plain structs of strings and numbers always serializes.
        serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
    }

    /// The column's list; empty for `[]` or a column written by an older version (ids only).
    pub fn parse_list(json: &str) -> Vec<Self> {
        serde_json::from_str(json).unwrap_or_default()
    }
}

impl ChatMessage {
    pub fn from_row(row: &MessageRow) -> Self {
        let stored = StoredMetadata::parse(&row.metadata);
        Self {
            id: row.id.clone(),
            chat_id: row.chat_id.clone(),
            seq: row.seq,
            user_id: row.sender_id.clone(),
            agent_id: row.agent_id.clone(),
            // Rows are only ever written with valid spellings; an unknown one (a newer
            // version's) shows as a system line rather than as anyone's words.
            role: Role::parse(&row.role).unwrap_or(Role::System),
            content: row.content.clone(),
            status: MessageStatus::parse(&row.status).unwrap_or(MessageStatus::Complete),
            created_at: row.created_at,
            client_message_id: row.client_message_id.clone(),
            attachments: StoredAttachment::parse_list(&row.attachments),
            metadata: Metadata {
                model: stored.model,
                prompt_tokens: stored.prompt_tokens,
                completion_tokens: stored.completion_tokens,
                ttft_ms: stored.ttft_ms,
                latency_ms: stored.latency_ms,
                operator_name: stored.operator_name,
                finish_reason: stored.finish_reason,
                // Rows stored before ordinals existed were numbered by the migration; 0 only
                // for a row a test wrote by hand.
                message_index: (row.ordinal > 0).then_some(row.ordinal),
                total_messages: (row.ordinal > 0).then_some(row.ordinal),
                transcribed: stored.transcribed,
                speech_error: stored.speech_error,
            },
        }
    }
}

/// The part of a message's metadata clients see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub model: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub ttft_ms: Option<i64>,
    pub latency_ms: Option<i64>,
    pub operator_name: Option<String>,
    pub finish_reason: Option<String>,
    /// 1-based position in the chat (seed 001's `messageIndex`).
    pub message_index: Option<i64>,
    /// The chat's message count when this one was stored (seed 001's `totalMessages`); equal
    /// to `message_index`, since a message is the last one when it is stored.
    pub total_messages: Option<i64>,
    pub transcribed: Option<bool>,
    pub speech_error: Option<String>,
}

/// What we keep in a message's `metadata` column (JSON, camelCase like the protocol): what
/// clients see plus what only the core reads.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_name: Option<String>,
    /// The per-message context object a client sent (used in the prompt, never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// Why a reply failed (kind only, never provider text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `length` when the model stopped at its output token limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The content is the transcript of the message's audio (a voice message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcribed: Option<bool>,
    /// Why a reply the chat wanted spoken has no audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech_error: Option<String>,
}

impl StoredMetadata {
    pub fn to_json(&self) -> String {
        // Serializing a struct of options and a Value cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// One streamed piece of a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub chat_id: String,
    /// The assistant message's server id.
    pub message_id: String,
    /// 0, 1, 2, ... per reply.
    pub index: i64,
    pub delta: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Typing {
    pub chat_id: String,
    /// The user's id, or [`super::ASSISTANT`].
    pub user_id: String,
    pub agent_id: Option<String>,
    pub is_typing: bool,
}

/// Messages a member has read (always confirmed: only stored receipts are sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipts {
    pub chat_id: String,
    pub message_ids: Vec<String>,
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatUpdate {
    pub chat_id: String,
    pub changes: ChatChanges,
}

/// The fields of a chat that changed; `None` means unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ChatStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_help: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoken_replies: Option<bool>,
    /// `Some(Some(op))`: `op` took the chat over; `Some(None)`: the operator left.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub operator: Option<Option<Operator>>,
}

/// A field that is present (even as `null`) is `Some`; serde's default for an absent one is
/// `None`. That keeps "operator left" (`null`) apart from "unchanged" (absent).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl ChatChanges {
    /// Everything a client shows about a chat it just created or opened.
    pub fn of(chat: &ChatRow) -> Self {
        Self {
            title: Some(chat.title.clone()),
            message_count: Some(chat.message_count),
            model: Some(chat.model.clone()),
            status: ChatStatus::parse(&chat.status),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorEvent {
    pub chat_id: String,
    pub operator: Operator,
}

/// A page of a chat's messages, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub chat_id: String,
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
    /// Pass as `before` for the previous page; empty when the page is empty.
    pub cursor: String,
    /// The chat's latest `seq` when the page was read.
    pub last_seq: i64,
    /// The client's gap could not be replayed: this replaces what it had.
    pub reset: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PresenceChange {
    pub user_id: String,
    pub status: Presence,
    pub chat_id: Option<String>,
}

/// One of the caller's chats, for session lists.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    pub chat_id: String,
    pub title: String,
    pub status: ChatStatus,
    pub model: String,
    pub agent_id: String,
    pub message_count: i64,
    pub admin_assisted: bool,
    pub needs_help: bool,
    pub started_at: NaiveDateTime,
    pub last_activity_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
}

impl SessionSummary {
    pub fn of(row: &ChatRow) -> Self {
        Self {
            chat_id: row.id.clone(),
            title: row.title.clone(),
            status: ChatStatus::parse(&row.status).unwrap_or(ChatStatus::Active),
            model: row.model.clone(),
            agent_id: row.agent_id.clone(),
            message_count: row.message_count,
            admin_assisted: row.admin_assisted,
            needs_help: row.needs_help,
            started_at: row.started_at,
            last_activity_at: row.last_activity_at,
            ended_at: row.ended_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_leaving_survives_storage_apart_from_no_change() {
        let left = Durable::ChatUpdate(ChatUpdate {
            chat_id: "c".into(),
            changes: ChatChanges {
                operator: Some(None),
                ..ChatChanges::default()
            },
        });
        let unchanged = Durable::ChatUpdate(ChatUpdate {
            chat_id: "c".into(),
            changes: ChatChanges {
                title: Some("t".into()),
                ..ChatChanges::default()
            },
        });
        for durable in [left, unchanged] {
            let back: Durable = serde_json::from_slice(&durable.to_payload())
                .unwrap_or_else(|e| panic!("stored form reads back: {e}"));
            assert_eq!(back, durable);
        }
    }
}
