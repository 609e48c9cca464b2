//! Decoding: every malformed shape is refused naming its field; every valid frame decodes
//! into exactly its protobuf message.

use chat_proto::json::struct_from_json;
use serde_json::json;

use super::*;

// ------------------------------------------------------------ decoding: failures

#[test]
fn malformed_frames_are_rejected_with_the_field_named() {
    let long_id = "x".repeat(65);
    let big_context = json!({ "blob": "y".repeat(8200) });
    let ids_101: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    let msg = |data: Value| json!({"type": "message", "data": data});
    let cases: Vec<(Value, u32, Option<&str>, &str)> = vec![
        // Envelope.
        (json!([1, 2]), 400, None, "Frame must be a JSON object"),
        (json!("message"), 400, None, "Frame must be a JSON object"),
        (json!({}), 400, Some("type"), "type is required"),
        (
            json!({"type": 5}),
            400,
            Some("type"),
            "type must be a string",
        ),
        (
            json!({"type": "shout"}),
            400,
            Some("type"),
            "Unknown message type",
        ),
        (
            json!({"type": "Message"}),
            400,
            Some("type"),
            "Unknown message type",
        ),
        (
            json!({"type": "stop", "data": [1]}),
            400,
            Some("data"),
            "data must be an object",
        ),
        (
            json!({"type": "stop", "data": "c1"}),
            400,
            Some("data"),
            "data must be an object",
        ),
        (
            json!({"type": "ping", "messageId": 5}),
            400,
            Some("messageId"),
            "messageId must be a string",
        ),
        (
            json!({"type": "ping", "messageId": ""}),
            400,
            Some("messageId"),
            "messageId must not be empty",
        ),
        (
            json!({"type": "ping", "messageId": long_id}),
            400,
            Some("messageId"),
            "messageId must be at most 64 characters",
        ),
        (
            json!({"type": "ping", "data": {"messageId": long_id}}),
            400,
            Some("data.messageId"),
            "data.messageId must be at most 64 characters",
        ),
        (
            json!({"type": "ping", "data": {"messageId": true}}),
            400,
            Some("data.messageId"),
            "data.messageId must be a string",
        ),
        (
            json!({"type": "ping", "timestamp": "now"}),
            400,
            Some("timestamp"),
            "timestamp must be a number",
        ),
        // message
        (
            msg(json!({"content": "hi"})),
            400,
            Some("data.messageId"),
            "data.messageId is required",
        ),
        (
            msg(json!({"messageId": "c1"})),
            400,
            Some("data.content"),
            "data.content is required",
        ),
        (
            msg(json!({"messageId": "c1", "content": 5})),
            400,
            Some("data.content"),
            "data.content must be a string",
        ),
        (
            msg(json!({"messageId": "c1", "content": null})),
            400,
            Some("data.content"),
            "data.content must be a string",
        ),
        (
            msg(json!({"messageId": "c1", "content": ["hi"]})),
            400,
            Some("data.content"),
            "data.content must be a string",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "chatId": 7})),
            400,
            Some("data.chatId"),
            "data.chatId must be a string",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "chatId": ""})),
            400,
            Some("data.chatId"),
            "data.chatId must not be empty",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "agentId": {}})),
            400,
            Some("data.agentId"),
            "data.agentId must be a string",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "attachments": "f1"})),
            400,
            Some("data.attachments"),
            "data.attachments must be an array of strings",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "attachments": [1]})),
            400,
            Some("data.attachments[0]"),
            "data.attachments[0] must be a string",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "attachments": ["f1", ""]})),
            400,
            Some("data.attachments[1]"),
            "data.attachments[1] must not be empty",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "context": [1]})),
            400,
            Some("data.context"),
            "data.context must be an object",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "context": "x"})),
            400,
            Some("data.context"),
            "data.context must be an object",
        ),
        (
            msg(json!({"messageId": "c1", "content": "hi", "context": big_context})),
            413,
            Some("data.context"),
            "data.context must be at most 8192 bytes as JSON",
        ),
        // typing
        (
            json!({"type": "typing", "data": {"isTyping": true}}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "typing", "data": {"chatId": 1, "isTyping": true}}),
            400,
            Some("data.chatId"),
            "data.chatId must be a string",
        ),
        (
            json!({"type": "typing", "data": {"chatId": "c"}}),
            400,
            Some("data.isTyping"),
            "data.isTyping is required",
        ),
        (
            json!({"type": "typing", "data": {"chatId": "c", "isTyping": "yes"}}),
            400,
            Some("data.isTyping"),
            "data.isTyping must be a boolean",
        ),
        (
            json!({"type": "typing", "data": {"chatId": "c", "isTyping": 1}}),
            400,
            Some("data.isTyping"),
            "data.isTyping must be a boolean",
        ),
        // read_receipt
        (
            json!({"type": "read_receipt", "data": {"messageIds": ["m"]}}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "read_receipt", "data": {"chatId": "c"}}),
            400,
            Some("data.messageIds"),
            "data.messageIds is required",
        ),
        (
            json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": []}}),
            400,
            Some("data.messageIds"),
            "data.messageIds must have 1 to 100 entries",
        ),
        (
            json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ids_101}}),
            400,
            Some("data.messageIds"),
            "data.messageIds must have 1 to 100 entries",
        ),
        (
            json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": "m1"}}),
            400,
            Some("data.messageIds"),
            "data.messageIds must be an array of strings",
        ),
        (
            json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ["m1", 2]}}),
            400,
            Some("data.messageIds[1]"),
            "data.messageIds[1] must be a string",
        ),
        // chat_update
        (
            json!({"type": "chat_update", "data": {"chatId": "c"}}),
            400,
            Some("data.action"),
            "data.action is required",
        ),
        (
            json!({"type": "chat_update", "data": {"action": 1, "chatId": "c"}}),
            400,
            Some("data.action"),
            "data.action must be a string",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "explode", "chatId": "c"}}),
            400,
            Some("data.action"),
            "data.action must be one of join, leave, create, rename, select_model, end, add_member, remove_member, set_spoken_replies",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "join"}}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "leave", "chatId": ""}}),
            400,
            Some("data.chatId"),
            "data.chatId must not be empty",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "end", "chatId": false}}),
            400,
            Some("data.chatId"),
            "data.chatId must be a string",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "rename", "chatId": "c"}}),
            400,
            Some("data.title"),
            "data.title is required",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "rename", "chatId": "c", "title": 5}}),
            400,
            Some("data.title"),
            "data.title must be a string",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "select_model", "chatId": "c"}}),
            400,
            Some("data.model"),
            "data.model is required",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "select_model", "chatId": "c", "model": ""}}),
            400,
            Some("data.model"),
            "data.model must not be empty",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "add_member", "chatId": "c"}}),
            400,
            Some("data.userId"),
            "data.userId is required",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "remove_member", "chatId": "c", "userId": 9}}),
            400,
            Some("data.userId"),
            "data.userId must be a string",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "create", "agentId": 5}}),
            400,
            Some("data.agentId"),
            "data.agentId must be a string",
        ),
        (
            json!({"type": "chat_update", "data": {"action": "create", "title": []}}),
            400,
            Some("data.title"),
            "data.title must be a string",
        ),
        // history
        (
            json!({"type": "history", "data": {}}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "limit": 0}}),
            400,
            Some("data.limit"),
            "data.limit must be an integer from 1 to 100",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "limit": 101}}),
            400,
            Some("data.limit"),
            "data.limit must be an integer from 1 to 100",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "limit": -5}}),
            400,
            Some("data.limit"),
            "data.limit must be an integer from 1 to 100",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "limit": 2.5}}),
            400,
            Some("data.limit"),
            "data.limit must be an integer from 1 to 100",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "limit": "10"}}),
            400,
            Some("data.limit"),
            "data.limit must be an integer from 1 to 100",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "before": true}}),
            400,
            Some("data.before"),
            "data.before must be a string",
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "before": {}}}),
            400,
            Some("data.before"),
            "data.before must be a string",
        ),
        // stop, takeover, release, help_request
        (
            json!({"type": "stop"}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "stop", "data": {"chatId": 12}}),
            400,
            Some("data.chatId"),
            "data.chatId must be a string",
        ),
        (
            json!({"type": "takeover", "data": {}}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "takeover", "data": {"chatId": ""}}),
            400,
            Some("data.chatId"),
            "data.chatId must not be empty",
        ),
        (
            json!({"type": "release", "data": {"chatId": null}}),
            400,
            Some("data.chatId"),
            "data.chatId must be a string",
        ),
        (
            json!({"type": "help_request", "data": {}}),
            400,
            Some("data.chatId"),
            "data.chatId is required",
        ),
        (
            json!({"type": "help_request", "data": {"chatId": "c", "reason": 5}}),
            400,
            Some("data.reason"),
            "data.reason must be a string",
        ),
        // resume
        (
            json!({"type": "resume", "data": {}}),
            400,
            Some("data.chats"),
            "data.chats is required",
        ),
        (
            json!({"type": "resume", "data": {"chats": {}}}),
            400,
            Some("data.chats"),
            "data.chats must be an array",
        ),
        (
            json!({"type": "resume", "data": {"chats": [1]}}),
            400,
            Some("data.chats[0]"),
            "data.chats[0] must be an object",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"lastSeq": 1}]}}),
            400,
            Some("data.chats[0].chatId"),
            "data.chats[0].chatId is required",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c"}]}}),
            400,
            Some("data.chats[0].lastSeq"),
            "data.chats[0].lastSeq is required",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1}, {"chatId": "d", "lastSeq": -1}]}}),
            400,
            Some("data.chats[1].lastSeq"),
            "data.chats[1].lastSeq must be a non-negative integer",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1.5}]}}),
            400,
            Some("data.chats[0].lastSeq"),
            "data.chats[0].lastSeq must be a non-negative integer",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": "4"}]}}),
            400,
            Some("data.chats[0].lastSeq"),
            "data.chats[0].lastSeq must be a non-negative integer",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1, "streaming": 3}]}}),
            400,
            Some("data.chats[0].streaming"),
            "data.chats[0].streaming must be an object",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1, "streaming": {"messageId": "m"}}]}}),
            400,
            Some("data.chats[0].streaming.lastIndex"),
            "data.chats[0].streaming.lastIndex is required",
        ),
        (
            json!({"type": "resume", "data": {"chats": [{"chatId": "c", "lastSeq": 1, "streaming": {"lastIndex": 0}}]}}),
            400,
            Some("data.chats[0].streaming.messageId"),
            "data.chats[0].streaming.messageId is required",
        ),
        // presence, auth, ping
        (
            json!({"type": "presence", "data": {}}),
            400,
            Some("data.status"),
            "data.status is required",
        ),
        (
            json!({"type": "presence", "data": {"status": "offline"}}),
            400,
            Some("data.status"),
            "data.status must be online or away",
        ),
        (
            json!({"type": "presence", "data": {"status": 1}}),
            400,
            Some("data.status"),
            "data.status must be online or away",
        ),
        (
            json!({"type": "auth", "data": {}}),
            400,
            Some("data.token"),
            "data.token is required",
        ),
        (
            json!({"type": "auth", "data": {"token": ""}}),
            400,
            Some("data.token"),
            "data.token must not be empty",
        ),
        (
            json!({"type": "auth", "data": {"token": ["a"]}}),
            400,
            Some("data.token"),
            "data.token must be a string",
        ),
        (
            json!({"type": "ping", "data": {"timestamp": "noon"}}),
            400,
            Some("data.timestamp"),
            "data.timestamp must be a number",
        ),
    ];
    for (frame, code, field, message) in cases {
        let err = decode(frame.clone()).expect_err(&format!("{frame} should fail"));
        assert_eq!(
            (err.code, err.field.as_deref(), err.message.as_str()),
            (code, field, message),
            "for {frame}"
        );
    }
}

#[test]
fn text_that_is_not_json_is_invalid_json() {
    for text in [
        "",
        "{",
        "hello",
        "{\"type\":\"ping\",}",
        "{'type':'ping'}",
        "\u{0}",
    ] {
        let err = decode_client_frame(text, &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            FrameError {
                code: 400,
                message: "Invalid JSON".into(),
                field: None,
                message_id: None
            }
        );
    }
}

#[test]
fn errors_echo_the_clients_message_id_when_it_is_well_formed() {
    let err = decode(json!({"type": "stop", "messageId": "c-1", "data": {}})).unwrap_err();
    assert_eq!(err.message_id.as_deref(), Some("c-1"));
    let err =
        decode(json!({"type": "message", "data": {"messageId": "c-2", "content": 4}})).unwrap_err();
    assert_eq!(err.message_id.as_deref(), Some("c-2"));
    let err = decode(json!({"type": "nope", "messageId": "c-3"})).unwrap_err();
    assert_eq!(err.message_id.as_deref(), Some("c-3"));
    // A malformed top-level id is not echoed; a good one in data still is.
    let err =
        decode(json!({"type": "stop", "messageId": 5, "data": {"messageId": "c-4"}})).unwrap_err();
    assert_eq!(err.message_id.as_deref(), Some("c-4"));
    let err = decode(json!({"type": "stop", "messageId": "x".repeat(65)})).unwrap_err();
    assert_eq!(err.message_id, None);
}

#[test]
fn limits_are_configurable() {
    let limits = Limits {
        max_message_id_chars: 4,
        max_context_bytes: 10,
        max_receipt_ids: 2,
        max_history_limit: 20,
        max_depth: 4,
    };
    let check = |frame: Value, message: &str| {
        let err = decode_client_frame(&frame.to_string(), &limits).unwrap_err();
        assert_eq!(err.message, message);
    };
    check(
        json!({"type": "ping", "messageId": "abcde"}),
        "messageId must be at most 4 characters",
    );
    check(
        json!({"type": "message", "data": {"messageId": "a", "content": "", "context": {"k": "0123456789"}}}),
        "data.context must be at most 10 bytes as JSON",
    );
    check(
        json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ["a", "b", "c"]}}),
        "data.messageIds must have 1 to 2 entries",
    );
    check(
        json!({"type": "history", "data": {"chatId": "c", "limit": 21}}),
        "data.limit must be an integer from 1 to 20",
    );
    check(
        json!({"type": "message", "data": {"messageId": "a", "content": "", "context": {"a": {"b": {}}}}}),
        "data.context is nested too deeply: a frame may nest at most 4 levels",
    );
    // Characters, not bytes: four two-byte characters fit.
    assert!(
        decode_client_frame(
            &json!({"type": "ping", "messageId": "éééé"}).to_string(),
            &limits
        )
        .is_ok()
    );
}

// ------------------------------------------------------------ decoding: successes

#[test]
fn a_message_frame_decodes_every_field() {
    let ev = decode(json!({
        "type": "message",
        "timestamp": 1_700_000_000_123_i64,
        "data": {
            "chatId": "c1", "content": "  hello ", "messageId": "cm-1", "agentId": "tutor",
            "attachments": ["f1", "f2"],
            "context": {"page": "/lesson/3", "score": 3, "ratio": 0.5, "tags": ["a", null, true], "nested": {"x": {}}},
            "someFutureField": {"ignored": true}
        }
    }))
    .unwrap();
    let context = struct_from_json(
        json!({"page": "/lesson/3", "score": 3, "ratio": 0.5, "tags": ["a", null, true], "nested": {"x": {}}})
            .as_object()
            .unwrap(),
    );
    assert_eq!(
        ev,
        ClientEvent {
            message_id: "cm-1".into(),
            timestamp_ms: 1_700_000_000_123,
            event: Some(ClientKind::Message(pb::SendMessage {
                chat_id: "c1".into(),
                content: "  hello ".into(),
                message_id: "cm-1".into(),
                agent_id: "tutor".into(),
                attachments: vec!["f1".into(), "f2".into()],
                context: Some(context),
                chat_key: String::new(),
            })),
        }
    );
}

#[test]
fn a_message_needs_no_chat_and_may_have_empty_content() {
    let ClientKind::Message(m) =
        decoded(json!({"type": "message", "messageId": "m1", "data": {"content": ""}}))
    else {
        panic!("not a message")
    };
    assert_eq!(
        (
            m.chat_id.as_str(),
            m.content.as_str(),
            m.message_id.as_str()
        ),
        ("", "", "m1")
    );
    assert_eq!((m.attachments.len(), m.context), (0, None));
}

#[test]
fn the_top_level_message_id_wins_over_the_one_in_data() {
    let ev = decode(json!({"type": "message", "messageId": "top", "data": {"messageId": "inner", "content": "x"}})).unwrap();
    assert_eq!(ev.message_id, "top");
    let Some(ClientKind::Message(m)) = ev.event else {
        panic!("not a message")
    };
    assert_eq!(m.message_id, "top");
    // Any frame may carry one, in either place.
    assert_eq!(
        decode(json!({"type": "stop", "data": {"chatId": "c", "messageId": "s1"}}))
            .unwrap()
            .message_id,
        "s1"
    );
    assert_eq!(
        decode(json!({"type": "stop", "data": {"chatId": "c"}}))
            .unwrap()
            .message_id,
        ""
    );
}

#[test]
fn null_optional_fields_count_as_absent() {
    let ClientKind::Message(m) = decoded(
        json!({"type": "message", "messageId": null, "timestamp": null, "data": {
            "messageId": "m1", "content": "x", "chatId": null, "agentId": null, "attachments": null, "context": null
        }}),
    ) else {
        panic!("not a message")
    };
    assert_eq!(
        m,
        pb::SendMessage {
            content: "x".into(),
            message_id: "m1".into(),
            ..Default::default()
        }
    );
    let ClientKind::History(h) =
        decoded(json!({"type": "history", "data": {"chatId": "c", "before": null, "limit": null}}))
    else {
        panic!("not history")
    };
    assert_eq!((h.before, h.limit), (None, None));
    assert!(decode(json!({"type": "ping", "data": null})).is_ok());
}

#[test]
fn every_simple_frame_decodes_into_its_proto_message() {
    let cases: Vec<(Value, ClientKind)> = vec![
        (
            json!({"type": "typing", "data": {"chatId": "c", "isTyping": true}}),
            ClientKind::Typing(pb::TypingUpdate {
                chat_id: "c".into(),
                is_typing: true,
            }),
        ),
        (
            json!({"type": "read_receipt", "data": {"chatId": "c", "messageIds": ["a", "b"]}}),
            ClientKind::ReadReceipt(pb::ReadReceipt {
                chat_id: "c".into(),
                message_ids: vec!["a".into(), "b".into()],
            }),
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "before": "cur", "limit": 100}}),
            ClientKind::History(pb::HistoryRequest {
                chat_id: "c".into(),
                before: Some("cur".into()),
                limit: Some(100),
            }),
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "before": 1_700_000_000_000_i64}}),
            ClientKind::History(pb::HistoryRequest {
                chat_id: "c".into(),
                before: Some("1700000000000".into()),
                limit: None,
            }),
        ),
        (
            json!({"type": "history", "data": {"chatId": "c", "before": ""}}),
            ClientKind::History(pb::HistoryRequest {
                chat_id: "c".into(),
                before: None,
                limit: None,
            }),
        ),
        (
            json!({"type": "stop", "data": {"chatId": "c"}}),
            ClientKind::Stop(pb::StopReply {
                chat_id: "c".into(),
            }),
        ),
        (
            json!({"type": "takeover", "data": {"chatId": "c"}}),
            ClientKind::Takeover(pb::Takeover {
                chat_id: "c".into(),
            }),
        ),
        (
            json!({"type": "release", "data": {"chatId": "c"}}),
            ClientKind::Release(pb::Release {
                chat_id: "c".into(),
            }),
        ),
        (
            json!({"type": "help_request", "data": {"chatId": "c", "reason": "stuck"}}),
            ClientKind::HelpRequest(pb::HelpRequest {
                chat_id: "c".into(),
                reason: Some("stuck".into()),
            }),
        ),
        (
            json!({"type": "help_request", "data": {"chatId": "c"}}),
            ClientKind::HelpRequest(pb::HelpRequest {
                chat_id: "c".into(),
                reason: None,
            }),
        ),
        (
            json!({"type": "presence", "data": {"status": "online"}}),
            ClientKind::Presence(pb::PresenceUpdate {
                status: pb::PresenceStatus::Online as i32,
            }),
        ),
        (
            json!({"type": "presence", "data": {"status": "away"}}),
            ClientKind::Presence(pb::PresenceUpdate {
                status: pb::PresenceStatus::Away as i32,
            }),
        ),
        (
            json!({"type": "auth", "data": {"token": "jwt"}}),
            ClientKind::Auth(pb::Auth {
                token: "jwt".into(),
            }),
        ),
        (
            json!({"type": "resume", "data": {"chats": []}}),
            ClientKind::Resume(pb::Resume { chats: vec![] }),
        ),
        (
            json!({"type": "resume", "data": {"chats": [
                {"chatId": "a", "lastSeq": 0},
                {"chatId": "b", "lastSeq": 41, "streaming": {"messageId": "m9", "lastIndex": 7}},
                {"chatId": "c", "lastSeq": 3, "streaming": null}
            ]}}),
            ClientKind::Resume(pb::Resume {
                chats: vec![
                    pb::ResumeChat {
                        chat_id: "a".into(),
                        last_seq: 0,
                        streaming: None,
                    },
                    pb::ResumeChat {
                        chat_id: "b".into(),
                        last_seq: 41,
                        streaming: Some(pb::ResumeStreaming {
                            message_id: "m9".into(),
                            last_index: 7,
                        }),
                    },
                    pb::ResumeChat {
                        chat_id: "c".into(),
                        last_seq: 3,
                        streaming: None,
                    },
                ],
            }),
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(decoded(frame.clone()), expected, "for {frame}");
    }
}

#[test]
fn every_chat_update_action_decodes() {
    let update = |action: pb::ChatAction, chat_id: &str| pb::ChatUpdate {
        action: action as i32,
        chat_id: chat_id.into(),
        ..Default::default()
    };
    let cases: Vec<(Value, pb::ChatUpdate)> = vec![
        (
            json!({"action": "join", "chatId": "c"}),
            update(pb::ChatAction::Join, "c"),
        ),
        (
            json!({"action": "leave", "chatId": "c"}),
            update(pb::ChatAction::Leave, "c"),
        ),
        (
            json!({"action": "end", "chatId": "c"}),
            update(pb::ChatAction::End, "c"),
        ),
        (
            json!({"action": "create"}),
            update(pb::ChatAction::Create, ""),
        ),
        (
            json!({"action": "create", "title": "Algebra", "agentId": "tutor", "model": "gpt"}),
            pb::ChatUpdate {
                title: Some("Algebra".into()),
                agent_id: Some("tutor".into()),
                model: Some("gpt".into()),
                ..update(pb::ChatAction::Create, "")
            },
        ),
        (
            json!({"action": "rename", "chatId": "c", "title": ""}),
            pb::ChatUpdate {
                title: Some(String::new()),
                ..update(pb::ChatAction::Rename, "c")
            },
        ),
        (
            json!({"action": "select_model", "chatId": "c", "model": "m"}),
            pb::ChatUpdate {
                model: Some("m".into()),
                ..update(pb::ChatAction::SelectModel, "c")
            },
        ),
        (
            json!({"action": "add_member", "chatId": "c", "userId": "u"}),
            pb::ChatUpdate {
                user_id: Some("u".into()),
                ..update(pb::ChatAction::AddMember, "c")
            },
        ),
        (
            json!({"action": "remove_member", "chatId": "c", "userId": "u"}),
            pb::ChatUpdate {
                user_id: Some("u".into()),
                ..update(pb::ChatAction::RemoveMember, "c")
            },
        ),
    ];
    for (data, expected) in cases {
        assert_eq!(
            decoded(json!({"type": "chat_update", "data": data})),
            ClientKind::ChatUpdate(expected),
            "for {data}"
        );
    }
}

#[test]
fn ping_takes_its_timestamp_from_data_then_the_envelope_then_zero() {
    let ping = |frame: Value| match decoded(frame) {
        ClientKind::Ping(p) => p.timestamp,
        other => panic!("not a ping: {other:?}"),
    };
    assert_eq!(
        ping(json!({"type": "ping", "timestamp": 5, "data": {"timestamp": 7}})),
        7
    );
    assert_eq!(ping(json!({"type": "ping", "timestamp": 5})), 5);
    assert_eq!(ping(json!({"type": "ping"})), 0);
    assert_eq!(
        ping(json!({"type": "ping", "data": {"timestamp": 12.9}})),
        12
    );
    let ev = decode(json!({"type": "ping", "timestamp": 1_700_000_000_000.5_f64})).unwrap();
    assert_eq!(ev.timestamp_ms, 1_700_000_000_000);
}
