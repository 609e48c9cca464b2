//! The replies streaming on the other cores, as their chunks crossed through Redis: every
//! core keeps them (the one channel carries every chat's events), so that a client resuming
//! through any core is sent the chunks it missed, and a core taking over the reply of a core
//! that died continues after the last chunk clients were sent (`chat/failover.rs`).
//!
//! Held under the registry's lock (`chat/rooms.rs`) with delivery, so a resuming connection
//! gets each chunk once: from here before it joins, or live after. Costs the text of the
//! replies streaming across the deployment, on every core (kilobytes per reply); a reply is
//! forgotten at its final message, at its takeover, or after [`FORGET_AFTER`] of silence.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_proto::pb::chat as pb;

use super::Envelope;

/// What an envelope says about a streaming reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyProgress {
    /// One more chunk of the reply `message_id` of the envelope's chat.
    Chunk {
        message_id: String,
        index: i64,
        delta: String,
    },
    /// A message was stored: when it is the reply streaming, the reply is over.
    Stored { message_id: String },
}

impl Envelope {
    /// The reply progress this envelope carries, if any.
    pub fn reply_progress(&self) -> Option<ReplyProgress> {
        use pb::server_event::Event as E;
        match self.event.as_ref()?.event.as_ref()? {
            E::MessageChunk(c) => Some(ReplyProgress::Chunk {
                message_id: c.message_id.clone(),
                index: c.index,
                delta: c.delta.clone(),
            }),
            E::Message(m) => Some(ReplyProgress::Stored {
                message_id: m.message.as_ref()?.id.clone(),
            }),
            _ => None,
        }
    }
}

/// A reply streaming on another core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// The core that sent its last chunk.
    pub origin: String,
    pub message_id: String,
    /// Its chunks by index; a chunk that never crossed (Redis dropped it) is empty.
    pub chunks: Vec<String>,
}

/// A reply silent this long is forgotten (its core died and nobody continued it, say).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The largest chunk index kept: a reply past it is no longer followed (an index from
/// another core is trusted, but memory is not spent on a wild one).
const MAX_CHUNKS: i64 = 100_000;

/// The replies streaming on other cores, by chat.
#[derive(Debug, Default)]
pub struct RemoteReplies {
    by_chat: HashMap<String, (RemoteReply, Instant)>,
}

impl RemoteReplies {
    /// Records what an envelope of `chat_id` from `origin` says.
    pub fn apply(&mut self, chat_id: &str, origin: &str, progress: ReplyProgress, now: Instant) {
        match progress {
            ReplyProgress::Chunk {
                message_id,
                index,
                delta,
            } => {
                if !(0..MAX_CHUNKS).contains(&index) {
                    return;
                }
                let (reply, seen) = self
                    .by_chat
                    .entry(chat_id.to_string())
                    .or_insert_with(|| (RemoteReply::new(origin, &message_id), now));
                if reply.message_id != message_id {
                    *reply = RemoteReply::new(origin, &message_id);
                }
                reply.origin = origin.to_string();
                *seen = now;
                // In range, so it fits.
                let index = index as usize;
                if index >= reply.chunks.len() {
                    reply.chunks.resize(index, String::new());
                    reply.chunks.push(delta);
                }
            }
            ReplyProgress::Stored { message_id } => {
                if self
                    .by_chat
                    .get(chat_id)
                    .is_some_and(|(r, _)| r.message_id == message_id)
                {
                    self.by_chat.remove(chat_id);
                }
            }
        }
    }

    /// The reply streaming in `chat_id` on another core.
    pub fn get(&self, chat_id: &str) -> Option<&RemoteReply> {
        self.by_chat.get(chat_id).map(|(r, _)| r)
    }

    /// Forgets the reply `message_id` of `chat_id` (this core continues it now).
    pub fn forget(&mut self, chat_id: &str, message_id: &str) {
        if self
            .get(chat_id)
            .is_some_and(|r| r.message_id == message_id)
        {
            self.by_chat.remove(chat_id);
        }
    }

    /// Forgets the replies silent for [`FORGET_AFTER`].
    pub fn sweep(&mut self, now: Instant) {
        self.by_chat
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < FORGET_AFTER);
    }

    pub fn len(&self) -> usize {
        self.by_chat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_chat.is_empty()
    }
}

impl RemoteReply {
    fn new(origin: &str, message_id: &str) -> Self {
        Self {
            origin: origin.to_string(),
            message_id: message_id.to_string(),
            chunks: Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn chunk(id: &str, index: i64, delta: &str) -> ReplyProgress {
        ReplyProgress::Chunk {
            message_id: id.into(),
            index,
            delta: delta.into(),
        }
    }

    fn stored(id: &str) -> ReplyProgress {
        ReplyProgress::Stored {
            message_id: id.into(),
        }
    }

    #[test]
    fn follows_a_reply_until_it_is_stored() {
        let now = Instant::now();
        let mut replies = RemoteReplies::default();
        replies.apply("c1", "a", chunk("r1", 0, "Hel"), now);
        replies.apply("c1", "a", chunk("r1", 1, "lo"), now);
        replies.apply("c1", "a", chunk("r1", 1, "lo again"), now);
        let reply = replies.get("c1").expect("followed");
        assert_eq!(
            reply.chunks,
            ["Hel", "lo"],
            "a duplicate index changes nothing"
        );
        assert_eq!(reply.origin, "a");

        // A lost chunk leaves a hole; the next core to send chunks becomes the origin.
        replies.apply("c1", "b", chunk("r1", 3, "!"), now);
        let reply = replies.get("c1").expect("followed");
        assert_eq!(reply.chunks, ["Hel", "lo", "", "!"]);
        assert_eq!(reply.origin, "b");

        replies.apply("c1", "b", stored("other"), now);
        assert!(
            replies.get("c1").is_some(),
            "another message: still streaming"
        );
        replies.apply("c1", "b", stored("r1"), now);
        assert!(replies.is_empty());
    }

    #[test]
    fn a_new_reply_replaces_the_old_and_silence_forgets() {
        let now = Instant::now();
        let mut replies = RemoteReplies::default();
        replies.apply("c1", "a", chunk("r1", 0, "x"), now);
        replies.apply("c1", "a", chunk("r2", 0, "y"), now);
        assert_eq!(replies.get("c1").map(|r| r.message_id.as_str()), Some("r2"));
        replies.apply("c1", "a", chunk("r2", -1, "bad"), now);
        replies.apply("c1", "a", chunk("r2", MAX_CHUNKS, "wild"), now);
        assert_eq!(replies.get("c1").map(|r| r.chunks.len()), Some(1));
        replies.forget("c1", "r1");
        assert_eq!(replies.len(), 1, "not that reply");
        replies.sweep(now + FORGET_AFTER);
        assert!(replies.is_empty());
    }
}
