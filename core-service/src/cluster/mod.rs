//! Several cores over one database: every room event a core delivers is also published to
//! Redis, and every core delivers the events the others published to its own members of that
//! chat, so members connected through different cores see one room (docs/scale-out.md).
//!
//! - One pub/sub channel (`cluster.channel`) carries an [`Envelope`] per event: the origin
//!   core, the chat (or the user, for events addressed to a user's connections), the
//!   connection to skip, and the event already encoded as the edge receives it. A core ignores
//!   its own envelopes and those for chats it has no member of.
//! - Order and exactly-once are the receiving side's (`Rooms`): each joined connection keeps
//!   the last `seq` it was given, drops a durable event it already has, and on a gap reads the
//!   missing events from the database before going on.
//! - Redis only carries copies: the database stays the source of truth. While Redis cannot be
//!   reached, local members are served as before, publishing drops (counted), the core reports
//!   NOT_SERVING, and both directions reconnect on their own.
//! - Each core keeps a heartbeat key (`<channel>:core:<id>`, 3 s, renewed every second)
//!   alive; the replies a core owes name it (`pending_replies.owner`), so when its heartbeat
//!   goes another core claims and continues them (`chat/failover.rs`). Every core keeps the
//!   chunks of the replies streaming on the others ([`replies`]), so a client resuming through
//!   any core gets the chunks it missed, and a continuation starts from the last one sent.
//! - Per-user rate limits and connection caps are shared through the same Redis
//!   ([`limits`]).

pub mod limits;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_proto::pb::chat as pb;
use futures::StreamExt;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::event::{Event, Outgoing};

pub mod replies;

/// `[cluster]`: off unless `redis_url` is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://host:6379/0` (a password in it: set it as `CHAT_CLUSTER__REDIS_URL`). Unset:
    /// this core is the only one.
    pub redis_url: Option<String>,
    /// The pub/sub channel every core of one deployment shares.
    pub channel: String,
    /// Envelopes waiting to be published; past it (Redis slow or down) new ones are dropped
    /// and counted in `chat_core_cluster_dropped_total`.
    pub publish_queue: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            channel: "chat:events".into(),
            publish_queue: 10_000,
        }
    }
}

impl ClusterSettings {
    pub fn validate(&self) -> Result<(), chat_runtime::InvalidSetting> {
        chat_runtime::InvalidSetting::check(
            !self.channel.is_empty(),
            "cluster.channel",
            "must not be empty",
        )?;
        chat_runtime::InvalidSetting::check(
            self.publish_queue > 0,
            "cluster.publish_queue",
            "must be greater than 0",
        )?;
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.as_str()).map_err(|_| {
                chat_runtime::InvalidSetting::new(
                    "cluster.redis_url",
                    "must be a redis:// or rediss:// URL",
                )
            })?;
        }
        Ok(())
    }
}

/// One event crossing to the other cores.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub origin: String,
    /// The chat whose members get it; empty when `user_id` is the target.
    #[prost(string, tag = "2")]
    pub chat_id: String,
    /// The user whose connections get it (errors answering that user's turn).
    #[prost(string, tag = "3")]
    pub user_id: String,
    /// A connection not to deliver to (the sender of a typing event, say).
    #[prost(string, tag = "4")]
    pub skip: String,
    #[prost(message, optional, tag = "5")]
    pub event: Option<pb::ServerEvent>,
}

impl Envelope {
    /// The event as local connections receive it: already encoded, passed through as is.
    pub fn outgoing(&self) -> Option<Outgoing> {
        let event = self.event.as_ref()?;
        Some(Outgoing {
            timestamp_ms: event.timestamp_ms,
            seq: event.seq,
            event: Event::Remote(Box::new(RemoteEvent(event.event.clone()?))),
        })
    }
}

/// Another core's event as the edge receives it, opaque to the domain: only `grpc/convert.rs`
/// looks inside (to pass it through).
#[derive(Clone, Debug)]
pub struct RemoteEvent(pub(crate) pb::server_event::Event);

/// Where remote envelopes go (the core's `Rooms`).
pub trait Deliver: Send + Sync + 'static {
    fn deliver_remote(&self, envelope: Envelope);
}

/// This core's link to the others.
pub struct Cluster {
    core_id: String,
    client: redis::Client,
    channel: String,
    /// The connection of [`Cluster::live_cores`], made at the first call that reaches Redis.
    queries: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    queue: mpsc::Sender<Vec<u8>>,
    subscribed: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
    /// Whether the last heartbeat was written: a core that cannot beat is thought dead by the
    /// others, which take its replies over.
    beating: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("core_id", &self.core_id)
            .finish_non_exhaustive()
    }
}

/// Between attempts to reach Redis again.
const RECONNECT: Duration = Duration::from_secs(1);

impl Cluster {
    /// Starts publishing and subscribing (each reconnecting on its own) until `stop`, as the
    /// core `core_id` (the owner its `Db` writes); `None` when `[cluster]` is off. Redis need
    /// not be up yet.
    pub fn start(
        settings: &ClusterSettings,
        core_id: &str,
        sink: std::sync::Weak<dyn Deliver>,
        stop: CancellationToken,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(url) = &settings.redis_url else {
            return Ok(None);
        };
        let client = redis::Client::open(url.as_str())
            .map_err(|_| "cluster.redis_url must be a redis:// or rediss:// URL".to_string())?;
        let core_id = core_id.to_string();
        let (queue, rx) = mpsc::channel(settings.publish_queue);
        let cluster = Arc::new(Self {
            core_id: core_id.clone(),
            client: client.clone(),
            channel: settings.channel.clone(),
            queries: tokio::sync::OnceCell::new(),
            queue,
            subscribed: Arc::default(),
            publishing: Arc::default(),
            beating: AtomicBool::new(false),
        });
        tokio::spawn(heartbeat(Arc::downgrade(&cluster), stop.clone()));
        tokio::spawn(publisher(
            client.clone(),
            settings.channel.clone(),
            rx,
            cluster.publishing.clone(),
            stop.clone(),
        ));
        tokio::spawn(subscriber(
            client,
            settings.channel.clone(),
            core_id,
            sink,
            cluster.subscribed.clone(),
            stop,
        ));
        tracing::info!(core = %cluster.core_id, "cluster: sharing room events through Redis");
        Ok(Some(cluster))
    }

    /// This core's id in the cluster (the owner of the replies it owes, its heartbeat key,
    /// its field in shared counts).
    pub fn core_id(&self) -> &str {
        &self.core_id
    }

    /// The ids of the cores whose heartbeat is alive now (this one's included once it has
    /// beaten). `Err` when Redis does not answer within a second.
    pub async fn live_cores(&self) -> Result<std::collections::HashSet<String>, String> {
        let ask = async {
            let mut conn = self.queries().await?;
            live_core_ids(&mut conn, &self.channel).await
        };
        match tokio::time::timeout(Duration::from_secs(1), ask).await {
            Ok(Ok(alive)) => Ok(alive),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer within 1 s".into()),
        }
    }

    /// Whether both directions reach Redis (readiness).
    pub fn healthy(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
            && self.publishing.load(Ordering::Relaxed)
            && self.beating.load(Ordering::Relaxed)
    }

    /// The connection for queries (heartbeats, live cores), made at the first call that
    /// reaches Redis; it reconnects by itself.
    async fn queries(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let conn = self
            .queries
            .get_or_try_init(|| {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)));
                self.client.get_connection_manager_with_config(config)
            })
            .await?;
        Ok(conn.clone())
    }

    /// Renews this core's heartbeat; records and logs whether it could.
    async fn beat(&self) {
        let key = heartbeat_key(&self.channel, &self.core_id);
        let beat = async {
            let mut conn = self.queries().await?;
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("EX")
                .arg(HEARTBEAT_SECS)
                .query_async::<()>(&mut conn)
                .await
        };
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), beat).await,
            Ok(Ok(()))
        );
        match (self.beating.swap(ok, Ordering::Relaxed), ok) {
            (false, true) => tracing::info!(core = %self.core_id, "cluster: heartbeat in Redis"),
            (true, false) => tracing::warn!(core = %self.core_id, "cluster: heartbeat not renewed"),
            _ => {}
        }
    }

    /// Publishes an event of `chat_id` (never waits: a full queue drops it, counted).
    pub fn publish_chat(&self, chat_id: &str, event: &pb::ServerEvent, skip: Option<&str>) {
        self.publish(Envelope {
            origin: self.core_id.clone(),
            chat_id: chat_id.to_string(),
            user_id: String::new(),
            skip: skip.unwrap_or_default().to_string(),
            event: Some(event.clone()),
        });
    }

    /// Publishes an event for every connection of `user_id`.
    pub fn publish_user(&self, user_id: &str, event: &pb::ServerEvent) {
        self.publish(Envelope {
            origin: self.core_id.clone(),
            chat_id: String::new(),
            user_id: user_id.to_string(),
            skip: String::new(),
            event: Some(event.clone()),
        });
    }

    fn publish(&self, envelope: Envelope) {
        if self.queue.try_send(envelope.encode_to_vec()).is_err() {
            metrics::counter!("chat_core_cluster_dropped_total").increment(1);
        }
    }
}

/// The key a live core keeps set.
fn heartbeat_key(channel: &str, core_id: &str) -> String {
    format!("{channel}:core:{core_id}")
}

/// How long a core's heartbeat outlives its last renewal (renewed every [`RECONNECT`]): a
/// core killed is seen dead at most this long after, and its replies taken over within
/// half a second more (`chat/failover.rs`), inside the 5 s the product promises.
pub const HEARTBEAT_SECS: u64 = 3;

/// Renews this core's heartbeat every [`RECONNECT`] until `stop`, on its own connection so
/// that a slow publish never lets it lapse.
async fn heartbeat(cluster: std::sync::Weak<Cluster>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RECONNECT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.beat().await;
    }
}

async fn publisher(
    client: redis::Client,
    channel: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    up: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    use redis::AsyncCommands;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    loop {
        let manager = tokio::select! {
            () = stop.cancelled() => return,
            made = client.get_connection_manager_with_config(config.clone()) => made,
        };
        let mut conn = match manager {
            Ok(conn) => conn,
            Err(err) => {
                up.store(false, Ordering::Relaxed);
                tracing::warn!(error = %err, "cluster: cannot reach Redis to publish; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT) => continue,
                }
            }
        };
        up.store(true, Ordering::Relaxed);
        // The manager reconnects by itself after a failed command. Each envelope gets a few
        // tries (in order: the queue waits), then is dropped: the database holds every durable
        // event, which the other cores fill in at their next gap. A ping while idle notices a
        // lost Redis before the next event does (readiness) and gets the connection back.
        let mut idle = tokio::time::interval(RECONNECT);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let bytes = tokio::select! {
                () = stop.cancelled() => return,
                _ = idle.tick() => {
                    let ping: redis::RedisResult<()> =
                        redis::cmd("PING").query_async(&mut conn).await;
                    mark(&up, ping.is_ok(), ping.err());
                    continue;
                }
                next = rx.recv() => match next {
                    Some(bytes) => bytes,
                    None => return,
                },
            };
            let mut tries = 0;
            loop {
                tries += 1;
                match conn
                    .publish::<_, _, usize>(&channel, bytes.as_slice())
                    .await
                {
                    Ok(_) => {
                        mark(&up, true, None);
                        metrics::counter!("chat_core_cluster_published_total").increment(1);
                        break;
                    }
                    Err(err) if tries < PUBLISH_TRIES => {
                        tracing::debug!(error = %err, "cluster: publish failed; trying again");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(PUBLISH_RETRY) => {}
                        }
                    }
                    Err(err) => {
                        mark(&up, false, Some(err));
                        metrics::counter!("chat_core_cluster_dropped_total").increment(1);
                        break;
                    }
                }
            }
        }
    }
}

/// Attempts per envelope, and the pause between them (the manager reconnects meanwhile).
const PUBLISH_TRIES: u32 = 3;
const PUBLISH_RETRY: Duration = Duration::from_millis(200);

/// Records whether publishing works, logging each change once.
fn mark(up: &AtomicBool, ok: bool, err: Option<redis::RedisError>) {
    let was = up.swap(ok, Ordering::Relaxed);
    match (was, ok) {
        (false, true) => tracing::info!("cluster: publishing to Redis again"),
        (true, false) => {
            let err = err.map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(error = %err, "cluster: cannot publish to Redis");
        }
        _ => {}
    }
}

async fn subscriber(
    client: redis::Client,
    channel: String,
    core_id: String,
    sink: std::sync::Weak<dyn Deliver>,
    up: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            } => connected,
        };
        match connected {
            Ok(pubsub) => {
                up.store(true, Ordering::Relaxed);
                tracing::info!("cluster: subscribed to Redis");
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        () = stop.cancelled() => return,
                        msg = messages.next() => msg,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(envelope) = Envelope::decode(msg.get_payload_bytes()) else {
                        metrics::counter!("chat_core_cluster_invalid_total").increment(1);
                        continue;
                    };
                    if envelope.origin == core_id {
                        continue;
                    }
                    let Some(sink) = sink.upgrade() else { return };
                    metrics::counter!("chat_core_cluster_received_total").increment(1);
                    sink.deliver_remote(envelope);
                }
                up.store(false, Ordering::Relaxed);
                tracing::warn!("cluster: the Redis subscription ended; reconnecting");
            }
            Err(err) => {
                up.store(false, Ordering::Relaxed);
                tracing::warn!(error = %err, "cluster: cannot subscribe to Redis; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// What every core's heartbeat key starts with: `<prefix><core id>`.
pub(crate) fn heartbeat_prefix(channel: &str) -> String {
    heartbeat_key(channel, "")
}

/// The ids of the cores of this deployment with a live heartbeat (`SCAN` over
/// `<channel>:core:*`, which may return a key twice).
pub(crate) async fn live_core_ids(
    conn: &mut impl redis::aio::ConnectionLike,
    channel: &str,
) -> redis::RedisResult<std::collections::HashSet<String>> {
    let prefix = heartbeat_prefix(channel);
    let pattern = format!("{prefix}*");
    let (mut cursor, mut live) = (0u64, std::collections::HashSet::new());
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        live.extend(
            keys.iter()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(str::to_owned),
        );
        if next == 0 {
            return Ok(live);
        }
        cursor = next;
    }
}

/// How many cores of this deployment have a live heartbeat.
pub(crate) async fn count_live_cores(
    conn: &mut impl redis::aio::ConnectionLike,
    channel: &str,
) -> redis::RedisResult<usize> {
    Ok(live_core_ids(conn, channel).await?.len())
}
