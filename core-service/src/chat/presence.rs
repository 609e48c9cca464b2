//! Who is there and who is typing: typing indicators and presence. Neither is durable: both
//! reach only the connections joined at that moment.

use chat_auth::Principal;

use super::engine::Engine;
use super::error::ChatError;
use super::event::{Event, Outgoing, Typing};
use super::limits::Rate;
use super::rooms::Conn;
use crate::storage;
use crate::types::Presence;

impl Engine {
    /// Tells the chat's other joined connections that the caller is (not) typing.
    pub async fn typing(
        &self,
        who: &Principal,
        chat_id: &str,
        is_typing: bool,
        conn: &Conn,
    ) -> Result<(), ChatError> {
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        self.limits.check(Rate::Typing, &who.user_id).await?;
        let typing = Outgoing::now(Event::Typing(Typing {
            chat_id: chat.id.clone(),
            user_id: who.user_id.clone(),
            agent_id: None,
            is_typing,
        }));
        self.rooms.broadcast(&chat.id, typing, Some(&conn.id));
        Ok(())
    }

    /// Sets the caller's presence (`online` or `away`) and tells every chat they are in.
    pub async fn set_presence(
        &self,
        who: &Principal,
        status: Presence,
        conn: &Conn,
    ) -> Result<(), ChatError> {
        if status == Presence::Offline {
            return Err(ChatError::invalid(
                "data.status",
                "data.status must be \"online\" or \"away\"",
            ));
        }
        storage::upsert_user(&self.db, &who.user_id, &who.name, self.now()).await?;
        self.broadcast_presence(&who.user_id, status, Some(&conn.id));
        Ok(())
    }
}
