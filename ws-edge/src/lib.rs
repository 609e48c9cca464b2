//! `chat-edge`: the stateless WebSocket edge. It terminates browser sockets, speaks the JSON
//! protocol of `docs/protocol.md`, and bridges each socket to one gRPC `ChatService.Connect`
//! stream on the core. It also serves REST reads, health probes and the chat page.
//!
//! Module map: [`config`] (settings), [`routes`] (HTTP), [`bridge`] (socket <-> gRPC pump,
//! enforcing the limits the core announces), [`frames`] (JSON <-> protobuf), [`upstream`]
//! (channels to the core), [`error`] (REST errors). Protocol constants come from
//! [`chat_proto::limits`].

pub mod bridge;
pub mod config;
pub mod error;
pub mod frames;
pub mod outbox;
pub mod routes;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
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
    pub http_connections: AtomicUsize,
    /// Frames and bytes waiting in every socket's write queue.
    pub queued: Arc<outbox::QueueFigures>,
    /// Cancelled on shutdown: every socket closes with 1012.
    pub shutdown: CancellationToken,
    /// Socket tasks, waited for at shutdown.
    pub tasks: TaskTracker,
    pub started: Instant,
}

/// The edge's router, shared by `main`, `chatctl dev` and tests.
pub fn app(state: Arc<EdgeState>) -> Router {
    Router::new()
        .route("/", get(routes::chat_page))
        .route("/chat.html", get(routes::chat_page))
        .route("/ws", get(routes::websocket))
        .route("/chat", get(routes::websocket))
        .route("/api/v1/chat/ws", get(routes::websocket))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/ws/health", get(routes::ws_health))
        .route("/api/websocket/health", get(routes::ws_health))
        .route("/api/sessions", get(routes::sessions))
        .route("/api/sessions/{chat_id}/messages", get(routes::history))
        .route("/api/chat/history/{chat_id}", get(routes::history))
        .route("/api/models", get(routes::models))
        .route("/metrics", get(routes::metrics))
        .with_state(state)
}

/// A bound edge, ready to run.
pub struct Edge {
    listener: TcpListener,
    state: Arc<EdgeState>,
}

impl Edge {
    /// Validates settings and binds. Fails with a message saying what to fix.
    pub async fn build(settings: EdgeSettings) -> Result<Self, EdgeError> {
        settings.validate()?;
        let verifier = Verifier::new(&settings.auth).map_err(config::ConfigError::from)?;
        let endpoint = settings
            .core_endpoint()
            .map_err(config::ConfigError::from)?;
        let upstream = upstream::Upstream::new(endpoint, settings.core_channels);
        let addr = settings.http_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EdgeError::Bind { addr, source })?;
        chat_runtime::metrics();
        let state = Arc::new(EdgeState {
            settings,
            verifier,
            upstream,
            connections: AtomicUsize::new(0),
            http_connections: AtomicUsize::new(0),
            queued: Arc::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
        });
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` is cancelled; fails only when the listener does.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self { listener, state } = self;
        tracing::info!(addr = %listener.local_addr()?, "chat-edge ready");
        let stopping = {
            let state = state.clone();
            async move {
                shutdown.cancelled().await;
                // Phase 1: stop accepting (axum stops on this future).
                // Phase 2: every socket closes with 1012 so clients reconnect and resume.
                state.shutdown.cancel();
            }
        };
        // Chat frames are small: send them at once (no Nagle delay).
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, app(state.clone()).into_make_service())
            .with_graceful_shutdown(stopping)
            .await;
        // Phase 3: give sockets a moment to send their close frames.
        state.tasks.close();
        let _ = tokio::time::timeout(CLOSE_GRACE, state.tasks.wait()).await;
        tracing::info!("chat-edge stopped");
        served
    }
}
