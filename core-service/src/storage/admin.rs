//! Queries across tables for operators: the filtered, sorted and paged session list with each
//! session's metrics, one session with its metrics, owners' display names, and token usage
//! aggregated by user, model or day.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel_async::RunQueryDsl;

use super::models::{ChatRow, SessionMetricsRow};
use super::schema::{chats, session_metrics, users};
use super::{Db, Result};
use crate::types::ChatStatus;

/// Which sessions to list; every field narrows the list when set.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub owner_id: Option<String>,
    pub status: Option<ChatStatus>,
    pub needs_help: Option<bool>,
    pub admin_assisted: Option<bool>,
    /// Started at or after.
    pub started_from: Option<NaiveDateTime>,
    /// Started before.
    pub started_before: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSort {
    LastActivity,
    Started,
    Duration,
    User,
}

/// Where the previous page ended: the last row's sort key and id (ids break ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCursor {
    At(NaiveDateTime, String),
    Duration(i64, String),
    User(String, String),
}

impl SessionCursor {
    /// The cursor after `row` in `sort` order.
    pub fn after(sort: SessionSort, chat: &ChatRow, metrics: &SessionMetricsRow) -> Self {
        let id = chat.id.clone();
        match sort {
            SessionSort::LastActivity => Self::At(chat.last_activity_at, id),
            SessionSort::Started => Self::At(chat.started_at, id),
            SessionSort::Duration => Self::Duration(metrics.duration_ms, id),
            SessionSort::User => Self::User(chat.owner_id.clone(), id),
        }
    }
}

/// One page of sessions with their metrics, in `sort` order, after `cursor` (which must have
/// been made for the same sort; a cursor of another kind is ignored).
pub async fn list_sessions(
    db: &Db,
    filter: &SessionFilter,
    sort: SessionSort,
    descending: bool,
    cursor: Option<&SessionCursor>,
    limit: i64,
) -> Result<Vec<(ChatRow, SessionMetricsRow)>> {
    let rows: Vec<(ChatRow, SessionMetricsRow)> = with_conn!(db, |conn| {
        let mut query = chats::table
            .inner_join(session_metrics::table)
            .select((ChatRow::as_select(), SessionMetricsRow::as_select()))
            .into_boxed();
        if let Some(owner) = &filter.owner_id {
            query = query.filter(chats::owner_id.eq(owner.clone()));
        }
        if let Some(status) = filter.status {
            query = query.filter(chats::status.eq(status.as_str()));
        }
        if let Some(needs_help) = filter.needs_help {
            query = query.filter(chats::needs_help.eq(needs_help));
        }
        if let Some(assisted) = filter.admin_assisted {
            query = query.filter(chats::admin_assisted.eq(assisted));
        }
        if let Some(from) = filter.started_from {
            query = query.filter(chats::started_at.ge(from));
        }
        if let Some(before) = filter.started_before {
            query = query.filter(chats::started_at.lt(before));
        }
        // Keyset paging: rows strictly after the cursor's (key, id) in the chosen order.
        macro_rules! page {
            ($col:expr, $after:expr) => {{
                if let Some((key, id)) = $after {
                    query = if descending {
                        query.filter(
                            $col.lt(key.clone())
                                .or($col.eq(key.clone()).and(chats::id.lt(id.clone()))),
                        )
                    } else {
                        query.filter(
                            $col.gt(key.clone())
                                .or($col.eq(key.clone()).and(chats::id.gt(id.clone()))),
                        )
                    };
                }
                query = if descending {
                    query.order_by(($col.desc(), chats::id.desc()))
                } else {
                    query.order_by(($col.asc(), chats::id.asc()))
                };
            }};
        }
        match sort {
            SessionSort::LastActivity => page!(
                chats::last_activity_at,
                match cursor {
                    Some(SessionCursor::At(k, id)) => Some((k, id)),
                    _ => None,
                }
            ),
            SessionSort::Started => page!(
                chats::started_at,
                match cursor {
                    Some(SessionCursor::At(k, id)) => Some((k, id)),
                    _ => None,
                }
            ),
            SessionSort::Duration => page!(
                session_metrics::duration_ms,
                match cursor {
                    Some(SessionCursor::Duration(k, id)) => Some((k, id)),
                    _ => None,
                }
            ),
            SessionSort::User => page!(
                chats::owner_id,
                match cursor {
                    Some(SessionCursor::User(k, id)) => Some((k, id)),
                    _ => None,
                }
            ),
        }
        query
            .limit(limit)
            .load::<(ChatRow, SessionMetricsRow)>(conn)
            .await?
    });
    rows.into_iter()
        .map(|(chat, metrics)| Ok((db.open_chat(chat)?, metrics)))
        .collect()
}

/// One session with its metrics.
pub async fn session_of(db: &Db, chat_id: &str) -> Result<Option<(ChatRow, SessionMetricsRow)>> {
    let row: Option<(ChatRow, SessionMetricsRow)> = with_conn!(db, |conn| {
        chats::table
            .inner_join(session_metrics::table)
            .filter(chats::id.eq(chat_id))
            .select((ChatRow::as_select(), SessionMetricsRow::as_select()))
            .first(conn)
            .await
            .optional()?
    });
    row.map(|(chat, metrics)| Ok((db.open_chat(chat)?, metrics)))
        .transpose()
}

/// Display names of the given users (unknown ids are absent).
pub async fn user_names(db: &Db, ids: &[String]) -> Result<HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    with_conn!(db, |conn| {
        let rows: Vec<(String, String)> = users::table
            .filter(users::id.eq_any(ids))
            .select((users::id, users::display_name))
            .load(conn)
            .await?;
        Ok(rows.into_iter().collect())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    User,
    Model,
    /// UTC day, `YYYY-MM-DD`.
    Day,
}

/// Usage of one group key and one model (cost needs the model even when grouping by user or
/// day; the caller folds models together).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct UsageTotals {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Text)]
    pub model: String,
    #[diesel(sql_type = BigInt)]
    pub replies: i64,
    #[diesel(sql_type = BigInt)]
    pub prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub completion_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub estimated_replies: i64,
}

/// Token usage of replies stored in `[from, to)`, by `group` and model (it scans the period's
/// usage rows, so it runs off the runtime: [`Db::off_runtime`]).
pub async fn usage_report(
    db: &Db,
    group: UsageGroup,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<UsageTotals>> {
    let here = db.clone();
    db.off_runtime(async move { usage_report_here(&here, group, from, to).await })
        .await
}

/// [`usage_report`] on the calling thread.
async fn usage_report_here(
    db: &Db,
    group: UsageGroup,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<UsageTotals>> {
    // The one backend difference is how a timestamp becomes a day and how parameters are
    // written; diesel's query builder has no portable `date()`, so this one query is SQL.
    let (day, p1, p2) = match db.pools() {
        super::Pools::Pg(_) => ("to_char(created_at, 'YYYY-MM-DD')", "$1", "$2"),
        super::Pools::Sqlite(_) => ("substr(created_at, 1, 10)", "?", "?"),
    };
    let key = match group {
        UsageGroup::User => "user_id",
        UsageGroup::Model => "model",
        UsageGroup::Day => day,
    };
    let sql = format!(
        "SELECT {key} AS key, model, \
                CAST(COUNT(*) AS BIGINT) AS replies, \
                CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
                CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
                CAST(COALESCE(SUM(CASE WHEN estimated THEN 1 ELSE 0 END), 0) AS BIGINT) \
                    AS estimated_replies \
         FROM token_usage WHERE created_at >= {p1} AND created_at < {p2} \
         GROUP BY {key}, model ORDER BY {key}, model"
    );
    with_conn!(db, |conn| {
        Ok(diesel::sql_query(sql.as_str())
            .bind::<Timestamp, _>(from)
            .bind::<Timestamp, _>(to)
            .load::<UsageTotals>(conn)
            .await?)
    })
}
