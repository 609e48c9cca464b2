//! The life of a session: it ends when its owner (or an admin) ends it, when it has been idle
//! longer than `chat.session_idle_timeout_secs`, or, with `chat.single_active_session`, when
//! its owner starts another; a message to an ended session continues it. Every end stores the
//! end time and duration, tells the members (`chat_update {status}`), the operators' feed and
//! the audit trail.

use chrono::NaiveDateTime;

use super::engine::{Engine, new_id};
use super::error::ChatError;
use super::event::ChatChanges;
use super::watch::ChangeKind;
use crate::storage::{self, ChatRow};
use crate::types::ChatStatus;

/// The actor of what the core does by itself (idle timeout, single active session).
pub const SYSTEM: (&str, &str) = ("system", "System");

/// Most idle sessions ended per housekeeping round (the rest wait for the next round).
const IDLE_BATCH: i64 = 200;

impl Engine {
    /// Ends a session. `actor` is (id, name) of who ended it, for the audit trail.
    pub(super) async fn end_session(
        &self,
        chat: &ChatRow,
        actor: (&str, &str),
    ) -> Result<(), ChatError> {
        storage::end_chat(&self.db, &chat.id, self.now()).await?;
        self.audit(&chat.id, "ended", actor).await;
        let changes = ChatChanges {
            status: Some(ChatStatus::Ended),
            ..ChatChanges::default()
        };
        self.publish_change(&chat.id, changes.clone()).await?;
        self.session_changed(chat, ChangeKind::Ended, changes, None);
        tracing::info!(chat = %chat.id, by = actor.0, "session ended");
        Ok(())
    }

    /// Ends every session idle since before `now - timeout` (none while a reply runs or an
    /// operator holds it). Returns how many ended.
    pub async fn end_idle_sessions(&self) -> Result<usize, ChatError> {
        let timeout = self.settings.session_idle_timeout_secs;
        if timeout == 0 {
            return Ok(0);
        }
        let timeout = i64::try_from(timeout).unwrap_or(i64::MAX);
        let before: NaiveDateTime = self.now() - chrono::Duration::seconds(timeout);
        let mut ended = 0;
        for chat in storage::idle_chats(&self.db, before, IDLE_BATCH).await? {
            if self.active_reply(&chat.id).is_some() || self.held(&chat) {
                continue;
            }
            self.end_session(&chat, SYSTEM).await?;
            ended += 1;
        }
        Ok(ended)
    }

    /// After `chat` was started or continued: with one active session per user, ends its
    /// owner's other active sessions.
    pub(super) async fn end_other_sessions(&self, chat: &ChatRow) -> Result<(), ChatError> {
        if !self.settings.single_active_session {
            return Ok(());
        }
        for other in storage::other_active_chats(&self.db, &chat.owner_id, &chat.id).await? {
            self.end_session(&other, SYSTEM).await?;
        }
        Ok(())
    }

    /// A message to an ended session continues it: active again, members told.
    pub(super) async fn continue_session(&self, chat: &mut ChatRow) -> Result<(), ChatError> {
        if chat.status != ChatStatus::Ended.as_str()
            || !storage::reopen_chat(&self.db, &chat.id).await?
        {
            return Ok(());
        }
        chat.status = ChatStatus::Active.as_str().to_string();
        chat.ended_at = None;
        let changes = ChatChanges {
            status: Some(ChatStatus::Active),
            ..ChatChanges::default()
        };
        self.publish_change(&chat.id, changes.clone()).await?;
        self.session_changed(chat, ChangeKind::Updated, changes, None);
        self.end_other_sessions(chat).await
    }

    /// Appends to a session's audit trail. A failure is logged: the action itself happened.
    pub(super) async fn audit(&self, chat_id: &str, action: &str, actor: (&str, &str)) {
        let id = new_id();
        if let Err(err) =
            storage::record_audit(&self.db, &id, chat_id, action, actor, self.now()).await
        {
            tracing::warn!(chat = %chat_id, action, error = %err, "audit entry not stored");
        }
    }
}
