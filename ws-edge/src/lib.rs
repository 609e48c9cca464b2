//! `chat-edge`: the stateless WebSocket edge. It terminates browser sockets, speaks the JSON
//! protocol of `docs/protocol.md`, and bridges each socket to one gRPC `ChatService.Connect`
//! stream on the core. It also serves REST reads, health probes and the chat page.
//!
//! Module map: [`config`] (settings), [`server`] (accepting and serving HTTP connections:
//! timeouts, caps), [`routes`] (HTTP routes), [`pages`] (the chat page, security headers),
//! [`bridge`] (socket <-> gRPC pump, enforcing the limits the core announces), [`outbox`] (a
//! socket's bounded write queue), [`socketio`] (seed 003's Socket.IO clients, bridged the same
//! way), [`frames`] (JSON <-> protobuf), [`upstream`] (channels to the
//! cores, and which core a new stream goes to), [`error`] (REST errors). Protocol constants come from [`chat_proto::limits`].

pub mod admin;
pub mod bridge;
pub mod config;
pub mod error;
pub mod files;
pub mod frames;
pub mod openapi;
pub mod outbox;
pub mod pages;
pub mod routes;
pub mod server;
pub mod socketio;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use chat_auth::Verifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::EdgeSettings;

/// Why the edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The settings are unusable; the message names the key to fix.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// `[tls]`'s certificate or key cannot be used; the message names the file.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long shutdown waits for sockets to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Shared by every route and socket.
pub struct EdgeState {
    pub settings: EdgeSettings,
    pub verifier: Verifier,
    pub upstream: upstream::Upstream,
    /// Live (and upgrading) sockets.
    pub connections: AtomicUsize,
    /// HTTP connections not upgraded (yet), against `limits.max_http_connections`.
    pub http_connections: Arc<AtomicUsize>,
    /// Frames and bytes waiting in every socket's write queue.
    pub queued: Arc<outbox::QueueFigures>,
    /// Cancelled on shutdown: every socket closes with 1012.
    pub shutdown: CancellationToken,
    /// Socket tasks, waited for at shutdown.
    pub tasks: TaskTracker,
    pub started: Instant,
}

/// The edge's router, shared by `main`, `chatctl dev` and tests. `/metrics` is on it unless
/// `metrics.addr` gives it a listener of its own ([`metrics_app`]).
pub fn app(state: Arc<EdgeState>) -> Router {
    // The REST routes come from the table the OpenAPI document is built from.
    let table = openapi::rest_routes();
    let document: Arc<str> = openapi::document(&table).to_string().into();
    let mut router = pages::routes(&state.settings.pages)
        .route("/ws", get(routes::websocket))
        .route("/chat", get(routes::websocket))
        .route("/api/v1/chat/ws", get(routes::websocket))
        .route(
            "/api/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document.to_string(),
                    )
                }
            }),
        );
    if let Some(path) = state.settings.ws_path.as_deref()
        && !["/ws", "/chat", "/api/v1/chat/ws"].contains(&path)
    {
        router = router.route(path, get(routes::websocket));
    }
    // Uploads have a body limit of their own (`limits.max_upload_bytes`).
    let mut uploads = Router::new();
    for route in table {
        match route.part {
            openapi::Part::Main => router = router.route(route.path, route.handler),
            // On its own listener when `metrics.addr` is set ([`metrics_app`]).
            openapi::Part::Metrics if state.settings.metrics.addr.is_some() => {}
            openapi::Part::Metrics => router = router.route(route.path, route.handler),
            openapi::Part::Uploads => uploads = uploads.route(route.path, route.handler),
        }
    }
    let router = limited(router, state.settings.limits.max_body_bytes);
    let uploads = limited(uploads, state.settings.limits.max_upload_bytes);
    // Last, so that it wraps every route and the fallback: Socket.IO answers `/socket.io/...`
    // itself and hands every other request on.
    let router = router.merge(uploads).layer(socketio::layer(state.clone()));
    guarded(router, &state).with_state(state)
}

/// The router of the metrics listener (`metrics.addr`).
pub fn metrics_app(state: Arc<EdgeState>) -> Router {
    let router = limited(
        Router::new().route("/metrics", get(routes::metrics)),
        state.settings.limits.max_body_bytes,
    );
    guarded(router, &state).with_state(state)
}

/// 413 above `max` bytes: by `Content-Length` before the handler runs, or while a body is
/// read.
fn limited(router: Router<Arc<EdgeState>>, max: usize) -> Router<Arc<EdgeState>> {
    router
        .layer(DefaultBodyLimit::max(max))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max))
}

/// What every request gets: CORS for the allowed origins, and the security headers.
fn guarded(router: Router<Arc<EdgeState>>, state: &EdgeState) -> Router<Arc<EdgeState>> {
    router
        .layer(cors(&state.settings.allowed_origins))
        .layer(axum::middleware::from_fn(pages::security_headers))
}

/// Pages on other origins may call the edge (Socket.IO's long polling, REST with a bearer
/// token) when `allowed_origins` lets them, as it lets their WebSockets: every origin while it
/// is empty. No cookies are involved (tokens travel in headers or the query), so credentials
/// are not allowed.
fn cors(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(allowed.iter().filter_map(|a| HeaderValue::from_str(a).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// A bound edge, ready to run.
pub struct Edge {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<tls::Tls>,
    state: Arc<EdgeState>,
}

impl Edge {
    /// Validates settings and binds. Fails with a message saying what to fix.
    pub async fn build(settings: EdgeSettings) -> Result<Self, EdgeError> {
        settings.validate()?;
        let verifier = Verifier::new(&settings.auth).map_err(config::ConfigError::from)?;
        let targets = settings.core_targets().map_err(config::ConfigError::from)?;
        // Before the cores are made: they record their gauges from the start.
        chat_runtime::metrics();
        let upstream = upstream::Upstream::new(&settings, targets);
        upstream.resolve().await;
        let tls = tls::Tls::load(&settings.tls)?;
        let addr = settings.http_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EdgeError::Bind { addr, source })?;
        let metrics_listener = match settings.metrics.addr {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| EdgeError::Bind { addr, source })?,
            ),
        };
        for warning in settings.startup_warnings() {
            tracing::warn!("{warning}");
        }
        chat_runtime::metrics();
        let state = Arc::new(EdgeState {
            settings,
            verifier,
            upstream,
            connections: AtomicUsize::new(0),
            http_connections: Arc::default(),
            queued: Arc::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
        });
        Ok(Self {
            listener,
            metrics_listener,
            tls,
            state,
        })
    }

    /// The TLS of `http_addr`, when `[tls]` is set (tests reload it by hand).
    pub fn tls(&self) -> Option<&tls::Tls> {
        self.tls.as_ref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The metrics listener's address, when `metrics.addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled; fails only when the listener does.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self {
            listener,
            metrics_listener,
            tls,
            state,
        } = self;
        if let Some(tls) = &tls {
            tls.spawn_reloader(state.settings.tls.reload_interval(), shutdown.clone());
        }
        // The cores' health and addresses, until shutdown.
        tokio::spawn({
            let state = state.clone();
            let shutdown = shutdown.clone();
            async move { state.upstream.watch(shutdown).await }
        });
        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "chat-edge ready");
        let l = &state.settings.limits;
        let limits = server::HttpLimits {
            max_connections: l.max_http_connections,
            header_read_timeout: l.header_read_timeout(),
            idle_timeout: l.http_idle_timeout(),
        };
        // Phase 1: stop accepting (the servers stop on `shutdown`), and close kept-alive HTTP
        // connections once their requests are answered.
        // Phase 2: every socket closes with 1012 so clients reconnect and resume.
        let sockets = state.shutdown.clone();
        let phase2 = shutdown.clone();
        tokio::spawn(async move {
            phase2.cancelled().await;
            sockets.cancel();
        });
        let metrics = metrics_listener.map(|listener| {
            tokio::spawn(server::serve(
                listener,
                None,
                metrics_app(state.clone()),
                limits,
                Arc::default(),
                shutdown.clone(),
                CLOSE_GRACE,
            ))
        });
        server::serve(
            listener,
            tls.map(|tls| tls.acceptor),
            app(state.clone()),
            limits,
            state.http_connections.clone(),
            shutdown,
            CLOSE_GRACE,
        )
        .await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // Phase 3: give sockets a moment to send their close frames.
        state.tasks.close();
        let _ = tokio::time::timeout(CLOSE_GRACE, state.tasks.wait()).await;
        tracing::info!("chat-edge stopped");
        Ok(())
    }
}
