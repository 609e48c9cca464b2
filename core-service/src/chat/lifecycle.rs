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
        let changes = ChatChanges {
            status: Some(ChatStatus::Ended),
            ..ChatChanges::default()
        };
        self.announce_change(chat, ChangeKind::Ended, changes)
            .await?;
        self.audit(&chat.id, "ended", actor).await;
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
        self.announce_change(chat, ChangeKind::Updated, changes)
            .await?;
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

#[cfg(test)]
mod tests {
    //! Idle timeout and the single-active-session rule on an engine whose clock follows
    //! tokio's: time is paused and advanced by hand, so no test waits for a timeout.

    use std::sync::Arc;
    use std::time::Duration;

    use chat_auth::Principal;
    use tokio::sync::mpsc;

    use super::*;
    use crate::chat::clock::Clock;
    use crate::chat::command::{ChatAction, SendMessage};
    use crate::chat::event::{Event, Outgoing};
    use crate::chat::rooms::Conn;
    use crate::chat::testing::{self, connect, user};
    use crate::config::ChatSettings;
    use crate::types::Role;

    const MINUTE: Duration = Duration::from_secs(60);

    async fn engine(dir: &tempfile::TempDir, settings: ChatSettings) -> Arc<Engine> {
        Arc::new(
            testing::engine(dir, settings, 0)
                .await
                .with_clock(Clock::following_tokio()),
        )
    }

    /// Sends a message (to a new chat when `chat` is `None`) and waits for the stored reply.
    /// Returns the chat's id and the statuses announced meanwhile.
    async fn turn(
        engine: &Arc<Engine>,
        who: &Principal,
        conn: &Conn,
        rx: &mut mpsc::Receiver<Arc<Outgoing>>,
        chat: Option<&str>,
        id: &str,
    ) -> (String, Vec<(String, ChatStatus)>) {
        let ack = engine
            .send_message(
                who,
                SendMessage {
                    chat_id: chat.map(str::to_string),
                    content: "hello there".into(),
                    client_message_id: id.into(),
                    ..SendMessage::default()
                },
                Some(conn),
            )
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        let mut statuses = Vec::new();
        loop {
            let out = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no reply"))
                .unwrap_or_else(|| panic!("outbox closed"));
            match &out.event {
                Event::Message(m) if m.message.role == Role::Assistant => {
                    return (ack.chat_id, statuses);
                }
                Event::ChatUpdate(update) => statuses.extend(
                    update
                        .changes
                        .status
                        .map(|status| (update.chat_id.clone(), status)),
                ),
                _ => {}
            }
        }
    }

    /// The statuses announced by `chat_update` events queued for a connection, in order.
    fn announced_statuses(rx: &mut mpsc::Receiver<Arc<Outgoing>>) -> Vec<(String, ChatStatus)> {
        let mut statuses = Vec::new();
        while let Ok(out) = rx.try_recv() {
            if let Event::ChatUpdate(update) = &out.event
                && let Some(status) = update.changes.status
            {
                statuses.push((update.chat_id.clone(), status));
            }
        }
        statuses
    }

    async fn chat(engine: &Engine, id: &str) -> ChatRow {
        storage::get_chat(engine.db(), id)
            .await
            .unwrap_or_else(|e| panic!("chat: {e}"))
            .unwrap_or_else(|| panic!("chat {id} stored"))
    }

    /// Moves the engine's clock (tokio's, paused) forward by `by`.
    async fn advance(by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }

    #[tokio::test]
    async fn an_idle_session_ends_after_the_timeout_with_its_end_and_duration_stored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let engine = engine(&dir, ChatSettings::default()).await;
        let alice = user("alice");
        let (_registered, conn, mut rx) = connect(&engine, &alice).await;
        let (chat_id, _) = turn(&engine, &alice, &conn, &mut rx, None, "m1").await;
        let started = chat(&engine, &chat_id).await.started_at;

        // 14 minutes idle: nothing ends.
        advance(14 * MINUTE).await;
        assert_eq!(engine.end_idle_sessions().await.ok(), Some(0));
        // Coming back within the timeout continues the same session and resets its idleness.
        let (again, seen) = turn(&engine, &alice, &conn, &mut rx, Some(&chat_id), "m2").await;
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(again, chat_id, "the same session goes on");
        advance(14 * MINUTE).await;
        assert_eq!(engine.end_idle_sessions().await.ok(), Some(0));
        assert!(announced_statuses(&mut rx).is_empty());

        // 15 minutes and a second after the last activity it ends.
        advance(MINUTE + Duration::from_secs(1)).await;
        assert_eq!(engine.end_idle_sessions().await.ok(), Some(1));
        let ended = chat(&engine, &chat_id).await;
        assert_eq!(ended.status, ChatStatus::Ended.as_str());
        let ended_at = ended.ended_at.unwrap_or_else(|| panic!("end time stored"));
        let expected = chrono::Duration::minutes(29) + chrono::Duration::seconds(1);
        let elapsed = ended_at - started;
        assert!(
            elapsed >= expected && elapsed < expected + chrono::Duration::seconds(5),
            "ended {elapsed} after the start"
        );
        let (_, metrics) = storage::session_of(engine.db(), &chat_id)
            .await
            .unwrap_or_else(|e| panic!("metrics: {e}"))
            .unwrap_or_else(|| panic!("metrics stored"));
        assert_eq!(metrics.duration_ms, elapsed.num_milliseconds());
        assert_eq!(
            announced_statuses(&mut rx),
            vec![(chat_id.clone(), ChatStatus::Ended)],
            "the member was told"
        );
        // Ending is done once.
        advance(20 * MINUTE).await;
        assert_eq!(engine.end_idle_sessions().await.ok(), Some(0));

        // A message to the ended session continues it.
        let (_, seen) = turn(&engine, &alice, &conn, &mut rx, Some(&chat_id), "m3").await;
        assert_eq!(
            chat(&engine, &chat_id).await.status,
            ChatStatus::Active.as_str()
        );
        assert_eq!(seen, vec![(chat_id.clone(), ChatStatus::Active)]);
    }

    #[tokio::test]
    async fn a_timeout_of_zero_never_ends_a_session() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let settings = ChatSettings {
            session_idle_timeout_secs: 0,
            ..ChatSettings::default()
        };
        let engine = engine(&dir, settings).await;
        let bob = user("bob");
        let (_registered, conn, mut rx) = connect(&engine, &bob).await;
        let (chat_id, _) = turn(&engine, &bob, &conn, &mut rx, None, "m1").await;
        advance(24 * 60 * MINUTE).await;
        assert_eq!(engine.end_idle_sessions().await.ok(), Some(0));
        assert_eq!(
            chat(&engine, &chat_id).await.status,
            ChatStatus::Active.as_str()
        );
    }

    #[tokio::test]
    async fn starting_a_session_ends_the_users_previous_one_unless_configured_off() {
        for single in [true, false] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
            let settings = ChatSettings {
                single_active_session: single,
                ..ChatSettings::default()
            };
            let engine = engine(&dir, settings).await;
            let carol = user("carol");
            let (_registered, conn, mut rx) = connect(&engine, &carol).await;
            let (first, _) = turn(&engine, &carol, &conn, &mut rx, None, "m1").await;
            advance(MINUTE).await;
            engine
                .chat_action(
                    &carol,
                    ChatAction::Create {
                        title: Some("second".into()),
                        agent_id: None,
                        model: None,
                        spoken_replies: None,
                    },
                    &conn,
                )
                .await
                .unwrap_or_else(|e| panic!("create: {e}"));
            let first_row = chat(&engine, &first).await;
            if single {
                assert_eq!(first_row.status, ChatStatus::Ended.as_str());
                assert!(first_row.ended_at.is_some());
                let told: Vec<_> = announced_statuses(&mut rx)
                    .into_iter()
                    .filter(|(chat, _)| *chat == first)
                    .collect();
                assert_eq!(told, vec![(first.clone(), ChatStatus::Ended)]);
                // Continuing the first session ends the second in turn.
                turn(&engine, &carol, &conn, &mut rx, Some(&first), "m2").await;
                let active = storage::other_active_chats(engine.db(), "carol", "")
                    .await
                    .unwrap_or_else(|e| panic!("active: {e}"));
                assert_eq!(
                    active.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
                    vec![first.as_str()]
                );
            } else {
                assert_eq!(first_row.status, ChatStatus::Active.as_str());
                let active = storage::other_active_chats(engine.db(), "carol", "")
                    .await
                    .unwrap_or_else(|e| panic!("active: {e}"));
                assert_eq!(active.len(), 2, "both sessions stay active");
            }
        }
    }
}
