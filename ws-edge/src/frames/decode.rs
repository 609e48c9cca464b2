//! Client frames -> protobuf: the envelope (`type`, `data`, `messageId`, `timestamp`) and each
//! frame type's fields, read through [`Fields`] so every failure names its field.

use chat_proto::pb::chat::{self as pb, ClientEvent, client_event::Event as ClientKind};
use serde_json::{Map, Value};

use super::depth;
use super::fields::Fields;
use super::{CLIENT_FRAME_TYPES, FrameError, Limits};

/// Decodes one JSON text frame from a browser into the protobuf event the core expects.
///
/// Checks shape and types only (see `docs/protocol.md`, "What the edge checks"). Fails with a
/// [`FrameError`] of code 400 naming the field for anything malformed ("Invalid JSON",
/// "Unknown message type", "data.chatId must be a string", a frame nested deeper than
/// `limits.max_depth`, ...), and 413 for a `context` larger
/// than `limits.max_context_bytes`. Unknown extra fields are ignored; `null` counts as absent for
/// optional fields.
pub fn decode_client_frame(text: &str, limits: &Limits) -> Result<ClientEvent, FrameError> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::frame("Invalid JSON"));
    };
    let Value::Object(frame) = value else {
        return Err(FrameError::frame("Frame must be a JSON object"));
    };
    decode_frame(&frame, limits).map_err(|mut err| {
        err.message_id = echoable_message_id(&frame, limits);
        err
    })
}

fn decode_frame(frame: &Map<String, Value>, limits: &Limits) -> Result<ClientEvent, FrameError> {
    depth::check(frame, limits.max_depth)?;
    let top = Fields::top(frame);
    let kind = match frame.get("type") {
        None => return Err(FrameError::invalid("type", "is required")),
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(FrameError::invalid("type", "must be a string")),
    };
    if !CLIENT_FRAME_TYPES.contains(&kind) {
        return Err(FrameError::unknown_type());
    }
    let empty = Map::new();
    let data = match frame.get("data") {
        None | Some(Value::Null) => Fields::data(&empty),
        Some(Value::Object(map)) => Fields::data(map),
        Some(_) => return Err(FrameError::invalid("data", "must be an object")),
    };
    // The top-level id wins; `data.messageId` is the older spelling.
    let message_id = match top.opt_id("messageId")? {
        Some(id) => Some((id, "messageId")),
        None => data.opt_id("messageId")?.map(|id| (id, "data.messageId")),
    };
    if let Some((id, field)) = &message_id
        && id.chars().count() > limits.max_message_id_chars
    {
        let problem = format!("must be at most {} characters", limits.max_message_id_chars);
        return Err(FrameError::invalid(*field, &problem));
    }
    let message_id = message_id.map(|(id, _)| id).unwrap_or_default();
    let timestamp_ms = top.opt_millis("timestamp")?;

    let event = match kind {
        "message" => ClientKind::Message(decode_message(&data, &message_id, limits)?),
        "typing" => ClientKind::Typing(pb::TypingUpdate {
            chat_id: data.id("chatId")?,
            is_typing: data.flag("isTyping")?,
        }),
        "read_receipt" => ClientKind::ReadReceipt(pb::ReadReceipt {
            chat_id: data.id("chatId")?,
            message_ids: data.receipt_ids("messageIds", limits.max_receipt_ids)?,
        }),
        "chat_update" => ClientKind::ChatUpdate(decode_chat_update(&data)?),
        "history" => ClientKind::History(pb::HistoryRequest {
            chat_id: data.id("chatId")?,
            before: data.opt_cursor("before")?,
            limit: data.opt_limit("limit", limits.max_history_limit)?,
        }),
        "stop" => ClientKind::Stop(pb::StopReply {
            chat_id: data.id("chatId")?,
        }),
        "resume" => ClientKind::Resume(decode_resume(&data)?),
        "help_request" => ClientKind::HelpRequest(pb::HelpRequest {
            chat_id: data.id("chatId")?,
            reason: data.opt_text("reason")?,
        }),
        "presence" => ClientKind::Presence(pb::PresenceUpdate {
            status: data.presence("status")? as i32,
        }),
        "auth" => ClientKind::Auth(pb::Auth {
            token: data.id("token")?,
        }),
        "ping" => ClientKind::Ping(pb::Ping {
            timestamp: data.opt_millis("timestamp")?.or(timestamp_ms).unwrap_or(0),
        }),
        "takeover" => ClientKind::Takeover(pb::Takeover {
            chat_id: data.id("chatId")?,
        }),
        "release" => ClientKind::Release(pb::Release {
            chat_id: data.id("chatId")?,
        }),
        _ => return Err(FrameError::unknown_type()),
    };
    Ok(ClientEvent {
        message_id,
        timestamp_ms: timestamp_ms.unwrap_or(0),
        event: Some(event),
    })
}

fn decode_message(
    data: &Fields<'_>,
    message_id: &str,
    limits: &Limits,
) -> Result<pb::SendMessage, FrameError> {
    if message_id.is_empty() {
        return Err(FrameError::invalid("data.messageId", "is required"));
    }
    Ok(pb::SendMessage {
        chat_id: data.opt_id("chatId")?.unwrap_or_default(),
        // A voice message (an audio attachment) may leave the content out.
        content: match data.present("attachments") {
            Some(_) => data.opt_text("content")?.unwrap_or_default(),
            None => data.text("content")?,
        },
        message_id: message_id.to_owned(),
        agent_id: data.opt_id("agentId")?.unwrap_or_default(),
        attachments: data.opt_ids("attachments")?.unwrap_or_default(),
        context: data.opt_context("context", limits.max_context_bytes)?,
        // Keyed chats are Socket.IO's (seed 003's `connectionId`), not this protocol's.
        chat_key: String::new(),
    })
}

/// `chat_update` needs different fields per action: `create` is the only one without a chat.
fn decode_chat_update(data: &Fields<'_>) -> Result<pb::ChatUpdate, FrameError> {
    let action = data.action("action")?;
    let chat_id = match action {
        pb::ChatAction::Create => data.opt_id("chatId")?.unwrap_or_default(),
        _ => data.id("chatId")?,
    };
    let title = match action {
        pb::ChatAction::Rename => Some(data.text("title")?),
        _ => data.opt_text("title")?,
    };
    let model = match action {
        pb::ChatAction::SelectModel => Some(data.id("model")?),
        _ => data.opt_id("model")?,
    };
    let user_id = match action {
        pb::ChatAction::AddMember | pb::ChatAction::RemoveMember => Some(data.id("userId")?),
        _ => data.opt_id("userId")?,
    };
    let spoken_replies = match action {
        pb::ChatAction::SetSpokenReplies => Some(data.flag("spokenReplies")?),
        _ => data.opt_flag("spokenReplies")?,
    };
    Ok(pb::ChatUpdate {
        action: action as i32,
        chat_id,
        title,
        model,
        agent_id: data.opt_id("agentId")?,
        user_id,
        chat_key: None,
        spoken_replies,
    })
}

fn decode_resume(data: &Fields<'_>) -> Result<pb::Resume, FrameError> {
    let chats = data.array("chats")?;
    let chats = chats
        .iter()
        .enumerate()
        .map(|(i, chat)| {
            let chat = Fields::nested(chat, format!("data.chats[{i}]"))?;
            let streaming = match chat.present("streaming") {
                None => None,
                Some(streaming) => {
                    let streaming = Fields::nested(streaming, chat.name("streaming"))?;
                    Some(pb::ResumeStreaming {
                        message_id: streaming.id("messageId")?,
                        last_index: streaming.count("lastIndex")?,
                    })
                }
            };
            Ok(pb::ResumeChat {
                chat_id: chat.id("chatId")?,
                last_seq: chat.count("lastSeq")?,
                streaming,
            })
        })
        .collect::<Result<_, FrameError>>()?;
    Ok(pb::Resume { chats })
}

/// The `messageId` to echo in an error: the first well-formed one, top level first. A malformed
/// or oversized id is not echoed back.
fn echoable_message_id(frame: &Map<String, Value>, limits: &Limits) -> Option<String> {
    let in_data = frame
        .get("data")
        .and_then(Value::as_object)
        .and_then(|data| data.get("messageId"));
    [frame.get("messageId"), in_data]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|id| !id.is_empty() && id.chars().count() <= limits.max_message_id_chars)
        .map(str::to_owned)
}
