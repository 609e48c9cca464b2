//! Typed settings of `chat-edge`: defaults, then an optional TOML file, then `CHAT_EDGE_*`
//! environment variables (`__` separates levels: `CHAT_EDGE_AUTH__SECRET`; `CHAT_EDGE_CONFIG`
//! names the file and is not a setting).
//!
//! The per-socket frame size and heartbeat are not here: the core sets them
//! (`chat.max_frame_bytes`, `chat.heartbeat_interval_ms`) and announces them in the `session`
//! event the edge enforces them from. An old file that still names them under `[limits]` is
//! refused at start as an unknown field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_auth::{AuthConfigError, AuthSettings};
use chat_runtime::{InvalidSetting, LogSettings, SettingsError, SettingsLoader};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tonic::transport::Endpoint;

/// The environment prefix of the edge's settings.
pub const ENV_PREFIX: &str = "CHAT_EDGE_";
/// The variable `chat-edge --config` reads its file path from.
pub const CONFIG_ENV: &str = "CHAT_EDGE_CONFIG";

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeSettings {
    /// Where the HTTP/WebSocket server listens.
    pub http_addr: SocketAddr,
    /// The core's gRPC address: `http://` (plain HTTP/2, a private network) or `https://` (the
    /// core with `grpc.tls_cert_file`; then `core_ca_file` is required).
    pub core_url: String,
    /// PEM file of the CA (or the self-signed certificate) the core's certificate is checked
    /// against, for an `https://` `core_url`.
    pub core_ca_file: Option<PathBuf>,
    /// The name the core's certificate must carry, when it is not `core_url`'s host.
    pub core_tls_domain: Option<String>,
    /// HTTP/2 connections to the core; WebSocket streams are spread over them.
    pub core_channels: usize,
    pub auth: AuthSettings,
    pub limits: EdgeLimits,
    /// Browser origins allowed to open a WebSocket; empty allows any origin (a warning at
    /// start when the edge listens beyond loopback).
    pub allowed_origins: Vec<String>,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    /// One more path the WebSocket is served at, besides `/ws`, `/chat` and
    /// `/api/v1/chat/ws` (seed 001's `WS_PATH`).
    pub ws_path: Option<String>,
    pub pages: PagesSettings,
    pub tls: TlsSettings,
    /// What loading the environment warned about (seed aliases shadowed by the project's own
    /// variables); logged at start.
    #[serde(skip)]
    pub env_warnings: Vec<String>,
}

/// The seeds' variable names the edge reads, below its own (`CHAT_EDGE_*`). `WS_PORT` and
/// `WEBSOCKET_PORT` set the port of `http_addr` (see [`EdgeSettings::load_from`]).
pub const SEED_ALIASES: &[(&str, &str)] = &[
    ("JWT_SECRET", "auth.secret"),
    ("MAX_CONNECTIONS", "limits.max_connections"),
    ("WS_PATH", "ws_path"),
];
/// Seed variables naming the port `http_addr` listens on, in order of precedence.
pub const SEED_PORT_VARS: &[&str] = &["WS_PORT", "WEBSOCKET_PORT"];
/// Paths the edge serves itself, which `ws_path` may not take.
const RESERVED_PATHS: &[&str] = &[
    "/",
    "/chat.html",
    "/chat.js",
    "/chat.css",
    "/healthz",
    "/readyz",
    "/ws/health",
    "/api/websocket/health",
    "/metrics",
];

/// `[tls]`: `https://` and `wss://` on `http_addr` (both files, or neither for plain HTTP
/// behind a TLS-terminating proxy). See `tls.rs` for reloading.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key_file: Option<PathBuf>,
    /// How often the files' modification times are checked for a reload; 0: on SIGHUP only.
    pub reload_interval_ms: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            reload_interval_ms: 10_000,
        }
    }
}

impl TlsSettings {
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }
}

/// `[pages]`: what the pages are told (`GET /pages.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesSettings {
    /// A same-origin path (`/auth/chat-token`) of the site's own sign-in service that answers
    /// a fresh access token for the signed-in user (`{"token": "..."}` or the bare token; the
    /// page sends its cookies): the pages fetch one before their token expires and hand it to
    /// the socket in-band (`auth`). Unset: the pages ask the user to sign in again instead.
    pub token_url: Option<String>,
}

/// Where and to whom `/metrics` is served.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// A listener of its own for `/metrics` (then `http_addr` does not serve it); unset serves
    /// it on `http_addr`.
    pub addr: Option<SocketAddr>,
    /// When set, `/metrics` wants `Authorization: Bearer <token>` (environment only:
    /// `CHAT_EDGE_METRICS__TOKEN`).
    pub token: Option<SecretString>,
}

/// Per-connection and per-edge limits the edge owns (the per-user ones live in the core).
/// Every one is listed, with what a client meets, in the "Limits" section of
/// `docs/protocol.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeLimits {
    /// Open WebSockets; more are refused with error 503 and close 1013.
    pub max_connections: usize,
    pub frames_per_minute: u32,
    /// Frames refused for rate in one minute after which the connection is closed (1008).
    pub abuse_strikes: u32,
    /// Frames waiting to be written to one socket; a socket whose queue has no room within
    /// `send_timeout_ms` is closed (1013) instead of buffering more.
    pub send_queue_frames: usize,
    /// Bytes waiting to be written to one socket (a single larger frame is still let into an
    /// empty queue); as for `send_queue_frames`, no room in time closes the socket (1013).
    pub send_queue_bytes: usize,
    /// The longest one frame may take to be written to a socket; a socket that takes longer is
    /// closed (1013).
    pub send_timeout_ms: u64,
    /// HTTP connections not (yet) upgraded to a WebSocket; more are answered 503 and closed.
    pub max_http_connections: usize,
    /// Time for a client to send a request's headers, the first one and each next one on a
    /// kept-alive connection; then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// An HTTP connection (not upgraded) on which no byte moves either way for this long is
    /// closed.
    pub http_idle_timeout_ms: u64,
    /// Largest request body on every HTTP route but uploads; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Largest `POST /api/uploads` request (the file plus its multipart framing); a larger one
    /// is answered 413. The core's `files.max_bytes` bounds the file itself.
    pub max_upload_bytes: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            frames_per_minute: 60,
            abuse_strikes: 20,
            send_queue_frames: 256,
            send_queue_bytes: 1024 * 1024,
            send_timeout_ms: 10_000,
            max_http_connections: 1024,
            header_read_timeout_ms: 10_000,
            http_idle_timeout_ms: 60_000,
            max_body_bytes: 128 * 1024,
            max_upload_bytes: 10 * 1024 * 1024 + 64 * 1024,
        }
    }
}

impl EdgeLimits {
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn http_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.http_idle_timeout_ms)
    }
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            core_url: "http://127.0.0.1:50051".into(),
            core_ca_file: None,
            core_tls_domain: None,
            core_channels: 4,
            auth: AuthSettings::default(),
            limits: EdgeLimits::default(),
            allowed_origins: Vec::new(),
            metrics: MetricsSettings::default(),
            log: LogSettings::default(),
            ws_path: None,
            pages: PagesSettings::default(),
            tls: TlsSettings::default(),
            env_warnings: Vec::new(),
        }
    }
}

/// Why the edge's settings cannot be used. Every message names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, or a value does not parse (an unknown key included).
    #[error(transparent)]
    Load(#[from] SettingsError),
    /// `[auth]` cannot verify tokens (names `CHAT_EDGE_AUTH__SECRET` when the secret is
    /// missing).
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// A value out of its range.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}

impl EdgeSettings {
    /// Defaults < `file` < `CHAT_EDGE_*` environment, then validation.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let settings = Self::load_unchecked(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Like [`EdgeSettings::load`] without validation (`chatctl dev` fills in more first).
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, chat_runtime::process_env())
    }

    /// Like [`EdgeSettings::load_unchecked`] with the environment given as `(name, value)`
    /// pairs instead of read from the process.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut loader = SettingsLoader::new(ENV_PREFIX)
            .ignore_var(CONFIG_ENV)
            .verbatim(AuthSettings::VERBATIM_KEYS)
            .verbatim(&["ws_path"])
            .defaults("limits", EdgeLimits::default())
            .defaults("log", LogSettings::default());
        for (name, key) in SEED_ALIASES {
            loader = loader.alias(name, key);
        }
        let mut settings: Self = loader.load(file, env.iter().cloned())?;
        settings.env_warnings = loader.alias_warnings(&env);
        settings.apply_seed_port(&loader, &env)?;
        Ok(settings)
    }

    /// `WS_PORT` (or `WEBSOCKET_PORT`) sets the port of `http_addr`, keeping its host, unless
    /// `CHAT_EDGE_HTTP_ADDR` is set.
    fn apply_seed_port(
        &mut self,
        loader: &SettingsLoader,
        env: &[(String, String)],
    ) -> Result<(), SettingsError> {
        let value_of = |name: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n.trim() == name)
                .map(|(_, v)| v.trim())
        };
        let Some((name, raw)) = SEED_PORT_VARS
            .iter()
            .find_map(|name| value_of(name).map(|v| (*name, v)))
        else {
            return Ok(());
        };
        let port: u16 = raw.parse().map_err(|_| {
            SettingsError::message(format!(
                "{name} must be a port number (0 to 65535), not {raw:?}"
            ))
        })?;
        let own = loader.variable_of("http_addr");
        if value_of(&own).is_some() {
            if self.http_addr.port() != port {
                self.env_warnings.push(format!(
                    "{name} and {own} are both set, to different ports: {own} wins (http_addr)"
                ));
            }
        } else {
            self.http_addr.set_port(port);
        }
        Ok(())
    }

    /// Checks what serde cannot; the first problem found is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        chat_auth::Verifier::new(&self.auth)?;
        self.log.validate()?;
        self.core_endpoint()?;
        InvalidSetting::check(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "tls.cert_file",
            "and tls.key_file must be set together",
        )?;
        InvalidSetting::check(
            (1..=64).contains(&self.core_channels),
            "core_channels",
            "must be from 1 to 64",
        )?;
        let positive = "must be greater than 0";
        let l = &self.limits;
        InvalidSetting::check(l.max_connections > 0, "limits.max_connections", positive)?;
        InvalidSetting::check(
            l.frames_per_minute > 0,
            "limits.frames_per_minute",
            positive,
        )?;
        InvalidSetting::check(l.abuse_strikes > 0, "limits.abuse_strikes", positive)?;
        InvalidSetting::check(
            l.send_queue_frames > 0,
            "limits.send_queue_frames",
            positive,
        )?;
        InvalidSetting::check(l.send_queue_bytes > 0, "limits.send_queue_bytes", positive)?;
        InvalidSetting::check(l.send_timeout_ms > 0, "limits.send_timeout_ms", positive)?;
        InvalidSetting::check(
            l.max_http_connections > 0,
            "limits.max_http_connections",
            positive,
        )?;
        InvalidSetting::check(
            l.header_read_timeout_ms > 0,
            "limits.header_read_timeout_ms",
            positive,
        )?;
        InvalidSetting::check(
            l.http_idle_timeout_ms > 0,
            "limits.http_idle_timeout_ms",
            positive,
        )?;
        InvalidSetting::check(l.max_body_bytes > 0, "limits.max_body_bytes", positive)?;
        InvalidSetting::check(l.max_upload_bytes > 0, "limits.max_upload_bytes", positive)?;
        if let Some(path) = &self.ws_path {
            InvalidSetting::check(
                path.len() > 1
                    && path.len() <= 200
                    && path.starts_with('/')
                    && path.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.')
                    })
                    && !path.contains("//")
                    && !RESERVED_PATHS.contains(&path.as_str())
                    && !crate::pages::serves(path)
                    && !path.starts_with("/api/")
                    && !path.starts_with("/admin")
                    && !path.starts_with("/socket.io"),
                "ws_path",
                "must be a path such as /ws: a leading /, then letters, digits, /, -, _ or ., \
                 at most 200 bytes, and not a path the edge serves itself (/, /healthz, \
                 /readyz, /metrics, /ws/health, the pages and their files, /api/..., /admin..., \
                 /socket.io...)",
            )?;
        }
        if let Some(url) = &self.pages.token_url {
            // Same origin only: the pages' Content-Security-Policy lets them fetch nothing else.
            InvalidSetting::check(
                url.starts_with('/')
                    && !url.starts_with("//")
                    && url.len() <= 500
                    && !url.chars().any(|c| c.is_control() || c.is_whitespace()),
                "pages.token_url",
                "must be a path on this site, such as /auth/chat-token (the pages may fetch \
                 nothing from other origins)",
            )?;
        }
        if let Some(token) = &self.metrics.token {
            use secrecy::ExposeSecret;
            InvalidSetting::check(
                token.expose_secret().len() >= 16,
                "metrics.token",
                "must be at least 16 characters (set CHAT_EDGE_METRICS__TOKEN)",
            )?;
        }
        Ok(())
    }

    /// What a production edge is warned about at start, each naming its setting. "Production"
    /// means listening on an address other than loopback: a loopback edge is a developer's.
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut warnings = self.env_warnings.clone();
        if self.http_addr.ip().is_loopback() {
            return warnings;
        }
        if self.allowed_origins.is_empty() {
            warnings.push(format!(
                "allowed_origins is empty, so any web page may open WebSockets to this edge \
                 listening on {}: set allowed_origins (CHAT_EDGE_ALLOWED_ORIGINS)",
                self.http_addr
            ));
        }
        if self.metrics.addr.is_none() && self.metrics.token.is_none() {
            warnings.push(format!(
                "/metrics is open to anyone on {}: set metrics.addr (a private listener) or \
                 metrics.token (CHAT_EDGE_METRICS__TOKEN)",
                self.http_addr
            ));
        }
        warnings
    }

    /// The core's address as a gRPC endpoint; fails naming `core_url` unless it is an
    /// `http://` or `https://` URL.
    pub fn core_endpoint(&self) -> Result<Endpoint, InvalidSetting> {
        let url = &self.core_url;
        let rule = || format!("{url:?} must be an http:// or https:// URL");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InvalidSetting::new("core_url", rule()));
        }
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| InvalidSetting::new("core_url", rule()))?;
        if !url.starts_with("https://") {
            InvalidSetting::check(
                self.core_ca_file.is_none() && self.core_tls_domain.is_none(),
                "core_ca_file",
                "and core_tls_domain are for an https:// core_url",
            )?;
            return Ok(endpoint);
        }
        let Some(ca_file) = &self.core_ca_file else {
            return Err(InvalidSetting::new(
                "core_ca_file",
                format!(
                    "is needed for the https:// core_url {url:?}: the PEM of the CA that signed the core's certificate"
                ),
            ));
        };
        let pem = std::fs::read(ca_file).map_err(|err| {
            InvalidSetting::new(
                "core_ca_file",
                format!("{}: cannot be read: {err}", ca_file.display()),
            )
        })?;
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem));
        if let Some(domain) = &self.core_tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        endpoint.tls_config(tls).map_err(|err| {
            InvalidSetting::new("core_ca_file", format!("{}: {err}", ca_file.display()))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn valid() -> EdgeSettings {
        EdgeSettings {
            auth: AuthSettings::hs256("a-secret-of-enough-length-for-hs256"),
            ..EdgeSettings::default()
        }
    }

    #[test]
    fn the_environment_sets_edge_values_and_ignores_the_file_variable() {
        let settings = EdgeSettings::load_from(
            None,
            env(&[
                ("CHAT_EDGE_CORE_URL", "http://core:50051"),
                ("CHAT_EDGE_LIMITS__FRAMES_PER_MINUTE", "5"),
                ("CHAT_EDGE_CONFIG", "/etc/chat/edge.toml"),
                ("CHAT_DATABASE__URL", "postgres://db/chat"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.core_url, "http://core:50051");
        assert_eq!(settings.limits.frames_per_minute, 5);
        assert_eq!(settings.limits.abuse_strikes, 20, "defaults fill the rest");
    }

    #[test]
    fn the_limits_the_core_announces_are_not_edge_settings() {
        for (name, key) in [
            ("CHAT_EDGE_LIMITS__MAX_FRAME_BYTES", "max_frame_bytes"),
            (
                "CHAT_EDGE_LIMITS__HEARTBEAT_INTERVAL_MS",
                "heartbeat_interval_ms",
            ),
        ] {
            let err = EdgeSettings::load_from(None, env(&[(name, "1000")])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn validation_names_the_key_to_fix() {
        let message = |s: &EdgeSettings| s.validate().unwrap_err().to_string();
        assert!(message(&EdgeSettings::default()).contains("CHAT_EDGE_AUTH__SECRET"));
        assert!(valid().validate().is_ok());
        let mut s = valid();
        s.core_url = "core:50051".into();
        assert!(message(&s).contains("core_url"));
        let mut s = valid();
        s.core_channels = 0;
        assert!(message(&s).contains("core_channels"));
        let mut s = valid();
        s.limits.frames_per_minute = 0;
        assert!(message(&s).contains("limits.frames_per_minute"));
        let mut s = valid();
        s.log.format = "xml".into();
        assert!(message(&s).contains("log.format"));
        let mut s = valid();
        s.limits.send_timeout_ms = 0;
        assert!(message(&s).contains("limits.send_timeout_ms"));
        let mut s = valid();
        s.limits.max_http_connections = 0;
        assert!(message(&s).contains("limits.max_http_connections"));
        let mut s = valid();
        s.metrics.token = Some("short".to_string().into());
        assert!(message(&s).contains("metrics.token"));
    }

    #[test]
    fn an_edge_beyond_loopback_without_an_origin_list_is_warned_naming_the_setting() {
        assert!(
            valid().startup_warnings().is_empty(),
            "loopback is development"
        );
        let mut s = valid();
        s.http_addr = "0.0.0.0:8080".parse().unwrap();
        let warnings = s.startup_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("allowed_origins"), "{warnings:?}");
        assert!(
            warnings[0].contains("CHAT_EDGE_ALLOWED_ORIGINS"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("metrics.token"), "{warnings:?}");
        s.allowed_origins = vec!["https://app.example".into()];
        s.metrics.token = Some("a-metrics-token-of-length".to_string().into());
        assert!(s.startup_warnings().is_empty());
    }

    #[test]
    fn the_metrics_token_comes_from_the_environment() {
        let settings = EdgeSettings::load_from(
            None,
            env(&[
                ("CHAT_EDGE_METRICS__TOKEN", "a-metrics-token-of-length"),
                ("CHAT_EDGE_METRICS__ADDR", "127.0.0.1:9465"),
                ("CHAT_EDGE_LIMITS__SEND_TIMEOUT_MS", "2500"),
            ]),
        )
        .unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(
            settings.metrics.token.as_ref().unwrap().expose_secret(),
            "a-metrics-token-of-length"
        );
        assert_eq!(
            settings.metrics.addr,
            Some("127.0.0.1:9465".parse().unwrap())
        );
        assert_eq!(settings.limits.send_timeout(), Duration::from_millis(2500));
    }

    #[test]
    fn the_example_file_loads_and_shows_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/edge.example.toml"
        ));
        let settings = EdgeSettings::load_from(
            Some(path),
            env(&[(
                "CHAT_EDGE_AUTH__SECRET",
                "a-secret-of-enough-length-for-hs256",
            )]),
        )
        .unwrap();
        assert!(settings.validate().is_ok());
        assert_eq!(
            settings.limits.max_connections,
            EdgeLimits::default().max_connections
        );
        assert_eq!(settings.http_addr, EdgeSettings::default().http_addr);
    }
}
