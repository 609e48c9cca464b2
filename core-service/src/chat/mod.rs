//! The chat domain: every operation a client can ask for, independent of transport. The gRPC
//! adapters ([`crate::grpc`]) and the per-stream [`handler::Handler`] call into the
//! [`Engine`]; nothing here knows about WebSockets.
//!
//! Durable events (messages, receipts, chat updates) are stored with the chat's next `seq`
//! and then delivered, under the chat's [`rooms::Sequencer`] lock, so every joined connection
//! sees them in `seq` order. Replies run as their own tasks ([`turn`]), detached from the
//! connection that asked, so a dropped connection never stops a reply.

pub mod handler;
pub mod operator;
pub mod rooms;
pub mod turn;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chat_auth::{Principal, Verifier};
use chat_proto::pb::chat as pb;
use chrono::{NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ChatSettings;
use crate::error::ChatError;
use crate::llm::Llm;
use crate::storage::{self, ChatRow, Db, MessageRow};
use rooms::{Conn, Rooms, Sequencer};
use validate::{ChatId, ClientMessageId, MessageText};

/// The user id of the assistant on the wire.
pub const ASSISTANT: &str = "assistant";

/// Shared state of the core. One per process, behind an `Arc`.
pub struct Engine {
    pub db: Db,
    pub llm: Arc<Llm>,
    pub settings: ChatSettings,
    pub verifier: Arc<Verifier>,
    pub rooms: Rooms,
    /// Orders durable events per chat.
    pub seq: Sequencer,
    /// Runs one reply at a time per chat, in order of the messages that asked.
    pub reply_order: Sequencer,
    /// Replies being generated, by chat id.
    pub replies: Mutex<HashMap<String, ActiveReply>>,
    /// Reply tasks; waited for at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    pub limits: validate::RateLimits,
    pub started: Instant,
}

/// A reply in progress: enough to stop it and to resume its stream.
#[derive(Clone)]
pub struct ActiveReply {
    pub message_id: String,
    pub cancel: CancellationToken,
    /// Deltas sent so far, by index, for `resume`.
    pub chunks: Arc<Mutex<Vec<String>>>,
}

impl Engine {
    pub fn new(db: Db, llm: Llm, settings: ChatSettings, verifier: Verifier) -> Self {
        let limits = validate::RateLimits::new(&settings);
        Self {
            db,
            llm: Arc::new(llm),
            settings,
            verifier: Arc::new(verifier),
            rooms: Rooms::default(),
            seq: Sequencer::default(),
            reply_order: Sequencer::default(),
            replies: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            limits,
            started: Instant::now(),
        }
    }

    /// The `session` event that opens every stream.
    pub async fn session_event(
        &self,
        who: &Principal,
        connection_id: &str,
    ) -> Result<pb::ServerEvent, ChatError> {
        storage::upsert_user(&self.db, &who.user_id, &who.name, now()).await?;
        let active = storage::latest_active_chat(&self.db, &who.user_id).await?;
        let catalogue = self.catalogue();
        Ok(event(pb::server_event::Event::Session(pb::Session {
            connection_id: connection_id.to_string(),
            user_id: who.user_id.clone(),
            name: who.name.clone(),
            roles: who.roles.clone(),
            heartbeat_interval_ms: self.settings.heartbeat_interval_ms as i64,
            limits: Some(pb::Limits {
                max_message_chars: self.settings.max_message_chars,
                max_frame_bytes: self.settings.max_frame_bytes,
            }),
            models: catalogue.models,
            default_model: catalogue.default_model,
            agents: catalogue.agents,
            active_chat_id: active,
        })))
    }

    /// Models and agents users can choose from.
    pub fn catalogue(&self) -> pb::ListModelsResponse {
        pb::ListModelsResponse {
            models: self
                .llm
                .models()
                .iter()
                .map(|m| pb::ModelInfo {
                    id: m.id.clone(),
                    name: m.name.clone(),
                })
                .collect(),
            default_model: self.llm.settings().default_model.clone(),
            agents: self
                .llm
                .agents()
                .iter()
                .map(|a| pb::AgentInfo {
                    id: a.id.clone(),
                    name: a.name.clone(),
                })
                .collect(),
        }
    }

    /// Loads a chat the caller may read and write: a member, or an admin.
    pub async fn chat_for(&self, who: &Principal, chat_id: &ChatId) -> Result<ChatRow, ChatError> {
        let chat = storage::get_chat(&self.db, chat_id.as_str())
            .await?
            .ok_or_else(ChatError::no_chat)?;
        if who.is_admin() || storage::is_member(&self.db, &chat.id, &who.user_id).await? {
            Ok(chat)
        } else {
            Err(ChatError::access_denied())
        }
    }

    /// Stores a user's message, acknowledges it, delivers it to the chat, and starts the
    /// assistant's reply. Without a chat id a new chat is created, owned by the sender.
    /// `conn`, when the message came over a stream, is joined to the chat so it sees the reply.
    /// A message id the sender already used is acknowledged again with `duplicate: true`, and
    /// nothing else happens.
    pub async fn send_message(
        self: &Arc<Self>,
        who: &Principal,
        req: pb::SendMessage,
        conn: Option<&Conn>,
    ) -> Result<pb::Ack, ChatError> {
        let client_id = ClientMessageId::parse(&req.message_id, "data.messageId")?;
        let text = MessageText::parse(&req.content, self.settings.max_message_chars)?;
        let context = validate::context_json(req.context.as_ref())?;
        if let Some(first) = req.attachments.first() {
            // Uploads are not part of this build: no file id can exist yet.
            return Err(ChatError::NotFound(format!(
                "File not found: {}",
                validate::excerpt(first, 64)
            )));
        }
        let agent_id = match req.agent_id.trim() {
            "" => None,
            id if self.llm.agent(id).is_some() => Some(id.to_string()),
            _ => return Err(ChatError::invalid("data.agentId", "Unknown agent")),
        };
        self.limits.check_message(&who.user_id)?;

        // Idempotency first: a resend must not create a second chat either.
        let chat = match req.chat_id.trim() {
            "" => {
                if let Some(prior) =
                    storage::find_by_client_id(&self.db, &who.user_id, client_id.as_str()).await?
                {
                    return Ok(self.acknowledge_duplicate(&prior, &client_id, conn));
                }
                self.create_chat(
                    who,
                    Some(validate::title_from(text.as_str())),
                    agent_id.as_deref(),
                    None,
                )
                .await?
            }
            raw => {
                self.chat_for(who, &ChatId::parse(raw, "data.chatId")?)
                    .await?
            }
        };
        if let Some(conn) = conn {
            self.rooms.join(&chat.id, &conn.id);
        }

        // While an operator holds the chat the assistant is silent; the operator's own
        // messages appear with role `admin` and their name.
        let held = operator::held(&chat);
        let as_operator = held && chat.operator_id.as_deref() == Some(who.user_id.as_str());
        let message_id = new_id();
        let metadata = StoredMetadata {
            context,
            operator_name: as_operator.then(|| who.name.clone()),
            ..Default::default()
        }
        .to_json();
        let (row, duplicate) = {
            let _order = self.seq.lock(&chat.id).await;
            let inserted = storage::insert_message(
                &self.db,
                storage::NewMessage {
                    id: &message_id,
                    chat_id: &chat.id,
                    sender_id: &who.user_id,
                    role: if as_operator { "admin" } else { "user" },
                    agent_id: agent_id.as_deref().unwrap_or(&chat.agent_id),
                    content: text.as_str(),
                    status: "complete",
                    client_message_id: Some(client_id.as_str()),
                    attachments_json: "[]",
                    metadata_json: &metadata,
                    now: now(),
                },
            )
            .await?;
            match inserted {
                storage::Inserted::Duplicate(row) => (row, true),
                storage::Inserted::New(row) => {
                    metrics::counter!("chat_core_messages_total", "role" => row.role.clone())
                        .increment(1);
                    // The ack goes first, so the sender knows its message before seeing it.
                    if let Some(conn) = conn {
                        conn.push(event(pb::server_event::Event::Ack(ack(
                            &row,
                            client_id.as_str(),
                            false,
                        ))));
                    }
                    let mut ev = message_event(&row);
                    if let Some(pb::server_event::Event::Message(m)) = ev.event.as_mut() {
                        m.message_id = Some(client_id.as_str().to_string());
                    }
                    self.rooms.broadcast(&chat.id, &ev, None);
                    (row, false)
                }
            }
        };
        if duplicate {
            return Ok(self.acknowledge_duplicate(&row, &client_id, conn));
        }
        storage::upsert_user(&self.db, &who.user_id, &who.name, now()).await?;
        let reply = ack(&row, client_id.as_str(), false);
        if !held {
            turn::spawn(self.clone(), chat, row, who.user_id.clone());
        }
        Ok(reply)
    }

    /// A resend of a stored message: acked again with the original id and `seq`, nothing else.
    fn acknowledge_duplicate(
        &self,
        prior: &MessageRow,
        client_id: &ClientMessageId,
        conn: Option<&Conn>,
    ) -> pb::Ack {
        let reply = ack(prior, client_id.as_str(), true);
        if let Some(conn) = conn {
            self.rooms.join(&prior.chat_id, &conn.id);
            conn.push(event(pb::server_event::Event::Ack(reply.clone())));
        }
        reply
    }

    /// Creates an empty chat owned by `who`.
    pub async fn create_chat(
        &self,
        who: &Principal,
        title: Option<String>,
        agent_id: Option<&str>,
        model: Option<&str>,
    ) -> Result<ChatRow, ChatError> {
        let settings = self.llm.settings();
        let agent_id = agent_id.unwrap_or(&settings.default_agent);
        let agent = self
            .llm
            .agent(agent_id)
            .ok_or_else(|| ChatError::invalid("data.agentId", "Unknown agent"))?;
        let model = match model {
            Some(m) => {
                self.llm
                    .model(m)
                    .ok_or_else(|| ChatError::invalid("data.model", "Unknown model"))?;
                m.to_string()
            }
            None => agent
                .default_model
                .clone()
                .unwrap_or_else(|| settings.default_model.clone()),
        };
        storage::upsert_user(&self.db, &who.user_id, &who.name, now()).await?;
        let id = new_id();
        let title = title.unwrap_or_else(|| "New chat".to_string());
        Ok(storage::create_chat(
            &self.db,
            storage::NewChat {
                id: &id,
                owner_id: &who.user_id,
                title: &title,
                agent_id,
                model: &model,
                now: now(),
            },
        )
        .await?)
    }

    /// A page of history, oldest first.
    pub async fn history(
        &self,
        who: &Principal,
        chat_id: &str,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<pb::History, ChatError> {
        let chat = self
            .chat_for(who, &ChatId::parse(chat_id, "data.chatId")?)
            .await?;
        let before = validate::cursor(before)?;
        let limit = validate::page_limit(limit)?;
        self.history_of(&chat.id, before, limit).await
    }

    async fn history_of(
        &self,
        chat_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<pb::History, ChatError> {
        let (rows, has_more) = storage::history(&self.db, chat_id, before, limit).await?;
        let last_seq = storage::last_seq(&self.db, chat_id).await?;
        Ok(pb::History {
            chat_id: chat_id.to_string(),
            cursor: rows.first().map(|r| r.seq.to_string()).unwrap_or_default(),
            messages: rows.iter().map(message_to_pb).collect(),
            has_more,
            last_seq,
            reset: false,
        })
    }

    /// Subscribes a connection to a chat and sends it the latest history, atomically with
    /// respect to new events: everything after the history's `lastSeq` arrives live.
    pub async fn join(&self, who: &Principal, chat_id: &str, conn: &Conn) -> Result<(), ChatError> {
        let chat = self
            .chat_for(who, &ChatId::parse(chat_id, "data.chatId")?)
            .await?;
        let _order = self.seq.lock(&chat.id).await;
        let history = self.history_of(&chat.id, None, 50).await?;
        conn.push(event(pb::server_event::Event::History(history)));
        if self.rooms.join(&chat.id, &conn.id) {
            let online = presence(&who.user_id, pb::PresenceStatus::Online, &chat.id);
            self.rooms.broadcast(&chat.id, &online, Some(&conn.id));
        }
        Ok(())
    }

    /// Stops the reply being generated in a chat; its partial text is kept as `stopped`.
    pub async fn stop(&self, who: &Principal, chat_id: &str) -> Result<(), ChatError> {
        let chat = self
            .chat_for(who, &ChatId::parse(chat_id, "data.chatId")?)
            .await?;
        let active = self
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chat.id)
            .cloned();
        if let Some(reply) = active {
            reply.cancel.cancel();
        }
        Ok(())
    }

    /// Stores a durable non-message event with the chat's next `seq` and delivers it.
    pub async fn publish(
        &self,
        chat_id: &str,
        kind: &str,
        ev: pb::server_event::Event,
    ) -> Result<i64, ChatError> {
        use prost::Message as _;
        let _order = self.seq.lock(chat_id).await;
        let live = event(ev);
        let seq =
            storage::append_event(&self.db, chat_id, kind, &live.encode_to_vec(), now()).await?;
        self.rooms.broadcast(chat_id, &with_seq(live, seq), None);
        Ok(seq)
    }

    /// A durable `chat_update` with only the changed fields.
    pub async fn publish_change(
        &self,
        chat_id: &str,
        changes: pb::ChatChanges,
    ) -> Result<(), ChatError> {
        let ev = pb::server_event::Event::ChatUpdate(pb::ChatUpdated {
            chat_id: chat_id.to_string(),
            updates: Some(changes),
        });
        self.publish(chat_id, "chat_update", ev).await.map(|_| ())
    }

    /// Tells every chat the user is present in about the user's presence.
    pub fn broadcast_presence(
        &self,
        user_id: &str,
        status: pb::PresenceStatus,
        skip: Option<&str>,
    ) {
        for chat_id in self.rooms.user_chats(user_id) {
            self.rooms
                .broadcast(&chat_id, &presence(user_id, status, &chat_id), skip);
        }
    }

    /// Presence to the given chats (used when the user's last connection has already left).
    pub fn broadcast_presence_to_chats(
        &self,
        user_id: &str,
        status: pb::PresenceStatus,
        chats: &[String],
    ) {
        for chat_id in chats {
            self.rooms
                .broadcast(chat_id, &presence(user_id, status, chat_id), None);
        }
    }

    /// The caller's chats, newest activity first.
    pub async fn list_sessions(
        &self,
        who: &Principal,
        limit: Option<u32>,
    ) -> Result<Vec<pb::SessionSummary>, ChatError> {
        let limit = validate::page_limit(limit)?;
        let rows = storage::list_user_chats(&self.db, &who.user_id, limit).await?;
        Ok(rows.iter().map(session_summary).collect())
    }
}

/// What we keep in a message's `metadata` column (JSON, camelCase like the protocol).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_name: Option<String>,
    /// The per-message context object a client sent (used in the prompt, never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// Why a reply failed (kind only, never provider text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StoredMetadata {
    pub fn to_json(&self) -> String {
        // Serializing a struct of options and a Value cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// A new time-sortable id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, UTC, as stored.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// A server event stamped with the current time.
pub fn event(ev: pb::server_event::Event) -> pb::ServerEvent {
    pb::ServerEvent {
        timestamp_ms: Utc::now().timestamp_millis(),
        seq: None,
        event: Some(ev),
    }
}

pub fn with_seq(mut ev: pb::ServerEvent, seq: i64) -> pb::ServerEvent {
    ev.seq = Some(seq);
    ev
}

fn presence(user_id: &str, status: pb::PresenceStatus, chat_id: &str) -> pb::ServerEvent {
    event(pb::server_event::Event::Presence(pb::PresenceEvent {
        user_id: user_id.to_string(),
        status: status as i32,
        chat_id: Some(chat_id.to_string()),
    }))
}

fn ack(row: &MessageRow, client_id: &str, duplicate: bool) -> pb::Ack {
    pb::Ack {
        message_id: client_id.to_string(),
        id: row.id.clone(),
        chat_id: row.chat_id.clone(),
        seq: row.seq,
        status: "sent".into(),
        duplicate,
    }
}

/// The durable `message` event of a stored row, with its `seq`.
pub fn message_event(row: &MessageRow) -> pb::ServerEvent {
    with_seq(
        event(pb::server_event::Event::Message(pb::MessageEvent {
            chat_id: row.chat_id.clone(),
            message: Some(message_to_pb(row)),
            message_id: None,
        })),
        row.seq,
    )
}

pub fn timestamp(t: NaiveDateTime) -> prost_types::Timestamp {
    let utc = t.and_utc();
    prost_types::Timestamp {
        seconds: utc.timestamp(),
        nanos: utc.timestamp_subsec_nanos() as i32,
    }
}

pub fn message_to_pb(row: &MessageRow) -> pb::ChatMessage {
    let meta = StoredMetadata::parse(&row.metadata);
    let role = match row.role.as_str() {
        "user" => pb::Role::User,
        "assistant" => pb::Role::Assistant,
        "admin" => pb::Role::Admin,
        "system" => pb::Role::System,
        _ => pb::Role::Unspecified,
    };
    let status = match row.status.as_str() {
        "stopped" => pb::MessageStatus::Stopped,
        "failed" => pb::MessageStatus::Failed,
        _ => pb::MessageStatus::Complete,
    };
    pb::ChatMessage {
        id: row.id.clone(),
        chat_id: row.chat_id.clone(),
        seq: row.seq,
        user_id: row.sender_id.clone(),
        agent_id: row.agent_id.clone(),
        role: role as i32,
        content: row.content.clone(),
        status: status as i32,
        created_at: Some(timestamp(row.created_at)),
        attachments: Vec::new(),
        metadata: Some(pb::MessageMetadata {
            model: meta.model,
            prompt_tokens: meta.prompt_tokens,
            completion_tokens: meta.completion_tokens,
            ttft_ms: meta.ttft_ms,
            latency_ms: meta.latency_ms,
            operator_name: meta.operator_name,
        }),
    }
}

pub fn session_summary(row: &ChatRow) -> pb::SessionSummary {
    pb::SessionSummary {
        chat_id: row.id.clone(),
        title: row.title.clone(),
        status: row.status.clone(),
        model: row.model.clone(),
        agent_id: row.agent_id.clone(),
        message_count: row.message_count,
        admin_assisted: row.admin_assisted,
        needs_help: row.needs_help,
        started_at: Some(timestamp(row.started_at)),
        last_activity_at: Some(timestamp(row.last_activity_at)),
        ended_at: row.ended_at.map(timestamp),
    }
}
