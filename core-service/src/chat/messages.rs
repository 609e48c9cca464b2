//! Messages: a user's message (stored, acknowledged, delivered, answered), history pages,
//! stopping a reply, and read receipts.

use std::sync::Arc;

use chat_auth::Principal;
use chat_proto::limits::MAX_RECEIPT_IDS;

use super::command::{HistoryQuery, SendMessage};
use super::engine::{Engine, new_id};
use super::error::ChatError;
use super::event::{
    Ack, ChatChanges, Durable, Event, History, Outgoing, Receipts, StoredAttachment, StoredMetadata,
};
use super::limits::Rate;
use super::rooms::Conn;
use super::turn;
use super::validate::{self, ChatId, ClientMessageId, MessageText};
use super::watch::ChangeKind;
use crate::storage::{self, MessageRow};
use crate::types::{MessageStatus, Role};

impl Engine {
    /// Stores a user's message, acknowledges it, delivers it to the chat, and starts the
    /// assistant's reply. Without a chat id a new chat is created, owned by the sender.
    /// `conn`, when the message came over a stream, is joined to the chat so it sees the reply.
    /// A message id the sender already used is acknowledged again with `duplicate: true`, and
    /// nothing else happens.
    pub async fn send_message(
        self: &Arc<Self>,
        who: &Principal,
        req: SendMessage,
        conn: Option<&Conn>,
    ) -> Result<Ack, ChatError> {
        let client_id = ClientMessageId::parse(&req.client_message_id, "data.messageId")?;
        // Empty content with an audio attachment is a voice message: its text is the
        // transcript, made once the message passed every other check.
        let voice_message = req.content.trim().is_empty() && !req.attachments.is_empty();
        let typed = if voice_message {
            None
        } else {
            Some(MessageText::parse(
                &req.content,
                self.settings.max_message_chars,
            )?)
        };
        let context = validate::context_json(req.context)?;
        let attachments = self.attachments_of(who, &req.attachments).await?;
        let attachments_json = StoredAttachment::list_json(&attachments);
        let file_ids: Vec<String> = attachments.iter().map(|a| a.id.clone()).collect();
        let agent_id = match req.agent_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) if self.llm.agent(id).is_some() => Some(id.to_string()),
            Some(_) => return Err(ChatError::invalid("data.agentId", "Unknown agent")),
        };
        self.limits.check(Rate::Message, &who.user_id).await?;
        let text = match typed {
            Some(text) => text,
            None => {
                // A resend is acknowledged without paying for a second transcription.
                if let Some(prior) =
                    storage::find_by_client_id(&self.db, &who.user_id, client_id.as_str()).await?
                {
                    return self
                        .acknowledge_duplicate(who, &prior, &client_id, conn)
                        .await;
                }
                self.transcribe_voice_message(&attachments).await?
            }
        };

        // Idempotency first: a resend must not create a second chat either.
        let chat = match req.chat_id.as_deref().map(str::trim) {
            None | Some("") => {
                if let Some(prior) =
                    storage::find_by_client_id(&self.db, &who.user_id, client_id.as_str()).await?
                {
                    return self
                        .acknowledge_duplicate(who, &prior, &client_id, conn)
                        .await;
                }
                match req.chat_key.as_deref() {
                    None => {
                        self.create_chat(
                            who,
                            Some(validate::title_from(text.as_str())),
                            agent_id.as_deref(),
                            None,
                            None,
                        )
                        .await?
                    }
                    Some(raw) => {
                        self.keyed_chat(who, raw, text.as_str(), agent_id.as_deref())
                            .await?
                    }
                }
            }
            Some(raw) => self.chat_named(who, raw, "data.chatId").await?,
        };
        let mut chat = chat;
        self.continue_session(&mut chat).await?;
        if let Some(conn) = conn {
            self.rooms.join(&chat.id, &conn.id);
        }

        // While an operator holds the chat the assistant is silent; the operator's own
        // messages appear with role `admin` and their name.
        let held = self.held(&chat);
        let as_operator = held && chat.operator_id.as_deref() == Some(who.user_id.as_str());
        let message_id = new_id();
        let metadata = StoredMetadata {
            context,
            operator_name: as_operator.then(|| who.name.clone()),
            transcribed: voice_message.then_some(true),
            ..Default::default()
        }
        .to_json();
        let (row, duplicate, place) = {
            let _order = self.seq.lock(&chat.id).await;
            let inserted = storage::insert_message_with(
                &self.db,
                storage::NewMessage {
                    id: &message_id,
                    chat_id: &chat.id,
                    sender_id: &who.user_id,
                    role: if as_operator { Role::Admin } else { Role::User },
                    agent_id: agent_id.as_deref().unwrap_or(&chat.agent_id),
                    content: text.as_str(),
                    status: MessageStatus::Complete,
                    client_message_id: Some(client_id.as_str()),
                    attachments_json: &attachments_json,
                    file_ids: &file_ids,
                    metadata_json: &metadata,
                    now: self.now(),
                    // Owed in the same transaction: a crash from here on leaves a row saying
                    // so, which the next start answers (`Engine::recover_replies`).
                    reply: if held {
                        storage::ReplyLink::None
                    } else {
                        storage::ReplyLink::Owed {
                            requester: &who.user_id,
                        }
                    },
                },
                // The sender's last activity, in the message's transaction: once a message is
                // acknowledged nothing can fail between it and the start of its reply.
                storage::Along {
                    sender_name: Some(&who.name),
                    usage: None,
                },
            )
            .await?;
            match inserted {
                storage::Inserted::Duplicate(row) => (row, true, None),
                storage::Inserted::New(row) => {
                    metrics::counter!("chat_core_messages_total", "role" => row.role.clone())
                        .increment(1);
                    // The ack goes first, so the sender knows its message before seeing it.
                    if let Some(conn) = conn {
                        conn.push(Outgoing::now(Event::Ack(Ack::of(
                            &row,
                            client_id.as_str(),
                            false,
                        ))));
                    }
                    let mut delivered = Outgoing::message(&row);
                    if let Event::Message(m) = &mut delivered.event {
                        m.client_message_id = Some(client_id.as_str().to_string());
                    }
                    self.rooms.broadcast(&chat.id, delivered, None);
                    self.rooms
                        .broadcast(&chat.id, Outgoing::summary(&row), None);
                    self.session_changed(
                        &chat,
                        ChangeKind::Message,
                        ChatChanges::default(),
                        Role::parse(&row.role),
                    );
                    // The reply's place in line is taken here, in `seq` order.
                    let place = (!held).then(|| self.reply_order.join(&chat.id));
                    (row, false, place)
                }
            }
        };
        if duplicate {
            return self
                .acknowledge_duplicate(who, &row, &client_id, conn)
                .await;
        }
        let ack = Ack::of(&row, client_id.as_str(), false);
        if let Some(place) = place {
            turn::spawn(self.clone(), place, chat, row, who.user_id.clone());
        }
        Ok(ack)
    }

    /// The sender's chat of `raw` key (seed 003's `connectionId`; see [`Engine::chat_of_key`]),
    /// created (named from the message) when the key names none. Two first messages racing for one key meet at the
    /// unique index: the loser finds the winner's chat.
    async fn keyed_chat(
        &self,
        who: &Principal,
        raw: &str,
        text: &str,
        agent_id: Option<&str>,
    ) -> Result<storage::ChatRow, ChatError> {
        let key = ChatId::parse(raw, "data.connectionId")?;
        if let Some(chat) = self.chat_of_key(who, &key).await? {
            return Ok(chat);
        }
        let created = self
            .create_chat(
                who,
                Some(validate::title_from(text)),
                agent_id,
                None,
                Some(key.as_str()),
            )
            .await;
        match created {
            Ok(chat) => Ok(chat),
            Err(err) => match storage::find_keyed_chat(&self.db, &who.user_id, key.as_str()).await?
            {
                Some(chat) => Ok(chat),
                None => Err(err),
            },
        }
    }

    /// The files a message attaches: each an upload of the sender's (404 for an unknown id,
    /// 403 for another user's file), at most `files.max_attachments`, each once.
    async fn attachments_of(
        &self,
        who: &Principal,
        ids: &[String],
    ) -> Result<Vec<StoredAttachment>, ChatError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let not_found = |id: &str| {
            ChatError::NotFound(format!("File not found: {}", validate::excerpt(id, 64)))
        };
        let Ok(files) = self.files() else {
            return Err(not_found(&ids[0]));
        };
        let max = files.settings().max_attachments;
        if ids.len() > max {
            return Err(ChatError::invalid(
                "data.attachments",
                format!("At most {max} attachments per message"),
            ));
        }
        let rows = storage::get_files(&self.db, ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if out.iter().any(|a: &StoredAttachment| a.id == *id) {
                return Err(ChatError::invalid(
                    "data.attachments",
                    "The same file is attached twice",
                ));
            }
            let row = rows
                .iter()
                .find(|r| r.id == *id)
                .ok_or_else(|| not_found(id))?;
            if row.owner_id != who.user_id {
                return Err(ChatError::Forbidden(format!(
                    "Access denied to file {}",
                    validate::excerpt(id, 64)
                )));
            }
            out.push(StoredAttachment::of(row));
        }
        Ok(out)
    }

    /// A resend of a stored message: acked again with the original id and `seq`, nothing else.
    /// The original's chat may be another than the resend names, and the sender may have lost
    /// access since, so access is checked again before the connection joins it: a removed
    /// member gets 403, not the room's live events.
    async fn acknowledge_duplicate(
        &self,
        who: &Principal,
        prior: &MessageRow,
        client_id: &ClientMessageId,
        conn: Option<&Conn>,
    ) -> Result<Ack, ChatError> {
        let chat = self.chat_named(who, &prior.chat_id, "data.chatId").await?;
        let ack = Ack::of(prior, client_id.as_str(), true);
        if let Some(conn) = conn {
            self.rooms.join(&chat.id, &conn.id);
            conn.push(Outgoing::now(Event::Ack(ack.clone())));
        }
        Ok(ack)
    }

    /// A page of history, oldest first.
    pub async fn history(
        &self,
        who: &Principal,
        query: &HistoryQuery,
    ) -> Result<History, ChatError> {
        let chat = self.chat_named(who, &query.chat_id, "data.chatId").await?;
        let before = validate::cursor(query.before.as_deref())?;
        let limit = validate::page_limit(query.limit)?;
        self.limits.check(Rate::History, &who.user_id).await?;
        self.history_of(&chat.id, before, limit).await
    }

    pub(super) async fn history_of(
        &self,
        chat_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<History, ChatError> {
        let (rows, has_more) = storage::history(&self.db, chat_id, before, limit).await?;
        let last_seq = storage::last_seq(&self.db, chat_id).await?;
        Ok(History {
            chat_id: chat_id.to_string(),
            cursor: rows.first().map(|r| r.seq.to_string()).unwrap_or_default(),
            messages: rows
                .iter()
                .map(super::event::ChatMessage::from_row)
                .collect(),
            has_more,
            last_seq,
            reset: false,
        })
    }

    /// Stops the reply being generated in a chat; its partial text is kept as `stopped`.
    pub async fn stop(&self, who: &Principal, chat_id: &str) -> Result<(), ChatError> {
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        if let Some(reply) = self.active_reply(&chat.id) {
            reply.cancel.cancel();
        }
        Ok(())
    }

    /// Stores which messages the caller has read and tells the chat (a durable event). 404
    /// when none of the ids is a message of the chat.
    pub async fn read_receipt(
        &self,
        who: &Principal,
        chat_id: &str,
        message_ids: &[String],
    ) -> Result<(), ChatError> {
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        if message_ids.is_empty() || message_ids.len() > MAX_RECEIPT_IDS {
            return Err(ChatError::invalid(
                "data.messageIds",
                format!("data.messageIds must have 1 to {MAX_RECEIPT_IDS} entries"),
            ));
        }
        for id in message_ids {
            ChatId::parse(id, "data.messageIds")?;
        }
        self.limits.check(Rate::ReadReceipt, &who.user_id).await?;
        let confirmed =
            storage::record_receipts(&self.db, &chat.id, &who.user_id, message_ids, self.now())
                .await?;
        if confirmed.is_empty() {
            return Err(ChatError::NotFound("No such message in this chat".into()));
        }
        let receipts = Receipts {
            chat_id: chat.id.clone(),
            message_ids: confirmed,
            user_id: who.user_id.clone(),
        };
        self.publish(&chat.id, Durable::ReadReceipt(receipts))
            .await
            .map(|_| ())
    }
}
