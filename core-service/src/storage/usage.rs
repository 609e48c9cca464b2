//! The `token_usage` table: one row per assistant message with its token counts and timings,
//! for usage reports and cost accounting.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::UsageRow;
use super::schema::token_usage;
use super::{Db, Result, StorageError};

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

/// The statements of [`insert_usage`], for a transaction's body (`$conn`, a [`NewUsage`] as
/// `$new`): the usage row, then the session's metrics, unless the row was already there. A
/// macro because the body is expanded once per backend; `?` returns the enclosing body's error.
macro_rules! record_usage {
    ($conn:ident, $new:expr) => {
        'usage: {
            let inserted = diesel::insert_into($crate::storage::schema::token_usage::table)
                .values((
                    $crate::storage::schema::token_usage::message_id.eq($new.message_id),
                    $crate::storage::schema::token_usage::chat_id.eq($new.chat_id),
                    $crate::storage::schema::token_usage::user_id.eq($new.user_id),
                    $crate::storage::schema::token_usage::model.eq($new.model),
                    $crate::storage::schema::token_usage::prompt_tokens.eq($new.prompt_tokens),
                    $crate::storage::schema::token_usage::completion_tokens
                        .eq($new.completion_tokens),
                    $crate::storage::schema::token_usage::estimated.eq($new.estimated),
                    $crate::storage::schema::token_usage::ttft_ms.eq($new.ttft_ms),
                    $crate::storage::schema::token_usage::total_ms.eq($new.total_ms),
                    $crate::storage::schema::token_usage::created_at.eq($new.now),
                ))
                .on_conflict_do_nothing()
                .execute($conn)
                .await?;
            if inserted == 0 {
                break 'usage;
            }
            // Read, add, write: replies of one chat are stored one at a time (the engine's reply
            // order), and message inserts touch other columns, so no update is lost.
            let metrics: Option<$crate::storage::models::SessionMetricsRow> =
                $crate::storage::schema::session_metrics::table
                    .find($new.chat_id)
                    .select($crate::storage::models::SessionMetricsRow::as_select())
                    .first($conn)
                    .await
                    .optional()?;
            let Some(metrics) = metrics else {
                break 'usage;
            };
            let mut models: Vec<String> = serde_json::from_str(&metrics.models).unwrap_or_default();
            if !models.iter().any(|m| m == $new.model) {
                models.push($new.model.to_string());
            }
            let models = serde_json::to_string(&models).unwrap_or_else(|_| "[]".into());
            let (timed, ttft_total, ttft_max) = match $new.ttft_ms {
                Some(t) => (
                    metrics.timed_replies + 1,
                    metrics.ttft_total_ms + t,
                    Some(metrics.ttft_max_ms.map_or(t, |m| m.max(t))),
                ),
                None => (
                    metrics.timed_replies,
                    metrics.ttft_total_ms,
                    metrics.ttft_max_ms,
                ),
            };
            $crate::storage::prepared::SetReplyMetrics {
                chat_id: $new.chat_id,
                timed_replies: timed,
                ttft_total_ms: ttft_total,
                ttft_max_ms: ttft_max,
                response_total_ms: metrics.response_total_ms + $new.total_ms,
                response_max_ms: Some(
                    metrics
                        .response_max_ms
                        .map_or($new.total_ms, |m| m.max($new.total_ms)),
                ),
                prompt_tokens: metrics.prompt_tokens + $new.prompt_tokens,
                completion_tokens: metrics.completion_tokens + $new.completion_tokens,
                models: &models,
            }
            .execute($conn)
            .await?;
        }
    };
}

/// Records usage for a message and adds it to the session's metrics, in one transaction.
/// Idempotent: if the message already has a usage row, that row is kept and this call does
/// nothing (a retried write must not fail a finished turn, nor count twice).
/// Fails with [`super::StorageError::Query`] (foreign key) if the chat does not exist.
pub async fn insert_usage(db: &Db, new: NewUsage<'_>) -> Result<()> {
    let new = &new;
    with_tx!(db, StorageError, |conn| {
        record_usage!(conn, new);
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
