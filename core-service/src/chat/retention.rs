//! Deleting sessions and files: by retention, in the core's housekeeping round
//! (`chat.retention_days`: sessions with no activity for that long go, with everything of
//! theirs and the files only they held; `files.unattached_hours`: uploads no message ever
//! attached), or by an admin (`AdminService.DeleteSession`, `DeleteFile`). A deleted file's
//! URL answers 404 from then on; messages that attached it keep its name in their list.

use chat_auth::Principal;
use chrono::TimeDelta;

use super::engine::Engine;
use super::error::ChatError;
use super::event::ChatChanges;
use super::operator::require_admin;
use super::watch::ChangeKind;
use crate::storage::{self, ChatRow};

/// Most sessions, and most unattached uploads, deleted per housekeeping round (the rest wait
/// for the next round).
const RETENTION_BATCH: i64 = 200;

/// What one retention round deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub sessions: usize,
    pub files: usize,
}

impl Engine {
    /// An admin deletes a session now. Returns how many files went with it.
    pub async fn delete_session(&self, who: &Principal, chat_id: &str) -> Result<usize, ChatError> {
        require_admin(who)?;
        let chat = self.chat_named(who, chat_id, "chatId").await?;
        let files = self.remove_chat(&chat).await?;
        tracing::info!(chat = %chat.id, admin = %who.user_id, files, "session deleted by an admin");
        Ok(files)
    }

    /// An admin deletes a file now: its record and its bytes; 404 when there is none.
    pub async fn delete_file(&self, who: &Principal, file_id: &str) -> Result<(), ChatError> {
        require_admin(who)?;
        let row = storage::delete_file(&self.db, file_id)
            .await?
            .ok_or_else(|| ChatError::NotFound("File not found".into()))?;
        self.remove_stored_files(std::slice::from_ref(&row.id))
            .await;
        tracing::info!(file = %row.id, admin = %who.user_id, "file deleted by an admin");
        Ok(())
    }

    /// One retention round (see the module comment); nothing when both settings are 0.
    pub async fn apply_retention(&self) -> Result<Deleted, ChatError> {
        let mut deleted = Deleted::default();
        let days = self.settings.retention_days;
        if days > 0 {
            let before = self.now() - TimeDelta::days(i64::from(days));
            for id in storage::chats_inactive_since(&self.db, before, RETENTION_BATCH).await? {
                if let Some(chat) = storage::get_chat(&self.db, &id).await? {
                    deleted.files += self.remove_chat(&chat).await?;
                    deleted.sessions += 1;
                }
            }
        }
        if let Ok(files) = self.files() {
            let hours = files.settings().unattached_hours;
            if hours > 0 {
                let before = self.now() - TimeDelta::hours(i64::from(hours));
                let ids =
                    storage::delete_unattached_files(&self.db, before, RETENTION_BATCH).await?;
                self.remove_stored_files(&ids).await;
                deleted.files += ids.len();
            }
        }
        if deleted != Deleted::default() {
            tracing::info!(
                sessions = deleted.sessions,
                files = deleted.files,
                "retention deleted old sessions and files"
            );
        }
        Ok(deleted)
    }

    /// Deletes a chat with everything of it and the files only it held; its live members
    /// stop receiving its events, and the operators' feed hears `Deleted`.
    async fn remove_chat(&self, chat: &ChatRow) -> Result<usize, ChatError> {
        if let Some(reply) = self.active_reply(&chat.id) {
            reply.cancel.cancel();
        }
        let file_ids = storage::delete_chat(&self.db, &chat.id).await?;
        for joined in self.rooms.joined_conns(&chat.id) {
            self.rooms.leave(&chat.id, &joined.id);
        }
        self.session_changed(chat, ChangeKind::Deleted, ChatChanges::default(), None);
        self.remove_stored_files(&file_ids).await;
        Ok(file_ids.len())
    }

    /// The bytes of deleted file records. A failure leaves bytes nobody can reach (the record,
    /// which every download needs, is gone); it is logged.
    async fn remove_stored_files(&self, ids: &[String]) {
        let Ok(files) = self.files() else {
            return;
        };
        for id in ids {
            if let Err(err) = files.remove(id).await {
                tracing::warn!(file = %id, error = %err, "deleted file's bytes not removed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Retention on an engine whose clock follows tokio's: time is paused and advanced by
    //! hand, so no test waits for days.

    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::chat::clock::Clock;
    use crate::chat::command::SendMessage;
    use crate::chat::event::Event;
    use crate::chat::testing::{self, connect, user};
    use crate::config::ChatSettings;
    use crate::files::{FileSettings, Files};
    use crate::types::Role;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    async fn advance(by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }

    fn stored(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .count()
        })
    }

    #[tokio::test]
    async fn old_sessions_go_with_their_files_and_loose_uploads_after_a_day() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("dir: {e}"));
        let store = dir.path().join("files");
        let files = Files::open(
            &FileSettings {
                local_dir: store.clone(),
                ..FileSettings::default()
            },
            Some(b"a-test-secret-of-32-bytes-or-more!!"),
        )
        .unwrap_or_else(|e| panic!("files: {e}"));
        let settings = ChatSettings {
            retention_days: 30,
            ..ChatSettings::default()
        };
        let engine = Arc::new(
            testing::engine(&dir, settings, 0)
                .await
                .with_clock(Clock::following_tokio())
                .with_files(files),
        );
        let alice = user("alice");
        let upload = |name: &'static str| {
            let engine = engine.clone();
            async move {
                engine
                    .files()
                    .unwrap_or_else(|e| panic!("files: {e}"))
                    .upload(
                        engine.db(),
                        "alice",
                        name,
                        "text/plain",
                        futures::stream::iter([Ok(Bytes::from_static(b"notes"))]),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("upload: {e}"))
            }
        };
        let kept = upload("kept.txt").await;
        let _loose = upload("loose.txt").await;
        let (_registration, conn, mut rx) = connect(&engine, &alice).await;
        let ack = engine
            .send_message(
                &alice,
                SendMessage {
                    content: "see attached".into(),
                    client_message_id: "m-1".into(),
                    attachments: vec![kept.id.clone()],
                    ..SendMessage::default()
                },
                Some(&conn),
            )
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        loop {
            let out = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no reply"))
                .unwrap_or_else(|| panic!("outbox closed"));
            if let Event::Message(m) = &out.event
                && m.message.role == Role::Assistant
            {
                break;
            }
        }
        let mut feed = engine.watch_sessions();
        assert_eq!(stored(&store), 2);

        // A day and more: the upload nobody attached goes; the session is young.
        advance(DAY + Duration::from_secs(60)).await;
        let round = engine
            .apply_retention()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            round,
            Deleted {
                sessions: 0,
                files: 1
            }
        );
        assert_eq!(stored(&store), 1);

        // Thirty days after its last activity the session goes, with the file it held.
        advance(29 * DAY).await;
        let round = engine
            .apply_retention()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            round,
            Deleted {
                sessions: 1,
                files: 1
            }
        );
        assert_eq!(stored(&store), 0);
        assert!(
            storage::get_chat(engine.db(), &ack.chat_id)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        assert!(
            storage::get_file(engine.db(), &kept.id)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        let change = feed
            .try_recv()
            .unwrap_or_else(|e| panic!("no feed change: {e}"));
        assert_eq!(
            (change.chat_id, change.kind),
            (ack.chat_id, ChangeKind::Deleted)
        );
        // Nothing left to do.
        let round = engine
            .apply_retention()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(round, Deleted::default());
    }
}
