//! Resume after a reconnect: re-join the client's chats and replay what it missed, exactly
//! once: durable events after its `lastSeq` in order, then the chunks of a reply still
//! streaming after its `lastIndex`, then live events. A gap too large to replay is answered
//! with the latest history marked `reset` (`chat.resume_max_events`). Events are kept as long
//! as their chat, so any gap up to that many events is replayed.

use std::sync::Arc;
use std::time::Duration;

use chat_auth::Principal;
use chat_proto::limits::MAX_RESUME_CHATS as MAX_CHATS;
use tokio::sync::mpsc::PermitIterator;
use tokio::sync::mpsc::error::TrySendError;

use super::command::ResumeChat;
use super::engine::Engine;
use super::error::ChatError;
use super::event::{Event, Outgoing};
use super::limits::Rate;
use super::rooms::{Conn, chunk_event, missed_from};
use crate::storage::{self, Durable};

/// Durable events replayed per page while a resume catches up: pages go out at the pace the
/// connection takes them, outside the chat's lock, so a long gap neither overflows the
/// connection's outbox nor holds up the chat's writers.
const REPLAY_PAGE: i64 = 100;
/// Outbox slots reserved before the last stretch (at most a page of events, then the missed
/// chunks of a reply streaming), which is sent under the chat's lock so that it meets the live
/// events exactly. Chunks beyond it are queued as live events are.
const LAST_STRETCH: usize = 2 * REPLAY_PAGE as usize;
/// How often a replay ahead of its reader looks for room in the outbox again.
const ROOM_POLL: Duration = Duration::from_millis(2);

/// Room in a connection's outbox for a replay, leaving a quarter of it free for the live
/// events of the chats the connection has already joined.
///
/// A replay never waits *in* the channel (`send().await`, `reserve_many`): tokio hands every
/// slot the reader frees to a waiting sender first, so while a replay ran ahead of its reader
/// each live event found the outbox full and the connection was dropped as slow, in the middle
/// of its resume. It looks at the free slots instead, every [`ROOM_POLL`] while the reader is
/// behind, and only takes slots that are free.
struct Room<'a> {
    conn: &'a Conn,
    /// Slots kept free for live events.
    headroom: usize,
}

impl<'a> Room<'a> {
    fn of(conn: &'a Conn) -> Self {
        Self {
            conn,
            headroom: conn.tx.max_capacity() / 4,
        }
    }

    /// The most slots a replay takes at once.
    fn most(&self) -> usize {
        (self.conn.tx.max_capacity() - self.headroom).max(1)
    }

    /// Waits until `n` slots (at most [`Room::most`]) are free beyond the headroom and takes
    /// them. `None` when the connection closed or was cancelled meanwhile.
    async fn take(&self, n: usize) -> Option<PermitIterator<'a, Arc<Outgoing>>> {
        let n = n.clamp(1, self.most());
        loop {
            if self.conn.kill.is_cancelled() {
                return None;
            }
            // `n` is at most the outbox less the headroom, so this can hold.
            if self.conn.tx.capacity() >= n + self.headroom {
                match self.conn.tx.try_reserve_many(n) {
                    Ok(slots) => return Some(slots),
                    Err(TrySendError::Closed(())) => return None,
                    // Taken by a live event since it was counted: look again.
                    Err(TrySendError::Full(())) => {}
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ROOM_POLL) => {}
                () = self.conn.kill.cancelled() => return None,
            }
        }
    }
}

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
            .check_n(Rate::Resume, &who.user_id, chats.len() as u32)
            .await?;
        for want in chats {
            let chat = self
                .chat_named(who, &want.chat_id, "data.chats.chatId")
                .await?;
            if !self.resume_chat(&chat.id, want, conn).await? {
                // The connection went away while it caught up.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Replays one chat to `conn` and joins it to the chat's live events. Returns false when
    /// the connection closed meanwhile.
    async fn resume_chat(
        &self,
        chat_id: &str,
        want: &ResumeChat,
        conn: &Conn,
    ) -> Result<bool, ChatError> {
        let last = storage::last_seq(&self.db, chat_id).await?;
        let max_replay = i64::from(self.settings.resume_max_events);
        let room = Room::of(conn);
        // The outbox takes the last stretch whole, however small it is.
        let stretch = room.most().min(LAST_STRETCH);
        let page = (stretch / 2).max(1) as i64;
        let mut cursor = want.last_seq;
        if cursor < 0 || cursor > last || last - cursor > max_replay {
            let _order = self.seq.lock(chat_id).await;
            let mut history = self
                .history_of(chat_id, None, super::validate::DEFAULT_PAGE)
                .await?;
            history.reset = true;
            let seen = history.last_seq;
            conn.push(Outgoing::now(Event::History(history)));
            self.join_streaming(chat_id, want, conn, Vec::new(), seen);
            return Ok(true);
        }
        loop {
            // Catch up page by page, each event waiting for room in the outbox.
            while storage::last_seq(&self.db, chat_id).await? - cursor > page {
                let events = storage::events_after(&self.db, chat_id, cursor, page).await?;
                let mut events = events.iter().peekable();
                while events.peek().is_some() {
                    // As many as fit now, each page in a few takes.
                    let Some(slots) = room.take(events.len()).await else {
                        return Ok(false);
                    };
                    for slot in slots {
                        // One slot per event taken: `take` gave at most `events.len()`.
                        let Some(durable) = events.next() else { break };
                        cursor = durable.seq();
                        match replayed(durable) {
                            Some(event) => slot.send(Arc::new(event)),
                            // Not shown to clients: the slot goes back.
                            None => drop(slot),
                        }
                    }
                }
            }
            // Room for the last stretch, reserved before the lock is taken.
            let Some(slots) = room.take(stretch).await else {
                return Ok(false);
            };
            let _order = self.seq.lock(chat_id).await;
            let rest = storage::events_after(&self.db, chat_id, cursor, page + 1).await?;
            if rest.len() as i64 > page {
                // Many more arrived meanwhile: another page first.
                continue;
            }
            let seen = rest.last().map_or(cursor, storage::Durable::seq);
            let events: Vec<Outgoing> = rest.iter().filter_map(replayed).collect();
            let mut slots = slots;
            for event in events {
                // At most `page` events, half the slots: one is always left for each.
                match slots.next() {
                    Some(slot) => slot.send(Arc::new(event)),
                    None => {
                        conn.push(event);
                    }
                }
            }
            self.join_streaming(chat_id, want, conn, slots.collect(), seen);
            return Ok(true);
        }
    }

    /// Sends the missed chunks of the chat's reply in flight (into `slots` first) and joins
    /// `conn` to the chat, under the reply's chunk lock: the turn pushes and broadcasts each
    /// chunk under the same lock, so none is missed or sent twice.
    fn join_streaming(
        &self,
        chat_id: &str,
        want: &ResumeChat,
        conn: &Conn,
        slots: Vec<tokio::sync::mpsc::Permit<'_, std::sync::Arc<Outgoing>>>,
        seen: i64,
    ) {
        let Some(reply) = self.active_reply(chat_id) else {
            // Streaming on another core, perhaps: the chunks that crossed from there.
            self.rooms
                .join_following(chat_id, conn, want.streaming.as_ref(), slots, seen);
            return;
        };
        let chunks = reply.chunks.lock().unwrap_or_else(|p| p.into_inner());
        let from = missed_from(want.streaming.as_ref(), &reply.message_id);
        let mut slots = slots.into_iter();
        // A chunk never sent (lost between cores) is empty: skipped.
        for (index, delta) in chunks.iter().enumerate().skip(from) {
            if delta.is_empty() {
                continue;
            }
            let chunk = chunk_event(chat_id, &reply.message_id, index, delta);
            match slots.next() {
                Some(slot) => slot.send(Arc::new(chunk)),
                None => {
                    conn.push(chunk);
                }
            }
        }
        self.rooms.join_seen(chat_id, &conn.id, Some(seen));
    }
}

/// A stored event as the client receives it again (`None`: not shown to clients).
pub(crate) fn replayed(durable: &Durable) -> Option<Outgoing> {
    match durable {
        Durable::Message(row) => Some(Outgoing::message(row)),
        Durable::Event(row) => Outgoing::replay(row),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::command::{ChatAction, ResumeChat};
    use super::super::event::{ChatChanges, ChatUpdate, Durable, Event};
    use super::super::testing::{self, user};
    use crate::config::ChatSettings;

    /// A chat of `who`'s, by its first `chat_update` on `rx`.
    async fn create(
        engine: &Arc<super::Engine>,
        who: &chat_auth::Principal,
        conn: &super::Conn,
        rx: &mut tokio::sync::mpsc::Receiver<Arc<super::Outgoing>>,
    ) -> String {
        let create = ChatAction::Create {
            title: None,
            agent_id: None,
            model: None,
            spoken_replies: None,
        };
        engine
            .chat_action(who, create, conn)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
        loop {
            let out = rx.recv().await.unwrap_or_else(|| panic!("outbox"));
            if let Event::ChatUpdate(u) = &out.event {
                return u.chat_id.clone();
            }
        }
    }

    fn retitle(chat_id: &str, n: usize) -> Durable {
        Durable::ChatUpdate(ChatUpdate {
            chat_id: chat_id.to_string(),
            changes: ChatChanges {
                title: Some(format!("title {n}")),
                ..ChatChanges::default()
            },
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_ahead_of_its_reader_leaves_room_for_live_events() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let settings = ChatSettings {
            // Two chats open at once.
            single_active_session: false,
            ..ChatSettings::default()
        };
        let engine = Arc::new(testing::engine(&dir, settings, 0).await);
        let ann = user("ann");
        let (_owner, owner, mut owner_rx) = testing::connect(&engine, &ann).await;
        let (live, missed) = (
            create(&engine, &ann, &owner, &mut owner_rx).await,
            create(&engine, &ann, &owner, &mut owner_rx).await,
        );
        for n in 0..40 {
            engine
                .publish(&missed, retitle(&missed, n))
                .await
                .unwrap_or_else(|e| panic!("publish: {e}"));
        }

        // A connection of 16 slots, joined to `live`, resumes `missed` from its start and does
        // not read until the replay has filled all the outbox it may.
        let (_registration, conn, mut rx) = testing::connect_with_outbox(&engine, &ann, 16).await;
        engine.rooms.join(&live, &conn.id);
        let resume = tokio::spawn({
            let (engine, ann, conn) = (engine.clone(), ann.clone(), conn.clone());
            let want = ResumeChat {
                chat_id: missed.clone(),
                last_seq: 0,
                streaming: None,
            };
            async move { engine.resume(&ann, &[want], &conn).await }
        });
        // 12: the 16 slots less the quarter kept free (the old replay filled all 16).
        let filled = async {
            while rx.len() < 12 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), filled)
            .await
            .unwrap_or_else(|_| panic!("the replay never filled the outbox: {} queued", rx.len()));
        // The replay is waiting for its reader now. A live event still finds room.
        engine
            .publish(&live, retitle(&live, 0))
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        assert!(
            !conn.kill.is_cancelled(),
            "the live event found the outbox full: the connection was dropped"
        );

        let mut replayed = Vec::new();
        let mut live_seen = 0;
        while replayed.len() < 40 {
            let out = rx.recv().await.unwrap_or_else(|| panic!("outbox closed"));
            match &out.event {
                Event::ChatUpdate(u) if u.chat_id == missed => replayed.extend(out.seq),
                Event::ChatUpdate(u) if u.chat_id == live => live_seen += 1,
                _ => {}
            }
        }
        resume
            .await
            .unwrap_or_else(|e| panic!("resume task: {e}"))
            .unwrap_or_else(|e| panic!("resume: {e}"));
        assert_eq!(replayed, (1..=40).collect::<Vec<i64>>());
        assert_eq!(live_seen, 1);
    }
}
