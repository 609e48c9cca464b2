//! What a restart finds of the replies owed (`pending_replies`), and how a shutdown leaves
//! them. Nothing stays "in flight" across a restart:
//!
//! - a reply that had started streaming (clients may hold its first chunks) is stored as
//!   `failed` under the id its chunks carried, keeping the text last checkpointed (at most a
//!   second behind), or the configured apology when there was none; clients that resume get
//!   it as the final `message` with its `seq`;
//! - a reply that had not started (its message was acknowledged and waited behind another
//!   reply, or the core stopped first) is generated now, as it would have been.
//!
//! At shutdown the replies still streaming when the grace period ends are stopped: each is
//! stored as `stopped` with its partial text, as a user's `stop` would. The ones waiting to
//! start are left owed for the next start.
//!
//! This is the start-up of a core on its own. With several cores (`[cluster]`) a starting core
//! leaves the rows alone: each names its core, and those of dead cores, its own last run's
//! included, are taken over and continued by `chat/failover.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::ASSISTANT;
use super::engine::Engine;
use super::event::StoredMetadata;
use super::turn;
use crate::storage::{self, PendingReplyRow, StorageError};
use crate::types::{MessageStatus, Role};

/// What [`Engine::recover_replies`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Interrupted replies stored as failed.
    pub failed: usize,
    /// Owed replies that had not started, generated now.
    pub restarted: usize,
}

impl Engine {
    /// Answers every reply a crash or a shutdown left owed (see the module comment). Run once
    /// at start, before clients connect.
    pub async fn recover_replies(self: &Arc<Self>) -> Result<Recovered, StorageError> {
        let mut recovered = Recovered::default();
        for owed in storage::pending_replies(&self.db).await? {
            match owed.reply_id.clone() {
                Some(reply_id) => {
                    self.store_interrupted(&owed, &reply_id).await?;
                    recovered.failed += 1;
                }
                None => {
                    let chat = storage::get_chat(&self.db, &owed.chat_id).await?;
                    let trigger = storage::get_message(&self.db, &owed.trigger_id).await?;
                    // Both exist: the row cascades away with either. The rows come in `seq`
                    // order, so the replies take their places in line in it.
                    if let (Some(chat), Some(trigger)) = (chat, trigger) {
                        turn::spawn_next(self.clone(), chat, trigger, owed.requester_id.clone());
                        recovered.restarted += 1;
                    }
                }
            }
        }
        if recovered != Recovered::default() {
            tracing::info!(
                failed = recovered.failed,
                restarted = recovered.restarted,
                "replies left owed by the last run answered"
            );
        }
        Ok(recovered)
    }

    pub(super) async fn store_interrupted(
        &self,
        owed: &PendingReplyRow,
        reply_id: &str,
    ) -> Result<(), StorageError> {
        let content = if owed.partial.trim().is_empty() {
            self.llm.settings().apology.clone()
        } else {
            owed.partial.clone()
        };
        let metadata = StoredMetadata {
            model: owed.model.clone(),
            error: Some("interrupted".into()),
            ..StoredMetadata::default()
        };
        let chat = storage::get_chat(&self.db, &owed.chat_id).await?;
        let agent_id = chat.map(|c| c.agent_id).unwrap_or_default();
        let _order = self.seq.lock(&owed.chat_id).await;
        let stored = storage::insert_message(
            &self.db,
            storage::NewMessage {
                id: reply_id,
                chat_id: &owed.chat_id,
                sender_id: ASSISTANT,
                role: Role::Assistant,
                agent_id: &agent_id,
                content: &content,
                status: MessageStatus::Failed,
                client_message_id: None,
                attachments_json: "[]",
                file_ids: &[],
                metadata_json: &metadata.to_json(),
                now: self.now(),
                reply: storage::ReplyLink::Answers {
                    trigger_id: &owed.trigger_id,
                },
            },
        )
        .await?;
        // Members connected now (a takeover by another core) see it; at start nobody is.
        if let storage::Inserted::New(row) = stored {
            self.rooms
                .broadcast(&owed.chat_id, super::event::Outgoing::message(&row), None);
        }
        tracing::info!(chat = %owed.chat_id, user = %owed.requester_id, reply = %reply_id, "interrupted reply stored as failed");
        Ok(())
    }

    /// Shutdown, after the grace period: stops every reply still streaming and waits up to
    /// `grace` for each to be stored as `stopped`. Returns false when some were not.
    pub async fn stop_replies(&self, grace: Duration) -> bool {
        let running: Vec<_> = self
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|reply| reply.cancel.clone())
            .collect();
        for cancel in running {
            cancel.cancel();
        }
        self.abandon.cancel();
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::chat::command::SendMessage;
    use crate::chat::event::{Event, Outgoing};
    use crate::chat::testing::{self, connect, user};
    use crate::config::ChatSettings;

    const WAIT: Duration = Duration::from_secs(10);

    /// The next start on the same database: a fresh engine, and what it recovered.
    async fn restart(dir: &tempfile::TempDir) -> (Arc<Engine>, Recovered) {
        let engine = Arc::new(testing::engine(dir, ChatSettings::default(), 0).await);
        let recovered = engine
            .recover_replies()
            .await
            .unwrap_or_else(|e| panic!("recover: {e}"));
        (engine, recovered)
    }

    async fn slow_engine(dir: &tempfile::TempDir) -> Arc<Engine> {
        Arc::new(testing::engine(dir, ChatSettings::default(), 50).await)
    }

    async fn send(
        engine: &Arc<Engine>,
        chat: Option<&str>,
        id: &str,
        conn: &super::super::rooms::Conn,
    ) -> String {
        engine
            .send_message(
                &user("erin"),
                SendMessage {
                    chat_id: chat.map(str::to_string),
                    content: format!("question {id}"),
                    client_message_id: id.into(),
                    ..SendMessage::default()
                },
                Some(conn),
            )
            .await
            .unwrap_or_else(|e| panic!("send: {e}"))
            .chat_id
    }

    /// Waits for the first chunk of a reply; returns its message id.
    async fn first_chunk(rx: &mut mpsc::Receiver<Arc<Outgoing>>) -> String {
        loop {
            let out = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no chunk"))
                .unwrap_or_else(|| panic!("outbox closed"));
            if let Event::MessageChunk(chunk) = &out.event {
                return chunk.message_id.clone();
            }
        }
    }

    async fn assistant_replies(engine: &Engine, chat: &str) -> Vec<crate::storage::MessageRow> {
        let (rows, _) = storage::history(engine.db(), chat, None, 100)
            .await
            .unwrap_or_else(|e| panic!("history: {e}"));
        rows.into_iter()
            .filter(|r| r.role == Role::Assistant.as_str())
            .collect()
    }

    #[tokio::test]
    async fn a_shutdown_stores_the_streaming_reply_as_stopped_and_the_next_start_answers_the_waiting_one()
     {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let chat = {
            let engine = slow_engine(&dir).await;
            let (_registered, conn, mut rx) = connect(&engine, &user("erin")).await;
            let chat = send(&engine, None, "q1", &conn).await;
            let streaming = first_chunk(&mut rx).await;
            // Acknowledged while the first reply streams: waits for it.
            send(&engine, Some(&chat), "q2", &conn).await;
            engine.begin_shutdown();
            assert!(
                !engine.finish_replies(Duration::ZERO).await,
                "still streaming"
            );
            assert!(
                engine.stop_replies(WAIT).await,
                "stopped and stored in time"
            );

            let replies = assistant_replies(&engine, &chat).await;
            assert_eq!(replies.len(), 1, "the waiting reply did not start");
            assert_eq!(
                replies[0].id, streaming,
                "stored under the id its chunks carried"
            );
            assert_eq!(replies[0].status, MessageStatus::Stopped.as_str());
            assert!(!replies[0].content.is_empty(), "partial text kept");
            let owed = storage::pending_replies(engine.db())
                .await
                .unwrap_or_else(|e| panic!("pending: {e}"));
            assert_eq!(owed.len(), 1);
            assert_eq!(owed[0].reply_id, None, "the second had not started");
            chat
        };

        // The next start generates the reply that was owed.
        let (engine, recovered) = restart(&dir).await;
        assert_eq!(
            recovered,
            Recovered {
                failed: 0,
                restarted: 1
            }
        );
        assert!(engine.finish_replies(WAIT).await);
        let replies = assistant_replies(&engine, &chat).await;
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[1].status, MessageStatus::Complete.as_str());
        assert!(
            replies[1].content.contains("question q2"),
            "{}",
            replies[1].content
        );
        assert!(
            storage::pending_replies(engine.db())
                .await
                .is_ok_and(|p| p.is_empty())
        );
    }

    /// Several replies owed in one chat are answered in the order their messages were stored,
    /// however the runtime happens to start their tasks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_replies_a_start_finds_owed_in_one_chat_are_answered_in_turn() {
        const WAITING: usize = 8;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let chat = {
            let engine = slow_engine(&dir).await;
            let (_registered, conn, mut rx) = connect(&engine, &user("erin")).await;
            let chat = send(&engine, None, "q0", &conn).await;
            first_chunk(&mut rx).await;
            for i in 1..=WAITING {
                send(&engine, Some(&chat), &format!("q{i}"), &conn).await;
            }
            engine.begin_shutdown();
            assert!(engine.stop_replies(WAIT).await, "stopped in time");
            chat
        };

        let (engine, recovered) = restart(&dir).await;
        assert_eq!(recovered.restarted, WAITING);
        assert!(engine.finish_replies(WAIT).await);
        let replies = assistant_replies(&engine, &chat).await;
        assert_eq!(replies.len(), WAITING + 1);
        for (i, reply) in replies.iter().enumerate().skip(1) {
            // The demo model quotes the user's turn, which ends with the message answered.
            assert!(
                reply.content.contains(&format!("question q{i}\". ")),
                "reply {i} answers another message: {}",
                reply.content
            );
        }
    }

    #[tokio::test]
    async fn a_reply_a_crash_interrupted_is_stored_as_failed_with_its_checkpointed_text() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        // The first run lives in a runtime of its own, dropped mid-reply: its tasks end at
        // their next await, nothing is stored on the way out, as when the process is killed.
        let (chat, reply_id) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime =
                        tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
                    let run = runtime.block_on(async {
                        let engine = slow_engine(&dir).await;
                        let (_registered, conn, mut rx) = connect(&engine, &user("erin")).await;
                        let chat = send(&engine, None, "q1", &conn).await;
                        (chat, first_chunk(&mut rx).await)
                    });
                    runtime.shutdown_background();
                    run
                })
                .join()
                .unwrap_or_else(|_| panic!("the first run panicked"))
        });
        let owed = {
            let db = testing::engine(&dir, ChatSettings::default(), 0).await;
            storage::pending_replies(db.db())
                .await
                .unwrap_or_else(|e| panic!("pending: {e}"))
        };
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].reply_id.as_deref(), Some(reply_id.as_str()));

        let (engine, recovered) = restart(&dir).await;
        assert_eq!(
            recovered,
            Recovered {
                failed: 1,
                restarted: 0
            }
        );
        let replies = assistant_replies(&engine, &chat).await;
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].id, reply_id);
        assert_eq!(replies[0].status, MessageStatus::Failed.as_str());
        assert_eq!(replies[0].seq, 2, "the next seq after the question");
        assert!(
            StoredMetadata::parse(&replies[0].metadata).error.as_deref() == Some("interrupted")
        );
        let expected = if owed[0].partial.is_empty() {
            engine.llm.settings().apology.clone()
        } else {
            owed[0].partial.clone()
        };
        assert_eq!(replies[0].content, expected);
        assert!(
            storage::pending_replies(engine.db())
                .await
                .is_ok_and(|p| p.is_empty())
        );
    }
}
