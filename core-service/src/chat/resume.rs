//! Resume after a reconnect: re-join the client's chats and replay what it missed, exactly
//! once: durable events after its `lastSeq` in order, then the chunks of a reply still
//! streaming after its `lastIndex`, then live events. A gap too large to replay is answered
//! with the latest history marked `reset`.

use chat_auth::Principal;
use chat_proto::limits::MAX_RESUME_CHATS as MAX_CHATS;

use super::command::ResumeChat;
use super::engine::Engine;
use super::error::ChatError;
use super::event::{Chunk, Event, Outgoing};
use super::limits::Rate;
use super::rooms::Conn;
use crate::storage::{self, Durable};

/// The most durable events replayed by one `resume` per chat before answering with a reset.
const MAX_REPLAY: i64 = 1000;

impl Engine {
    pub async fn resume(
        &self,
        who: &Principal,
        chats: &[ResumeChat],
        conn: &Conn,
    ) -> Result<(), ChatError> {
        if chats.len() > MAX_CHATS {
            return Err(ChatError::invalid(
                "data.chats",
                format!("data.chats must have at most {MAX_CHATS} entries"),
            ));
        }
        // At most MAX_CHATS (50), so the count fits.
        self.limits
            .check_n(Rate::Resume, &who.user_id, chats.len() as u32)?;
        for want in chats {
            let chat = self
                .chat_named(who, &want.chat_id, "data.chats.chatId")
                .await?;
            let _order = self.seq.lock(&chat.id).await;
            let last = storage::last_seq(&self.db, &chat.id).await?;
            let missed = if want.last_seq < 0 || want.last_seq > last {
                None
            } else {
                let events =
                    storage::events_after(&self.db, &chat.id, want.last_seq, MAX_REPLAY + 1)
                        .await?;
                (events.len() as i64 <= MAX_REPLAY).then_some(events)
            };
            match missed {
                Some(events) => {
                    for durable in events {
                        let replayed = match &durable {
                            Durable::Message(row) => Some(Outgoing::message(row)),
                            Durable::Event(row) => Outgoing::replay(row),
                        };
                        if let Some(ev) = replayed {
                            conn.push(ev);
                        }
                    }
                }
                None => {
                    let mut history = self
                        .history_of(&chat.id, None, super::validate::DEFAULT_PAGE)
                        .await?;
                    history.reset = true;
                    conn.push(Outgoing::now(Event::History(history)));
                }
            }
            // Chunks and the room join under the reply's chunk lock: the turn pushes and
            // broadcasts each chunk under the same lock, so none is missed or sent twice.
            match self.active_reply(&chat.id) {
                Some(reply) => {
                    let chunks = reply.chunks.lock().unwrap_or_else(|p| p.into_inner());
                    let from = match &want.streaming {
                        Some((message_id, last_index)) if *message_id == reply.message_id => {
                            last_index
                                .checked_add(1)
                                .and_then(|i| usize::try_from(i).ok())
                                .unwrap_or(0)
                        }
                        _ => 0,
                    };
                    for (index, delta) in chunks.iter().enumerate().skip(from) {
                        conn.push(Outgoing::now(Event::MessageChunk(Chunk {
                            chat_id: chat.id.clone(),
                            message_id: reply.message_id.clone(),
                            index: index as i64,
                            delta: delta.clone(),
                        })));
                    }
                    self.rooms.join(&chat.id, &conn.id);
                }
                None => {
                    self.rooms.join(&chat.id, &conn.id);
                }
            }
        }
        Ok(())
    }
}
