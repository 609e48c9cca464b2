//! One `Connect` stream: the [`Handler`] owns the connection's identity and outbox, reads
//! client events one at a time, and answers through the outbox. Live events of joined chats
//! reach the same outbox through [`Rooms`](super::rooms::Rooms).
//!
//! The loop ends when the client's stream ends (the peer left), when the connection is
//! cancelled (too slow, shutting down) or when its token expires without an in-band refresh.
//! Ending unregisters the connection, which drops every sender of the outbox and so ends the
//! response stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_auth::Principal;
use chat_proto::pb::chat as pb;
use futures::{Stream, StreamExt};
use pb::client_event::Event as In;
use pb::server_event::Event as Out;
use prost::Message as _;

use super::rooms::Conn;
use super::validate::{ChatId, MAX_ID_CHARS};
use super::{Engine, event, message_event, now, with_seq};
use crate::error::ChatError;
use crate::storage::{self, Durable};

/// The most durable events replayed by one `resume` per chat before answering with a reset.
const MAX_REPLAY: i64 = 1000;

pub struct Handler {
    engine: Arc<Engine>,
    who: Principal,
    conn: Conn,
    /// Chats this (operator) connection holds; their leases are renewed while it lives.
    held: HashSet<String>,
}

impl Handler {
    pub fn new(engine: Arc<Engine>, who: Principal, conn: Conn) -> Self {
        Self {
            engine,
            who,
            conn,
            held: HashSet::new(),
        }
    }

    /// Runs until the peer leaves, the connection is cancelled or its token expires.
    pub async fn run<S>(mut self, mut inbound: S)
    where
        S: Stream<Item = Result<pb::ClientEvent, tonic::Status>> + Unpin + Send,
    {
        let users_connections = self.engine.rooms.register(self.conn.clone());
        if users_connections > self.engine.settings.max_connections_per_user {
            self.conn.push(event(Out::Error(pb::Error {
                code: 429,
                message: "Too many connections for this user".into(),
                retryable: true,
                close_code: Some(1013),
                ..Default::default()
            })));
            self.engine.rooms.unregister(&self.conn.id);
            return;
        }
        match self.engine.session_event(&self.who, &self.conn.id).await {
            Ok(session) => {
                self.conn.push(session);
            }
            Err(err) => {
                self.conn.push(err.into_event(None));
                self.engine.rooms.unregister(&self.conn.id);
                return;
            }
        }
        if users_connections == 1 {
            let _ = storage::set_online(&self.engine.db, &self.who.user_id, true, now()).await;
        }
        // Renew held leases well before they run out.
        let renew_every = Duration::from_secs(self.engine.settings.operator_lease_secs)
            .max(Duration::from_secs(1))
            / 3;
        let mut renew = tokio::time::interval(renew_every);
        loop {
            let expires_in = token_remaining(self.who.expires_at);
            tokio::select! {
                () = self.conn.kill.cancelled() => break,
                _ = renew.tick(), if !self.held.is_empty() => {
                    let held: Vec<String> = self.held.iter().cloned().collect();
                    for lost in self.engine.renew_operator(&self.who, &held).await {
                        self.held.remove(&lost);
                    }
                }
                () = tokio::time::sleep(expires_in) => {
                    let mut err = ChatError::Unauthenticated.into_event(None);
                    if let Some(Out::Error(e)) = err.event.as_mut() {
                        e.message = "Token expired".into();
                    }
                    self.conn.push(err);
                    break;
                }
                frame = inbound.next() => match frame {
                    Some(Ok(ev)) => {
                        if !self.dispatch(ev).await {
                            break;
                        }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(status = %status.code(), "client stream failed");
                        break;
                    }
                    None => break,
                },
            }
        }
        self.finish().await;
    }

    /// Handles one client event. Returns false when the connection must end.
    async fn dispatch(&mut self, ev: pb::ClientEvent) -> bool {
        // The id an error answers: the frame's, or the message's own; an invalid one is not
        // echoed back.
        let echoable = |id: &str| {
            Some(id.to_string()).filter(|m| !m.is_empty() && m.chars().count() <= MAX_ID_CHARS)
        };
        let mut frame_id = echoable(&ev.message_id);
        let result = match ev.event {
            Some(In::Message(mut msg)) => {
                if msg.message_id.is_empty() {
                    msg.message_id = ev.message_id.clone();
                }
                frame_id = echoable(&msg.message_id);
                self.engine
                    .send_message(&self.who, msg, Some(&self.conn))
                    .await
                    .map(|_| ())
            }
            Some(In::Ping(ping)) => {
                self.conn.push(event(Out::Pong(pb::Pong {
                    timestamp: ping.timestamp,
                })));
                Ok(())
            }
            Some(In::History(req)) => self
                .engine
                .history(&self.who, &req.chat_id, req.before.as_deref(), req.limit)
                .await
                .map(|h| {
                    self.conn.push(event(Out::History(h)));
                }),
            Some(In::Stop(req)) => self.engine.stop(&self.who, &req.chat_id).await,
            Some(In::ChatUpdate(update)) => self.chat_update(update).await,
            Some(In::Typing(t)) => self.typing(t).await,
            Some(In::ReadReceipt(r)) => self.read_receipt(r).await,
            Some(In::Presence(p)) => self.presence(p).await,
            Some(In::Resume(r)) => self.resume(r).await,
            Some(In::Auth(auth)) => return self.reauthenticate(&auth.token, frame_id).await,
            Some(In::HelpRequest(h)) => {
                self.engine
                    .help_request(&self.who, &h.chat_id, h.reason.as_deref())
                    .await
            }
            Some(In::Takeover(t)) => match self
                .engine
                .takeover(&self.who, &t.chat_id, &self.conn)
                .await
            {
                Ok(()) => {
                    self.held.insert(t.chat_id.trim().to_string());
                    Ok(())
                }
                Err(err) => Err(err),
            },
            Some(In::Release(r)) => {
                let result = self.engine.release(&self.who, &r.chat_id).await;
                self.held.remove(r.chat_id.trim());
                result
            }
            None => Err(ChatError::Invalid {
                message: "Unknown message type".into(),
                field: Some("type"),
            }),
        };
        if let Err(err) = result {
            self.conn.push(err.into_event(frame_id));
        }
        true
    }

    async fn chat_update(&mut self, u: pb::ChatUpdate) -> Result<(), ChatError> {
        use pb::ChatAction as A;
        let action = A::try_from(u.action).unwrap_or(A::Unspecified);
        let engine = &self.engine;
        match action {
            A::Join => engine.join(&self.who, &u.chat_id, &self.conn).await,
            A::Leave => {
                let chat = ChatId::parse(&u.chat_id, "data.chatId")?;
                engine.rooms.leave(chat.as_str(), &self.conn.id);
                Ok(())
            }
            A::Create => {
                let title = u
                    .title
                    .as_deref()
                    .map(super::validate::chat_title)
                    .transpose()?;
                let chat = engine
                    .create_chat(
                        &self.who,
                        title,
                        u.agent_id.as_deref().filter(|a| !a.is_empty()),
                        u.model.as_deref().filter(|m| !m.is_empty()),
                    )
                    .await?;
                engine.rooms.join(&chat.id, &self.conn.id);
                self.conn.push(event(Out::ChatUpdate(pb::ChatUpdated {
                    chat_id: chat.id.clone(),
                    updates: Some(pb::ChatChanges {
                        title: Some(chat.title.clone()),
                        message_count: Some(0),
                        model: Some(chat.model.clone()),
                        status: Some(chat.status.clone()),
                        ..Default::default()
                    }),
                })));
                Ok(())
            }
            A::Rename => {
                let chat = engine
                    .chat_for(&self.who, &ChatId::parse(&u.chat_id, "data.chatId")?)
                    .await?;
                let title = super::validate::chat_title(u.title.as_deref().unwrap_or_default())?;
                storage::set_title(&engine.db, &chat.id, &title).await?;
                engine
                    .publish_change(
                        &chat.id,
                        pb::ChatChanges {
                            title: Some(title),
                            ..Default::default()
                        },
                    )
                    .await
            }
            A::SelectModel => {
                let chat = engine
                    .chat_for(&self.who, &ChatId::parse(&u.chat_id, "data.chatId")?)
                    .await?;
                let model = u.model.as_deref().unwrap_or_default().trim().to_string();
                if engine.llm.model(&model).is_none() {
                    return Err(ChatError::invalid("data.model", "Unknown model"));
                }
                storage::set_model(&engine.db, &chat.id, &model).await?;
                engine
                    .publish_change(
                        &chat.id,
                        pb::ChatChanges {
                            model: Some(model),
                            ..Default::default()
                        },
                    )
                    .await
            }
            A::End => {
                let chat = engine
                    .chat_for(&self.who, &ChatId::parse(&u.chat_id, "data.chatId")?)
                    .await?;
                if chat.owner_id != self.who.user_id && !self.who.is_admin() {
                    return Err(ChatError::Forbidden(
                        "Only the owner or an admin can end a chat".into(),
                    ));
                }
                if chat.status == "ended" {
                    return Err(ChatError::Conflict("Chat already ended".into()));
                }
                storage::end_chat(&engine.db, &chat.id, now()).await?;
                engine
                    .publish_change(
                        &chat.id,
                        pb::ChatChanges {
                            status: Some("ended".into()),
                            ..Default::default()
                        },
                    )
                    .await
            }
            A::AddMember | A::RemoveMember => {
                let chat = engine
                    .chat_for(&self.who, &ChatId::parse(&u.chat_id, "data.chatId")?)
                    .await?;
                if chat.owner_id != self.who.user_id && !self.who.is_admin() {
                    return Err(ChatError::Forbidden(
                        "Only the owner or an admin can change members".into(),
                    ));
                }
                let user = ChatId::parse(u.user_id.as_deref().unwrap_or_default(), "data.userId")?;
                if action == A::AddMember {
                    if !storage::add_member(&engine.db, &chat.id, user.as_str(), now()).await? {
                        return Err(ChatError::Conflict("Already a member".into()));
                    }
                } else {
                    if user.as_str() == chat.owner_id {
                        return Err(ChatError::invalid(
                            "data.userId",
                            "The owner cannot be removed",
                        ));
                    }
                    if !storage::remove_member(&engine.db, &chat.id, user.as_str()).await? {
                        return Err(ChatError::NotFound("Not a member".into()));
                    }
                    for conn in engine.rooms.joined_conns(&chat.id) {
                        if &*conn.user_id == user.as_str() {
                            engine.rooms.leave(&chat.id, &conn.id);
                        }
                    }
                }
                Ok(())
            }
            A::Unspecified => Err(ChatError::invalid("data.action", "Unknown action")),
        }
    }

    async fn typing(&mut self, t: pb::TypingUpdate) -> Result<(), ChatError> {
        let chat = self
            .engine
            .chat_for(&self.who, &ChatId::parse(&t.chat_id, "data.chatId")?)
            .await?;
        self.engine.limits.check_typing(&self.who.user_id)?;
        let ev = event(Out::Typing(pb::TypingEvent {
            chat_id: chat.id.clone(),
            user_id: self.who.user_id.clone(),
            agent_id: None,
            is_typing: t.is_typing,
        }));
        self.engine
            .rooms
            .broadcast(&chat.id, &ev, Some(&self.conn.id));
        Ok(())
    }

    async fn read_receipt(&mut self, r: pb::ReadReceipt) -> Result<(), ChatError> {
        let chat = self
            .engine
            .chat_for(&self.who, &ChatId::parse(&r.chat_id, "data.chatId")?)
            .await?;
        if r.message_ids.is_empty() || r.message_ids.len() > 100 {
            return Err(ChatError::invalid(
                "data.messageIds",
                "data.messageIds must have 1 to 100 entries",
            ));
        }
        for id in &r.message_ids {
            ChatId::parse(id, "data.messageIds")?;
        }
        let confirmed = storage::record_receipts(
            &self.engine.db,
            &chat.id,
            &self.who.user_id,
            &r.message_ids,
            now(),
        )
        .await?;
        if confirmed.is_empty() {
            return Err(ChatError::NotFound("No such message in this chat".into()));
        }
        let ev = Out::ReadReceipt(pb::ReadReceiptEvent {
            chat_id: chat.id.clone(),
            message_ids: confirmed,
            user_id: self.who.user_id.clone(),
            confirmed: true,
        });
        self.engine
            .publish(&chat.id, "read_receipt", ev)
            .await
            .map(|_| ())
    }

    async fn presence(&mut self, p: pb::PresenceUpdate) -> Result<(), ChatError> {
        let status =
            pb::PresenceStatus::try_from(p.status).unwrap_or(pb::PresenceStatus::Unspecified);
        if !matches!(
            status,
            pb::PresenceStatus::Online | pb::PresenceStatus::Away
        ) {
            return Err(ChatError::invalid(
                "data.status",
                "data.status must be \"online\" or \"away\"",
            ));
        }
        storage::upsert_user(&self.engine.db, &self.who.user_id, &self.who.name, now()).await?;
        self.engine
            .broadcast_presence(&self.who.user_id, status, Some(&self.conn.id));
        Ok(())
    }

    /// Re-joins chats after a reconnect and replays what the client missed, exactly once:
    /// durable events after `lastSeq` in order, then the chunks of a reply still streaming
    /// after `lastIndex`, then live events.
    async fn resume(&mut self, r: pb::Resume) -> Result<(), ChatError> {
        if r.chats.len() > 50 {
            return Err(ChatError::invalid(
                "data.chats",
                "data.chats must have at most 50 entries",
            ));
        }
        for want in r.chats {
            let chat = self
                .engine
                .chat_for(
                    &self.who,
                    &ChatId::parse(&want.chat_id, "data.chats.chatId")?,
                )
                .await?;
            let _order = self.engine.seq.lock(&chat.id).await;
            let last = storage::last_seq(&self.engine.db, &chat.id).await?;
            let missed = if want.last_seq < 0 || want.last_seq > last {
                None
            } else {
                let events =
                    storage::events_after(&self.engine.db, &chat.id, want.last_seq, MAX_REPLAY + 1)
                        .await?;
                (events.len() as i64 <= MAX_REPLAY).then_some(events)
            };
            match missed {
                Some(events) => {
                    for durable in events {
                        if let Some(ev) = replay_event(durable) {
                            self.conn.push(ev);
                        }
                    }
                }
                None => {
                    let mut history = self.engine.history(&self.who, &chat.id, None, None).await?;
                    history.reset = true;
                    self.conn.push(event(Out::History(history)));
                }
            }
            // Chunks and the room join under the reply's chunk lock: the turn pushes and
            // broadcasts each chunk under the same lock, so none is missed or sent twice.
            let active = self
                .engine
                .replies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&chat.id)
                .cloned();
            match active {
                Some(reply) => {
                    let chunks = reply.chunks.lock().unwrap_or_else(|p| p.into_inner());
                    let from = match &want.streaming {
                        Some(s) if s.message_id == reply.message_id => {
                            usize::try_from(s.last_index + 1).unwrap_or(0)
                        }
                        _ => 0,
                    };
                    for (index, delta) in chunks.iter().enumerate().skip(from) {
                        self.conn.push(event(Out::MessageChunk(pb::MessageChunk {
                            chat_id: chat.id.clone(),
                            message_id: reply.message_id.clone(),
                            index: index as i64,
                            delta: delta.clone(),
                        })));
                    }
                    self.engine.rooms.join(&chat.id, &self.conn.id);
                }
                None => {
                    self.engine.rooms.join(&chat.id, &self.conn.id);
                }
            }
        }
        Ok(())
    }

    /// In-band token refresh. A bad token, or one for another user, ends the connection.
    async fn reauthenticate(&mut self, token: &str, frame_id: Option<String>) -> bool {
        match self.engine.verifier.verify(token) {
            Ok(who) if who.user_id == self.who.user_id => {
                self.who = who;
                match self.engine.session_event(&self.who, &self.conn.id).await {
                    Ok(session) => {
                        self.conn.push(session);
                    }
                    Err(err) => {
                        self.conn.push(err.into_event(frame_id));
                    }
                }
                true
            }
            _ => {
                self.conn
                    .push(ChatError::Unauthenticated.into_event(frame_id));
                false
            }
        }
    }

    async fn finish(self) {
        let (chats, left) = self.engine.rooms.unregister(&self.conn.id);
        if left == 0 {
            let _ = storage::set_online(&self.engine.db, &self.who.user_id, false, now()).await;
            self.engine.broadcast_presence_to_chats(
                &self.who.user_id,
                pb::PresenceStatus::Offline,
                &chats,
            );
        }
        tracing::debug!(conn = %self.conn.id, "connection closed");
    }
}

/// A stored durable event as the frame a live client saw.
fn replay_event(durable: Durable) -> Option<pb::ServerEvent> {
    match durable {
        Durable::Message(row) => Some(message_event(&row)),
        Durable::Event(row) => pb::ServerEvent::decode(row.payload.as_slice())
            .ok()
            .map(|ev| with_seq(ev, row.seq)),
    }
}

/// Time until a token's `exp` (zero when passed).
fn token_remaining(expires_at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Duration::from_secs(expires_at.saturating_sub(now))
}
