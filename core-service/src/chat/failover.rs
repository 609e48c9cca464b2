//! Several cores: the replies of a core that died are taken over by another. Each reply owed
//! names its core (`pending_replies.owner`, this core's id from [`crate::cluster::Cluster`]),
//! and each core's heartbeat in Redis lives [`HEARTBEAT_SECS`] past its last renewal. Twice
//! a second each core looks for rows whose owner has no heartbeat, claims each with a
//! conditional update (one core wins it), and answers it:
//!
//! - a reply that had started is **continued** under the same message id: its chunks are
//!   numbered after the last one clients were sent (as this core saw them cross, or as the
//!   dead core last checkpointed), and the model is given the text so far as the start of its
//!   answer ([`turn::spawn_continuation`]); a model that fails to continue stores it `failed`
//!   with that text, as any failed reply;
//! - a reply that had not started is generated, as it would have been;
//! - a reply started before an operator took the chat over is stored `failed`, as a restart
//!   stores it.
//!
//! A core claims nothing until it has been linked to Redis for a whole heartbeat period, so
//! after Redis comes back the live cores have renewed their heartbeats first. A core thought
//! dead that was only cut off finds its row claimed at its next checkpoint and stops without
//! storing (`turn.rs`): at most a second of it streams twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::turn::{self, Continuation};
use crate::cluster::{Cluster, HEARTBEAT_SECS};
use crate::storage::{self, PendingReplyRow, StorageError};

/// How often a core looks for the replies of dead cores (one Redis SCAN of the heartbeats,
/// and one indexed read of the rows whose owner is not among them, usually empty).
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// What [`Engine::take_over_replies`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver {
    pub continued: usize,
    pub restarted: usize,
    pub failed: usize,
}

impl Engine {
    /// Looks for the replies of dead cores every second until shutdown.
    pub(super) fn watch_dead_cores(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let engine = Arc::downgrade(self);
        let stop = self.shutdown.child_token();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOOK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut linked_since: Option<Instant> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.rooms.sweep_remote_replies();
                if !cluster.healthy() {
                    linked_since = None;
                    continue;
                }
                let since = *linked_since.get_or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_secs(HEARTBEAT_SECS) {
                    continue;
                }
                let alive = match cluster.live_cores().await {
                    Ok(alive) if alive.contains(cluster.core_id()) => alive,
                    // Not even this core's own heartbeat: Redis is not answering for real.
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::debug!(error = %err, "cluster: live cores not read");
                        continue;
                    }
                };
                if let Err(err) = engine.take_over_replies(&alive).await {
                    tracing::warn!(error = %err, "cluster: the replies of dead cores not read");
                }
            }
        });
    }

    /// Claims and answers every reply owed by a core not in `alive` (see the module comment).
    pub async fn take_over_replies(
        self: &Arc<Self>,
        alive: &HashSet<String>,
    ) -> Result<TakenOver, StorageError> {
        let mut taken = TakenOver::default();
        let alive: Vec<&str> = alive.iter().map(String::as_str).collect();
        for owed in storage::pending_replies_of_dead(&self.db, &alive).await? {
            if !storage::claim_pending_reply(&self.db, &owed.trigger_id, &owed.owner).await? {
                continue;
            }
            let how = self.take_over(owed).await?;
            match how {
                "continued" => taken.continued += 1,
                "restarted" => taken.restarted += 1,
                _ => taken.failed += 1,
            }
            metrics::counter!("chat_core_replies_taken_over_total", "how" => how).increment(1);
        }
        if taken != TakenOver::default() {
            tracing::info!(
                continued = taken.continued,
                restarted = taken.restarted,
                failed = taken.failed,
                "cluster: replies of dead cores taken over"
            );
        }
        Ok(taken)
    }

    /// Answers one claimed reply; says how.
    async fn take_over(
        self: &Arc<Self>,
        owed: PendingReplyRow,
    ) -> Result<&'static str, StorageError> {
        let chat = storage::get_chat(&self.db, &owed.chat_id).await?;
        let trigger = storage::get_message(&self.db, &owed.trigger_id).await?;
        // Both exist, or the row went with them (it cascades).
        let (Some(chat), Some(trigger)) = (chat, trigger) else {
            return Ok("gone");
        };
        // The rows come in `seq` order and are answered one by one, so the replies take
        // their places in line in it.
        let Some(reply_id) = owed.reply_id.clone() else {
            turn::spawn_next(self.clone(), chat, trigger, owed.requester_id.clone());
            return Ok("restarted");
        };
        if self.held(&chat) {
            self.store_interrupted(&owed, &reply_id).await?;
            self.rooms.forget_remote_reply(&chat.id, &reply_id);
            return Ok("failed");
        }
        let chunks = self.chunks_sent(&owed, &reply_id);
        tracing::info!(chat = %chat.id, reply = %reply_id, chunks = chunks.len(), "cluster: continuing the reply of a dead core");
        turn::spawn_continuation(
            self.clone(),
            chat,
            trigger,
            owed.requester_id.clone(),
            Continuation { reply_id, chunks },
        );
        Ok("continued")
    }

    /// The chunks clients were sent of `reply_id`: as they crossed to this core when that is
    /// at least as far as the last checkpoint, else the checkpoint's text as its first chunk
    /// (the indexes after it empty, so new chunks are numbered after every one sent).
    fn chunks_sent(&self, owed: &PendingReplyRow, reply_id: &str) -> Vec<String> {
        if let Some(crossed) = self.rooms.remote_reply(&owed.chat_id)
            && crossed.message_id == reply_id
            && crossed.chunks.len() as i64 >= owed.chunks
            && !crossed.chunks.iter().any(String::is_empty)
        {
            return crossed.chunks;
        }
        if owed.partial.is_empty() {
            return Vec::new();
        }
        let count = usize::try_from(owed.chunks).unwrap_or(0).max(1);
        let mut chunks = vec![String::new(); count];
        chunks[0] = owed.partial.clone();
        chunks
    }
}
