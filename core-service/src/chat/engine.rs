//! The [`Engine`]: the core's shared state, one per process behind an `Arc`, and the
//! operations every other concern builds on: the lifecycle of a connection, access to a chat,
//! and publishing a durable event in `seq` order. Its state is visible to the other `chat`
//! modules (which add the operations clients ask for) and to nobody else: the adapters and
//! startup go through methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chat_auth::{Principal, Verifier};
use chrono::NaiveDateTime;
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::clock::Clock;
use super::command::Inbound;
use super::error::ChatError;
use super::event::{Catalogue, Durable, Event, Named, Outgoing, PresenceChange, Session};
use super::handler::Handler;
use super::limits::RateLimits;
use super::reply_order::ReplyOrder;
use super::rooms::{Conn, Rooms, Sequencer};
use super::validate::ChatId;
use super::watch::SessionChange;
use crate::cluster::limits::{LocalConnections, SharedLimits};
use crate::config::ChatSettings;
use crate::llm::Llm;
use crate::notify::Notifier;
use crate::storage::{self, ChatRow, Db};
use crate::types::Presence;

/// Shared state of the core.
pub struct Engine {
    pub(super) db: Db,
    pub(super) llm: Llm,
    pub(super) settings: ChatSettings,
    pub(super) verifier: Verifier,
    /// Live connections and who is joined where.
    pub(super) rooms: Arc<Rooms>,
    /// Orders durable events per chat.
    pub(super) seq: Sequencer,
    /// Runs one reply at a time per chat, in order of the messages that asked.
    pub(super) reply_order: ReplyOrder,
    /// Replies being generated, by chat id.
    pub(super) replies: Mutex<HashMap<String, ActiveReply>>,
    /// Connection handlers and reply tasks; replies are waited for at shutdown.
    pub(super) tasks: TaskTracker,
    /// Cancelled when the process shuts down.
    pub(super) shutdown: CancellationToken,
    /// Cancelled when shutdown stops the replies still running after its grace period: a
    /// reply waiting for the database to store it stops waiting.
    pub(super) abandon: CancellationToken,
    pub(super) limits: RateLimits,
    /// With a cluster: the per-user connection counts of every core, in Redis (set once, by
    /// [`Engine::link_cluster`]).
    pub(super) shared_limits: OnceLock<Arc<SharedLimits>>,
    pub(super) clock: Clock,
    /// The operators' live feed ([`super::watch`]).
    pub(super) watch: broadcast::Sender<SessionChange>,
    /// Operator alerts; never waits (disabled unless startup passes one in).
    pub(super) notifier: Notifier,
    /// Where users' context documents are fetched when none was pushed (`chat.context_url`).
    pub(super) context_source: Option<super::context::ContextSource>,
    pub(super) started: std::time::Instant,
    /// Uploads and downloads; `None` in tests that need none (attachments are then 404).
    pub(super) files: Option<Arc<crate::files::Files>>,
}

/// Load figures for health probes ([`Engine::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub connections: usize,
    /// Chats with at least one joined connection.
    pub active_chats: usize,
    pub uptime: Duration,
}

/// A reply in progress: enough to stop it and to resume its stream.
#[derive(Clone)]
pub(super) struct ActiveReply {
    pub(super) message_id: String,
    pub(super) cancel: CancellationToken,
    /// Deltas sent so far, by index, for `resume`. The turn pushes and broadcasts each chunk
    /// under this lock, and `resume` replays under it, so no chunk is missed or doubled.
    pub(super) chunks: Arc<Mutex<Vec<String>>>,
}

impl Engine {
    pub fn new(db: Db, llm: Llm, settings: ChatSettings, verifier: Verifier) -> Self {
        let limits = RateLimits::new(&settings);
        let (watch, _) = broadcast::channel(settings.watch_buffer);
        let context_source = super::context::ContextSource::from_settings(&settings);
        Self {
            db,
            llm,
            settings,
            verifier,
            rooms: Arc::default(),
            seq: Sequencer::default(),
            reply_order: ReplyOrder::default(),
            replies: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            abandon: CancellationToken::new(),
            limits,
            shared_limits: OnceLock::new(),
            clock: Clock::System,
            watch,
            notifier: Notifier::disabled(),
            context_source,
            started: std::time::Instant::now(),
            files: None,
        }
    }

    /// The engine with file uploads, downloads and attachments.
    pub fn with_files(mut self, files: crate::files::Files) -> Self {
        self.files = Some(Arc::new(files));
        self
    }

    /// Spends one of the user's uploads this minute (429 past `chat.uploads_per_minute`).
    pub async fn check_upload_rate(&self, user_id: &str) -> Result<(), ChatError> {
        self.limits
            .check(super::limits::Rate::Upload, user_id)
            .await
    }

    /// The file service, when configured (503 otherwise).
    pub fn files(&self) -> Result<&crate::files::Files, ChatError> {
        self.files
            .as_deref()
            .ok_or_else(|| ChatError::Unavailable("File storage is not configured".into()))
    }

    /// Open connections, chats with a joined member, and time since start.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.rooms.connection_count(),
            active_chats: self.rooms.active_chat_count(),
            uptime: self.started.elapsed(),
        }
    }

    /// The engine with operator alerts going to `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The same engine on another clock (tests: [`Clock::following_tokio`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, as the engine stores and compares it.
    pub fn now(&self) -> NaiveDateTime {
        self.clock.now()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Joins the other cores of `[cluster]` (nothing when it is off): room events cross
    /// through Redis until `stop`, and per-user rate limits and connection caps are counted
    /// there for every core.
    pub fn link_cluster(
        self: &Arc<Self>,
        settings: &crate::cluster::ClusterSettings,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let sink: std::sync::Weak<dyn crate::cluster::Deliver> =
            Arc::downgrade(&self.rooms) as std::sync::Weak<dyn crate::cluster::Deliver>;
        if let Some(cluster) =
            crate::cluster::Cluster::start(settings, self.db.owner(), sink, stop.clone())?
        {
            let local = Arc::downgrade(&self.rooms) as std::sync::Weak<dyn LocalConnections>;
            let shared = SharedLimits::start(settings, cluster.core_id(), local, stop)?;
            self.limits.share(shared.clone());
            let _ = self.shared_limits.set(shared);
            self.rooms.link(cluster.clone(), self.db.clone());
            self.watch_dead_cores(cluster);
        }
        Ok(())
    }

    /// False while this core is part of a cluster and cannot reach Redis both ways.
    pub fn cluster_healthy(&self) -> bool {
        self.rooms.cluster().is_none_or(|c| c.healthy())
    }

    /// Verifies the tokens of every call and stream.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// How long an operator's takeover outlives its connection.
    pub fn operator_lease(&self) -> Duration {
        Duration::from_secs(self.settings.operator_lease_secs)
    }

    /// Opens a connection for `who`: its [`Handler`] runs as a tracked task reading `inbound`
    /// until the peer leaves, and the returned receiver is its outbox (bounded; a connection
    /// that cannot keep up is dropped, its client resumes). Refused with 503 while shutting
    /// down.
    pub fn connect<S>(
        self: &Arc<Self>,
        who: Principal,
        inbound: S,
    ) -> Result<mpsc::Receiver<Arc<Outgoing>>, ChatError>
    where
        S: Stream<Item = Inbound> + Send + Unpin + 'static,
    {
        if self.shutdown.is_cancelled() {
            return Err(ChatError::Unavailable("Shutting down".into()));
        }
        let (tx, rx) = mpsc::channel(self.settings.outbound_buffer);
        let conn = Conn {
            id: new_id().into(),
            user_id: who.user_id.as_str().into(),
            tx,
            kill: self.shutdown.child_token(),
        };
        let span = tracing::info_span!("conn", conn = %conn.id, user = %who.user_id);
        let handler = Handler::new(self.clone(), who, conn);
        self.tasks
            .spawn(handler.run(inbound.fuse()).instrument(span));
        Ok(rx)
    }

    /// Registers a live connection and builds its `session` event. The returned guard
    /// unregisters it when dropped, however the handler ends (a panic included).
    pub(super) async fn open(
        self: &Arc<Self>,
        who: &Principal,
        conn: &Conn,
    ) -> Result<(Registration, Outgoing), ChatError> {
        let registration = self.register(who, conn).await;
        let users_connections = registration.users_connections;
        if users_connections > self.settings.max_connections_per_user {
            return Err(ChatError::TooManyConnections);
        }
        let session = self.session_event(who, &conn.id).await?;
        if registration.first_here {
            let _ = storage::set_online(&self.db, &who.user_id, true, self.now()).await;
        }
        Ok((registration, session))
    }

    /// Registers a live connection; the guard unregisters it when dropped. The count is the
    /// user's connections on this core, or with a cluster on every live core (this core's
    /// alone while Redis does not answer).
    pub(super) async fn register(self: &Arc<Self>, who: &Principal, conn: &Conn) -> Registration {
        let here = self.rooms.register(conn.clone());
        // The guard first: a caller that goes away while Redis is asked still unregisters.
        let mut registration = Registration {
            engine: self.clone(),
            conn_id: conn.id.clone(),
            user_id: who.user_id.clone(),
            users_connections: here,
            first_here: here == 1,
        };
        if let Some(shared) = self.shared_limits.get()
            && let Some(everywhere) = shared.register(&who.user_id).await
        {
            // Never below this core's own count: a count that lags (a write lost while
            // Redis was away, restated later) must not let in more than one core would.
            registration.users_connections = everywhere.max(here);
        }
        registration
    }

    /// A token cancelled when the core shuts down (streams that are not connections end on it).
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// The `session` event that opens every stream.
    pub(super) async fn session_event(
        &self,
        who: &Principal,
        connection_id: &str,
    ) -> Result<Outgoing, ChatError> {
        storage::upsert_user(&self.db, &who.user_id, &who.name, self.now()).await?;
        let active_chat_id = storage::latest_active_chat(&self.db, &who.user_id).await?;
        Ok(Outgoing::now(Event::Session(Session {
            connection_id: connection_id.to_string(),
            user_id: who.user_id.clone(),
            name: who.name.clone(),
            roles: who.roles.clone(),
            heartbeat_interval_ms: self.settings.heartbeat_interval_ms,
            max_message_chars: self.settings.max_message_chars,
            max_frame_bytes: self.settings.max_frame_bytes,
            catalogue: self.catalogue(),
            active_chat_id,
            voice: self.llm.voice().is_some(),
        })))
    }

    /// Models and agents users can choose from.
    pub fn catalogue(&self) -> Catalogue {
        Catalogue {
            models: self
                .llm
                .models()
                .iter()
                .map(|m| Named {
                    id: m.id.clone(),
                    name: m.name.clone(),
                })
                .collect(),
            default_model: self.llm.settings().default_model.clone(),
            agents: self
                .llm
                .agents()
                .iter()
                .map(|a| Named {
                    id: a.id.clone(),
                    name: a.name.clone(),
                })
                .collect(),
        }
    }

    /// Loads a chat the caller may read and write: a member, or an admin. 404 when it does not
    /// exist, 403 when the caller is neither.
    pub(super) async fn chat_for(
        &self,
        who: &Principal,
        chat_id: &ChatId,
    ) -> Result<ChatRow, ChatError> {
        let (chat, member) = storage::get_chat_as(&self.db, chat_id.as_str(), &who.user_id)
            .await?
            .ok_or_else(ChatError::no_chat)?;
        if who.is_admin() || member {
            Ok(chat)
        } else {
            Err(ChatError::access_denied())
        }
    }

    /// [`Engine::chat_for`] from a raw id in protocol field `field`.
    pub(super) async fn chat_named(
        &self,
        who: &Principal,
        raw: &str,
        field: &'static str,
    ) -> Result<ChatRow, ChatError> {
        self.chat_for(who, &ChatId::parse(raw, field)?).await
    }

    /// Stores a durable event with the chat's next `seq` and delivers it to every joined
    /// connection, in `seq` order.
    pub(super) async fn publish(&self, chat_id: &str, durable: Durable) -> Result<i64, ChatError> {
        let _order = self.seq.lock(chat_id).await;
        let seq = storage::append_event(
            &self.db,
            chat_id,
            durable.kind(),
            &durable.to_payload(),
            self.now(),
        )
        .await?;
        self.rooms.broadcast(
            chat_id,
            Outgoing::now(durable.into_event()).with_seq(seq),
            None,
        );
        Ok(seq)
    }

    /// The reply being generated in a chat, if any.
    pub(super) fn active_reply(&self, chat_id: &str) -> Option<ActiveReply> {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(chat_id)
            .cloned()
    }

    /// Tells every chat the user is present in about the user's presence.
    pub(super) fn broadcast_presence(&self, user_id: &str, status: Presence, skip: Option<&str>) {
        self.broadcast_presence_to(user_id, status, &self.rooms.user_chats(user_id), skip);
    }

    /// Presence to the given chats.
    pub(super) fn broadcast_presence_to(
        &self,
        user_id: &str,
        status: Presence,
        chats: &[String],
        skip: Option<&str>,
    ) {
        for chat_id in chats {
            if self.tells_presence(chat_id) {
                self.rooms
                    .broadcast(chat_id, presence(user_id, status, chat_id), skip);
            }
        }
    }

    /// Whether presence changes are told to `chat_id`: not in a room larger than
    /// `chat.presence_max_members`, where they would cost an event per member each.
    pub(super) fn tells_presence(&self, chat_id: &str) -> bool {
        let members = self.rooms.joined_count(chat_id);
        let told = members <= self.settings.presence_max_members;
        if !told {
            metrics::counter!("chat_core_presence_suppressed_total").increment(1);
        }
        told
    }

    /// Drops the per-user limiter entries of users who are idle again.
    pub fn prune_limits(&self) {
        self.limits.prune();
    }

    /// Phase 2 of shutdown: refuse new streams and end every open one (edges tell their
    /// clients to reconnect elsewhere).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.rooms.cancel_all();
    }

    /// Phase 3 of shutdown: waits up to `grace` for replies in flight to finish and be
    /// stored. Returns false when some were still running.
    pub async fn finish_replies(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// A live connection's entry in the registry; dropping it unregisters the connection and,
/// when it was the user's last, marks the user offline and tells their chats.
pub(super) struct Registration {
    engine: Arc<Engine>,
    conn_id: Arc<str>,
    user_id: String,
    /// How many connections the user had once this one registered (on every core, with a
    /// cluster).
    users_connections: usize,
    /// Whether it is the user's only connection on this core (the user comes online).
    first_here: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (chats, left) = self.engine.rooms.unregister(&self.conn_id);
        if let Some(shared) = self.engine.shared_limits.get() {
            shared.unregister(&self.user_id);
        }
        if left > 0 {
            return;
        }
        self.engine
            .broadcast_presence_to(&self.user_id, Presence::Offline, &chats, None);
        let engine = self.engine.clone();
        let user_id = std::mem::take(&mut self.user_id);
        // The offline flag is a write; drop cannot wait for it, so it runs on its own (and is
        // tracked, so shutdown waits for it too).
        self.engine.tasks.spawn(async move {
            if let Err(err) = storage::set_online(&engine.db, &user_id, false, engine.now()).await {
                tracing::debug!(error = %err, "could not mark user offline");
            }
        });
    }
}

fn presence(user_id: &str, status: Presence, chat_id: &str) -> Outgoing {
    Outgoing::now(Event::Presence(PresenceChange {
        user_id: user_id.to_string(),
        status,
        chat_id: Some(chat_id.to_string()),
    }))
}

/// A new time-sortable id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chat::testing::conn;

    async fn engine(dir: &tempfile::TempDir) -> Arc<Engine> {
        Arc::new(crate::chat::testing::engine(dir, ChatSettings::default(), 0).await)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_handler_that_panics_leaves_no_connection_registered() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let engine = engine(&dir).await;
        let who = Principal {
            user_id: "alice".into(),
            name: "Alice".into(),
            roles: Vec::new(),
            expires_at: u64::MAX,
        };
        let (first, _outbox) = conn(&engine, "alice");
        let task = tokio::spawn({
            let engine = engine.clone();
            async move {
                let (_registration, _session) = engine
                    .open(&who, &first)
                    .await
                    .unwrap_or_else(|e| panic!("open: {e}"));
                panic!("a bug in a handler");
            }
        });
        assert!(task.await.is_err(), "the handler panicked");
        let (probe, _rx) = conn(&engine, "alice");
        assert_eq!(
            engine.rooms.register(probe),
            1,
            "the panicked connection was unregistered"
        );
    }
}
