//! `admin.v1` messages as JSON, in the style of the other REST bodies (camelCase names, enums as
//! words, times as RFC 3339 UTC, absent optionals as `null`). The admin REST routes answer with
//! these, and `chatctl --json` prints the same objects, so a script can use either.

use chat_proto::pb::admin as pb;
use chat_proto::pb::chat::{self as chat, server_event::Event as Out};
use serde_json::{Value, json};

use crate::frames;

fn time(at: Option<&prost_types::Timestamp>) -> Value {
    at.map_or(Value::Null, |t| frames::rfc3339_string(t).into())
}

fn operator(op: Option<&chat::Operator>) -> Value {
    op.map_or(Value::Null, |o| frames::named(&o.id, &o.name))
}

/// The word for a sort field, as the REST `sort` parameter spells it.
pub fn sort_name(sort: i32) -> &'static str {
    match pb::SortField::try_from(sort) {
        Ok(pb::SortField::Started) => "started",
        Ok(pb::SortField::Duration) => "duration",
        Ok(pb::SortField::User) => "user",
        Ok(pb::SortField::LastActivity | pb::SortField::Unspecified) | Err(_) => "lastActivity",
    }
}

/// The word for a usage grouping, as the REST `by` parameter spells it.
pub fn grouping_name(by: i32) -> &'static str {
    match pb::UsageGrouping::try_from(by) {
        Ok(pb::UsageGrouping::Model) => "model",
        Ok(pb::UsageGrouping::Day) => "day",
        Ok(pb::UsageGrouping::User | pb::UsageGrouping::Unspecified) | Err(_) => "user",
    }
}

/// The word for a change of the live feed.
pub fn change_kind_name(kind: i32) -> &'static str {
    match pb::ChangeKind::try_from(kind) {
        Ok(pb::ChangeKind::Created) => "created",
        Ok(pb::ChangeKind::Message) => "message",
        Ok(pb::ChangeKind::NeedsHelp) => "needs_help",
        Ok(pb::ChangeKind::HelpResolved) => "help_resolved",
        Ok(pb::ChangeKind::OperatorJoined) => "operator_joined",
        Ok(pb::ChangeKind::OperatorLeft) => "operator_left",
        Ok(pb::ChangeKind::Ended) => "ended",
        Ok(pb::ChangeKind::Updated) => "updated",
        Ok(pb::ChangeKind::Deleted) => "deleted",
        Ok(pb::ChangeKind::Unspecified) | Err(_) => "unspecified",
    }
}

/// A message role as the socket protocol spells it.
pub fn role_name(role: i32) -> &'static str {
    match chat::Role::try_from(role) {
        Ok(chat::Role::User) => "user",
        Ok(chat::Role::Assistant) => "assistant",
        Ok(chat::Role::Admin) => "admin",
        Ok(chat::Role::System) => "system",
        Ok(chat::Role::Unspecified) | Err(_) => "unspecified",
    }
}

pub fn metrics(m: &pb::SessionMetrics) -> Value {
    json!({
        "startedAt": time(m.started_at.as_ref()),
        "endedAt": time(m.ended_at.as_ref()),
        "lastActivityAt": time(m.last_activity_at.as_ref()),
        "durationMs": m.duration_ms,
        "userMessages": m.user_messages,
        "assistantMessages": m.assistant_messages,
        "adminMessages": m.admin_messages,
        "avgTtftMs": m.avg_ttft_ms,
        "maxTtftMs": m.max_ttft_ms,
        "avgResponseMs": m.avg_response_ms,
        "maxResponseMs": m.max_response_ms,
        "promptTokens": m.prompt_tokens,
        "completionTokens": m.completion_tokens,
        "models": m.models,
        "needsHelp": m.needs_help,
        "adminAssisted": m.admin_assisted,
    })
}

/// The session's summary fields (as `GET /api/sessions` renders them) plus its owner, operator
/// and metrics.
pub fn session(s: &pb::AdminSession) -> Value {
    let mut body = s
        .summary
        .as_ref()
        .map(crate::routes::session_json)
        .unwrap_or_else(|| json!({}));
    body["ownerId"] = s.owner_id.clone().into();
    body["ownerName"] = s.owner_name.clone().into();
    body["operator"] = operator(s.operator.as_ref());
    body["metrics"] = s.metrics.as_ref().map_or(Value::Null, metrics);
    body
}

pub fn session_page(page: &pb::ListSessionsResponse) -> Value {
    json!({
        "sessions": page.sessions.iter().map(session).collect::<Vec<_>>(),
        "nextCursor": page.next_cursor,
    })
}

pub fn audit_event(a: &pb::AuditEvent) -> Value {
    json!({
        "action": a.action,
        "actorId": a.actor_id,
        "actorName": a.actor_name,
        "at": time(a.at.as_ref()),
    })
}

pub fn help_request(h: &pb::HelpRequest) -> Value {
    json!({
        "id": h.id,
        "chatId": h.chat_id,
        "userId": h.user_id,
        "reason": h.reason,
        "createdAt": time(h.created_at.as_ref()),
        "resolvedAt": time(h.resolved_at.as_ref()),
        "resolvedBy": h.resolved_by,
    })
}

pub fn help_requests(list: &pb::ListHelpRequestsResponse) -> Value {
    json!({ "requests": list.requests.iter().map(help_request).collect::<Vec<_>>() })
}

/// A transcript page: the `data` of a socket `history` frame.
pub fn transcript(history: &chat::History) -> Value {
    frames::event_data(&Out::History(history.clone()))
}

pub fn session_detail(d: &pb::SessionDetail) -> Value {
    json!({
        "session": d.session.as_ref().map_or(Value::Null, session),
        "transcript": d.transcript.as_ref().map_or(Value::Null, transcript),
        "audit": d.audit.iter().map(audit_event).collect::<Vec<_>>(),
        "helpRequests": d.help_requests.iter().map(help_request).collect::<Vec<_>>(),
    })
}

pub fn usage_row(r: &pb::UsageRow) -> Value {
    json!({
        "key": r.key,
        "replies": r.replies,
        "promptTokens": r.prompt_tokens,
        "completionTokens": r.completion_tokens,
        "estimatedReplies": r.estimated_replies,
        "cost": r.cost,
    })
}

/// `by` is the grouping asked for (the response does not repeat it).
pub fn usage(by: pb::UsageGrouping, u: &pb::GetUsageResponse) -> Value {
    json!({
        "by": grouping_name(by as i32),
        "rows": u.rows.iter().map(usage_row).collect::<Vec<_>>(),
        "total": u.total.as_ref().map_or(Value::Null, usage_row),
        "currency": u.currency,
    })
}

/// One change of the live feed; `changes` as a socket `chat_update` frame's `updates`.
pub fn session_change(c: &pb::SessionChange) -> Value {
    let updates = frames::event_data(&Out::ChatUpdate(chat::ChatUpdated {
        chat_id: c.chat_id.clone(),
        updates: c.changes.clone(),
    }));
    json!({
        "chatId": c.chat_id,
        "kind": change_kind_name(c.kind),
        "userId": c.user_id,
        "at": time(c.at.as_ref()),
        "changes": updates.get("updates").cloned().unwrap_or_else(|| json!({})),
        "role": c.role.map(role_name),
    })
}
