//! Properties over random input: decoding never panics and always answers within the
//! protocol's bounds; valid events survive a trip through JSON; odd text renders as valid JSON.

use chat_proto::json::struct_to_json;
use proptest::prelude::*;
use serde_json::{Map, Number};

use super::*;
use crate::frames::encode::{object, presence_name};
use crate::frames::{CHAT_ACTIONS, CLIENT_FRAME_TYPES};

/// ClientEvent -> JSON frame, the way a browser would send it (the inverse of decoding).
fn encode_client_event(ev: &ClientEvent) -> String {
    let text = |s: &str| Some(Value::from(s));
    let id = |s: &str| (!s.is_empty()).then(|| Value::from(s));
    let opt = |s: &Option<String>| s.clone().map(Value::from);
    let (kind, data) = match ev.event.as_ref().expect("an event") {
        ClientKind::Message(m) => (
            "message",
            object([
                ("chatId", id(&m.chat_id)),
                ("content", text(&m.content)),
                ("messageId", text(&m.message_id)),
                ("agentId", id(&m.agent_id)),
                (
                    "attachments",
                    (!m.attachments.is_empty()).then(|| m.attachments.clone().into()),
                ),
                (
                    "context",
                    m.context.as_ref().map(|c| Value::Object(struct_to_json(c))),
                ),
            ]),
        ),
        ClientKind::Typing(t) => (
            "typing",
            object([
                ("chatId", text(&t.chat_id)),
                ("isTyping", Some(t.is_typing.into())),
            ]),
        ),
        ClientKind::ReadReceipt(r) => (
            "read_receipt",
            object([
                ("chatId", text(&r.chat_id)),
                ("messageIds", Some(r.message_ids.clone().into())),
            ]),
        ),
        ClientKind::ChatUpdate(u) => {
            let action = CHAT_ACTIONS
                .iter()
                .find(|(_, a)| *a as i32 == u.action)
                .expect("known action")
                .0;
            (
                "chat_update",
                object([
                    ("action", text(action)),
                    ("chatId", id(&u.chat_id)),
                    ("title", opt(&u.title)),
                    ("model", opt(&u.model)),
                    ("agentId", opt(&u.agent_id)),
                    ("userId", opt(&u.user_id)),
                    ("spokenReplies", u.spoken_replies.map(Value::from)),
                ]),
            )
        }
        ClientKind::History(h) => (
            "history",
            object([
                ("chatId", text(&h.chat_id)),
                ("before", opt(&h.before)),
                ("limit", h.limit.map(Value::from)),
            ]),
        ),
        ClientKind::Stop(s) => ("stop", object([("chatId", text(&s.chat_id))])),
        ClientKind::Resume(r) => {
            let chats = r
                .chats
                .iter()
                .map(|c| {
                    object([
                        ("chatId", text(&c.chat_id)),
                        ("lastSeq", Some(c.last_seq.into())),
                        (
                            "streaming",
                            c.streaming.as_ref().map(|s| {
                                object([
                                    ("messageId", text(&s.message_id)),
                                    ("lastIndex", Some(s.last_index.into())),
                                ])
                            }),
                        ),
                    ])
                })
                .collect();
            ("resume", object([("chats", Some(chats))]))
        }
        ClientKind::HelpRequest(h) => (
            "help_request",
            object([("chatId", text(&h.chat_id)), ("reason", opt(&h.reason))]),
        ),
        ClientKind::Presence(p) => (
            "presence",
            object([("status", text(presence_name(p.status)))]),
        ),
        ClientKind::Auth(a) => ("auth", object([("token", text(&a.token))])),
        ClientKind::Ping(p) => ("ping", object([("timestamp", Some(p.timestamp.into()))])),
        ClientKind::Takeover(t) => ("takeover", object([("chatId", text(&t.chat_id))])),
        ClientKind::Release(r) => ("release", object([("chatId", text(&r.chat_id))])),
    };
    let top_id = match ev.event {
        Some(ClientKind::Message(_)) => None, // carried in data.messageId
        _ => id(&ev.message_id),
    };
    object([
        ("type", text(kind)),
        ("data", Some(data)),
        ("messageId", top_id),
        (
            "timestamp",
            (ev.timestamp_ms != 0).then(|| ev.timestamp_ms.into()),
        ),
    ])
    .to_string()
}

// ------------------------------------------------------------ properties

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "(?s).{0,12}".prop_map(Value::from),
        Just(Value::from("")),
        Just(Value::from("x".repeat(70))),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Mostly the protocol's own field names, so random values land where the decoder looks.
fn field_name() -> impl Strategy<Value = String> {
    const NAMES: [&str; 24] = [
        "chatId",
        "content",
        "messageId",
        "agentId",
        "attachments",
        "context",
        "isTyping",
        "messageIds",
        "action",
        "title",
        "model",
        "userId",
        "before",
        "limit",
        "chats",
        "reason",
        "status",
        "token",
        "timestamp",
        "lastSeq",
        "streaming",
        "lastIndex",
        "type",
        "data",
    ];
    prop_oneof![4 => prop::sample::select(NAMES.as_slice()).prop_map(str::to_owned), 1 => "(?s).{0,8}"]
}

/// A frame of a random (mostly known) type, with random values in random fields.
fn any_frame() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        4 => prop::sample::select(CLIENT_FRAME_TYPES.as_slice()).prop_map(Value::from),
        1 => any_json(),
    ];
    let action = prop::sample::select(
        CHAT_ACTIONS
            .iter()
            .map(|(name, _)| Value::from(*name))
            .collect::<Vec<_>>(),
    );
    let value = prop_oneof![3 => any_json(), 1 => action, 1 => "[a-z]{1,3}".prop_map(Value::from)];
    let data = prop_oneof![
        4 => prop::collection::vec((field_name(), value), 0..8).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        1 => any_json(),
    ];
    (
        kind,
        data,
        prop::option::of(any_json()),
        prop::option::of(any_json()),
    )
        .prop_map(|(kind, data, id, timestamp)| {
            let mut frame = Map::new();
            frame.insert("type".into(), kind);
            frame.insert("data".into(), data);
            if let Some(id) = id {
                frame.insert("messageId".into(), id);
            }
            if let Some(timestamp) = timestamp {
                frame.insert("timestamp".into(), timestamp);
            }
            Value::Object(frame)
        })
}

/// What every decode result must satisfy, whatever the input.
fn check_outcome(outcome: &Result<ClientEvent, FrameError>) {
    match outcome {
        Ok(ev) => {
            assert!(ev.message_id.chars().count() <= 64);
            assert!(ev.event.is_some());
            if let Some(ClientKind::Message(m)) = &ev.event {
                assert!(!m.message_id.is_empty());
                assert_eq!(m.message_id, ev.message_id);
            }
        }
        Err(err) => {
            assert!(err.code == 400 || err.code == 413, "{err:?}");
            assert!(!err.message.is_empty());
            assert!(
                err.message_id
                    .as_ref()
                    .is_none_or(|id| !id.is_empty() && id.chars().count() <= 64)
            );
        }
    }
}

fn id() -> impl Strategy<Value = String> {
    "\\PC{1,24}"
}

fn client_message_id() -> impl Strategy<Value = String> {
    "\\PC{1,64}"
}

fn any_context() -> impl Strategy<Value = prost_types::Struct> {
    use prost_types::value::Kind;
    // Doubles that survive JSON text exactly: whole numbers and quarters.
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<i32>().prop_map(|n| Kind::NumberValue(f64::from(n))),
        any::<i32>().prop_map(|n| Kind::NumberValue(f64::from(n) / 4.0)),
        "(?s).{0,10}".prop_map(Kind::StringValue),
    ]
    .prop_map(|kind| prost_types::Value { kind: Some(kind) });
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|values| Kind::ListValue(prost_types::ListValue { values })),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|fields| Kind::StructValue(prost_types::Struct { fields })),
        ]
        .prop_map(|kind| prost_types::Value { kind: Some(kind) })
    });
    prop::collection::btree_map("\\PC{0,8}", value, 0..5)
        .prop_map(|fields| prost_types::Struct { fields })
}

fn any_client_kind() -> impl Strategy<Value = ClientKind> {
    let opt_id = || prop_oneof![Just(String::new()), id()];
    let text = || "(?s).{0,40}";
    let action = prop::sample::select(
        CHAT_ACTIONS
            .iter()
            .map(|(_, action)| *action)
            .collect::<Vec<_>>(),
    );
    let chat_update = (
        action,
        id(),
        prop::option::of(text()),
        prop::option::of(id()),
        prop::option::of(id()),
        prop::option::of(id()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            |(action, chat_id, title, model, agent_id, user_id, spoken)| {
                let (chat_id, title, model, user_id) = match action {
                    pb::ChatAction::Create => (String::new(), title, model, user_id),
                    pb::ChatAction::Rename => {
                        (chat_id, title.or(Some(String::new())), model, user_id)
                    }
                    pb::ChatAction::SelectModel => {
                        (chat_id, title, model.or(Some("m".into())), user_id)
                    }
                    pb::ChatAction::AddMember | pb::ChatAction::RemoveMember => {
                        (chat_id, title, model, user_id.or(Some("u".into())))
                    }
                    _ => (chat_id, title, model, user_id),
                };
                let spoken_replies = match action {
                    pb::ChatAction::SetSpokenReplies => spoken.or(Some(true)),
                    _ => spoken,
                };
                ClientKind::ChatUpdate(pb::ChatUpdate {
                    action: action as i32,
                    chat_id,
                    title,
                    model,
                    agent_id,
                    user_id,
                    chat_key: None,
                    spoken_replies,
                })
            },
        );
    let resume_chat = (id(), 0..=i64::MAX, prop::option::of((id(), 0..=i64::MAX))).prop_map(
        |(chat_id, last_seq, streaming)| pb::ResumeChat {
            chat_id,
            last_seq,
            streaming: streaming.map(|(message_id, last_index)| pb::ResumeStreaming {
                message_id,
                last_index,
            }),
        },
    );
    prop_oneof![
        (
            opt_id(),
            text(),
            client_message_id(),
            opt_id(),
            prop::collection::vec(id(), 0..4),
            prop::option::of(any_context())
        )
            .prop_map(
                |(chat_id, content, message_id, agent_id, attachments, context)| {
                    ClientKind::Message(pb::SendMessage {
                        chat_id,
                        content,
                        message_id,
                        agent_id,
                        attachments,
                        context,
                        chat_key: String::new(),
                    })
                }
            ),
        (id(), any::<bool>()).prop_map(|(chat_id, is_typing)| ClientKind::Typing(
            pb::TypingUpdate { chat_id, is_typing }
        )),
        (id(), prop::collection::vec(id(), 1..=100)).prop_map(|(chat_id, message_ids)| {
            ClientKind::ReadReceipt(pb::ReadReceipt {
                chat_id,
                message_ids,
            })
        }),
        chat_update,
        (id(), prop::option::of(id()), prop::option::of(1..=100_u32)).prop_map(
            |(chat_id, before, limit)| ClientKind::History(pb::HistoryRequest {
                chat_id,
                before,
                limit
            })
        ),
        id().prop_map(|chat_id| ClientKind::Stop(pb::StopReply { chat_id })),
        prop::collection::vec(resume_chat, 0..4)
            .prop_map(|chats| ClientKind::Resume(pb::Resume { chats })),
        (id(), prop::option::of(text())).prop_map(|(chat_id, reason)| ClientKind::HelpRequest(
            pb::HelpRequest { chat_id, reason }
        )),
        prop::sample::select(vec![pb::PresenceStatus::Online, pb::PresenceStatus::Away]).prop_map(
            |status| ClientKind::Presence(pb::PresenceUpdate {
                status: status as i32
            })
        ),
        id().prop_map(|token| ClientKind::Auth(pb::Auth { token })),
        any::<i64>().prop_map(|timestamp| ClientKind::Ping(pb::Ping { timestamp })),
        id().prop_map(|chat_id| ClientKind::Takeover(pb::Takeover { chat_id })),
        id().prop_map(|chat_id| ClientKind::Release(pb::Release { chat_id })),
    ]
}

fn any_client_event() -> impl Strategy<Value = ClientEvent> {
    let message_id = prop_oneof![Just(String::new()), client_message_id()];
    let timestamp_ms = prop_oneof![Just(0_i64), any::<i64>()];
    (message_id, timestamp_ms, any_client_kind()).prop_map(|(message_id, timestamp_ms, kind)| {
        // A message's idempotency key is the frame's messageId.
        let message_id = match &kind {
            ClientKind::Message(m) => m.message_id.clone(),
            _ => message_id,
        };
        ClientEvent {
            message_id,
            timestamp_ms,
            event: Some(kind),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_text_never_panics(text in "(?s).{0,200}") {
        check_outcome(&decode_client_frame(&text, &Limits::default()));
    }

    #[test]
    fn decoding_arbitrary_bytes_as_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_outcome(&decode_client_frame(&String::from_utf8_lossy(&bytes), &Limits::default()));
    }

    #[test]
    fn decoding_arbitrary_json_shaped_frames_never_panics(frame in any_frame()) {
        check_outcome(&decode_client_frame(&frame.to_string(), &Limits::default()));
    }

    #[test]
    fn valid_client_events_survive_a_trip_through_json(event in any_client_event()) {
        let text = encode_client_event(&event);
        let decoded = decode_client_frame(&text, &Limits::default());
        prop_assert_eq!(decoded, Ok(event), "frame: {}", text);
    }

    #[test]
    fn server_events_render_as_json_objects_with_a_type(event in any_client_event()) {
        // Reuse client strings as server payloads: odd text must still render as valid JSON.
        let (chat_id, text) = match event.event {
            Some(ClientKind::Message(m)) => (m.chat_id, m.content),
            _ => (event.message_id, String::new()),
        };
        let ev = ServerEvent {
            timestamp_ms: event.timestamp_ms,
            seq: None,
            event: Some(ServerKind::MessageChunk(pb::MessageChunk { chat_id: chat_id.clone(), message_id: "m".into(), index: 1, delta: text.clone() })),
        };
        let frame: Value = serde_json::from_str(&encode_server_event(&ev)).unwrap();
        prop_assert_eq!(&frame["data"]["delta"], &Value::from(text));
        prop_assert_eq!(&frame["data"]["chatId"], &Value::from(chat_id));
    }
}
