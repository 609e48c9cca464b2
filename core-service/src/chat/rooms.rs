//! Who is listening to what. Every live connection (one `Connect` stream) registers here with
//! its bounded outbox; joining a chat subscribes that outbox to the chat's live events.
//!
//! Ownership: the connection's [`Handler`](super::handler::Handler) registers itself at start
//! and unregisters when its stream ends; this registry only holds senders. Delivery never
//! waits: a connection whose outbox is full is too slow to keep up, so it is cancelled (its
//! client reconnects and resumes from `seq`) rather than letting memory grow.
//!
//! With several cores (`cluster.rs`) every event is also published to the others, and theirs
//! arrive here too; then each joined connection keeps the last `seq` it was given ([`Track`]):
//! a durable event it has is dropped, and on a gap its events are held while the missing ones
//! are read from the database, so every member still sees each chat's durable events once and
//! in order, whichever core wrote them. The chunks of the replies streaming on the other cores
//! are kept here too ([`RemoteReplies`]), under the same lock as delivery, so that a connection
//! resuming through this core is sent the ones it missed exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::event::{Chunk, Event, Outgoing};
use crate::cluster::limits::LocalConnections;
use crate::cluster::replies::{RemoteReplies, RemoteReply, ReplyProgress};
use crate::cluster::{Cluster, Deliver, Envelope};
use crate::storage::{self, Db};

/// The sending half of one connection.
#[derive(Clone, Debug)]
pub struct Conn {
    pub id: Arc<str>,
    pub user_id: Arc<str>,
    /// Events are shared (`Arc`): a broadcast allocates once for all recipients, and an idle
    /// outbox costs pointers, not whole events (tokio allocates a channel's first block of
    /// 32 slots up front).
    pub tx: mpsc::Sender<Arc<Outgoing>>,
    /// Cancelled to drop the connection (too slow, shutting down, token expired).
    pub kill: CancellationToken,
}

impl Conn {
    /// Queues an event without waiting; a full outbox cancels the connection.
    /// Returns false when the event was not queued.
    ///
    /// Nothing is queued once the connection is cancelled: what is already queued still
    /// reaches the client until its handler unregisters it, and an event queued after one
    /// that a full outbox refused would show the client a gap it then resumes past, so the
    /// refused event would never be replayed. Each chat's durable events are pushed under
    /// its order lock, which the refusing push holds until it has cancelled.
    pub fn push(&self, event: Outgoing) -> bool {
        self.push_shared(Arc::new(event))
    }

    /// [`Conn::push`] for an event already shared with other recipients.
    pub fn push_shared(&self, event: Arc<Outgoing>) -> bool {
        if self.kill.is_cancelled() {
            return false;
        }
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("chat_core_slow_connections_dropped_total").increment(1);
                tracing::warn!(conn = %self.id, user = %self.user_id, "outbox full: dropping slow connection");
                self.kill.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    conns: HashMap<Arc<str>, Conn>,
    /// chat id -> joined connection ids.
    chats: HashMap<String, HashSet<Arc<str>>>,
    /// connection id -> joined chat ids (for cleanup).
    joined: HashMap<Arc<str>, HashSet<String>>,
    /// user id -> connection ids.
    users: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// With a cluster: what each joined connection was given of each chat.
    tracks: HashMap<(String, Arc<str>), Track>,
    /// With a cluster: the replies streaming on the other cores.
    remote: RemoteReplies,
}

/// A joined connection's place in a chat's durable events (with a cluster).
#[derive(Debug, Default)]
struct Track {
    /// The last `seq` it was given; `None` until its first (a join without history).
    seen: Option<i64>,
    /// While the events of a gap are read from the database: what arrived meanwhile, in order.
    filling: Option<Vec<Arc<Outgoing>>>,
}

/// What to do with one event for one connection.
enum Admit {
    Send,
    Drop,
    Hold,
    /// A gap after this `seq`: fill it from the database.
    Fill(i64),
}

impl Track {
    fn admit(&mut self, event: &Arc<Outgoing>) -> Admit {
        if let Some(queue) = &mut self.filling {
            queue.push(event.clone());
            return Admit::Hold;
        }
        let Some(seq) = event.seq else {
            return Admit::Send;
        };
        match self.seen {
            Some(seen) if seq <= seen => Admit::Drop,
            Some(seen) if seq > seen + 1 => {
                self.filling = Some(vec![event.clone()]);
                Admit::Fill(seen)
            }
            _ => {
                self.seen = Some(seq);
                Admit::Send
            }
        }
    }
}

/// Events read per round of a gap fill.
const FILL_PAGE: i64 = 200;

impl Inner {
    /// Subscribes `conn_id` to `chat_id` (see [`Rooms::join_seen`]).
    fn join(&mut self, chat_id: &str, conn_id: &str, seen: Option<i64>, clustered: bool) -> bool {
        let Some(id) = self.conns.get(conn_id).map(|c| c.id.clone()) else {
            return false;
        };
        self.joined
            .entry(id.clone())
            .or_default()
            .insert(chat_id.to_string());
        if clustered {
            let track = self
                .tracks
                .entry((chat_id.to_string(), id.clone()))
                .or_default();
            if seen.is_some() && track.filling.is_none() {
                track.seen = track.seen.max(seen);
            }
        }
        self.chats
            .entry(chat_id.to_string())
            .or_default()
            .insert(id)
    }

    /// Publishes the live figures (called after every change, under the lock).
    fn record(&self) {
        metrics::gauge!("chat_core_connections").set(self.conns.len() as f64);
        metrics::gauge!("chat_core_active_chats").set(self.chats.len() as f64);
    }
}

/// The registry of live connections and chat subscriptions on this core.
#[derive(Default)]
pub struct Rooms {
    inner: Mutex<Inner>,
    cluster: OnceLock<Linked>,
}

/// The cluster this core is part of, and what gap fills need.
struct Linked {
    cluster: Arc<Cluster>,
    db: Db,
    me: Weak<Rooms>,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole process, so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection; returns how many connections the user now has.
    pub fn register(&self, conn: Conn) -> usize {
        let mut inner = self.lock();
        let user = inner.users.entry(conn.user_id.clone()).or_default();
        user.insert(conn.id.clone());
        let count = user.len();
        inner.conns.insert(conn.id.clone(), conn);
        inner.record();
        count
    }

    /// Removes a connection from everything; returns the chats it had joined and how many
    /// connections its user still has.
    pub fn unregister(&self, conn_id: &str) -> (Vec<String>, usize) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.remove(conn_id) else {
            return (Vec::new(), 0);
        };
        let chats: Vec<String> = inner
            .joined
            .remove(conn_id)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for chat in &chats {
            inner.tracks.remove(&(chat.clone(), conn.id.clone()));
            if let Some(set) = inner.chats.get_mut(chat) {
                set.remove(conn_id);
                if set.is_empty() {
                    inner.chats.remove(chat);
                }
            }
        }
        let mut left = 0;
        if let Some(set) = inner.users.get_mut(&conn.user_id) {
            set.remove(conn_id);
            left = set.len();
            if set.is_empty() {
                inner.users.remove(&conn.user_id);
            }
        }
        inner.record();
        (chats, left)
    }

    /// Links this core to the others (`cluster.rs`); from then on events cross both ways.
    pub fn link(self: &Arc<Self>, cluster: Arc<Cluster>, db: Db) {
        let _ = self.cluster.set(Linked {
            cluster,
            db,
            me: Arc::downgrade(self),
        });
    }

    /// The cluster, when this core is part of one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get().map(|l| &l.cluster)
    }

    /// Subscribes a connection to a chat's live events. Returns false if it already was.
    pub fn join(&self, chat_id: &str, conn_id: &str) -> bool {
        self.join_seen(chat_id, conn_id, None)
    }

    /// [`Rooms::join`] for a connection that was just given the chat's events up to `seen`
    /// (a history's `lastSeq`, the end of a resume's replay).
    pub fn join_seen(&self, chat_id: &str, conn_id: &str, seen: Option<i64>) -> bool {
        let clustered = self.cluster.get().is_some();
        let mut inner = self.lock();
        inner.join(chat_id, conn_id, seen, clustered)
    }

    /// [`Rooms::join_seen`] for a resuming connection, sent first the chunks it missed
    /// (after `streaming`'s index, when it names the reply) of the reply streaming in the chat
    /// on another core, if one is: into `slots` first, then its outbox. Under the lock that
    /// delivers the other cores' chunks, so each reaches it once.
    pub fn join_following(
        &self,
        chat_id: &str,
        conn: &Conn,
        streaming: Option<&(String, i64)>,
        slots: Vec<mpsc::Permit<'_, Arc<Outgoing>>>,
        seen: i64,
    ) -> bool {
        let clustered = self.cluster.get().is_some();
        let mut inner = self.lock();
        if let Some(reply) = inner.remote.get(chat_id) {
            let from = missed_from(streaming, &reply.message_id);
            let mut slots = slots.into_iter();
            for (index, delta) in reply.chunks.iter().enumerate().skip(from) {
                if delta.is_empty() {
                    continue;
                }
                let chunk = Arc::new(chunk_event(chat_id, &reply.message_id, index, delta));
                match slots.next() {
                    Some(slot) => slot.send(chunk),
                    None => {
                        conn.push_shared(chunk);
                    }
                }
            }
        }
        inner.join(chat_id, &conn.id, Some(seen), clustered)
    }

    /// The reply streaming in `chat_id` on another core, as far as its chunks crossed.
    pub fn remote_reply(&self, chat_id: &str) -> Option<RemoteReply> {
        self.lock().remote.get(chat_id).cloned()
    }

    /// This core continues the reply `message_id` of `chat_id`: it is no longer followed.
    pub fn forget_remote_reply(&self, chat_id: &str, message_id: &str) {
        self.lock().remote.forget(chat_id, message_id);
    }

    /// Forgets the other cores' replies silent for long (see [`RemoteReplies::sweep`]).
    pub fn sweep_remote_replies(&self) {
        let mut inner = self.lock();
        inner.remote.sweep(std::time::Instant::now());
        metrics::gauge!("chat_core_cluster_remote_replies").set(inner.remote.len() as f64);
    }

    /// Unsubscribes. Returns false if it was not joined.
    pub fn leave(&self, chat_id: &str, conn_id: &str) -> bool {
        let mut inner = self.lock();
        if let Some(set) = inner.joined.get_mut(conn_id) {
            set.remove(chat_id);
        }
        let key: Arc<str> = Arc::from(conn_id);
        inner.tracks.remove(&(chat_id.to_string(), key));
        let Some(set) = inner.chats.get_mut(chat_id) else {
            return false;
        };
        let was = set.remove(conn_id);
        if set.is_empty() {
            inner.chats.remove(chat_id);
        }
        inner.record();
        was
    }

    /// Delivers to every connection joined to the chat, except `skip` (a connection id); with
    /// a cluster, to the other cores' members too.
    pub fn broadcast(&self, chat_id: &str, event: Outgoing, skip: Option<&str>) {
        let event = Arc::new(event);
        if let Some(linked) = self.cluster.get() {
            let encoded = crate::grpc::convert::server_event(&event);
            linked.cluster.publish_chat(chat_id, &encoded, skip);
            self.deliver_tracked(linked, chat_id, event, skip, None);
            return;
        }
        for conn in self.joined_conns(chat_id) {
            if Some(&*conn.id) != skip {
                conn.push_shared(event.clone());
            }
        }
    }

    /// Delivers to every connection of a user (on every core).
    pub fn send_to_user(&self, user_id: &str, event: Outgoing) {
        if let Some(linked) = self.cluster.get() {
            let encoded = crate::grpc::convert::server_event(&event);
            linked.cluster.publish_user(user_id, &encoded);
        }
        self.send_to_local_user(user_id, Arc::new(event));
    }

    fn send_to_local_user(&self, user_id: &str, event: Arc<Outgoing>) {
        let conns: Vec<Conn> = {
            let inner = self.lock();
            inner
                .users
                .get(user_id)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| inner.conns.get(id).cloned())
                        .collect()
                })
                .unwrap_or_default()
        };
        for conn in conns {
            conn.push_shared(event.clone());
        }
    }

    /// Chats any connection of the user is joined to.
    pub fn user_chats(&self, user_id: &str) -> Vec<String> {
        let inner = self.lock();
        let mut chats: Vec<String> = inner
            .users
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.joined.get(id))
            .flatten()
            .cloned()
            .collect();
        chats.sort();
        chats.dedup();
        chats
    }

    /// How many connections are joined to `chat_id` on this core.
    pub fn joined_count(&self, chat_id: &str) -> usize {
        self.lock().chats.get(chat_id).map_or(0, HashSet::len)
    }

    /// Connections currently joined to a chat.
    pub fn joined_conns(&self, chat_id: &str) -> Vec<Conn> {
        let inner = self.lock();
        inner
            .chats
            .get(chat_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| inner.conns.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Chats with at least one joined connection.
    pub fn active_chat_count(&self) -> usize {
        self.lock().chats.len()
    }

    /// Cancels every connection (graceful shutdown).
    pub fn cancel_all(&self) {
        for conn in self.lock().conns.values() {
            conn.kill.cancel();
        }
    }
}

/// Delivery with a cluster: each connection's [`Track`] decides, under the registry's lock so
/// that events from this core and from the others reach one connection in one order.
impl Rooms {
    fn deliver_tracked(
        &self,
        linked: &Linked,
        chat_id: &str,
        event: Arc<Outgoing>,
        skip: Option<&str>,
        progress: Option<(&str, ReplyProgress)>,
    ) {
        let mut fills = Vec::new();
        {
            let mut inner = self.lock();
            if let Some((origin, progress)) = progress {
                inner
                    .remote
                    .apply(chat_id, origin, progress, std::time::Instant::now());
            }
            let Some(ids) = inner.chats.get(chat_id) else {
                return;
            };
            let ids: Vec<Arc<str>> = ids
                .iter()
                .filter(|id| Some(&***id) != skip)
                .cloned()
                .collect();
            for id in ids {
                let Some(conn) = inner.conns.get(&id).cloned() else {
                    continue;
                };
                let track = inner.tracks.entry((chat_id.to_string(), id)).or_default();
                match track.admit(&event) {
                    Admit::Send => {
                        conn.push_shared(event.clone());
                    }
                    Admit::Drop | Admit::Hold => {}
                    Admit::Fill(from) => fills.push((conn, from)),
                }
            }
        }
        for (conn, from) in fills {
            metrics::counter!("chat_core_cluster_gap_fills_total").increment(1);
            tokio::spawn(fill(
                linked.me.clone(),
                linked.db.clone(),
                chat_id.to_string(),
                conn,
                from,
            ));
        }
    }

    /// One round of a gap fill for `conn`: the events read (after `seen`) go out first, then
    /// what arrived meanwhile. Returns the `seq` to read after next, or `None` when done.
    fn fill_round(
        &self,
        chat_id: &str,
        conn: &Conn,
        rows: Vec<storage::Durable>,
        full_page: bool,
    ) -> Option<i64> {
        let mut inner = self.lock();
        let track = inner
            .tracks
            .get_mut(&(chat_id.to_string(), conn.id.clone()))?;
        let mut seen = track.seen.unwrap_or(0);
        for row in &rows {
            if row.seq() > seen {
                seen = row.seq();
                if let Some(event) = super::resume::replayed(row) {
                    conn.push(event);
                }
            }
        }
        track.seen = Some(seen);
        if full_page {
            return Some(seen);
        }
        let queue = track.filling.take().unwrap_or_default();
        let mut rest = queue.into_iter();
        while let Some(event) = rest.next() {
            match event.seq {
                Some(seq) if seq <= seen => {}
                Some(seq) if seq > seen + 1 => {
                    // Still a gap (written after the read): hold on and read again.
                    let mut held = vec![event];
                    held.extend(rest);
                    track.seen = Some(seen);
                    track.filling = Some(held);
                    return Some(seen);
                }
                Some(seq) => {
                    seen = seq;
                    conn.push_shared(event);
                }
                None => {
                    conn.push_shared(event);
                }
            }
        }
        track.seen = Some(seen);
        None
    }
}

/// Reads a connection's missing events from the database until it has caught up with what
/// arrived meanwhile. A database error drops the connection: its client resumes.
async fn fill(me: Weak<Rooms>, db: Db, chat_id: String, conn: Conn, mut seen: i64) {
    loop {
        let rows = match storage::events_after(&db, &chat_id, seen, FILL_PAGE).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = %err, chat = %chat_id, "cluster: a gap fill failed; dropping the connection so it resumes");
                conn.kill.cancel();
                return;
            }
        };
        let Some(rooms) = me.upgrade() else { return };
        let full = rows.len() as i64 >= FILL_PAGE;
        match rooms.fill_round(&chat_id, &conn, rows, full) {
            Some(next) => seen = next,
            None => return,
        }
    }
}

/// What the cluster's connection counts are restated from (`cluster/limits.rs`).
impl LocalConnections for Rooms {
    fn connections_of(&self, user_id: &str) -> usize {
        self.lock().users.get(user_id).map_or(0, HashSet::len)
    }

    fn users(&self) -> Vec<(String, usize)> {
        self.lock()
            .users
            .iter()
            .map(|(user, conns)| (user.to_string(), conns.len()))
            .collect()
    }
}

impl Deliver for Rooms {
    fn deliver_remote(&self, envelope: Envelope) {
        let Some(event) = envelope.outgoing() else {
            return;
        };
        let Some(linked) = self.cluster.get() else {
            return;
        };
        let event = Arc::new(event);
        if !envelope.chat_id.is_empty() {
            let skip = (!envelope.skip.is_empty()).then_some(envelope.skip.as_str());
            let progress = envelope
                .reply_progress()
                .map(|p| (envelope.origin.as_str(), p));
            self.deliver_tracked(linked, &envelope.chat_id, event, skip, progress);
        } else if !envelope.user_id.is_empty() {
            self.send_to_local_user(&envelope.user_id, event);
        }
    }
}

/// The first chunk index a resuming client lacks of the reply `message_id`, given what it
/// says it saw (`streaming`: a reply's id and the last index it got).
pub(super) fn missed_from(streaming: Option<&(String, i64)>, message_id: &str) -> usize {
    match streaming {
        Some((id, last_index)) if id == message_id => last_index
            .checked_add(1)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// The `message_chunk` event of chunk `index` of a reply.
pub(super) fn chunk_event(chat_id: &str, message_id: &str, index: usize, delta: &str) -> Outgoing {
    Outgoing::now(Event::MessageChunk(Chunk {
        chat_id: chat_id.to_string(),
        message_id: message_id.to_string(),
        index: index as i64,
        delta: delta.to_string(),
    }))
}

/// Per-chat write locks that put durable events in `seq` order on the wire: a writer holds
/// the chat's lock from allocating the `seq` until the event is queued to every joined
/// connection, and a joiner holds it while it reads history and subscribes, so nobody sees a
/// later `seq` before an earlier one, or misses one between history and live events.
#[derive(Default)]
pub struct Sequencer {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a chat's durable event is written and delivered.
pub struct SeqGuard<'a> {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    chat_id: String,
    owner: &'a Sequencer,
}

impl Sequencer {
    pub async fn lock(&self, chat_id: &str) -> SeqGuard<'_> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(chat_id.to_string()).or_default().clone()
        };
        SeqGuard {
            _guard: lock.lock_owned().await,
            chat_id: chat_id.to_string(),
            owner: self,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for SeqGuard<'_> {
    fn drop(&mut self) {
        // Forget the chat's lock when nobody else holds or waits for it: the map's own Arc
        // plus the one inside our guard make two.
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.chat_id)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            map.remove(&self.chat_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::event::Event;

    fn pong() -> Outgoing {
        Outgoing::now(Event::Pong { timestamp: 0 })
    }

    fn conn(id: &str, user: &str, cap: usize) -> (Conn, mpsc::Receiver<Arc<Outgoing>>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            Conn {
                id: id.into(),
                user_id: user.into(),
                tx,
                kill: CancellationToken::new(),
            },
            rx,
        )
    }

    #[test]
    fn broadcast_reaches_joined_connections_only() {
        let rooms = Rooms::default();
        let (a, mut ra) = conn("a", "u1", 4);
        let (b, mut rb) = conn("b", "u2", 4);
        rooms.register(a);
        rooms.register(b);
        rooms.join("c1", "a");
        rooms.broadcast("c1", pong(), None);
        assert!(ra.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        assert_eq!(rooms.active_chat_count(), 1);
        let (chats, left) = rooms.unregister("a");
        assert_eq!((chats, left), (vec!["c1".to_string()], 0));
        assert_eq!(rooms.active_chat_count(), 0);
    }

    #[test]
    fn a_full_outbox_cancels_the_slow_connection() {
        let rooms = Rooms::default();
        let (a, _ra) = conn("a", "u1", 1);
        let kill = a.kill.clone();
        rooms.register(a);
        rooms.join("c1", "a");
        rooms.broadcast("c1", pong(), None);
        assert!(!kill.is_cancelled());
        rooms.broadcast("c1", pong(), None);
        assert!(kill.is_cancelled());
    }

    #[test]
    fn nothing_is_queued_after_an_event_a_full_outbox_refused() {
        // The client would see the events before the refused one, then later ones, and
        // resume past the one it never got.
        let rooms = Rooms::default();
        let (a, mut ra) = conn("a", "u1", 1);
        rooms.register(a);
        rooms.join("c1", "a");
        rooms.broadcast("c1", pong().with_seq(1), None);
        rooms.broadcast("c1", pong().with_seq(2), None);
        assert_eq!(ra.try_recv().map(|e| e.seq).ok(), Some(Some(1)));
        // The outbox has room again, but the connection is on its way out.
        rooms.broadcast("c1", pong().with_seq(3), None);
        assert!(
            ra.try_recv().is_err(),
            "seq 3 queued after seq 2 was refused"
        );
    }

    #[tokio::test]
    async fn sequencer_forgets_idle_chats() {
        let seq = Sequencer::default();
        {
            let _g = seq.lock("c1").await;
            assert_eq!(seq.len(), 1);
        }
        assert_eq!(seq.len(), 0);
    }
}
