//! Per-user limits that hold across every core of a cluster (docs/scale-out.md, "Limits and
//! leases across cores"), kept in the Redis the cores already share for room events.
//!
//! - **Rates**: GCRA in one Lua script ([`RATE_SCRIPT`], sent by `EVALSHA` and loaded on
//!   `NOSCRIPT`), one key per (rate, user), `<channel>:rate:<rate>:<user>`, holding the user's
//!   theoretical arrival time and expiring when the bucket is full again (at most a minute
//!   later). The quotas are `chat.*_per_minute`, the same as on one core, and Redis's clock
//!   decides, so cores whose clocks differ still agree.
//! - **Connections**: a hash per user, `<channel>:conns:<user>`, one field per core id holding
//!   that core's number of the user's connections ([`CONNS_SCRIPT`]). A register adds one
//!   (`HINCRBY`) and answers the sum over the fields of live cores: a field whose core has no
//!   heartbeat (`<channel>:core:<id>`, written by `cluster/mod.rs`) is dropped as it is read,
//!   so a killed core's connections are released within its heartbeat's life. An unregister
//!   takes one off. Each core restates its own fields from its registry (users whose write
//!   failed every [`COUNT_EVERY`], every user it holds every [`SWEEP`]), which heals counts
//!   lost while Redis was away; a hash nobody restates expires after [`CONNS_TTL`].
//! - **Redis unreachable or slow**: every call is bounded by [`CALL_TIMEOUT`] and answers
//!   `None` when it fails; the caller then uses what one core knows (the rate governor with
//!   the budget divided by the live cores counted at the last refresh, the per-core connection
//!   count). Each fallback is counted in `chat_core_cluster_limits_fallback_total{kind}` and
//!   the switch is logged once each way. After a failure Redis is left alone for [`BACKOFF`],
//!   so while it is down no request waits out a timeout.
//!
//! Keys hold user ids: they are never logged. The scripts read heartbeat keys they are not
//! passed in `KEYS`, which a single Redis (what `[cluster]` uses) allows and Redis Cluster
//! does not.
//!
//! Owned by the engine behind an `Arc`; its upkeep task (connecting, counting live cores,
//! restating counts) ends with the core's stop token or when the engine is dropped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::ClusterSettings;

/// The longest a limit waits for Redis before deciding on its own.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed call, how long limits decide without asking Redis.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// How often the live cores are counted (and failed connection counts written again).
pub const COUNT_EVERY: Duration = Duration::from_secs(2);
/// How often every connection count this core holds is restated (keeping its hash alive).
pub const SWEEP: Duration = Duration::from_secs(30);
/// A user's connection hash outlives its last write by this much.
pub const CONNS_TTL: Duration = Duration::from_secs(120);

/// GCRA (the generic cell rate algorithm): a user may spend `n` cells when its theoretical
/// arrival time (TAT), moved on by `n` emission intervals, is at most one whole quota ahead
/// of now. A refused batch spends nothing.
///
/// KEYS[1]: the (rate, user) key, holding the TAT in µs.
/// ARGV[1]: the emission interval in µs (a minute / the quota); ARGV[2]: the quota (cells);
/// ARGV[3]: the cells asked; ARGV[4]: now in µs (tests only; otherwise Redis's clock).
/// Answers 0 when granted (and spent), else the µs to wait, or -1 when more than a whole
/// quota is asked at once (never granted).
pub const RATE_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
if n > quota then return -1 end
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + n * interval
local wait = new_tat - quota * interval - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

/// One user's connections across cores.
///
/// KEYS[1]: the user's hash (field: core id, value: that core's connections of the user).
/// ARGV[1]: this core's id; ARGV[2]: `add` (HINCRBY) or `set` (restate); ARGV[3]: the number
/// to add or set; ARGV[4]: the heartbeat key prefix (`<channel>:core:`); ARGV[5]: TTL in s.
/// Drops this core's field at zero and the fields of cores without a heartbeat, and answers
/// the sum over what is left.
pub const CONNS_SCRIPT: &str = r"
local key, me = KEYS[1], ARGV[1]
local n = tonumber(ARGV[3])
if ARGV[2] == 'add' then
  n = redis.call('HINCRBY', key, me, n)
elseif n > 0 then
  redis.call('HSET', key, me, n)
end
if n <= 0 then redis.call('HDEL', key, me) end
local total = 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local core, count = fields[i], tonumber(fields[i + 1])
  if core ~= me and redis.call('EXISTS', ARGV[4] .. core) == 0 then
    redis.call('HDEL', key, core)
  elseif count > 0 then
    total = total + count
  end
end
redis.call('EXPIRE', key, ARGV[5])
return total
";

/// What Redis answered to a rate check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    Granted,
    /// Refused: the milliseconds until the same request may succeed.
    Wait {
        retry_after_ms: i64,
    },
}

/// The core's own registry, which the counts in Redis are restated from.
pub trait LocalConnections: Send + Sync + 'static {
    /// How many connections `user_id` has on this core.
    fn connections_of(&self, user_id: &str) -> usize;
    /// Every user with a connection on this core, with how many.
    fn users(&self) -> Vec<(String, usize)>;
}

/// This core's handle on the limits shared through Redis.
pub struct SharedLimits {
    /// Set by the upkeep task once Redis was first reached; the manager reconnects itself.
    conn: RwLock<Option<ConnectionManager>>,
    channel: String,
    core_id: String,
    rate_script: redis::Script,
    conns_script: redis::Script,
    /// Cores with a live heartbeat at the last count (at least 1: this one).
    live_cores: AtomicUsize,
    /// Until when calls skip Redis after a failure.
    down_until: Mutex<Option<Instant>>,
    /// Whether the last call failed (the switch is logged once each way).
    degraded: AtomicBool,
    /// Users whose connection count could not be written: restated at the next count.
    dirty: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("core_id", &self.core_id)
            .field("live_cores", &self.live_cores())
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Starts the upkeep (connecting to Redis, which need not be up yet, counting live cores,
    /// restating this core's connection counts from `local`) until `stop`.
    ///
    /// Fails when `settings.redis_url` is unset or not a Redis URL.
    pub fn start(
        settings: &ClusterSettings,
        core_id: &str,
        local: Weak<dyn LocalConnections>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let url = settings
            .redis_url
            .as_deref()
            .ok_or_else(|| "cluster.redis_url is not set".to_string())?;
        let client = redis::Client::open(url)
            .map_err(|_| "cluster.redis_url must be a redis:// or rediss:// URL".to_string())?;
        let limits = Arc::new(Self::new(&settings.channel, core_id));
        tokio::spawn(upkeep(Arc::downgrade(&limits), client, local, stop));
        Ok(limits)
    }

    /// Limits whose Redis is never reached, with `live_cores` counted (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn unreachable(live_cores: usize) -> Arc<Self> {
        let limits = Self::new("test", "core-test");
        limits.live_cores.store(live_cores, Ordering::Relaxed);
        Arc::new(limits)
    }

    fn new(channel: &str, core_id: &str) -> Self {
        Self {
            conn: RwLock::new(None),
            channel: channel.to_string(),
            core_id: core_id.to_string(),
            rate_script: redis::Script::new(RATE_SCRIPT),
            conns_script: redis::Script::new(CONNS_SCRIPT),
            live_cores: AtomicUsize::new(1),
            down_until: Mutex::new(None),
            degraded: AtomicBool::new(false),
            dirty: Mutex::default(),
        }
    }

    /// Cores with a live heartbeat at the last count (refreshed every [`COUNT_EVERY`]; the
    /// last count is kept while Redis cannot be asked). At least 1.
    pub fn live_cores(&self) -> usize {
        self.live_cores.load(Ordering::Relaxed).max(1)
    }

    /// Spends `n` of `user_id`'s `rate` budget (`per_minute`), shared by every core.
    /// `None` when Redis did not answer in time: the caller decides on its own.
    pub async fn spend(&self, rate: &str, per_minute: u32, user_id: &str, n: u32) -> Option<Spend> {
        let key = format!("{}:rate:{rate}:{user_id}", self.channel);
        let script = &self.rate_script;
        let per_minute = per_minute.max(1);
        let waited = self
            .call(Some("rate"), |mut conn| async move {
                gcra(&mut conn, script, &key, per_minute, n, None).await
            })
            .await?;
        Some(spend_of(waited))
    }

    /// Counts a new connection of `user_id` on this core and answers how many the user now
    /// has on every live core. `None` when Redis did not answer in time (the count is then
    /// written again later).
    pub async fn register(&self, user_id: &str) -> Option<usize> {
        let total = self
            .write_count(user_id, "add", 1, Some("connections"))
            .await;
        if total.is_none() {
            self.mark_dirty(user_id);
        }
        total
    }

    /// Takes one connection of `user_id` off this core's count, in the background (a
    /// connection's end cannot wait for Redis).
    pub fn unregister(self: &Arc<Self>, user_id: &str) {
        let me = self.clone();
        let user_id = user_id.to_string();
        tokio::spawn(async move {
            if me.write_count(&user_id, "add", -1, None).await.is_none() {
                me.mark_dirty(&user_id);
            }
        });
    }

    fn mark_dirty(&self, user_id: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id.to_string());
    }

    async fn write_count(
        &self,
        user_id: &str,
        mode: &'static str,
        n: i64,
        kind: Option<&'static str>,
    ) -> Option<usize> {
        let key = format!("{}:conns:{user_id}", self.channel);
        let prefix = super::heartbeat_prefix(&self.channel);
        let script = &self.conns_script;
        let core_id = self.core_id.as_str();
        let total: i64 = self
            .call(kind, |mut conn| async move {
                script
                    .key(&key)
                    .arg(core_id)
                    .arg(mode)
                    .arg(n)
                    .arg(&prefix)
                    .arg(CONNS_TTL.as_secs())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Some(usize::try_from(total).unwrap_or(0))
    }

    /// Runs one call against Redis within [`CALL_TIMEOUT`]. `None` when Redis is not
    /// connected, backing off, failed or slow; `kind` names the fallback in the metric.
    async fn call<T, F, Fut>(&self, kind: Option<&'static str>, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection();
        let answer = match conn {
            Some(conn) => match tokio::time::timeout(CALL_TIMEOUT, f(conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(err)) => Err(Some(err)),
                Err(_) => Err(None),
            },
            None => Err(None),
        };
        match answer {
            Ok(value) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("cluster limits: Redis answers again; limits are shared");
                }
                Some(value)
            }
            Err(err) => {
                if let Some(kind) = kind {
                    metrics::counter!("chat_core_cluster_limits_fallback_total", "kind" => kind)
                        .increment(1);
                }
                self.failed(err);
                None
            }
        }
    }

    /// The connection, unless Redis was never reached or is being left alone after a failure.
    fn connection(&self) -> Option<ConnectionManager> {
        let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        drop(down);
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn failed(&self, err: Option<redis::RedisError>) {
        let was_down = self.degraded.swap(true, Ordering::Relaxed);
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        let backing_off = down.is_some_and(|until| Instant::now() < until);
        if !backing_off {
            *down = Some(Instant::now() + BACKOFF);
        }
        drop(down);
        if !was_down {
            let error = match err {
                Some(err) => err.to_string(),
                None => "no answer in time".to_string(),
            };
            tracing::warn!(
                error = %error,
                live_cores = self.live_cores(),
                "cluster limits: Redis unreachable; each core limits on its own (rates: the budget divided by the live cores)"
            );
        }
    }

    /// Counts the live cores (kept when Redis cannot be asked).
    async fn count_live_cores(&self) {
        let channel = self.channel.as_str();
        let counted = self
            .call(None, |mut conn| async move {
                super::count_live_cores(&mut conn, channel).await
            })
            .await;
        if let Some(n) = counted {
            let n = n.max(1);
            if self.live_cores.swap(n, Ordering::Relaxed) != n {
                tracing::info!(live_cores = n, "cluster limits: live cores counted");
            }
            metrics::gauge!("chat_core_cluster_live_cores").set(n as f64);
        }
    }

    /// Writes this core's counts again from its registry: the users whose write failed, or
    /// (`all`) every user it holds.
    async fn restate(&self, local: &dyn LocalConnections, all: bool) {
        let dirty: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let mut users: Vec<(String, usize)> = dirty
            .into_iter()
            .map(|user| {
                let n = local.connections_of(&user);
                (user, n)
            })
            .collect();
        if all {
            users.extend(local.users());
        }
        let mut left = users.into_iter();
        for (user, n) in left.by_ref() {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            if self.write_count(&user, "set", n, None).await.is_none() {
                self.mark_dirty(&user);
                break;
            }
        }
        // Redis went away mid-way: the rest waits for the next round.
        for (user, _) in left {
            self.mark_dirty(&user);
        }
    }
}

/// A rate script's answer as the caller needs it.
fn spend_of(waited_us: i64) -> Spend {
    match waited_us {
        0 => Spend::Granted,
        // More than a whole minute's budget at once: never allowed.
        w if w < 0 => Spend::Wait {
            retry_after_ms: 60_000,
        },
        w => Spend::Wait {
            retry_after_ms: (w / 1000).max(1),
        },
    }
}

/// Between a minute's cells, in µs (at least 1).
fn interval_us(per_minute: u32) -> u64 {
    (60_000_000 / u64::from(per_minute.max(1))).max(1)
}

/// One run of [`RATE_SCRIPT`]: 0 when granted, else µs to wait (-1: never).
async fn gcra(
    conn: &mut ConnectionManager,
    script: &redis::Script,
    key: &str,
    per_minute: u32,
    n: u32,
    now_us: Option<u64>,
) -> redis::RedisResult<i64> {
    let mut invocation = script.key(key);
    invocation
        .arg(interval_us(per_minute))
        .arg(per_minute)
        .arg(n);
    if let Some(now) = now_us {
        invocation.arg(now);
    }
    invocation.invoke_async(conn).await
}

/// Connects (retrying until `stop`), then counts live cores and restates counts on their
/// clocks. Ends with `stop` or when the limits are dropped.
async fn upkeep(
    limits: Weak<SharedLimits>,
    client: redis::Client,
    local: Weak<dyn LocalConnections>,
    stop: CancellationToken,
) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT * 4))
        .set_response_timeout(Some(CALL_TIMEOUT));
    let manager = loop {
        let made = tokio::select! {
            () = stop.cancelled() => return,
            made = client.get_connection_manager_with_config(config.clone()) => made,
        };
        match made {
            Ok(manager) => break manager,
            Err(err) => {
                tracing::debug!(error = %err, "cluster limits: cannot reach Redis yet; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(BACKOFF) => {}
                }
            }
        }
    };
    {
        let Some(limits) = limits.upgrade() else {
            return;
        };
        *limits.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(manager);
    }
    let mut count = tokio::time::interval(COUNT_EVERY);
    count.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    loop {
        let all = tokio::select! {
            () = stop.cancelled() => return,
            _ = count.tick() => false,
            _ = sweep.tick() => true,
        };
        let (Some(limits), Some(local)) = (limits.upgrade(), local.upgrade()) else {
            return;
        };
        limits.count_live_cores().await;
        limits.restate(local.as_ref(), all).await;
    }
}

#[cfg(test)]
mod tests {
    //! The scripts against a real `redis-server` (`TEST_REDIS_SERVER`, else the one on PATH;
    //! these tests fail, never skip, when it cannot start), with the clock passed in.

    use super::*;

    /// A throwaway `redis-server` on a free port, killed when dropped.
    struct Redis {
        port: u16,
        _child: tokio::process::Child,
    }

    impl Redis {
        async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("free port: {e}"));
            let bin = std::env::var("TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
            let child = tokio::process::Command::new(&bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {bin} (Debian: apt-get install redis-server): {e}")
                });
            let redis = Self {
                port,
                _child: child,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while redis.manager().await.is_none() {
                assert!(Instant::now() < deadline, "{bin} did not start within 10 s");
                // Waiting for a process to open its port: there is no event to wait on.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            redis
        }

        async fn manager(&self) -> Option<ConnectionManager> {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port)).ok()?;
            client.get_connection_manager().await.ok()
        }

        async fn conn(&self) -> ConnectionManager {
            self.manager()
                .await
                .unwrap_or_else(|| panic!("redis on {}", self.port))
        }
    }

    const SECOND: u64 = 1_000_000;

    async fn spend(conn: &mut ConnectionManager, per_minute: u32, n: u32, at: u64) -> Spend {
        let script = redis::Script::new(RATE_SCRIPT);
        let waited = gcra(conn, &script, "t:rate:message:u1", per_minute, n, Some(at))
            .await
            .unwrap_or_else(|e| panic!("script: {e}"));
        spend_of(waited)
    }

    #[tokio::test]
    async fn the_gcra_script_grants_the_quota_then_answers_the_wait_and_refills() {
        let redis = Redis::start().await;
        let mut conn = redis.conn().await;
        let t0 = 1_700_000_000 * SECOND;
        assert_eq!(spend(&mut conn, 2, 1, t0).await, Spend::Granted);
        assert_eq!(spend(&mut conn, 2, 1, t0).await, Spend::Granted);
        // The governor of one core answers the same: one message per 30 s.
        assert_eq!(
            spend(&mut conn, 2, 1, t0).await,
            Spend::Wait {
                retry_after_ms: 30_000
            }
        );
        assert_eq!(
            spend(&mut conn, 2, 1, t0 + 29 * SECOND).await,
            Spend::Wait {
                retry_after_ms: 1_000
            },
            "not yet"
        );
        assert_eq!(
            spend(&mut conn, 2, 1, t0 + 30 * SECOND).await,
            Spend::Granted
        );
        // The key lives until the bucket is full again: about a window.
        let ttl: i64 = redis::cmd("PTTL")
            .arg("t:rate:message:u1")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("pttl: {e}"));
        assert!(ttl > 0 && ttl <= 60_001, "ttl {ttl} ms");
    }

    #[tokio::test]
    async fn a_batch_is_all_or_nothing_and_more_than_the_quota_is_never_granted() {
        let redis = Redis::start().await;
        let mut conn = redis.conn().await;
        let t0 = 1_700_000_000 * SECOND;
        assert_eq!(
            spend(&mut conn, 4, 5, t0).await,
            Spend::Wait {
                retry_after_ms: 60_000
            }
        );
        assert_eq!(spend(&mut conn, 4, 3, t0).await, Spend::Granted);
        assert_eq!(
            spend(&mut conn, 4, 2, t0).await,
            Spend::Wait {
                retry_after_ms: 15_000
            },
            "two more is one too many"
        );
        assert_eq!(
            spend(&mut conn, 4, 1, t0).await,
            Spend::Granted,
            "the refused batch spent nothing"
        );
    }

    #[tokio::test]
    async fn connection_counts_sum_live_cores_and_drop_dead_ones() {
        let redis = Redis::start().await;
        let mut conn = redis.conn().await;
        let (a, b) = (
            SharedLimits::new("t", "core-a"),
            SharedLimits::new("t", "core-b"),
        );
        for core in [&a, &b] {
            *core.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        }
        let beat = |id: &str| {
            redis::cmd("SET")
                .arg(format!("{}{id}", super::super::heartbeat_prefix("t")))
                .arg(1)
                .clone()
        };
        let _: () = beat("core-a")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _: () = beat("core-b")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.register("u1").await, Some(1));
        assert_eq!(b.register("u1").await, Some(2));
        assert_eq!(a.register("u1").await, Some(3));
        assert_eq!(a.write_count("u1", "add", -1, None).await, Some(2));
        assert_eq!(a.register("u2").await, Some(1), "counts are per user");
        // Core B dies: its heartbeat expires, and its field goes at the next read.
        let _: () = redis::cmd("DEL")
            .arg(format!("{}core-b", super::super::heartbeat_prefix("t")))
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.register("u1").await, Some(2));
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg("t:conns:u1")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fields, vec!["core-a".to_string()]);
        // A restate writes what the registry holds, and zero removes the key.
        assert_eq!(a.write_count("u1", "set", 0, None).await, Some(0));
        let exists: bool = redis::cmd("EXISTS")
            .arg("t:conns:u1")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!exists, "an empty hash is gone");
    }

    #[tokio::test]
    async fn without_redis_every_call_answers_none_at_once_and_counts_a_fallback() {
        let limits = SharedLimits::new("t", "core-a");
        assert_eq!(limits.spend("message", 10, "u1", 1).await, None);
        assert_eq!(limits.register("u1").await, None);
        assert!(
            limits
                .dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains("u1"),
            "the count is written again later"
        );
        assert_eq!(limits.live_cores(), 1);
    }

    #[test]
    fn the_emission_interval_spreads_a_minute_over_the_quota() {
        assert_eq!(interval_us(2), 30_000_000);
        assert_eq!(interval_us(0), 60_000_000, "a zero quota counts as one");
        assert_eq!(interval_us(u32::MAX), 1);
        assert_eq!(spend_of(0), Spend::Granted);
        assert_eq!(spend_of(999), Spend::Wait { retry_after_ms: 1 });
        assert_eq!(
            spend_of(-1),
            Spend::Wait {
                retry_after_ms: 60_000
            }
        );
    }
}
