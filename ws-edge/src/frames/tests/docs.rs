//! `docs/protocol.md` stays true: every client example decodes, every server example is
//! exactly what the encoder renders for the same event (read back by a strict inverse decoder
//! here), and every frame type has an example.

use chrono::DateTime;
use serde_json::Map;

use super::*;
use crate::frames::{CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES};

/// A JSON object read strictly: missing or mistyped fields are errors.
struct Obj<'a>(&'a Map<String, Value>, &'static str);

impl<'a> Obj<'a> {
    fn of(value: &'a Value, what: &'static str) -> Result<Self, String> {
        value
            .as_object()
            .map(|map| Obj(map, what))
            .ok_or_else(|| format!("{what} must be an object"))
    }
    fn get(&self, key: &str) -> Result<&'a Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("{}.{key} missing", self.1))
    }
    fn opt(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn s(&self, key: &str) -> Result<String, String> {
        self.get(key)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{}.{key} not a string", self.1))
    }
    fn opt_s(&self, key: &str) -> Result<Option<String>, String> {
        self.opt(key).map(|_| self.s(key)).transpose()
    }
    fn i(&self, key: &str) -> Result<i64, String> {
        self.get(key)?
            .as_i64()
            .ok_or_else(|| format!("{}.{key} not an integer", self.1))
    }
    fn opt_i(&self, key: &str) -> Result<Option<i64>, String> {
        self.opt(key).map(|_| self.i(key)).transpose()
    }
    fn u(&self, key: &str) -> Result<u32, String> {
        u32::try_from(self.i(key)?).map_err(|e| e.to_string())
    }
    fn opt_b(&self, key: &str) -> Result<Option<bool>, String> {
        self.opt(key).map(|_| self.b(key)).transpose()
    }
    fn b(&self, key: &str) -> Result<bool, String> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| format!("{}.{key} not a boolean", self.1))
    }
    fn list(&self, key: &str) -> Result<&'a Vec<Value>, String> {
        self.get(key)?
            .as_array()
            .ok_or_else(|| format!("{}.{key} not an array", self.1))
    }
    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        self.list(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{key}[] not strings"))
            })
            .collect()
    }
    fn named(&self, key: &str) -> Result<(String, String), String> {
        let o = Obj::of(self.get(key)?, "named")?;
        Ok((o.s("id")?, o.s("name")?))
    }
}

fn enum_value(name: &str, names: &[(&str, i32)]) -> Result<i32, String> {
    names
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or(format!("unknown enum value {name}"))
}

fn chat_message_from(value: &Value) -> Result<pb::ChatMessage, String> {
    let m = Obj::of(value, "message")?;
    let at = DateTime::parse_from_rfc3339(&m.s("timestamp")?).map_err(|e| e.to_string())?;
    let meta = Obj::of(m.get("metadata")?, "metadata")?;
    let attachments = m
        .list("attachments")?
        .iter()
        .map(|a| {
            let a = Obj::of(a, "attachment")?;
            Ok(pb::Attachment {
                id: a.s("id")?,
                name: a.s("name")?,
                mime: a.s("mime")?,
                size: a.i("size")?,
                url: a.s("url")?,
            })
        })
        .collect::<Result<_, String>>()?;
    let roles = [("user", 1), ("assistant", 2), ("admin", 3), ("system", 4)];
    let statuses = [("complete", 1), ("stopped", 2), ("failed", 3)];
    Ok(pb::ChatMessage {
        id: m.s("id")?,
        chat_id: m.s("chatId")?,
        seq: m.i("seq")?,
        user_id: m.s("userId")?,
        agent_id: m.s("agentId")?,
        role: enum_value(&m.s("role")?, &roles)?,
        content: m.s("content")?,
        status: enum_value(&m.s("status")?, &statuses)?,
        created_at: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }),
        attachments,
        client_message_id: None,
        metadata: Some(pb::MessageMetadata {
            model: meta.opt_s("model")?,
            prompt_tokens: meta.opt_i("promptTokens")?,
            completion_tokens: meta.opt_i("completionTokens")?,
            ttft_ms: meta.opt_i("ttftMs")?,
            latency_ms: meta.opt_i("latencyMs")?,
            operator_name: meta.opt_s("operatorName")?,
            finish_reason: meta.opt_s("finishReason")?,
            message_index: meta.opt_i("messageIndex")?,
            total_messages: meta.opt_i("totalMessages")?,
            transcribed: meta.opt_b("transcribed")?,
            speech_error: meta.opt_s("speechError")?,
        }),
    })
}

/// JSON server frame -> ServerEvent (the inverse of `encode_server_event`), for checking the
/// examples of docs/protocol.md.
fn decode_server_frame(text: &str) -> Result<ServerEvent, String> {
    let frame: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let top = Obj::of(&frame, "frame")?;
    let d = Obj::of(top.get("data")?, "data")?;
    let presence = [("online", 1), ("away", 2), ("offline", 3)];
    let operator = |o: &Obj<'_>| -> Result<pb::OperatorEvent, String> {
        let (id, name) = o.named("operator")?;
        Ok(pb::OperatorEvent {
            chat_id: o.s("chatId")?,
            operator: Some(pb::Operator { id, name }),
        })
    };
    let event = match top.s("type")?.as_str() {
        "session" => {
            let limits = Obj::of(d.get("limits")?, "limits")?;
            let named = |key: &str| -> Result<Vec<(String, String)>, String> {
                d.list(key)?
                    .iter()
                    .map(|v| {
                        let o = Obj::of(v, "named")?;
                        Ok((o.s("id")?, o.s("name")?))
                    })
                    .collect()
            };
            ServerKind::Session(pb::Session {
                connection_id: d.s("connectionId")?,
                user_id: d.s("userId")?,
                name: d.s("name")?,
                roles: d.strings("roles")?,
                heartbeat_interval_ms: d.i("heartbeatIntervalMs")?,
                limits: Some(pb::Limits {
                    max_message_chars: limits.u("maxMessageChars")?,
                    max_frame_bytes: limits.u("maxFrameBytes")?,
                }),
                models: named("models")?
                    .into_iter()
                    .map(|(id, name)| pb::ModelInfo { id, name })
                    .collect(),
                default_model: d.s("defaultModel")?,
                agents: named("agents")?
                    .into_iter()
                    .map(|(id, name)| pb::AgentInfo { id, name })
                    .collect(),
                active_chat_id: {
                    d.get("activeChatId")?; // present, possibly null
                    d.opt_s("activeChatId")?
                },
                voice: d.b("voice")?,
            })
        }
        "ack" => ServerKind::Ack(pb::Ack {
            message_id: d.s("messageId")?,
            id: d.s("id")?,
            chat_id: d.s("chatId")?,
            seq: d.i("seq")?,
            status: d.s("status")?,
            duplicate: d.b("duplicate")?,
        }),
        "message" => ServerKind::Message(pb::MessageEvent {
            chat_id: d.s("chatId")?,
            message: Some(chat_message_from(d.get("message")?)?),
            message_id: d.opt_s("messageId")?,
        }),
        "message_chunk" => ServerKind::MessageChunk(pb::MessageChunk {
            chat_id: d.s("chatId")?,
            message_id: d.s("messageId")?,
            index: d.i("index")?,
            delta: d.s("delta")?,
        }),
        "typing" => ServerKind::Typing(pb::TypingEvent {
            chat_id: d.s("chatId")?,
            user_id: d.s("userId")?,
            agent_id: d.opt_s("agentId")?,
            is_typing: d.b("isTyping")?,
        }),
        "read_receipt" => ServerKind::ReadReceipt(pb::ReadReceiptEvent {
            chat_id: d.s("chatId")?,
            message_ids: d.strings("messageIds")?,
            user_id: d.s("userId")?,
            confirmed: d.b("confirmed")?,
        }),
        "chat_update" => {
            let u = Obj::of(d.get("updates")?, "updates")?;
            let (operator_changed, operator) = match u.0.get("operator") {
                None => (false, None),
                Some(Value::Null) => (true, None),
                Some(_) => {
                    let (id, name) = u.named("operator")?;
                    (true, Some(pb::Operator { id, name }))
                }
            };
            ServerKind::ChatUpdate(pb::ChatUpdated {
                chat_id: d.s("chatId")?,
                updates: Some(pb::ChatChanges {
                    title: u.opt_s("title")?,
                    message_count: u.opt_i("messageCount")?,
                    last_message: u.opt_s("lastMessage")?,
                    model: u.opt_s("model")?,
                    status: u.opt_s("status")?,
                    needs_help: u.opt("needsHelp").map(|_| u.b("needsHelp")).transpose()?,
                    spoken_replies: u.opt_b("spokenReplies")?,
                    operator_changed,
                    operator,
                }),
            })
        }
        "history" => ServerKind::History(pb::History {
            chat_id: d.s("chatId")?,
            messages: d
                .list("messages")?
                .iter()
                .map(chat_message_from)
                .collect::<Result<_, _>>()?,
            has_more: d.b("hasMore")?,
            cursor: d.s("cursor")?,
            last_seq: d.i("lastSeq")?,
            reset: d
                .opt("reset")
                .map(|_| d.b("reset"))
                .transpose()?
                .unwrap_or(false),
        }),
        "presence" => ServerKind::Presence(pb::PresenceEvent {
            user_id: d.s("userId")?,
            status: enum_value(&d.s("status")?, &presence)?,
            chat_id: d.opt_s("chatId")?,
        }),
        "operator_joined" => ServerKind::OperatorJoined(operator(&d)?),
        "operator_left" => ServerKind::OperatorLeft(operator(&d)?),
        "pong" => ServerKind::Pong(pb::Pong {
            timestamp: d.i("timestamp")?,
        }),
        "error" => ServerKind::Error(pb::Error {
            code: d.u("code")?,
            message: d.s("message")?,
            retryable: d.b("retryable")?,
            retry_after_ms: d.opt_i("retryAfterMs")?,
            message_id: d.opt_s("messageId")?,
            field: d.opt_s("field")?,
            close_code: None,
        }),
        other => return Err(format!("unknown server frame type {other}")),
    };
    Ok(ServerEvent {
        timestamp_ms: top.i("timestamp")?,
        seq: top.opt_i("seq")?,
        event: Some(event),
    })
}

// ------------------------------------------------------------ docs/protocol.md stays true

const PROTOCOL_DOC: &str = include_str!("../../../../docs/protocol.md");

/// The ```json client / ```json server blocks of the doc, with the line each starts on.
fn doc_examples(side: &str) -> Vec<(usize, String)> {
    let fence = format!("```json {side}");
    let mut examples = Vec::new();
    let mut lines = PROTOCOL_DOC.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim_end() == fence {
            let body: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| l.trim_end() != "```")
                .collect();
            examples.push((number + 1, body.join("\n")));
        }
    }
    examples
}

fn example_types(side: &str) -> std::collections::BTreeSet<String> {
    doc_examples(side)
        .iter()
        .map(|(line, json)| {
            let value: Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("docs line {line}: {e}"));
            value["type"]
                .as_str()
                .unwrap_or_else(|| panic!("docs line {line}: no type"))
                .to_owned()
        })
        .collect()
}

#[test]
fn every_client_example_in_the_docs_decodes() {
    let examples = doc_examples("client");
    assert!(!examples.is_empty());
    for (line, json) in examples {
        if let Err(err) = decode_client_frame(&json, &Limits::default()) {
            panic!("docs/protocol.md line {line}: {err:?}");
        }
    }
}

#[test]
fn every_server_example_in_the_docs_is_exactly_what_the_encoder_produces() {
    let examples = doc_examples("server");
    assert!(!examples.is_empty());
    for (line, json) in examples {
        let event = decode_server_frame(&json)
            .unwrap_or_else(|e| panic!("docs/protocol.md line {line}: {e}"));
        let expected: Value = serde_json::from_str(&json).unwrap();
        let actual: Value = serde_json::from_str(&encode_server_event(&event)).unwrap();
        assert_eq!(actual, expected, "docs/protocol.md line {line}");
    }
}

#[test]
fn the_docs_show_every_frame_type() {
    let all = |types: &[&str]| {
        types
            .iter()
            .map(|t| (*t).to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(example_types("client"), all(&CLIENT_FRAME_TYPES));
    assert_eq!(example_types("server"), all(&SERVER_FRAME_TYPES));
}

// ------------------------------------------------------------ docs/asyncapi.json stays true

const ASYNCAPI: &str = include_str!("../../../../docs/asyncapi.json");

fn asyncapi() -> Value {
    serde_json::from_str(ASYNCAPI).expect("docs/asyncapi.json is JSON")
}

/// The frame types the AsyncAPI document describes for one side (`client` or `server`).
fn asyncapi_types(doc: &Value, side: &str) -> std::collections::BTreeSet<String> {
    doc["components"]["messages"]
        .as_object()
        .expect("components.messages")
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{side}.")))
        .map(|(_, message)| {
            message["name"]
                .as_str()
                .expect("every message has a name")
                .to_owned()
        })
        .collect()
}

/// Every `$ref` of the document, each of which must lead somewhere.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_asyncapi_document_names_every_frame_type_of_the_codec_and_nothing_else() {
    let doc = asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let client: std::collections::BTreeSet<String> =
        CLIENT_FRAME_TYPES.iter().map(|t| (*t).to_owned()).collect();
    let mut server: std::collections::BTreeSet<String> =
        SERVER_FRAME_TYPES.iter().map(|t| (*t).to_owned()).collect();
    // Seed 001's wrapper of several frames (`?batch=`), written by the outbox, not the codec.
    server.insert("batch".to_owned());
    assert_eq!(asyncapi_types(&doc, "client"), client);
    assert_eq!(asyncapi_types(&doc, "server"), server);
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local references only");
        assert!(doc.pointer(pointer).is_some(), "{r} leads nowhere");
    }
}

#[test]
fn every_field_of_the_protocol_examples_is_in_the_asyncapi_schemas() {
    let doc = asyncapi();
    let resolve = |schema: &Value| -> Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .cloned()
                .unwrap_or(Value::Null),
            None => schema.clone(),
        }
    };
    for side in ["client", "server"] {
        for (line, json) in doc_examples(side) {
            let frame: Value = serde_json::from_str(&json).expect("example JSON");
            let kind = frame["type"].as_str().expect("type");
            let schema = &doc["components"]["messages"][format!("{side}.{kind}")]["payload"];
            assert!(
                schema.is_object(),
                "docs line {line}: {side} {kind} is not in asyncapi.json"
            );
            let data = resolve(&schema["properties"]["data"]);
            let known = data["properties"].as_object().expect("data properties");
            for key in frame["data"]
                .as_object()
                .map(|d| d.keys())
                .into_iter()
                .flatten()
            {
                assert!(
                    known.contains_key(key),
                    "docs line {line}: {side} {kind} has data.{key}, which asyncapi.json does not describe"
                );
            }
            if let Some(message) = frame["data"].get("message") {
                let fields = resolve(&data["properties"]["message"]);
                for key in message.as_object().map(|m| m.keys()).into_iter().flatten() {
                    assert!(
                        fields["properties"].get(key).is_some(),
                        "docs line {line}: message.{key} is not in asyncapi.json"
                    );
                }
            }
        }
    }
}
