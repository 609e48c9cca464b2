//! Encoding: the envelope, enums as words, timestamps, and every server frame's exact fields.

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::frames::encode::{message_status_name, presence_name, rfc3339, role_name};
use crate::frames::error_frame;

fn sample_message() -> pb::ChatMessage {
    pb::ChatMessage {
        id: "m1".into(),
        chat_id: "c1".into(),
        seq: 4,
        user_id: "u1".into(),
        agent_id: "tutor".into(),
        role: pb::Role::Assistant as i32,
        content: "Hi".into(),
        status: pb::MessageStatus::Stopped as i32,
        client_message_id: Some("never-shown".into()),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_714_564_800,
            nanos: 123_456_789,
        }),
        attachments: vec![pb::Attachment {
            id: "f1".into(),
            name: "a.png".into(),
            mime: "image/png".into(),
            size: 42,
            url: "/files/f1".into(),
        }],
        metadata: Some(pb::MessageMetadata {
            model: Some("gpt".into()),
            ttft_ms: Some(120),
            ..Default::default()
        }),
    }
}

#[test]
fn the_envelope_has_type_data_timestamp_and_seq_only_when_set() {
    let pong = ServerKind::Pong(pb::Pong { timestamp: 9 });
    let with_seq = ServerEvent {
        timestamp_ms: 11,
        seq: Some(3),
        event: Some(pong.clone()),
    };
    let frame: Value = serde_json::from_str(&encode_server_event(&with_seq)).unwrap();
    assert_eq!(
        frame,
        json!({"type": "pong", "data": {"timestamp": 9}, "timestamp": 11, "seq": 3})
    );

    let before = Utc::now().timestamp_millis();
    let frame: Value = serde_json::from_str(&encode_server_event(&ServerEvent {
        event: Some(pong),
        ..Default::default()
    }))
    .unwrap();
    let stamped = frame["timestamp"].as_i64().unwrap();
    assert!(stamped >= before && stamped <= Utc::now().timestamp_millis());
    assert!(frame.get("seq").is_none());
}

#[test]
fn a_message_renders_enums_as_words_and_time_as_rfc3339_millis() {
    let frame = rendered(ServerKind::Message(pb::MessageEvent {
        chat_id: "c1".into(),
        message: Some(sample_message()),
        message_id: None,
    }));
    assert_eq!(
        frame["data"],
        json!({"chatId": "c1", "message": {
            "id": "m1", "chatId": "c1", "seq": 4, "userId": "u1", "agentId": "tutor", "role": "assistant",
            "content": "Hi", "status": "stopped", "timestamp": "2024-05-01T12:00:00.123Z",
            "attachments": [{"id": "f1", "name": "a.png", "mime": "image/png", "size": 42, "url": "/files/f1"}],
            "metadata": {"model": "gpt", "ttftMs": 120}
        }})
    );
    let own = rendered(ServerKind::Message(pb::MessageEvent {
        chat_id: "c1".into(),
        message: Some(pb::ChatMessage {
            metadata: None,
            ..sample_message()
        }),
        message_id: Some("cm-1".into()),
    }));
    assert_eq!(own["data"]["messageId"], "cm-1");
    assert_eq!(own["data"]["message"]["metadata"], json!({}));
}

#[test]
fn enum_words_cover_every_value() {
    let words: Vec<_> = (0..6).map(role_name).collect();
    assert_eq!(
        words,
        [
            "unspecified",
            "user",
            "assistant",
            "admin",
            "system",
            "unspecified"
        ]
    );
    let words: Vec<_> = (0..5).map(message_status_name).collect();
    assert_eq!(
        words,
        [
            "unspecified",
            "complete",
            "stopped",
            "failed",
            "unspecified"
        ]
    );
    let words: Vec<_> = (0..5).map(presence_name).collect();
    assert_eq!(
        words,
        ["unspecified", "online", "away", "offline", "unspecified"]
    );
}

#[test]
fn timestamps_out_of_range_render_as_null_and_odd_nanos_are_normalised() {
    assert_eq!(
        rfc3339(&prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0
        }),
        Value::Null
    );
    assert_eq!(
        rfc3339(&prost_types::Timestamp {
            seconds: i64::MIN,
            nanos: -5
        }),
        Value::Null
    );
    assert_eq!(
        rfc3339(&prost_types::Timestamp {
            seconds: 1,
            nanos: -1
        }),
        json!("1970-01-01T00:00:00.999Z")
    );
    assert_eq!(
        rfc3339(&prost_types::Timestamp {
            seconds: 0,
            nanos: 1_500_000_000
        }),
        json!("1970-01-01T00:00:01.500Z")
    );
}

#[test]
fn a_session_has_active_chat_id_null_when_absent() {
    let session = pb::Session {
        connection_id: "k".into(),
        user_id: "u".into(),
        name: "Ada".into(),
        roles: vec!["user".into()],
        heartbeat_interval_ms: 30_000,
        limits: Some(pb::Limits {
            max_message_chars: 10_000,
            max_frame_bytes: 65_536,
        }),
        models: vec![pb::ModelInfo {
            id: "m".into(),
            name: "M".into(),
        }],
        default_model: "m".into(),
        agents: vec![pb::AgentInfo {
            id: "a".into(),
            name: "A".into(),
        }],
        active_chat_id: None,
        voice: false,
    };
    let frame = rendered(ServerKind::Session(session.clone()));
    assert_eq!(
        frame["data"],
        json!({"connectionId": "k", "userId": "u", "name": "Ada", "roles": ["user"], "heartbeatIntervalMs": 30000,
               "limits": {"maxMessageChars": 10000, "maxFrameBytes": 65536}, "models": [{"id": "m", "name": "M"}],
               "defaultModel": "m", "agents": [{"id": "a", "name": "A"}], "activeChatId": null, "voice": false})
    );
    let frame = rendered(ServerKind::Session(pb::Session {
        active_chat_id: Some("c".into()),
        ..session
    }));
    assert_eq!(frame["data"]["activeChatId"], "c");
}

#[test]
fn chat_update_carries_only_what_changed_and_operator_only_when_it_changed() {
    let render = |changes: pb::ChatChanges| {
        rendered(ServerKind::ChatUpdate(pb::ChatUpdated {
            chat_id: "c".into(),
            updates: Some(changes),
        }))["data"]
            .clone()
    };
    assert_eq!(
        render(pb::ChatChanges {
            title: Some("T".into()),
            ..Default::default()
        }),
        json!({"chatId": "c", "updates": {"title": "T"}})
    );
    let op = pb::Operator {
        id: "a1".into(),
        name: "Ann".into(),
    };
    assert_eq!(
        render(pb::ChatChanges {
            operator: Some(op.clone()),
            ..Default::default()
        }),
        json!({"chatId": "c", "updates": {}}),
        "operator is left out when operator_changed is false"
    );
    assert_eq!(
        render(pb::ChatChanges {
            operator_changed: true,
            operator: Some(op),
            ..Default::default()
        }),
        json!({"chatId": "c", "updates": {"operator": {"id": "a1", "name": "Ann"}}})
    );
    assert_eq!(
        render(pb::ChatChanges {
            operator_changed: true,
            needs_help: Some(false),
            message_count: Some(0),
            ..Default::default()
        }),
        json!({"chatId": "c", "updates": {"operator": null, "needsHelp": false, "messageCount": 0}})
    );
    let none = rendered(ServerKind::ChatUpdate(pb::ChatUpdated {
        chat_id: "c".into(),
        updates: None,
    }));
    assert_eq!(none["data"], json!({"chatId": "c", "updates": {}}));
}

#[test]
fn small_server_frames_render_their_exact_fields() {
    let cases: Vec<(ServerKind, &str, Value)> = vec![
        (
            ServerKind::Ack(pb::Ack {
                message_id: "cm".into(),
                id: "m".into(),
                chat_id: "c".into(),
                seq: 2,
                status: String::new(),
                duplicate: true,
            }),
            "ack",
            json!({"messageId": "cm", "id": "m", "chatId": "c", "seq": 2, "status": "sent", "duplicate": true}),
        ),
        (
            ServerKind::MessageChunk(pb::MessageChunk {
                chat_id: "c".into(),
                message_id: "m".into(),
                index: 0,
                delta: "He".into(),
            }),
            "message_chunk",
            json!({"chatId": "c", "messageId": "m", "index": 0, "delta": "He"}),
        ),
        (
            ServerKind::Typing(pb::TypingEvent {
                chat_id: "c".into(),
                user_id: "assistant".into(),
                agent_id: None,
                is_typing: false,
            }),
            "typing",
            json!({"chatId": "c", "userId": "assistant", "isTyping": false}),
        ),
        (
            ServerKind::Typing(pb::TypingEvent {
                chat_id: "c".into(),
                user_id: "assistant".into(),
                agent_id: Some("t".into()),
                is_typing: true,
            }),
            "typing",
            json!({"chatId": "c", "userId": "assistant", "agentId": "t", "isTyping": true}),
        ),
        (
            ServerKind::ReadReceipt(pb::ReadReceiptEvent {
                chat_id: "c".into(),
                message_ids: vec!["m".into()],
                user_id: "u".into(),
                confirmed: true,
            }),
            "read_receipt",
            json!({"chatId": "c", "messageIds": ["m"], "userId": "u", "confirmed": true}),
        ),
        (
            ServerKind::History(pb::History {
                chat_id: "c".into(),
                messages: vec![],
                has_more: false,
                cursor: String::new(),
                last_seq: 0,
                reset: false,
            }),
            "history",
            json!({"chatId": "c", "messages": [], "hasMore": false, "cursor": "", "lastSeq": 0}),
        ),
        (
            ServerKind::History(pb::History {
                chat_id: "c".into(),
                messages: vec![],
                has_more: true,
                cursor: "x".into(),
                last_seq: 9,
                reset: true,
            }),
            "history",
            json!({"chatId": "c", "messages": [], "hasMore": true, "cursor": "x", "lastSeq": 9, "reset": true}),
        ),
        (
            ServerKind::Presence(pb::PresenceEvent {
                user_id: "u".into(),
                status: pb::PresenceStatus::Offline as i32,
                chat_id: None,
            }),
            "presence",
            json!({"userId": "u", "status": "offline"}),
        ),
        (
            ServerKind::Presence(pb::PresenceEvent {
                user_id: "u".into(),
                status: pb::PresenceStatus::Away as i32,
                chat_id: Some("c".into()),
            }),
            "presence",
            json!({"userId": "u", "status": "away", "chatId": "c"}),
        ),
        (
            ServerKind::OperatorJoined(pb::OperatorEvent {
                chat_id: "c".into(),
                operator: Some(pb::Operator {
                    id: "a".into(),
                    name: "Ann".into(),
                }),
            }),
            "operator_joined",
            json!({"chatId": "c", "operator": {"id": "a", "name": "Ann"}}),
        ),
        (
            ServerKind::OperatorLeft(pb::OperatorEvent {
                chat_id: "c".into(),
                operator: Some(pb::Operator {
                    id: "a".into(),
                    name: "Ann".into(),
                }),
            }),
            "operator_left",
            json!({"chatId": "c", "operator": {"id": "a", "name": "Ann"}}),
        ),
        (
            ServerKind::Error(pb::Error {
                code: 403,
                message: "Access denied to chat".into(),
                close_code: Some(1008),
                ..Default::default()
            }),
            "error",
            json!({"code": 403, "message": "Access denied to chat", "retryable": false}),
        ),
        (
            ServerKind::Error(pb::Error {
                code: 429,
                message: "Rate limited".into(),
                retryable: true,
                retry_after_ms: Some(1500),
                message_id: Some("cm".into()),
                field: Some("data.content".into()),
                close_code: None,
            }),
            "error",
            json!({"code": 429, "message": "Rate limited", "retryable": true, "retryAfterMs": 1500, "messageId": "cm", "field": "data.content"}),
        ),
    ];
    for (event, kind, data) in cases {
        let frame = rendered(event);
        assert_eq!(
            (frame["type"].as_str().unwrap(), &frame["data"]),
            (kind, &data)
        );
    }
}

#[test]
fn an_event_without_a_variant_renders_as_an_internal_error() {
    let frame: Value = serde_json::from_str(&encode_server_event(&ServerEvent::default())).unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(
        frame["data"],
        json!({"code": 500, "message": "internal error", "retryable": false})
    );
}

#[test]
fn error_frames_for_the_bridge_and_for_decoding_failures() {
    let frame: Value = serde_json::from_str(&error_frame(
        401,
        "Authentication failed",
        false,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(
        frame["data"],
        json!({"code": 401, "message": "Authentication failed", "retryable": false})
    );
    assert!(frame["timestamp"].as_i64().unwrap() > 0);

    let err =
        decode(json!({"type": "typing", "messageId": "t1", "data": {"chatId": "c"}})).unwrap_err();
    let frame: Value = serde_json::from_str(&err.into_frame()).unwrap();
    assert_eq!(
        frame["data"],
        json!({"code": 400, "message": "data.isTyping is required", "retryable": false, "messageId": "t1", "field": "data.isTyping"})
    );
    let frame: Value = serde_json::from_str(
        &decode_client_frame("{", &Limits::default())
            .unwrap_err()
            .into_frame(),
    )
    .unwrap();
    assert_eq!(
        frame["data"],
        json!({"code": 400, "message": "Invalid JSON", "retryable": false})
    );
}
