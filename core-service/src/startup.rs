//! Building and running the core: `Application::build` connects storage (running migrations),
//! the LLM catalogue and the verifier, and binds the gRPC listener; `run` serves until the
//! token is cancelled. `main`, `chatctl dev` and the tests all go through here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::pb::admin::admin_service_server::AdminServiceServer;
use chat_proto::pb::chat::chat_service_server::ChatServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::Settings;
use crate::chat::Engine;
use crate::grpc::{admin::AdminApi, chat::ChatApi};
use crate::llm::Llm;
use crate::notify::Notifier;
use crate::storage::Db;

/// How long shutdown waits for replies in flight.
const REPLY_GRACE: Duration = Duration::from_secs(30);
/// How long shutdown then waits for the replies it stopped to be stored as `stopped`.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for operator alerts still being delivered.
const NOTIFY_GRACE: Duration = Duration::from_secs(5);
/// The service name readiness is reported under (also the overall "" service).
pub const HEALTH_SERVICE: &str = "chat.v1.ChatService";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] crate::storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub struct Application {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    engine: Arc<Engine>,
    grpc: GrpcLimits,
    /// gRPC over TLS (`grpc.tls_cert_file`), else plain HTTP/2.
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// How often readiness re-checks the database (and limiters are pruned).
    db_check: Duration,
    cluster: crate::cluster::ClusterSettings,
}

/// The gRPC server's limits, from [`crate::config::GrpcSettings`].
#[derive(Clone, Copy, Debug)]
struct GrpcLimits {
    max_message_bytes: usize,
    max_concurrent_streams: u32,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
}

impl Application {
    /// Connects, migrates and binds. Fails with a message saying what to fix.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings
            .validate()
            .map_err(|e| StartupError::Config(e.to_string()))?;
        for warning in &settings.env_warnings {
            tracing::warn!("{warning}");
        }
        let keyring = Arc::new(
            settings
                .encryption
                .keyring()
                .map_err(|e| StartupError::Config(e.to_string()))?,
        );
        // With several cores, each names itself in the replies it owes (chat/failover.rs).
        let core_id = match settings.cluster.redis_url {
            Some(_) => uuid::Uuid::new_v4().simple().to_string(),
            None => String::new(),
        };
        let db = Db::connect_with(&settings.database.url, settings.database.pool_options())
            .await?
            .with_keyring(keyring.clone())
            .owned_by(&core_id);
        db.migrate().await?;
        let tls = settings.grpc.tls().map_err(StartupError::Config)?;
        let llm = Llm::new(&settings.llm).map_err(|e| StartupError::Config(e.to_string()))?;
        let verifier = chat_auth::Verifier::new(&settings.auth)
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let listener = TcpListener::bind(settings.grpc_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.grpc_addr,
                source,
            })?;
        let metrics = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        chat_runtime::metrics();
        let notifier =
            Notifier::start(&settings.notify).map_err(|e| StartupError::Config(e.to_string()))?;
        let files = crate::files::Files::open(&settings.files, settings.auth.hs256_bytes())
            .map_err(StartupError::Config)?
            .with_keyring(keyring.clone());
        files.check().await.map_err(StartupError::Config)?;
        let engine = Arc::new(
            Engine::new(db, llm, settings.chat.clone(), verifier)
                .with_notifier(notifier)
                .with_files(files),
        );
        // Before any client: what the last run left owed is answered (chat::recovery). With
        // several cores, replies owed may be another core's, streaming now: each core takes
        // over only those of dead cores, this one's last run included (chat::failover).
        if settings.cluster.redis_url.is_none() {
            engine.recover_replies().await?;
        } else {
            tracing::info!(core = %core_id, "cluster: the replies of dead cores are taken over once linked to Redis");
        }
        match keyring.current_id() {
            Some(key) => tracing::info!(
                key,
                "encryption at rest on: new writes are sealed under this key id"
            ),
            None => tracing::info!("encryption at rest off (no CHAT_ENCRYPTION__KEYS)"),
        }
        tracing::info!(addr = %listener.local_addr().map_err(|source| StartupError::Bind { addr: settings.grpc_addr, source })?, backend = engine.db().backend(), tls = tls.is_some(), "chat-core ready");
        let grpc = GrpcLimits {
            max_message_bytes: settings.grpc.message_limit(&settings.chat),
            max_concurrent_streams: settings.grpc.max_concurrent_streams,
            keepalive_interval: Duration::from_secs(settings.grpc.keepalive_interval_secs),
            keepalive_timeout: Duration::from_secs(settings.grpc.keepalive_timeout_secs),
        };
        Ok(Self {
            listener,
            metrics,
            engine,
            grpc,
            tls,
            db_check: Duration::from_millis(settings.database.check_interval_ms),
            cluster: settings.cluster.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let Self {
            listener,
            metrics,
            engine,
            grpc: limits,
            tls,
            db_check,
            cluster: settings_cluster,
        } = self;
        if let Some(listener) = metrics {
            let router = axum::Router::new().route(
                "/metrics",
                axum::routing::get(|| async { chat_runtime::render_metrics() }),
            );
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "metrics listener failed");
                }
            });
        }
        // Several cores: events cross through Redis from here on (Redis may still be down).
        engine
            .link_cluster(&settings_cluster, shutdown.clone())
            .map_err(StartupError::Config)?;
        let reporter = HealthReporter::new();
        let health_stop = CancellationToken::new();
        let health = HealthServer::new(Readiness {
            inner: HealthService::from_health_reporter(reporter.clone()),
            stop: health_stop.clone(),
        });
        reporter
            .set_service_status(HEALTH_SERVICE, ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let watchdog = tokio::spawn(housekeeping(
            engine.clone(),
            reporter.clone(),
            db_check,
            shutdown.clone(),
        ));

        let stopping = {
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                // Readiness says so, then its watchers' streams end: tonic waits for every
                // open stream before it returns.
                reporter
                    .set_service_status(HEALTH_SERVICE, ServingStatus::NotServing)
                    .await;
                reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                health_stop.cancel();
                // Phase 1: tonic stops accepting connections and calls (this future resolved).
                // Phase 2: end every client stream; edges tell their clients to reconnect (1012).
                engine.begin_shutdown();
            }
        };
        // Discoverable without the .proto files (grpcurl, grpcui, Postman, ...).
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| StartupError::Config(format!("gRPC reflection: {e}")))?;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            // Checked by `GrpcSettings::tls` at build: the same configuration parses again.
            server = server
                .tls_config(tls)
                .map_err(|e| StartupError::Config(format!("grpc TLS: {e}")))?;
        }
        let served = server
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .add_service(health)
            .add_service(reflection)
            .add_service(
                ChatServiceServer::new(ChatApi::new(engine.clone()))
                    .max_decoding_message_size(limits.max_message_bytes),
            )
            .add_service(
                AdminServiceServer::new(AdminApi::new(engine.clone()))
                    .max_decoding_message_size(limits.max_message_bytes),
            )
            // Small frames both ways: without TCP_NODELAY, Nagle and delayed ACKs add tens of
            // milliseconds to each exchange with the edge.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopping,
            )
            .await;
        // Phase 3: let replies in flight finish and be stored, within a grace period.
        // Those still running then are stopped and stored with their partial text; replies
        // that had not started stay owed for the next start (chat::recovery).
        if !engine.finish_replies(REPLY_GRACE).await {
            tracing::warn!("replies still running after the grace period; stopping them");
            if !engine.stop_replies(STOP_GRACE).await {
                tracing::warn!("stopped replies not stored in time; the next start fails them");
            }
        }
        // Phase 4: stop background work and return.
        watchdog.abort();
        engine.notifier().shutdown(NOTIFY_GRACE).await;
        tracing::info!("chat-core stopped");
        served.map_err(Into::into)
    }
}

/// Periodic upkeep: readiness stays honest (NOT_SERVING while the database does not answer)
/// and the per-user rate limiters forget users who are idle again.
/// The standard health service, whose `Watch` streams end when shutdown begins (tonic's own
/// would keep the server waiting for them forever).
struct Readiness {
    inner: HealthService,
    stop: CancellationToken,
}

#[tonic::async_trait]
impl Health for Readiness {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        self.inner.check(request).await
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>,
    >;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        use futures::StreamExt;
        let stream = self.inner.watch(request).await?.into_inner();
        let stop = self.stop.clone().cancelled_owned();
        Ok(tonic::Response::new(stream.take_until(stop).boxed()))
    }
}

async fn housekeeping(
    engine: Arc<Engine>,
    reporter: HealthReporter,
    db_check: Duration,
    shutdown: CancellationToken,
) {
    // Short operator leases need expiring more often than the database needs checking.
    let lease = engine.operator_lease();
    let every = db_check.min(lease / 2).max(Duration::from_millis(200));
    let mut healthy = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        engine.prune_limits();
        // The database first: while it does not answer, readiness says so at once, and the
        // upkeep below (which needs it) waits for the next round instead of each part waiting
        // out the pool's timeout.
        let ok = engine.db().ping().await.is_ok();
        // With several cores, Redis too: a core that cannot reach it still serves its own
        // members, but a load balancer should prefer one that reaches everybody.
        let linked = engine.cluster_healthy();
        if (ok && linked) != healthy {
            healthy = ok && linked;
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if !ok {
                tracing::error!("database unreachable: readiness is NOT_SERVING");
                engine.notifier().database_unreachable();
            } else if !linked {
                tracing::error!(
                    "Redis unreachable: readiness is NOT_SERVING (local members are still served)"
                );
            }
            reporter.set_service_status(HEALTH_SERVICE, status).await;
            reporter.set_service_status("", status).await;
        }
        if !ok {
            continue;
        }
        if let Err(err) = engine.expire_operator_leases().await {
            tracing::warn!(error = %err, "operator lease expiry failed");
        }
        if let Err(err) = engine.end_idle_sessions().await {
            tracing::warn!(error = %err, "ending idle sessions failed");
        }
        if let Err(err) = engine.apply_retention().await {
            tracing::warn!(error = %err, "retention failed");
        }
    }
}
