//! Row structs: what the storage functions return. One struct per table, fields named and
//! typed as in [`super::schema`]; always loaded with `as_select()`/`as_returning()`, so field
//! order does not matter. `check_for_backend` makes diesel verify each field's type against
//! both backends at compile time.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    audit_events, chat_events, chats, files, help_requests, messages, pending_replies,
    session_metrics, token_usage, users,
};

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct UserRow {
    pub id: String,
    pub display_name: String,
    pub created_at: NaiveDateTime,
    pub last_active_at: NaiveDateTime,
    pub online: bool,
}

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = chats)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ChatRow {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub agent_id: String,
    pub model: String,
    /// `active` or `ended`.
    pub status: String,
    pub started_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
    pub last_activity_at: NaiveDateTime,
    pub needs_help: bool,
    pub admin_assisted: bool,
    pub operator_id: Option<String>,
    pub operator_name: Option<String>,
    pub operator_lease_until: Option<NaiveDateTime>,
    /// The seq the next message or durable event of this chat gets.
    pub next_seq: i64,
    pub message_count: i64,
}

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = messages)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct MessageRow {
    pub id: String,
    pub chat_id: String,
    /// Position in the chat's durable stream, shared with [`EventRow::seq`].
    pub seq: i64,
    pub sender_id: String,
    /// `user`, `assistant`, `admin` or `system`.
    pub role: String,
    pub agent_id: String,
    pub content: String,
    /// `complete`, `stopped` or `failed`.
    pub status: String,
    pub client_message_id: Option<String>,
    /// serde_json text (an array).
    pub attachments: String,
    /// serde_json text (an object).
    pub metadata: String,
    pub created_at: NaiveDateTime,
    /// 1-based position among the chat's messages (its `message_count` once this was stored).
    pub ordinal: i64,
}

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = chat_events)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct EventRow {
    pub chat_id: String,
    /// Position in the chat's durable stream, shared with [`MessageRow::seq`].
    pub seq: i64,
    pub kind: String,
    /// Opaque to storage; the chat engine encodes it.
    pub payload: Vec<u8>,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = token_usage)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct UsageRow {
    pub message_id: String,
    pub chat_id: String,
    pub user_id: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// True when the provider reported no usage and the counts were estimated.
    pub estimated: bool,
    /// Time to first token; `None` when no token arrived.
    pub ttft_ms: Option<i64>,
    pub total_ms: i64,
    pub created_at: NaiveDateTime,
}

/// A session's running figures (see the `session_metrics` migration for each column).
#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = session_metrics)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SessionMetricsRow {
    pub chat_id: String,
    pub user_messages: i64,
    pub assistant_messages: i64,
    pub admin_messages: i64,
    /// Replies that produced a first token.
    pub timed_replies: i64,
    pub ttft_total_ms: i64,
    pub ttft_max_ms: Option<i64>,
    pub response_total_ms: i64,
    pub response_max_ms: Option<i64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// serde_json text: model ids in order of first use.
    pub models: String,
    pub duration_ms: i64,
}

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = help_requests)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct HelpRequestRow {
    pub id: String,
    pub chat_id: String,
    pub user_id: String,
    pub reason: Option<String>,
    pub created_at: NaiveDateTime,
    pub resolved_at: Option<NaiveDateTime>,
    pub resolved_by: Option<String>,
}

#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = audit_events)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AuditRow {
    pub id: String,
    pub chat_id: String,
    pub action: String,
    pub actor_id: String,
    pub actor_name: String,
    pub created_at: NaiveDateTime,
}

/// A reply owed to a stored user message (see the `pending_replies` migration).
#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = pending_replies)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct PendingReplyRow {
    pub trigger_id: String,
    pub chat_id: String,
    pub requester_id: String,
    /// The id the reply's chunks carried; `None`: it had not started.
    pub reply_id: Option<String>,
    pub model: Option<String>,
    /// The text streamed so far, as last checkpointed.
    pub partial: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The core that owes it (`Db::owner`); `''` outside a cluster.
    pub owner: String,
    /// How many chunks `partial` was streamed in.
    pub chunks: i64,
}

/// An uploaded file's record (the bytes are in the object store, under `id`).
#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = files)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct FileRow {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    /// Read from the content, canonical (`image/jpeg`).
    pub mime: String,
    pub size: i64,
    pub created_at: NaiveDateTime,
}
