//! The turn path's UPDATE and upsert statements, written as fixed SQL so the connection keeps
//! them prepared.
//!
//! diesel marks every `diesel::update` (and every upsert's `DO UPDATE`) as unsafe to cache,
//! because a changeset may skip fields and so change its SQL: each run is parsed and planned
//! again on SQLite, and prepared in a round trip of its own on PostgreSQL. The statements here
//! have one SQL text each (identifiers both backends read unquoted, binds placed by diesel)
//! and a static query id, so the statement cache keeps them.

use chrono::NaiveDateTime;
use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

/// A statement type's query id: the type itself, so diesel caches the statement by it (each
/// type below has exactly one SQL text).
macro_rules! static_query_id {
    ($($statement:ident),*) => {
        $(impl QueryId for $statement<'_> {
            type QueryId = $statement<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        })*
    };
}

static_query_id!(
    BumpChat,
    CountMessage,
    UpsertUser,
    SetReplyMetrics,
    CheckpointReply
);

/// Takes the chat's next `seq` and counts one more message:
/// `RETURNING next_seq, message_count, started_at, ended_at` (the counter after the bump).
pub(super) struct BumpChat<'a> {
    pub chat_id: &'a str,
    pub now: NaiveDateTime,
}

impl Query for BumpChat<'_> {
    type SqlType = (BigInt, BigInt, Timestamp, Nullable<Timestamp>);
}

impl<DB> QueryFragment<DB> for BumpChat<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE chats SET next_seq = next_seq + 1, message_count = message_count + 1, \
             last_activity_at = ",
        );
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(self.chat_id)?;
        out.push_sql(" RETURNING next_seq, message_count, started_at, ended_at");
        Ok(())
    }
}

/// Adds a message to the session's metrics (one of the three counts, by its sender's role)
/// and sets the session's duration.
pub(super) struct CountMessage<'a> {
    pub chat_id: &'a str,
    /// Added to `user_messages`, `assistant_messages` and `admin_messages`: 1 in the sender's
    /// role's count, 0 in the others (all 0 for a system message).
    pub counts: [i64; 3],
    pub duration_ms: i64,
}

impl<DB> QueryFragment<DB> for CountMessage<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let [user, assistant, admin] = &self.counts;
        out.push_sql("UPDATE session_metrics SET user_messages = user_messages + ");
        out.push_bind_param::<BigInt, _>(user)?;
        out.push_sql(", assistant_messages = assistant_messages + ");
        out.push_bind_param::<BigInt, _>(assistant)?;
        out.push_sql(", admin_messages = admin_messages + ");
        out.push_bind_param::<BigInt, _>(admin)?;
        out.push_sql(", duration_ms = ");
        out.push_bind_param::<BigInt, _>(&self.duration_ms)?;
        out.push_sql(" WHERE chat_id = ");
        out.push_bind_param::<Text, _>(self.chat_id)?;
        Ok(())
    }
}

/// Inserts a user, or updates an existing one's display name and `last_active_at`
/// (`created_at` and `online` are left alone on update). One statement, so concurrent calls
/// for the same id are safe.
pub(super) struct UpsertUser<'a> {
    pub id: &'a str,
    pub display_name: &'a str,
    pub now: NaiveDateTime,
}

impl<DB> QueryFragment<DB> for UpsertUser<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO users (id, display_name, created_at, last_active_at, online) VALUES (",
        );
        out.push_bind_param::<Text, _>(self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.display_name)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(
            ", FALSE) ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, \
             last_active_at = excluded.last_active_at",
        );
        Ok(())
    }
}

/// Sets a session's reply metrics after a reply's usage (the caller read them, added the
/// reply and passes the sums).
pub(super) struct SetReplyMetrics<'a> {
    pub chat_id: &'a str,
    pub timed_replies: i64,
    pub ttft_total_ms: i64,
    pub ttft_max_ms: Option<i64>,
    pub response_total_ms: i64,
    pub response_max_ms: Option<i64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// The JSON list of models the session used.
    pub models: &'a str,
}

impl<DB> QueryFragment<DB> for SetReplyMetrics<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE session_metrics SET timed_replies = ");
        out.push_bind_param::<BigInt, _>(&self.timed_replies)?;
        out.push_sql(", ttft_total_ms = ");
        out.push_bind_param::<BigInt, _>(&self.ttft_total_ms)?;
        out.push_sql(", ttft_max_ms = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.ttft_max_ms)?;
        out.push_sql(", response_total_ms = ");
        out.push_bind_param::<BigInt, _>(&self.response_total_ms)?;
        out.push_sql(", response_max_ms = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.response_max_ms)?;
        out.push_sql(", prompt_tokens = ");
        out.push_bind_param::<BigInt, _>(&self.prompt_tokens)?;
        out.push_sql(", completion_tokens = ");
        out.push_bind_param::<BigInt, _>(&self.completion_tokens)?;
        out.push_sql(", models = ");
        out.push_bind_param::<Text, _>(self.models)?;
        out.push_sql(" WHERE chat_id = ");
        out.push_bind_param::<Text, _>(self.chat_id)?;
        Ok(())
    }
}

/// Saves a reply's progress on its pending row, if this core still owns it (the row's
/// `owner`): how many rows it wrote tells the caller.
pub(super) struct CheckpointReply<'a> {
    pub trigger_id: &'a str,
    pub owner: &'a str,
    pub reply_id: &'a str,
    pub model: &'a str,
    /// The reply so far, sealed when the column is encrypted.
    pub partial: &'a str,
    pub chunks: i64,
    pub now: NaiveDateTime,
}

impl<DB> QueryFragment<DB> for CheckpointReply<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE pending_replies SET reply_id = ");
        out.push_bind_param::<Text, _>(self.reply_id)?;
        out.push_sql(", model = ");
        out.push_bind_param::<Text, _>(self.model)?;
        out.push_sql(", partial = ");
        out.push_bind_param::<Text, _>(self.partial)?;
        out.push_sql(", chunks = ");
        out.push_bind_param::<BigInt, _>(&self.chunks)?;
        out.push_sql(", updated_at = ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" WHERE trigger_id = ");
        out.push_bind_param::<Text, _>(self.trigger_id)?;
        out.push_sql(" AND owner = ");
        out.push_bind_param::<Text, _>(self.owner)?;
        Ok(())
    }
}
