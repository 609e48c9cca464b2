//! What a client asks the core to do: the domain's client commands, one per client frame type.
//! The gRPC adapter decodes `chat.v1.ClientEvent`s into these; the per-stream
//! [`Handler`](super::handler::Handler) hands each to the [`Engine`](super::Engine) method that
//! performs it. Ids and texts are still as the client sent them: the engine validates them
//! where it uses them, naming the protocol field in every error.

use serde_json::{Map, Value};

use super::error::ChatError;
use crate::types::Presence;

/// One client frame: the command, or why it could not be read.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The client's id for the frame (may be empty), echoed on errors that answer it.
    pub frame_id: String,
    pub command: Result<Command, ChatError>,
}

#[derive(Debug, Clone)]
pub enum Command {
    Send(SendMessage),
    Typing {
        chat_id: String,
        is_typing: bool,
    },
    ReadReceipt {
        chat_id: String,
        message_ids: Vec<String>,
    },
    Chat(ChatAction),
    History(HistoryQuery),
    Stop {
        chat_id: String,
    },
    Resume(Vec<ResumeChat>),
    HelpRequest {
        chat_id: String,
        reason: Option<String>,
    },
    Presence(Presence),
    /// Replace the connection's token.
    Auth {
        token: String,
    },
    Ping {
        timestamp: i64,
    },
    Takeover {
        chat_id: String,
    },
    Release {
        chat_id: String,
    },
}

/// A user's message.
#[derive(Debug, Clone, Default)]
pub struct SendMessage {
    /// `None`: create a new chat owned by the sender, named from this message.
    pub chat_id: Option<String>,
    pub content: String,
    /// The client's idempotency key.
    pub client_message_id: String,
    pub agent_id: Option<String>,
    pub attachments: Vec<String>,
    /// The per-message context object, as JSON.
    pub context: Option<Map<String, Value>>,
    /// Without `chat_id`: the sender's chat of this key (seed 003's `connectionId`), created
    /// by the key's first message.
    pub chat_key: Option<String>,
}

/// `chat_update` actions.
#[derive(Debug, Clone)]
pub enum ChatAction {
    Join {
        chat_id: String,
    },
    /// Join the caller's chat of this key (404 when the key has no chat yet).
    JoinKeyed {
        key: String,
    },
    Leave {
        chat_id: String,
    },
    Create {
        title: Option<String>,
        agent_id: Option<String>,
        model: Option<String>,
        spoken_replies: Option<bool>,
    },
    /// Whether the chat's replies are spoken (needs `[llm.voice]`).
    SetSpokenReplies {
        chat_id: String,
        spoken: bool,
    },
    Rename {
        chat_id: String,
        title: String,
    },
    SelectModel {
        chat_id: String,
        model: String,
    },
    End {
        chat_id: String,
    },
    AddMember {
        chat_id: String,
        user_id: String,
    },
    RemoveMember {
        chat_id: String,
        user_id: String,
    },
}

/// A page of history: messages strictly older than `before`.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub chat_id: String,
    pub before: Option<String>,
    pub limit: Option<u32>,
}

/// One chat a reconnecting client wants resumed.
#[derive(Debug, Clone)]
pub struct ResumeChat {
    pub chat_id: String,
    /// The last `seq` the client processed.
    pub last_seq: i64,
    /// The reply that was streaming, and the last chunk index seen.
    pub streaming: Option<(String, i64)>,
}
