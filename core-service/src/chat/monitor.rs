//! What operators see: every user's sessions with their metrics (filtered, sorted, paged by an
//! opaque cursor), one session's detail (metrics, a transcript page, audit trail, help
//! requests), token usage and cost by user, model or day, and the help queue. Admins only:
//! every call answers 403 to anyone else.

use std::collections::BTreeMap;

use chat_auth::Principal;
use chrono::{DateTime, NaiveDateTime};

use super::command::HistoryQuery;
use super::engine::Engine;
use super::error::ChatError;
use super::event::{History, Operator, SessionSummary};
use super::operator::require_admin;
use super::validate;
use crate::storage::{
    self, AuditRow, ChatRow, HelpRequestRow, SessionCursor, SessionMetricsRow, UsageTotals,
};
pub use crate::storage::{SessionFilter, SessionSort, UsageGroup};

/// The open end of a usage range, representable on both backends.
const FAR_FUTURE: NaiveDateTime = match chrono::NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(day) => day.and_time(chrono::NaiveTime::MIN),
    None => NaiveDateTime::MIN,
};

/// A page request of the session list.
#[derive(Debug, Clone)]
pub struct SessionQuery {
    pub filter: SessionFilter,
    pub sort: SessionSort,
    pub descending: bool,
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionPage {
    pub sessions: Vec<AdminSession>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// A session as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSession {
    pub summary: SessionSummary,
    pub owner_id: String,
    pub owner_name: String,
    pub metrics: SessionMetrics,
    pub operator: Option<Operator>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionMetrics {
    pub started_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
    pub last_activity_at: NaiveDateTime,
    pub duration_ms: i64,
    pub user_messages: i64,
    pub assistant_messages: i64,
    pub admin_messages: i64,
    pub avg_ttft_ms: Option<i64>,
    pub max_ttft_ms: Option<i64>,
    pub avg_response_ms: Option<i64>,
    pub max_response_ms: Option<i64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub models: Vec<String>,
    pub needs_help: bool,
    pub admin_assisted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionDetail {
    pub session: AdminSession,
    pub transcript: History,
    pub audit: Vec<AuditEntry>,
    pub help_requests: Vec<HelpTicket>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub action: String,
    pub actor_id: String,
    pub actor_name: String,
    pub at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HelpTicket {
    pub id: String,
    pub chat_id: String,
    pub user_id: String,
    pub reason: Option<String>,
    pub created_at: NaiveDateTime,
    pub resolved_at: Option<NaiveDateTime>,
    pub resolved_by: Option<String>,
}

impl HelpTicket {
    pub(super) fn of(row: &HelpRequestRow) -> Self {
        Self {
            id: row.id.clone(),
            chat_id: row.chat_id.clone(),
            user_id: row.user_id.clone(),
            reason: row.reason.clone(),
            created_at: row.created_at,
            resolved_at: row.resolved_at,
            resolved_by: row.resolved_by.clone(),
        }
    }
}

/// A usage request: replies stored in `[from, to)`.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub by: UsageGroup,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub rows: Vec<UsageLine>,
    pub total: UsageLine,
    /// Of `cost`; empty when no model has prices.
    pub currency: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageLine {
    pub key: String,
    pub replies: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub estimated_replies: i64,
    /// Present when every model in the line has prices.
    pub cost: Option<f64>,
}

impl Engine {
    /// A page of every user's sessions.
    pub async fn admin_sessions(
        &self,
        who: &Principal,
        query: &SessionQuery,
    ) -> Result<SessionPage, ChatError> {
        require_admin(who)?;
        let limit = validate::page_limit(query.limit)?;
        let cursor = query
            .cursor
            .as_deref()
            .map(|c| parse_cursor(c, query.sort))
            .transpose()?;
        // One more than asked says whether another page follows.
        let mut rows = storage::list_sessions(
            &self.db,
            &query.filter,
            query.sort,
            query.descending,
            cursor.as_ref(),
            limit + 1,
        )
        .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = match rows.last() {
            Some((chat, metrics)) if more => Some(format_cursor(&SessionCursor::after(
                query.sort, chat, metrics,
            ))),
            _ => None,
        };
        let owners: Vec<String> = rows.iter().map(|(c, _)| c.owner_id.clone()).collect();
        let names = storage::user_names(&self.db, &owners).await?;
        let sessions = rows
            .iter()
            .map(|(chat, metrics)| {
                let name = names.get(&chat.owner_id).cloned();
                admin_session(chat, metrics, name)
            })
            .collect();
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }

    /// One session: metrics, a page of its transcript, audit trail and help requests.
    pub async fn admin_session(
        &self,
        who: &Principal,
        transcript: &HistoryQuery,
    ) -> Result<SessionDetail, ChatError> {
        require_admin(who)?;
        let chat_id = validate::ChatId::parse(&transcript.chat_id, "chatId")?;
        let (chat, metrics) = storage::session_of(&self.db, chat_id.as_str())
            .await?
            .ok_or_else(ChatError::no_chat)?;
        let before = validate::cursor(transcript.before.as_deref())?;
        let limit = validate::page_limit(transcript.limit)?;
        let history = self.history_of(&chat.id, before, limit).await?;
        let names = storage::user_names(&self.db, std::slice::from_ref(&chat.owner_id)).await?;
        let audit = storage::audit_of_chat(&self.db, &chat.id)
            .await?
            .iter()
            .map(audit_entry)
            .collect();
        let help_requests = storage::help_requests_of_chat(&self.db, &chat.id)
            .await?
            .iter()
            .map(HelpTicket::of)
            .collect();
        Ok(SessionDetail {
            session: admin_session(&chat, &metrics, names.get(&chat.owner_id).cloned()),
            transcript: history,
            audit,
            help_requests,
        })
    }

    /// The help queue: open requests oldest first, then resolved ones when asked.
    pub async fn help_queue(
        &self,
        who: &Principal,
        include_resolved: bool,
        limit: Option<u32>,
    ) -> Result<Vec<HelpTicket>, ChatError> {
        require_admin(who)?;
        let limit = validate::page_limit(limit)?;
        Ok(
            storage::list_help_requests(&self.db, include_resolved, limit)
                .await?
                .iter()
                .map(HelpTicket::of)
                .collect(),
        )
    }

    /// Token usage and cost, grouped.
    pub async fn usage(
        &self,
        who: &Principal,
        query: &UsageQuery,
    ) -> Result<UsageReport, ChatError> {
        require_admin(who)?;
        let from = query.from.unwrap_or(DateTime::UNIX_EPOCH.naive_utc());
        // Not NaiveDateTime::MAX: SQLite compares timestamps as text ("+262142-..." sorts
        // before "2026-...") and PostgreSQL cannot hold it; the year 9999 is in both.
        let to = query.to.unwrap_or(FAR_FUTURE);
        if from >= to {
            return Err(ChatError::invalid("from", "from must be before to"));
        }
        let totals = storage::usage_report(&self.db, query.by, from, to).await?;
        let price = |model: &str| self.llm.model(model).and_then(|m| m.pricing);
        let priced = self.llm.models().iter().any(|m| m.pricing.is_some());
        let mut lines: BTreeMap<String, UsageLine> = BTreeMap::new();
        let mut total = UsageLine {
            key: "total".into(),
            cost: Some(0.0),
            ..UsageLine::default()
        };
        for t in &totals {
            let cost = price(&t.model).map(|p| p.cost(t.prompt_tokens, t.completion_tokens));
            let line = lines.entry(t.key.clone()).or_insert_with(|| UsageLine {
                key: t.key.clone(),
                cost: Some(0.0),
                ..UsageLine::default()
            });
            add(line, t, cost);
            add(&mut total, t, cost);
        }
        let mut rows: Vec<UsageLine> = lines.into_values().collect();
        if query.by != UsageGroup::Day {
            rows.sort_by_key(|l| std::cmp::Reverse(l.prompt_tokens + l.completion_tokens));
        }
        if !priced {
            for line in rows.iter_mut().chain(std::iter::once(&mut total)) {
                line.cost = None;
            }
        }
        Ok(UsageReport {
            rows,
            total,
            currency: if priced {
                self.llm.settings().currency.clone()
            } else {
                String::new()
            },
        })
    }
}

fn add(line: &mut UsageLine, t: &UsageTotals, cost: Option<f64>) {
    line.replies += t.replies;
    line.prompt_tokens += t.prompt_tokens;
    line.completion_tokens += t.completion_tokens;
    line.estimated_replies += t.estimated_replies;
    line.cost = match (line.cost, cost) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
}

fn admin_session(
    chat: &ChatRow,
    m: &SessionMetricsRow,
    owner_name: Option<String>,
) -> AdminSession {
    let avg = |total: i64, n: i64| (n > 0).then(|| total / n);
    AdminSession {
        summary: SessionSummary::of(chat),
        owner_id: chat.owner_id.clone(),
        owner_name: owner_name.unwrap_or_else(|| chat.owner_id.clone()),
        metrics: SessionMetrics {
            started_at: chat.started_at,
            ended_at: chat.ended_at,
            last_activity_at: chat.last_activity_at,
            duration_ms: m.duration_ms,
            user_messages: m.user_messages,
            assistant_messages: m.assistant_messages,
            admin_messages: m.admin_messages,
            avg_ttft_ms: avg(m.ttft_total_ms, m.timed_replies),
            max_ttft_ms: m.ttft_max_ms,
            avg_response_ms: avg(m.response_total_ms, m.assistant_messages),
            max_response_ms: m.response_max_ms,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            models: serde_json::from_str(&m.models).unwrap_or_default(),
            needs_help: chat.needs_help,
            admin_assisted: chat.admin_assisted,
        },
        operator: match (&chat.operator_id, &chat.operator_name) {
            (Some(id), name) => Some(Operator {
                id: id.clone(),
                name: name.clone().unwrap_or_else(|| id.clone()),
            }),
            _ => None,
        },
    }
}

fn audit_entry(row: &AuditRow) -> AuditEntry {
    AuditEntry {
        action: row.action.clone(),
        actor_id: row.actor_id.clone(),
        actor_name: row.actor_name.clone(),
        at: row.created_at,
    }
}

/// Cursors are `<kind>.<key>.<chat id>`: `t` with a timestamp in nanoseconds (the precision
/// SQLite stores, so keyset comparisons are exact), `d` with a
/// duration in ms, `u` with the owner id in hex (ids may hold any character).
fn format_cursor(cursor: &SessionCursor) -> String {
    match cursor {
        SessionCursor::At(t, id) => format!(
            "t.{}.{id}",
            t.and_utc().timestamp_nanos_opt().unwrap_or(i64::MAX)
        ),
        SessionCursor::Duration(d, id) => format!("d.{d}.{id}"),
        SessionCursor::User(owner, id) => {
            let hex: String = owner.bytes().map(|b| format!("{b:02x}")).collect();
            format!("u.{hex}.{id}")
        }
    }
}

fn parse_cursor(raw: &str, sort: SessionSort) -> Result<SessionCursor, ChatError> {
    let bad = || ChatError::invalid("cursor", "cursor is not one this list gave out");
    let mut parts = raw.splitn(3, '.');
    let (Some(kind), Some(key), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let id = validate::ChatId::parse(id, "cursor")
        .map_err(|_| bad())?
        .as_str()
        .to_string();
    let cursor = match (kind, sort) {
        ("t", SessionSort::LastActivity | SessionSort::Started) => {
            let nanos: i64 = key.parse().map_err(|_| bad())?;
            SessionCursor::At(DateTime::from_timestamp_nanos(nanos).naive_utc(), id)
        }
        ("d", SessionSort::Duration) => {
            SessionCursor::Duration(key.parse().map_err(|_| bad())?, id)
        }
        ("u", SessionSort::User) => {
            if key.len() % 2 != 0 || key.len() > 2 * validate::MAX_ID_CHARS * 4 {
                return Err(bad());
            }
            let bytes: Result<Vec<u8>, _> = (0..key.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(key.get(i..i + 2).unwrap_or("zz"), 16))
                .collect();
            let owner = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
            SessionCursor::User(owner, id)
        }
        _ => return Err(bad()),
    };
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_reject_what_they_did_not_give_out() {
        let at = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789).naive_utc();
        for (cursor, sort) in [
            (SessionCursor::At(at, "c1".into()), SessionSort::Started),
            (
                SessionCursor::Duration(42, "c2".into()),
                SessionSort::Duration,
            ),
            (
                SessionCursor::User("ü.ser~1".into(), "c3".into()),
                SessionSort::User,
            ),
        ] {
            let text = format_cursor(&cursor);
            assert_eq!(parse_cursor(&text, sort).ok(), Some(cursor), "{text}");
        }
        for bad in [
            "",
            "x",
            "t.abc.c1",
            "d.1",
            "u.zz.c1",
            "u.616.c1",
            "t.1.../etc",
        ] {
            assert!(parse_cursor(bad, SessionSort::User).is_err(), "{bad}");
        }
        assert!(
            parse_cursor("d.1.c1", SessionSort::Started).is_err(),
            "a cursor of another sort is refused"
        );
    }
}
