//! protobuf <-> domain: the one place that knows both `chat.v1` and the chat domain's types.
//! Client events decode into [`Command`]s (an unknown frame or enum value becomes that
//! frame's error, never the end of the stream); domain events and errors encode into
//! `ServerEvent`s; domain errors on unary calls become `tonic::Status`es. Internal causes are
//! logged here, once, and clients only see "Internal error".

use chat_proto::pb::chat as pb;
use chrono::NaiveDateTime;
use pb::client_event::Event as In;
use pb::server_event::Event as Out;

use crate::chat::ChatError;
use crate::chat::command::{ChatAction, Command, HistoryQuery, Inbound, ResumeChat, SendMessage};
use crate::chat::event::{
    Ack, Catalogue, ChatChanges, ChatMessage, Event, History, Named, Operator, Outgoing,
    SessionSummary,
};
use crate::types::{MessageStatus, Presence, Role};

// ---------------------------------------------------------------- client events -> commands

/// One client event as the command it asks for.
pub fn inbound(ev: pb::ClientEvent) -> Inbound {
    if ev.event.is_none() && ev.message_id == chat_proto::codec::UNDECODABLE_FRAME {
        return Inbound {
            frame_id: String::new(),
            command: Err(ChatError::Invalid {
                message: "The frame could not be decoded: malformed protobuf, or nested more \
                          than 100 levels deep"
                    .into(),
                field: None,
            }),
        };
    }
    let frame_id = ev.message_id;
    let command = match ev.event {
        Some(In::Message(mut msg)) => {
            if msg.message_id.is_empty() {
                msg.message_id = frame_id.clone();
            }
            Ok(Command::Send(send_message(msg)))
        }
        Some(In::Typing(t)) => Ok(Command::Typing {
            chat_id: t.chat_id,
            is_typing: t.is_typing,
        }),
        Some(In::ReadReceipt(r)) => Ok(Command::ReadReceipt {
            chat_id: r.chat_id,
            message_ids: r.message_ids,
        }),
        Some(In::ChatUpdate(u)) => chat_action(u).map(Command::Chat),
        Some(In::History(h)) => Ok(Command::History(HistoryQuery {
            chat_id: h.chat_id,
            before: h.before,
            limit: h.limit,
        })),
        Some(In::Stop(s)) => Ok(Command::Stop { chat_id: s.chat_id }),
        Some(In::Resume(r)) => Ok(Command::Resume(
            r.chats
                .into_iter()
                .map(|c| ResumeChat {
                    chat_id: c.chat_id,
                    last_seq: c.last_seq,
                    streaming: c.streaming.map(|s| (s.message_id, s.last_index)),
                })
                .collect(),
        )),
        Some(In::HelpRequest(h)) => Ok(Command::HelpRequest {
            chat_id: h.chat_id,
            reason: h.reason,
        }),
        Some(In::Presence(p)) => match pb::PresenceStatus::try_from(p.status) {
            Ok(pb::PresenceStatus::Online) => Ok(Command::Presence(Presence::Online)),
            Ok(pb::PresenceStatus::Away) => Ok(Command::Presence(Presence::Away)),
            _ => Err(ChatError::invalid(
                "data.status",
                "data.status must be \"online\" or \"away\"",
            )),
        },
        Some(In::Auth(a)) => Ok(Command::Auth { token: a.token }),
        Some(In::Ping(p)) => Ok(Command::Ping {
            timestamp: p.timestamp,
        }),
        Some(In::Takeover(t)) => Ok(Command::Takeover { chat_id: t.chat_id }),
        Some(In::Release(r)) => Ok(Command::Release { chat_id: r.chat_id }),
        None => Err(ChatError::Invalid {
            message: "Unknown message type".into(),
            field: Some("type"),
        }),
    };
    Inbound { frame_id, command }
}

/// The last frame of a client stream that failed: a message over the size limit is answered
/// with 413 before the stream ends; other failures (a broken transport) end it silently.
pub fn stream_failure(status: &tonic::Status) -> Option<Inbound> {
    (status.code() == tonic::Code::OutOfRange).then(|| Inbound {
        frame_id: String::new(),
        command: Err(ChatError::TooLarge {
            message: format!("Frame too large: {}", status.message()),
            field: None,
        }),
    })
}

/// A `message` frame or a `PostMessage` call.
pub fn send_message(m: pb::SendMessage) -> SendMessage {
    SendMessage {
        chat_id: Some(m.chat_id).filter(|c| !c.trim().is_empty()),
        content: m.content,
        client_message_id: m.message_id,
        agent_id: Some(m.agent_id).filter(|a| !a.trim().is_empty()),
        attachments: m.attachments,
        context: m.context.as_ref().map(chat_proto::json::struct_to_json),
        chat_key: Some(m.chat_key).filter(|k| !k.trim().is_empty()),
    }
}

fn chat_action(u: pb::ChatUpdate) -> Result<ChatAction, ChatError> {
    use pb::ChatAction as A;
    let chat_id = u.chat_id;
    Ok(match A::try_from(u.action).unwrap_or(A::Unspecified) {
        A::Join => match u.chat_key.filter(|k| !k.trim().is_empty()) {
            Some(key) if chat_id.trim().is_empty() => ChatAction::JoinKeyed { key },
            _ => ChatAction::Join { chat_id },
        },
        A::Leave => ChatAction::Leave { chat_id },
        A::Create => ChatAction::Create {
            title: u.title,
            agent_id: u.agent_id,
            model: u.model,
            spoken_replies: u.spoken_replies,
        },
        A::SetSpokenReplies => ChatAction::SetSpokenReplies {
            chat_id,
            spoken: u.spoken_replies.ok_or_else(|| {
                ChatError::invalid("data.spokenReplies", "data.spokenReplies is required")
            })?,
        },
        A::Rename => ChatAction::Rename {
            chat_id,
            title: u.title.unwrap_or_default(),
        },
        A::SelectModel => ChatAction::SelectModel {
            chat_id,
            model: u.model.unwrap_or_default(),
        },
        A::End => ChatAction::End { chat_id },
        A::AddMember => ChatAction::AddMember {
            chat_id,
            user_id: u.user_id.unwrap_or_default(),
        },
        A::RemoveMember => ChatAction::RemoveMember {
            chat_id,
            user_id: u.user_id.unwrap_or_default(),
        },
        A::Unspecified => return Err(ChatError::invalid("data.action", "Unknown action")),
    })
}

// ---------------------------------------------------------------- events -> server events

/// A domain event as the wire event.
pub fn server_event(out: &Outgoing) -> pb::ServerEvent {
    pb::ServerEvent {
        timestamp_ms: out.timestamp_ms,
        seq: out.seq,
        event: Some(event(&out.event)),
    }
}

fn event(ev: &Event) -> Out {
    match ev {
        Event::Session(s) => {
            let catalogue = catalogue(&s.catalogue);
            Out::Session(pb::Session {
                connection_id: s.connection_id.clone(),
                user_id: s.user_id.clone(),
                name: s.name.clone(),
                roles: s.roles.clone(),
                heartbeat_interval_ms: i64::try_from(s.heartbeat_interval_ms).unwrap_or(i64::MAX),
                limits: Some(pb::Limits {
                    max_message_chars: s.max_message_chars,
                    max_frame_bytes: s.max_frame_bytes,
                }),
                models: catalogue.models,
                default_model: catalogue.default_model,
                agents: catalogue.agents,
                active_chat_id: s.active_chat_id.clone(),
                voice: s.voice,
            })
        }
        Event::Ack(a) => Out::Ack(ack(a)),
        Event::Message(m) => Out::Message(pb::MessageEvent {
            chat_id: m.chat_id.clone(),
            message: Some(message(&m.message)),
            message_id: m.client_message_id.clone(),
        }),
        Event::MessageChunk(c) => Out::MessageChunk(pb::MessageChunk {
            chat_id: c.chat_id.clone(),
            message_id: c.message_id.clone(),
            index: c.index,
            delta: c.delta.clone(),
        }),
        Event::Typing(t) => Out::Typing(pb::TypingEvent {
            chat_id: t.chat_id.clone(),
            user_id: t.user_id.clone(),
            agent_id: t.agent_id.clone(),
            is_typing: t.is_typing,
        }),
        Event::ReadReceipt(r) => Out::ReadReceipt(pb::ReadReceiptEvent {
            chat_id: r.chat_id.clone(),
            message_ids: r.message_ids.clone(),
            user_id: r.user_id.clone(),
            confirmed: true,
        }),
        Event::ChatUpdate(u) => Out::ChatUpdate(pb::ChatUpdated {
            chat_id: u.chat_id.clone(),
            updates: Some(changes(&u.changes)),
        }),
        Event::History(h) => Out::History(history(h)),
        Event::Presence(p) => Out::Presence(pb::PresenceEvent {
            user_id: p.user_id.clone(),
            status: presence(p.status) as i32,
            chat_id: p.chat_id.clone(),
        }),
        Event::OperatorJoined(o) => Out::OperatorJoined(pb::OperatorEvent {
            chat_id: o.chat_id.clone(),
            operator: Some(operator(&o.operator)),
        }),
        Event::OperatorLeft(o) => Out::OperatorLeft(pb::OperatorEvent {
            chat_id: o.chat_id.clone(),
            operator: Some(operator(&o.operator)),
        }),
        Event::Remote(event) => event.0.clone(),
        Event::Pong { timestamp } => Out::Pong(pb::Pong {
            timestamp: *timestamp,
        }),
        Event::Error { error, frame_id } => Out::Error(error_event(error, frame_id.clone())),
    }
}

/// The `error` event for a failed command; counts it and logs an internal cause.
fn error_event(err: &ChatError, frame_id: Option<String>) -> pb::Error {
    record(err);
    pb::Error {
        code: err.code(),
        message: err.client_message(),
        retryable: err.retryable(),
        retry_after_ms: match err {
            ChatError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        },
        message_id: frame_id,
        field: err.field().map(String::from),
        close_code: err.close_code(),
    }
}

/// A failed unary call's status.
pub fn status(err: ChatError) -> tonic::Status {
    use tonic::Code;
    record(&err);
    let code = match &err {
        ChatError::Invalid { .. } | ChatError::TooLarge { .. } => Code::InvalidArgument,
        ChatError::Unauthenticated | ChatError::TokenExpired => Code::Unauthenticated,
        ChatError::Forbidden(_) => Code::PermissionDenied,
        ChatError::NotFound(_) => Code::NotFound,
        ChatError::Conflict(_) => Code::AlreadyExists,
        ChatError::RateLimited { .. } | ChatError::TooManyConnections => Code::ResourceExhausted,
        ChatError::Unavailable(_) | ChatError::ModelFailed => Code::Unavailable,
        ChatError::Internal(_) => return tonic::Status::internal(err.client_message()),
    };
    let mut status = tonic::Status::new(code, err.to_string());
    // The protocol code, for callers that answer in HTTP (the edge's 413 for uploads).
    status
        .metadata_mut()
        .insert("x-code", tonic::metadata::MetadataValue::from(err.code()));
    if let Some(field) = err.field()
        && let Ok(value) = field.parse()
    {
        status.metadata_mut().insert("x-field", value);
    }
    status
}

fn record(err: &ChatError) {
    metrics::counter!("chat_core_errors_total", "code" => err.code().to_string()).increment(1);
    if let ChatError::Internal(cause) = err {
        tracing::error!(error = %cause, "internal error");
    }
}

pub fn ack(a: &Ack) -> pb::Ack {
    pb::Ack {
        message_id: a.client_message_id.clone(),
        id: a.id.clone(),
        chat_id: a.chat_id.clone(),
        seq: a.seq,
        status: "sent".into(),
        duplicate: a.duplicate,
    }
}

pub fn history(h: &History) -> pb::History {
    pb::History {
        chat_id: h.chat_id.clone(),
        messages: h.messages.iter().map(message).collect(),
        has_more: h.has_more,
        cursor: h.cursor.clone(),
        last_seq: h.last_seq,
        reset: h.reset,
    }
}

pub fn catalogue(c: &Catalogue) -> pb::ListModelsResponse {
    let named = |n: &Named| (n.id.clone(), n.name.clone());
    pb::ListModelsResponse {
        models: c
            .models
            .iter()
            .map(named)
            .map(|(id, name)| pb::ModelInfo { id, name })
            .collect(),
        default_model: c.default_model.clone(),
        agents: c
            .agents
            .iter()
            .map(named)
            .map(|(id, name)| pb::AgentInfo { id, name })
            .collect(),
    }
}

pub fn session_summary(s: &SessionSummary) -> pb::SessionSummary {
    pb::SessionSummary {
        chat_id: s.chat_id.clone(),
        title: s.title.clone(),
        status: s.status.as_str().to_string(),
        model: s.model.clone(),
        agent_id: s.agent_id.clone(),
        message_count: s.message_count,
        admin_assisted: s.admin_assisted,
        needs_help: s.needs_help,
        started_at: Some(timestamp(s.started_at)),
        last_activity_at: Some(timestamp(s.last_activity_at)),
        ended_at: s.ended_at.map(timestamp),
    }
}

fn message(m: &ChatMessage) -> pb::ChatMessage {
    let meta = &m.metadata;
    pb::ChatMessage {
        id: m.id.clone(),
        chat_id: m.chat_id.clone(),
        seq: m.seq,
        user_id: m.user_id.clone(),
        agent_id: m.agent_id.clone(),
        role: role(m.role) as i32,
        content: m.content.clone(),
        status: message_status(m.status) as i32,
        created_at: Some(timestamp(m.created_at)),
        attachments: m
            .attachments
            .iter()
            .map(|a| pb::Attachment {
                id: a.id.clone(),
                name: a.name.clone(),
                mime: a.mime.clone(),
                size: a.size,
                // Signed as the event leaves (`grpc::chat::sign_urls`).
                url: String::new(),
            })
            .collect(),
        client_message_id: m.client_message_id.clone(),
        metadata: Some(pb::MessageMetadata {
            model: meta.model.clone(),
            prompt_tokens: meta.prompt_tokens,
            completion_tokens: meta.completion_tokens,
            ttft_ms: meta.ttft_ms,
            latency_ms: meta.latency_ms,
            operator_name: meta.operator_name.clone(),
            finish_reason: meta.finish_reason.clone(),
            message_index: meta.message_index,
            total_messages: meta.total_messages,
            transcribed: meta.transcribed,
            speech_error: meta.speech_error.clone(),
        }),
    }
}

pub fn changes(c: &ChatChanges) -> pb::ChatChanges {
    pb::ChatChanges {
        title: c.title.clone(),
        message_count: c.message_count,
        last_message: c.last_message.clone(),
        model: c.model.clone(),
        status: c.status.map(|s| s.as_str().to_string()),
        needs_help: c.needs_help,
        spoken_replies: c.spoken_replies,
        operator_changed: c.operator.is_some(),
        operator: c.operator.as_ref().and_then(|o| o.as_ref().map(operator)),
    }
}

pub fn operator(o: &Operator) -> pb::Operator {
    pb::Operator {
        id: o.id.clone(),
        name: o.name.clone(),
    }
}

pub fn role(r: Role) -> pb::Role {
    match r {
        Role::User => pb::Role::User,
        Role::Assistant => pb::Role::Assistant,
        Role::Admin => pb::Role::Admin,
        Role::System => pb::Role::System,
    }
}

fn message_status(s: MessageStatus) -> pb::MessageStatus {
    match s {
        MessageStatus::Complete => pb::MessageStatus::Complete,
        MessageStatus::Stopped => pb::MessageStatus::Stopped,
        MessageStatus::Failed => pb::MessageStatus::Failed,
    }
}

fn presence(p: Presence) -> pb::PresenceStatus {
    match p {
        Presence::Online => pb::PresenceStatus::Online,
        Presence::Away => pb::PresenceStatus::Away,
        Presence::Offline => pb::PresenceStatus::Offline,
    }
}

pub fn user_context(c: &crate::chat::context::UserContext) -> pb::UserContext {
    pb::UserContext {
        user_id: c.user_id.clone(),
        document: Some(chat_proto::json::struct_from_json(&c.document)),
        updated_by: c.updated_by.clone(),
        updated_at: Some(timestamp(c.updated_at)),
    }
}

pub fn timestamp(t: NaiveDateTime) -> prost_types::Timestamp {
    let utc = t.and_utc();
    prost_types::Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_frame_or_enum_is_an_error_for_that_frame() {
        let unknown = inbound(pb::ClientEvent {
            message_id: "f1".into(),
            ..Default::default()
        });
        assert_eq!(unknown.frame_id, "f1");
        assert!(matches!(
            unknown.command,
            Err(ChatError::Invalid {
                field: Some("type"),
                ..
            })
        ));
        let action = inbound(pb::ClientEvent {
            event: Some(In::ChatUpdate(pb::ChatUpdate {
                action: 99,
                ..Default::default()
            })),
            ..Default::default()
        });
        assert!(matches!(
            action.command,
            Err(ChatError::Invalid {
                field: Some("data.action"),
                ..
            })
        ));
    }

    #[test]
    fn an_operator_leaving_is_a_change_with_no_operator() {
        let left = changes(&ChatChanges {
            operator: Some(None),
            ..ChatChanges::default()
        });
        assert!(left.operator_changed && left.operator.is_none());
        let untouched = changes(&ChatChanges::default());
        assert!(!untouched.operator_changed);
    }
}
