//! The operators' live feed: every change to a session that a monitoring view shows (created,
//! a message stored, help requested or resolved, an operator joining or leaving, ended,
//! renamed or re-modelled) is pushed here by the operation that made it, as it happens, to
//! every `WatchSessions` stream. Not durable: a watcher that connects later reads the list.
//!
//! Ownership: the engine holds the sending half; each watcher holds a bounded receiver. A
//! watcher that falls more than `chat.watch_buffer` changes behind is ended (it re-reads the
//! list and watches again) rather than slowing anyone down.

use chrono::NaiveDateTime;
use tokio::sync::broadcast;

use super::engine::Engine;
use super::event::ChatChanges;
use crate::storage::ChatRow;
use crate::types::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Message,
    NeedsHelp,
    HelpResolved,
    OperatorJoined,
    OperatorLeft,
    Ended,
    /// Title, model or status changed otherwise (e.g. continued after ending).
    Updated,
    /// The session was deleted (retention or an admin), with everything of it.
    Deleted,
}

/// One change to a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionChange {
    pub chat_id: String,
    pub kind: ChangeKind,
    /// The session's owner.
    pub user_id: String,
    pub at: NaiveDateTime,
    pub changes: ChatChanges,
    /// Who wrote the message, for [`ChangeKind::Message`].
    pub role: Option<Role>,
}

impl Engine {
    /// A new watcher of session changes.
    pub fn watch_sessions(&self) -> broadcast::Receiver<SessionChange> {
        self.watch.subscribe()
    }

    /// Pushes a change to every watcher (nobody watching is fine). Callers push right after
    /// the change is stored and before its room event goes out, so anything a member does in
    /// answer to that event reaches the feed after it: the feed's order is the session's order.
    pub(super) fn session_changed(
        &self,
        chat: &ChatRow,
        kind: ChangeKind,
        changes: ChatChanges,
        role: Option<Role>,
    ) {
        let _ = self.watch.send(SessionChange {
            chat_id: chat.id.clone(),
            kind,
            user_id: chat.owner_id.clone(),
            at: self.now(),
            changes,
            role,
        });
    }
}
