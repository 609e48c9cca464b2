//! Chats and their members: creating, joining and leaving, renaming, choosing the model,
//! ending, adding and removing members, and the caller's list of sessions. Every change a
//! member must see is a durable `chat_update`.

use chat_auth::Principal;

use super::command::ChatAction;
use super::engine::{Engine, new_id};
use super::error::ChatError;
use super::event::{
    ChatChanges, ChatUpdate, Durable, Event, Outgoing, PresenceChange, SessionSummary,
};
use super::limits::Rate;
use super::rooms::Conn;
use super::validate::{self, ChatId};
use super::watch::ChangeKind;
use crate::storage::{self, ChatRow};
use crate::types::{ChatStatus, Presence};

/// Messages a `join` answers with.
const JOIN_HISTORY: i64 = 50;

impl Engine {
    /// Performs one `chat_update` action for the connection `conn`.
    pub async fn chat_action(
        &self,
        who: &Principal,
        action: ChatAction,
        conn: &Conn,
    ) -> Result<(), ChatError> {
        match action {
            ChatAction::Join { chat_id } => self.join(who, &chat_id, conn).await,
            ChatAction::JoinKeyed { key } => {
                let key = ChatId::parse(&key, "data.connectionId")?;
                let chat = self
                    .chat_of_key(who, &key)
                    .await?
                    .ok_or_else(ChatError::no_chat)?;
                self.join(who, &chat.id, conn).await
            }
            ChatAction::Leave { chat_id } => {
                // Checked like every other id, so a probe cannot tell chats that exist from
                // chats that do not by a silent success.
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                self.rooms.leave(&chat.id, &conn.id);
                Ok(())
            }
            ChatAction::Create {
                title,
                agent_id,
                model,
                spoken_replies,
            } => {
                let title = title.as_deref().map(validate::chat_title).transpose()?;
                if spoken_replies == Some(true) {
                    self.check_voice_enabled()?;
                }
                let chat = self
                    .create_chat(
                        who,
                        title,
                        agent_id.as_deref().filter(|a| !a.is_empty()),
                        model.as_deref().filter(|m| !m.is_empty()),
                        None,
                    )
                    .await?;
                let mut changes = ChatChanges::of(&chat);
                if let Some(spoken) = spoken_replies {
                    storage::set_spoken_replies(&self.db, &chat.id, spoken).await?;
                    changes.spoken_replies = Some(spoken);
                }
                self.rooms.join(&chat.id, &conn.id);
                conn.push(Outgoing::now(Event::ChatUpdate(ChatUpdate {
                    chat_id: chat.id.clone(),
                    changes,
                })));
                Ok(())
            }
            ChatAction::SetSpokenReplies { chat_id, spoken } => {
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                if spoken {
                    self.check_voice_enabled()?;
                }
                storage::set_spoken_replies(&self.db, &chat.id, spoken).await?;
                let changes = ChatChanges {
                    spoken_replies: Some(spoken),
                    ..ChatChanges::default()
                };
                self.announce_change(&chat, ChangeKind::Updated, changes)
                    .await
            }
            ChatAction::Rename { chat_id, title } => {
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                let title = validate::chat_title(&title)?;
                storage::set_title(&self.db, &chat.id, &title).await?;
                let changes = ChatChanges {
                    title: Some(title),
                    ..ChatChanges::default()
                };
                self.announce_change(&chat, ChangeKind::Updated, changes)
                    .await
            }
            ChatAction::SelectModel { chat_id, model } => {
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                let model = model.trim();
                if self.llm.model(model).is_none() {
                    return Err(ChatError::invalid("data.model", "Unknown model"));
                }
                storage::set_model(&self.db, &chat.id, model).await?;
                let changes = ChatChanges {
                    model: Some(model.to_string()),
                    ..ChatChanges::default()
                };
                self.announce_change(&chat, ChangeKind::Updated, changes)
                    .await
            }
            ChatAction::End { chat_id } => {
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                require_owner(who, &chat, "Only the owner or an admin can end a chat")?;
                if chat.status == ChatStatus::Ended.as_str() {
                    return Err(ChatError::Conflict("Chat already ended".into()));
                }
                self.end_session(&chat, (&who.user_id, &who.name)).await
            }
            ChatAction::AddMember { chat_id, user_id } => {
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                require_owner(who, &chat, "Only the owner or an admin can change members")?;
                let user = ChatId::parse(&user_id, "data.userId")?;
                if !storage::add_member(&self.db, &chat.id, user.as_str(), self.now()).await? {
                    return Err(ChatError::Conflict("Already a member".into()));
                }
                Ok(())
            }
            ChatAction::RemoveMember { chat_id, user_id } => {
                let chat = self.chat_named(who, &chat_id, "data.chatId").await?;
                require_owner(who, &chat, "Only the owner or an admin can change members")?;
                let user = ChatId::parse(&user_id, "data.userId")?;
                if user.as_str() == chat.owner_id {
                    return Err(ChatError::invalid(
                        "data.userId",
                        "The owner cannot be removed",
                    ));
                }
                if !storage::remove_member(&self.db, &chat.id, user.as_str()).await? {
                    return Err(ChatError::NotFound("Not a member".into()));
                }
                for joined in self.rooms.joined_conns(&chat.id) {
                    if &*joined.user_id == user.as_str() {
                        self.rooms.leave(&chat.id, &joined.id);
                    }
                }
                Ok(())
            }
        }
    }

    /// 400 unless this server speaks (`[llm.voice]`).
    fn check_voice_enabled(&self) -> Result<(), ChatError> {
        match self.llm.voice() {
            Some(_) => Ok(()),
            None => Err(ChatError::invalid(
                "data.spokenReplies",
                "Spoken replies are not enabled on this server (llm.voice)",
            )),
        }
    }

    /// Creates an empty chat owned by `who`, with the agent's (or the default) model unless
    /// one is named. 400 for an unknown agent or model.
    pub(super) async fn create_chat(
        &self,
        who: &Principal,
        title: Option<String>,
        agent_id: Option<&str>,
        model: Option<&str>,
        client_key: Option<&str>,
    ) -> Result<ChatRow, ChatError> {
        self.limits.check(Rate::NewChat, &who.user_id).await?;
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
        storage::upsert_user(&self.db, &who.user_id, &who.name, self.now()).await?;
        let id = new_id();
        let title = title.unwrap_or_else(|| "New chat".to_string());
        let chat = storage::create_chat(
            &self.db,
            storage::NewChat {
                id: &id,
                owner_id: &who.user_id,
                title: &title,
                agent_id,
                model: &model,
                client_key,
                now: self.now(),
            },
        )
        .await?;
        self.session_changed(&chat, ChangeKind::Created, ChatChanges::of(&chat), None);
        self.end_other_sessions(&chat).await?;
        Ok(chat)
    }

    /// The chat a key (seed 003's `connectionId`) names for `who`: their own chat of that key,
    /// else the chat with that id when they may use it (a member's view of a shared chat).
    /// `None` when neither exists; 403 for a chat id they may not use.
    pub(super) async fn chat_of_key(
        &self,
        who: &Principal,
        key: &ChatId,
    ) -> Result<Option<ChatRow>, ChatError> {
        if let Some(chat) = storage::find_keyed_chat(&self.db, &who.user_id, key.as_str()).await? {
            return Ok(Some(chat));
        }
        match self.chat_for(who, key).await {
            Ok(chat) => Ok(Some(chat)),
            Err(ChatError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Subscribes a connection to a chat and sends it the latest history, atomically with
    /// respect to new events: everything after the history's `lastSeq` arrives live.
    async fn join(&self, who: &Principal, chat_id: &str, conn: &Conn) -> Result<(), ChatError> {
        self.limits.check(Rate::Join, &who.user_id).await?;
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        let _order = self.seq.lock(&chat.id).await;
        let history = self.history_of(&chat.id, None, JOIN_HISTORY).await?;
        let seen = history.last_seq;
        conn.push(Outgoing::now(Event::History(history)));
        if self.rooms.join_seen(&chat.id, &conn.id, Some(seen)) && self.tells_presence(&chat.id) {
            let online = Outgoing::now(Event::Presence(PresenceChange {
                user_id: who.user_id.clone(),
                status: Presence::Online,
                chat_id: Some(chat.id.clone()),
            }));
            self.rooms.broadcast(&chat.id, online, Some(&conn.id));
        }
        Ok(())
    }

    /// A durable `chat_update` with only the changed fields.
    /// A stored change of a chat, told in the one safe order: the operators' feed first, then
    /// the members (a durable `chat_update`), so nothing a member does in answer can reach the
    /// feed ahead of it (see [`Engine::session_changed`]).
    pub(super) async fn announce_change(
        &self,
        chat: &ChatRow,
        kind: ChangeKind,
        changes: ChatChanges,
    ) -> Result<(), ChatError> {
        self.session_changed(chat, kind, changes.clone(), None);
        self.publish_change(&chat.id, changes).await
    }

    pub(super) async fn publish_change(
        &self,
        chat_id: &str,
        changes: ChatChanges,
    ) -> Result<(), ChatError> {
        let update = ChatUpdate {
            chat_id: chat_id.to_string(),
            changes,
        };
        self.publish(chat_id, Durable::ChatUpdate(update))
            .await
            .map(|_| ())
    }

    /// The caller's chats, newest activity first.
    pub async fn list_sessions(
        &self,
        who: &Principal,
        limit: Option<u32>,
    ) -> Result<Vec<SessionSummary>, ChatError> {
        let limit = validate::page_limit(limit)?;
        let rows = storage::list_user_chats(&self.db, &who.user_id, limit).await?;
        Ok(rows.iter().map(SessionSummary::of).collect())
    }
}

fn require_owner(who: &Principal, chat: &ChatRow, refusal: &str) -> Result<(), ChatError> {
    if chat.owner_id == who.user_id || who.is_admin() {
        Ok(())
    } else {
        Err(ChatError::Forbidden(refusal.into()))
    }
}
