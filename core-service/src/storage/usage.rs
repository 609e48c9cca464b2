//! The `token_usage` table: one row per assistant message with its token counts and timings,
//! for usage reports and cost accounting.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::UsageRow;
use super::schema::token_usage;
use super::{Db, Result};

#[derive(Debug, Clone, Copy)]
pub struct NewUsage<'a> {
    pub message_id: &'a str,
    pub chat_id: &'a str,
    pub user_id: &'a str,
    pub model: &'a str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// True when the provider reported no usage and the counts were estimated.
    pub estimated: bool,
    pub ttft_ms: Option<i64>,
    pub total_ms: i64,
    pub now: NaiveDateTime,
}

/// Records usage for a message. Idempotent: if the message already has a usage row, that row
/// is kept and this call does nothing (a retried write must not fail a finished turn).
/// Fails with [`super::StorageError::Query`] (foreign key) if the chat does not exist.
pub async fn insert_usage(db: &Db, new: NewUsage<'_>) -> Result<()> {
    with_conn!(db, |conn| {
        diesel::insert_into(token_usage::table)
            .values((
                token_usage::message_id.eq(new.message_id),
                token_usage::chat_id.eq(new.chat_id),
                token_usage::user_id.eq(new.user_id),
                token_usage::model.eq(new.model),
                token_usage::prompt_tokens.eq(new.prompt_tokens),
                token_usage::completion_tokens.eq(new.completion_tokens),
                token_usage::estimated.eq(new.estimated),
                token_usage::ttft_ms.eq(new.ttft_ms),
                token_usage::total_ms.eq(new.total_ms),
                token_usage::created_at.eq(new.now),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        Ok(())
    })
}

pub async fn usage_for_message(db: &Db, message_id: &str) -> Result<Option<UsageRow>> {
    with_conn!(db, |conn| {
        Ok(token_usage::table
            .find(message_id)
            .select(UsageRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}
