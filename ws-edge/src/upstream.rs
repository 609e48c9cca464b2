//! The edge's connections to the cores. Each core (a URL of `core_url`/`core_urls`, or one
//! address a core URL's DNS name resolves to) has a small pool of HTTP/2 channels; each
//! WebSocket gets its own gRPC stream, multiplexed over one of its core's channels picked
//! round-robin, so streams do not all contend on a single connection's lock under load.
//!
//! Which core: the serving one with the fewest streams from this edge (ties taken in turn).
//! [`Upstream::watch`] asks every core's `grpc.health.v1` service every
//! `core_probe_interval_ms`; a core that is not SERVING, does not answer in time, or refuses a
//! stream ([`Upstream::connect`] then tries the next) gets no new streams until a probe finds
//! it serving again. While no core is known to serve, streams go to the others in turn anyway
//! and fail as they would with one core. Streams already open stay where they are: when their
//! core goes away they end, the socket is closed as before, and the client's reconnection
//! lands on a serving core.
//!
//! Every call carries the caller's own token ([`with_token`]): the core authenticates it
//! again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chat_proto::pb::admin::admin_service_client::AdminServiceClient;
use chat_proto::pb::chat::chat_service_client::ChatServiceClient;
use chat_proto::pb::chat::{ClientEvent, ServerEvent};
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::EdgeSettings;
use crate::config::CoreTarget;

/// The longest a DNS lookup of a core's name may take before the last answer is kept.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the edge knows of one core's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Not probed yet: used like a serving core, after the serving ones.
    Unknown = 0,
    Serving = 1,
    /// Not serving, not answering, or refusing streams: used only when no other is left.
    Down = 2,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Serving,
            2 => Self::Down,
            _ => Self::Unknown,
        }
    }
}

/// One core: its channels, its health and the streams this edge has open on it. Shared by
/// the [`Upstream`]'s current list and every [`StreamGuard`] of a stream on it, so a core
/// dropped from the list (its name stopped resolving to it) lives until its last stream ends.
pub struct Core {
    /// The `core` label of its metrics: the URL, or `scheme://address` for a resolved one.
    label: String,
    /// Which of the settings' URLs it comes from.
    target: usize,
    channels: Vec<Channel>,
    next: AtomicUsize,
    health: AtomicU8,
    streams: AtomicUsize,
    /// Wakes [`Upstream::watch`] for a probe now (a stream on this core failed).
    wake: Arc<Notify>,
}

impl Core {
    fn new(
        label: String,
        target: usize,
        endpoint: &Endpoint,
        size: usize,
        wake: Arc<Notify>,
    ) -> Self {
        let endpoint = endpoint
            .clone()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        // Lazily: the edge starts even while its cores are still starting.
        let channels = (0..size.max(1)).map(|_| endpoint.connect_lazy()).collect();
        let core = Self {
            label,
            target,
            channels,
            next: AtomicUsize::new(0),
            health: AtomicU8::new(Health::Unknown as u8),
            streams: AtomicUsize::new(0),
            wake,
        };
        core.publish();
        core
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub fn serving(&self) -> bool {
        self.health() == Health::Serving
    }

    /// Streams this edge has open on the core.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel())
    }

    /// Records `health`, logging a change (the URL or address only).
    fn set_health(&self, health: Health) {
        let before = Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed));
        if before != health {
            match health {
                Health::Serving => tracing::info!(core = %self.label, "core serving"),
                Health::Down if before == Health::Serving => {
                    tracing::warn!(core = %self.label, "core not serving: new streams go to the other cores");
                }
                Health::Down => tracing::warn!(core = %self.label, "core not serving"),
                Health::Unknown => {}
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let label = self.label.clone();
        metrics::gauge!("chat_edge_core_healthy", "core" => label.clone()).set(if self.serving() {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("chat_edge_core_streams", "core" => label).set(self.streams() as f64);
    }

    /// Asks the core's health service (the whole server: `""`) within `timeout`.
    async fn probe(&self, timeout: Duration) -> Health {
        let mut health = HealthClient::new(self.channel());
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        let health = match tokio::time::timeout(timeout, check).await {
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Health::Serving,
            _ => Health::Down,
        };
        self.set_health(health);
        health
    }
}

/// A stream open on a core, counted in its `chat_edge_core_streams` while this lives.
pub struct StreamGuard(Arc<Core>);

impl StreamGuard {
    fn new(core: Arc<Core>) -> Self {
        core.streams.fetch_add(1, Ordering::Relaxed);
        core.publish();
        Self(core)
    }

    pub fn core(&self) -> &Core {
        &self.0
    }

    /// The core ended the stream with an error: probe it now rather than at the next tick,
    /// so the client's reconnection finds it marked if it is gone.
    pub fn failed(&self) {
        self.0.wake.notify_one();
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.publish();
    }
}

/// A `ChatService.Connect` stream, open on one core.
pub struct Connected {
    /// Events towards the core (bounded).
    pub to_core: mpsc::Sender<Box<ClientEvent>>,
    pub from_core: tonic::Streaming<ServerEvent>,
    /// Keep it as long as the stream: it counts the stream on its core.
    pub guard: StreamGuard,
}

/// Why no stream could be opened.
#[derive(Debug)]
pub enum Refused {
    /// The token cannot be a header value, or the core refused it.
    Unauthenticated,
    /// Every core tried refused or could not be reached (the last one's code).
    Unavailable(tonic::Code),
}

pub struct Upstream {
    targets: Vec<CoreTarget>,
    channels: usize,
    probe_interval: Duration,
    probe_timeout: Duration,
    resolve_interval: Option<Duration>,
    /// The cores now: each target's resolved addresses, or the target itself. Replaced
    /// whole by [`Upstream::resolve`]; never held across an await.
    cores: RwLock<Arc<[Arc<Core>]>>,
    /// Where the next pick starts, so ties are taken in turn.
    next: AtomicUsize,
    wake: Arc<Notify>,
}

impl Upstream {
    /// The cores of `settings` (checked by [`EdgeSettings::validate`]), with
    /// `core_channels` channels each, connected lazily. Names are resolved by
    /// [`Upstream::resolve`] (at build) and [`Upstream::watch`].
    pub fn new(settings: &EdgeSettings, targets: Vec<CoreTarget>) -> Self {
        let wake = Arc::new(Notify::new());
        let channels = settings.core_channels;
        let cores: Vec<Arc<Core>> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Arc::new(Core::new(
                    t.url.clone(),
                    i,
                    &t.endpoint,
                    channels,
                    wake.clone(),
                ))
            })
            .collect();
        Self {
            targets,
            channels,
            probe_interval: settings.core_probe_interval(),
            probe_timeout: settings.core_probe_timeout(),
            resolve_interval: settings.core_resolve_interval(),
            cores: RwLock::new(cores.into()),
            next: AtomicUsize::new(0),
            wake,
        }
    }

    /// The cores now.
    pub fn cores(&self) -> Arc<[Arc<Core>]> {
        self.cores
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The best core not in `tried`: serving before unknown before down, then the fewest
    /// streams; among equals, the next in turn. `None` when every core was tried.
    fn pick_excluding(&self, tried: &[Arc<Core>]) -> Option<Arc<Core>> {
        let cores = self.cores();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let rank = |core: &Core| match core.health() {
            Health::Serving => 0,
            Health::Unknown => 1,
            Health::Down => 2,
        };
        let open: Vec<&Arc<Core>> = cores
            .iter()
            .filter(|core| !tried.iter().any(|t| Arc::ptr_eq(t, core)))
            .collect();
        let best = open.iter().map(|core| (rank(core), core.streams())).min()?;
        let equal: Vec<&&Arc<Core>> = open
            .iter()
            .filter(|core| (rank(core), core.streams()) == best)
            .collect();
        equal.get(start % equal.len()).map(|core| Arc::clone(core))
    }

    /// The core a call goes to now (see the module's rule).
    pub fn pick(&self) -> Arc<Core> {
        match self.pick_excluding(&[]) {
            Some(core) => core,
            // Never empty: every target is a core until its name resolves.
            None => self.cores()[0].clone(),
        }
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        self.pick().chat()
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.pick().channel())
    }

    /// Opens a `ChatService.Connect` stream as the owner of `token` on the best core; a core
    /// that cannot be reached (or answers UNAVAILABLE) is marked down and the next one is
    /// tried, each at most once. `buffer`: events queued towards the core.
    pub async fn connect(&self, token: &str, buffer: usize) -> Result<Connected, Refused> {
        let mut tried: Vec<Arc<Core>> = Vec::new();
        let mut last = tonic::Code::Unavailable;
        while let Some(core) = self.pick_excluding(&tried) {
            let (to_core, rx) = mpsc::channel::<Box<ClientEvent>>(buffer);
            let Some(request) = with_token(ReceiverStream::new(rx).map(|ev| *ev), token) else {
                return Err(Refused::Unauthenticated);
            };
            match core.chat().connect(request).await {
                Ok(response) => {
                    return Ok(Connected {
                        to_core,
                        from_core: response.into_inner(),
                        guard: StreamGuard::new(core),
                    });
                }
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    return Err(Refused::Unauthenticated);
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tracing::warn!(core = %core.label, "core unreachable: trying another");
                    metrics::counter!("chat_edge_core_failovers_total", "core" => core.label.clone())
                        .increment(1);
                    core.set_health(Health::Down);
                    self.wake.notify_one();
                    last = status.code();
                    tried.push(core);
                }
                Err(status) => return Err(Refused::Unavailable(status.code())),
            }
        }
        Err(Refused::Unavailable(last))
    }

    /// Probes every core now (at most `core_probe_timeout_ms`, all at once): how many serve,
    /// of how many. `/readyz` asks this, so it never answers from a stale probe.
    pub async fn probe_all(&self) -> (usize, usize) {
        let cores = self.cores();
        let timeout = self.probe_timeout.max(Duration::from_secs(2));
        let results = futures::future::join_all(cores.iter().map(|c| c.probe(timeout))).await;
        let serving = results.iter().filter(|h| **h == Health::Serving).count();
        (serving, cores.len())
    }

    /// Probes the cores every `core_probe_interval_ms` (and at once when a stream fails), and
    /// resolves their names every `core_resolve_interval_ms`, until `shutdown`.
    pub async fn watch(&self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.probe_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resolved = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                () = self.wake.notified() => {}
            }
            if let Some(every) = self.resolve_interval
                && resolved.elapsed() >= every
            {
                self.resolve().await;
                resolved = Instant::now();
            }
            let cores = self.cores();
            let timeout = self.probe_timeout;
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = futures::future::join_all(cores.iter().map(|c| c.probe(timeout))) => {}
            }
        }
    }

    /// Resolves every target whose host is a DNS name: each address it resolves to becomes a
    /// core (one already known keeps its channels, health and streams); a name that does
    /// not resolve keeps the cores it had, or stays one core connected by name. Does nothing
    /// when `core_resolve_interval_ms` is 0.
    pub async fn resolve(&self) {
        if self.resolve_interval.is_none() || self.targets.iter().all(|t| t.name.is_none()) {
            return;
        }
        let current = self.cores();
        let mut cores: Vec<Arc<Core>> = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            let had: Vec<&Arc<Core>> = current.iter().filter(|c| c.target == i).collect();
            let Some((host, port)) = &target.name else {
                cores.extend(had.into_iter().cloned());
                continue;
            };
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => {
                    let mut seen = HashSet::new();
                    let mut addrs: Vec<SocketAddr> = addrs.filter(|a| seen.insert(*a)).collect();
                    addrs.sort();
                    addrs
                }
                Ok(Err(err)) => {
                    tracing::warn!(core = %target.url, error = %err, "cannot resolve the core's name: keeping its last addresses");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(core = %target.url, "resolving the core's name timed out: keeping its last addresses");
                    Vec::new()
                }
            };
            if addrs.is_empty() {
                cores.extend(had.into_iter().cloned());
                continue;
            }
            let scheme = if target.tls.is_some() {
                "https"
            } else {
                "http"
            };
            for addr in addrs {
                let label = format!("{scheme}://{addr}");
                if let Some(core) = had.iter().find(|c| c.label == label) {
                    cores.push((*core).clone());
                    continue;
                }
                match self.address_endpoint(target, &label) {
                    Some(endpoint) => cores.push(Arc::new(Core::new(
                        label,
                        i,
                        &endpoint,
                        self.channels,
                        self.wake.clone(),
                    ))),
                    None => cores.extend(had.iter().map(|c| (*c).clone())),
                }
            }
        }
        let same = cores.len() == current.len()
            && cores
                .iter()
                .zip(current.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same || cores.is_empty() {
            return;
        }
        for gone in current
            .iter()
            .filter(|c| !cores.iter().any(|n| Arc::ptr_eq(n, c)))
        {
            gone.set_health(Health::Down);
        }
        let labels: Vec<&str> = cores.iter().map(|c| c.label.as_str()).collect();
        tracing::info!(cores = ?labels, "core addresses changed");
        *self
            .cores
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cores.into();
    }

    /// The endpoint of one address of `target`'s name: the same TLS (checked against the
    /// name, not the address) and the name as the requests' authority.
    fn address_endpoint(&self, target: &CoreTarget, url: &str) -> Option<Endpoint> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .ok()?
            .origin(target.endpoint.uri().clone());
        match &target.tls {
            None => Some(endpoint),
            Some(tls) => endpoint.tls_config(tls.clone()).ok(),
        }
    }
}

/// A request carrying `authorization: Bearer <token>`; `None` when the token cannot be a
/// header value (control characters), which no valid token contains.
pub fn with_token<T>(message: T, token: &str) -> Option<tonic::Request<T>> {
    let value = format!("Bearer {token}").parse().ok()?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Some(request)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    /// An upstream over `n` cores on loopback ports nothing listens on.
    fn upstream(n: usize) -> Upstream {
        let settings = EdgeSettings {
            core_urls: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", 1 + i))
                .collect(),
            ..EdgeSettings::default()
        };
        let targets = settings.core_targets().unwrap();
        Upstream::new(&settings, targets)
    }

    fn picks(upstream: &Upstream, n: usize) -> Vec<String> {
        (0..n).map(|_| upstream.pick().label().to_owned()).collect()
    }

    #[tokio::test]
    async fn new_streams_go_to_serving_cores_with_the_fewest_streams_in_turn() {
        let up = upstream(3);
        let cores = up.cores();
        // Nothing probed yet: every core in turn.
        let first = picks(&up, 3);
        let distinct: HashSet<&String> = first.iter().collect();
        assert_eq!(distinct.len(), 3, "{first:?}");
        // One serving: it gets them all, before the unknown ones.
        cores[1].set_health(Health::Serving);
        assert!(picks(&up, 4).iter().all(|l| l == cores[1].label()));
        // Two serving: the one with fewer streams first.
        cores[2].set_health(Health::Serving);
        let _a = StreamGuard::new(cores[1].clone());
        let _b = StreamGuard::new(cores[1].clone());
        assert_eq!(up.pick().label(), cores[2].label());
        let _c = StreamGuard::new(cores[2].clone());
        assert_eq!(up.pick().label(), cores[2].label(), "1 stream against 2");
        let _d = StreamGuard::new(cores[2].clone());
        // Equal: taken in turn.
        let both: HashSet<String> = picks(&up, 2).into_iter().collect();
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(cores[1].streams(), 2);
        drop(_a);
        assert_eq!(cores[1].streams(), 1);
    }

    #[tokio::test]
    async fn a_down_core_is_used_only_when_no_other_is_left() {
        let up = upstream(2);
        let cores = up.cores();
        cores[0].set_health(Health::Down);
        assert!(picks(&up, 3).iter().all(|l| l == cores[1].label()));
        cores[1].set_health(Health::Down);
        // All down: still somewhere to try (and fail), as with one core.
        let both: HashSet<String> = picks(&up, 2).into_iter().collect();
        assert_eq!(both.len(), 2);
        assert!(up.pick_excluding(&cores).is_none());
    }

    #[tokio::test]
    async fn a_core_url_naming_a_host_becomes_one_core_per_address() {
        let settings = EdgeSettings {
            core_url: "http://localhost:1".into(),
            ..EdgeSettings::default()
        };
        let targets = settings.core_targets().unwrap();
        let up = Upstream::new(&settings, targets);
        assert_eq!(
            up.cores()[0].label(),
            "http://localhost:1",
            "by name until resolved"
        );
        up.resolve().await;
        let labels: Vec<String> = up.cores().iter().map(|c| c.label().to_owned()).collect();
        assert!(
            labels.contains(&"http://127.0.0.1:1".to_owned()),
            "{labels:?}"
        );
        // Resolved again to the same addresses: the same cores (health and streams kept).
        let before = up.cores();
        up.resolve().await;
        assert!(
            before
                .iter()
                .zip(up.cores().iter())
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        // Never resolved when the interval is 0.
        let settings = EdgeSettings {
            core_resolve_interval_ms: 0,
            ..settings
        };
        let targets = settings.core_targets().unwrap();
        let up = Upstream::new(&settings, targets);
        up.resolve().await;
        assert_eq!(up.cores().len(), 1);
        assert_eq!(up.cores()[0].label(), "http://localhost:1");
    }

    #[tokio::test]
    async fn a_stream_to_unreachable_cores_tries_each_once_and_marks_them_down() {
        let up = upstream(2);
        match up.connect("a.token", 4).await {
            Err(Refused::Unavailable(code)) => assert_eq!(code, tonic::Code::Unavailable),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("nothing listens there"),
        }
        assert!(up.cores().iter().all(|c| c.health() == Health::Down));
        assert_eq!(up.probe_all().await, (0, 2));
    }
}
