//! The admin answers of `docs/protocol.md` (` ```json admin-* ` blocks) are exactly what
//! [`super::json`] renders for the messages they describe, built here field by field.

use chat_proto::pb::admin as pb;
use chat_proto::pb::chat;
use serde_json::Value;

use super::json;

const PROTOCOL_DOC: &str = include_str!("../../../docs/protocol.md");

/// The body of the one ```` ```{fence} ```` block of the doc.
fn doc_block(fence: &str) -> String {
    let open = format!("```{fence}\n");
    let blocks: Vec<&str> = PROTOCOL_DOC.split(open.as_str()).skip(1).collect();
    assert_eq!(blocks.len(), 1, "one ```{fence} block in docs/protocol.md");
    blocks[0]
        .split("\n```")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn doc_json(fence: &str) -> Value {
    serde_json::from_str(&doc_block(fence))
        .unwrap_or_else(|e| panic!("```{fence} is not JSON: {e}"))
}

fn at(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{e}"));
    Some(super::query::timestamp(at.to_utc()))
}

fn metrics(ended: bool) -> pb::SessionMetrics {
    pb::SessionMetrics {
        started_at: at("2024-05-01T12:00:00Z"),
        ended_at: ended.then(|| at("2024-05-01T12:35:00Z")).flatten(),
        last_activity_at: at("2024-05-01T12:20:00Z"),
        duration_ms: if ended { 2_100_000 } else { 1_200_000 },
        user_messages: 3,
        assistant_messages: if ended { 2 } else { 3 },
        admin_messages: if ended { 1 } else { 0 },
        avg_ttft_ms: Some(420),
        max_ttft_ms: Some(800),
        avg_response_ms: Some(2100),
        max_response_ms: Some(3900),
        prompt_tokens: 1830,
        completion_tokens: 960,
        models: vec!["gpt-4o-mini".into()],
        needs_help: !ended,
        admin_assisted: ended,
    }
}

fn session(ended: bool) -> pb::AdminSession {
    let m = metrics(ended);
    pb::AdminSession {
        summary: Some(chat::SessionSummary {
            chat_id: "chat-7".into(),
            title: "Prime numbers".into(),
            status: if ended { "ended" } else { "active" }.into(),
            model: "gpt-4o-mini".into(),
            agent_id: "tutor".into(),
            message_count: 6,
            admin_assisted: m.admin_assisted,
            needs_help: m.needs_help,
            started_at: m.started_at,
            last_activity_at: m.last_activity_at,
            ended_at: m.ended_at,
        }),
        owner_id: "user-1".into(),
        owner_name: "Ada".into(),
        metrics: Some(m),
        operator: None,
    }
}

#[test]
fn the_documented_session_list_is_what_the_edge_renders() {
    let page = pb::ListSessionsResponse {
        sessions: vec![session(false)],
        next_cursor: Some("eyJrIjoiMTIwMDAwMCJ9".into()),
    };
    assert_eq!(json::session_page(&page), doc_json("json admin-sessions"));
}

#[test]
fn the_documented_session_detail_is_what_the_edge_renders() {
    let audit = |action: &str, id: &str, name: &str, when: &str| pb::AuditEvent {
        action: action.into(),
        actor_id: id.into(),
        actor_name: name.into(),
        at: at(when),
    };
    let detail = pb::SessionDetail {
        session: Some(session(true)),
        transcript: Some(chat::History {
            chat_id: "chat-7".into(),
            messages: vec![chat::ChatMessage {
                id: "msg-106".into(),
                chat_id: "chat-7".into(),
                seq: 9,
                user_id: "admin-1".into(),
                agent_id: "tutor".into(),
                role: chat::Role::Admin as i32,
                content: "Glad I could help.".into(),
                status: chat::MessageStatus::Complete as i32,
                created_at: at("2024-05-01T12:20:00Z"),
                attachments: vec![],
                client_message_id: None,
                metadata: Some(chat::MessageMetadata {
                    operator_name: Some("Grace".into()),
                    message_index: Some(6),
                    total_messages: Some(6),
                    ..Default::default()
                }),
            }],
            has_more: true,
            cursor: "msg-106".into(),
            last_seq: 11,
            reset: false,
        }),
        audit: vec![
            audit("help_requested", "user-1", "Ada", "2024-05-01T12:10:00Z"),
            audit("takeover", "admin-1", "Grace", "2024-05-01T12:12:00Z"),
            audit("release", "admin-1", "Grace", "2024-05-01T12:21:00Z"),
        ],
        help_requests: vec![pb::HelpRequest {
            id: "help-3".into(),
            chat_id: "chat-7".into(),
            user_id: "user-1".into(),
            reason: Some("I need a person".into()),
            created_at: at("2024-05-01T12:10:00Z"),
            resolved_at: at("2024-05-01T12:12:00Z"),
            resolved_by: Some("admin-1".into()),
        }],
    };
    assert_eq!(
        json::session_detail(&detail),
        doc_json("json admin-session")
    );
}

#[test]
fn the_documented_usage_is_what_the_edge_renders() {
    let row = |key: &str, replies, prompt, completion, estimated, cost| pb::UsageRow {
        key: String::from(key),
        replies,
        prompt_tokens: prompt,
        completion_tokens: completion,
        estimated_replies: estimated,
        cost,
    };
    let usage = pb::GetUsageResponse {
        rows: vec![
            row("gpt-4o-mini", 120, 48_000, 21_000, 0, Some(0.0198)),
            row("demo", 4, 300, 180, 4, None),
        ],
        total: Some(row("total", 124, 48_300, 21_180, 4, None)),
        currency: "USD".into(),
    };
    assert_eq!(
        json::usage(pb::UsageGrouping::Model, &usage),
        doc_json("json admin-usage")
    );
}

#[test]
fn every_documented_request_has_its_answer() {
    for name in ["sessions", "session", "usage", "invalid", "forbidden"] {
        let request = doc_block(&format!("http admin-{name}"));
        assert!(request.starts_with("GET /api/admin/"), "{request}");
        doc_json(&format!("json admin-{name}"));
    }
}
