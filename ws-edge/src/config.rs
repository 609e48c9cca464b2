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

/// `core_url` unless set: a core on this machine.
pub const DEFAULT_CORE_URL: &str = "http://127.0.0.1:50051";
/// The most cores `core_urls` may list.
pub const MAX_CORE_URLS: usize = 64;

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
    /// core with `grpc.tls_cert_file`; then `core_ca_file` is required). A host that is a DNS
    /// name resolving to several addresses (a Kubernetes headless Service) is several cores:
    /// see `core_resolve_interval_ms`.
    pub core_url: String,
    /// Several cores, instead of `core_url` (never beside it): each new socket's stream goes
    /// to the healthy core with the fewest streams from this edge. The same TLS rules hold
    /// for every URL. In the environment: `CHAT_EDGE_CORE_URLS=http://a:50051,http://b:50051`
    /// (or `[http://a:50051, http://b:50051]`).
    #[serde(deserialize_with = "url_list")]
    pub core_urls: Vec<String>,
    /// PEM file of the CA (or the self-signed certificate) the cores' certificates are checked
    /// against, for `https://` core URLs.
    pub core_ca_file: Option<PathBuf>,
    /// The name the cores' certificates must carry, when it is not their URL's host.
    pub core_tls_domain: Option<String>,
    /// HTTP/2 connections to each core; WebSocket streams are spread over them.
    pub core_channels: usize,
    /// How often each core's gRPC health service is asked whether it is serving; a core that
    /// is not (or does not answer within `core_probe_timeout_ms`) gets no new streams until
    /// it is again.
    pub core_probe_interval_ms: u64,
    pub core_probe_timeout_ms: u64,
    /// How often a core URL whose host is a DNS name (not an IP address) is resolved again,
    /// each address becoming a core of its own; 0: never resolved by the edge (one core per
    /// URL, connected by name).
    pub core_resolve_interval_ms: u64,
    /// Whether the file or the environment named `core_url` (which may not stand beside
    /// `core_urls`), set by [`EdgeSettings::load_from`].
    #[serde(skip)]
    pub core_url_set: bool,
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
            core_url: DEFAULT_CORE_URL.into(),
            core_urls: Vec::new(),
            core_ca_file: None,
            core_tls_domain: None,
            core_channels: 4,
            core_probe_interval_ms: 1_000,
            core_probe_timeout_ms: 500,
            core_resolve_interval_ms: 5_000,
            core_url_set: false,
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
        settings.core_url_set = loader.sets(file, &env, "core_url");
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
        self.core_targets()?;
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
        InvalidSetting::check(
            (100..=60_000).contains(&self.core_probe_interval_ms),
            "core_probe_interval_ms",
            "must be from 100 to 60000",
        )?;
        InvalidSetting::check(
            self.core_probe_timeout_ms > 0
                && self.core_probe_timeout_ms <= self.core_probe_interval_ms,
            "core_probe_timeout_ms",
            "must be greater than 0 and at most core_probe_interval_ms",
        )?;
        InvalidSetting::check(
            self.core_resolve_interval_ms == 0 || self.core_resolve_interval_ms >= 1_000,
            "core_resolve_interval_ms",
            "must be 0 (never resolve) or at least 1000",
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

    pub fn core_probe_interval(&self) -> Duration {
        Duration::from_millis(self.core_probe_interval_ms)
    }

    pub fn core_probe_timeout(&self) -> Duration {
        Duration::from_millis(self.core_probe_timeout_ms)
    }

    /// `None` when the edge never resolves names itself.
    pub fn core_resolve_interval(&self) -> Option<Duration> {
        (self.core_resolve_interval_ms > 0)
            .then(|| Duration::from_millis(self.core_resolve_interval_ms))
    }

    /// The cores to connect to: `core_urls` when set, else `core_url`. Fails naming the key
    /// to fix: both set, a URL that is not `http://` or `https://` (or listed twice), an
    /// `https://` one without `core_ca_file`, or TLS settings beside a plain `http://` one.
    pub fn core_targets(&self) -> Result<Vec<CoreTarget>, InvalidSetting> {
        if self.core_urls.is_empty() {
            return Ok(vec![self.core_target("core_url", &self.core_url)?]);
        }
        if self.core_url_set || self.core_url != DEFAULT_CORE_URL {
            return Err(InvalidSetting::new(
                "core_urls",
                "and core_url are both set: set core_url for one core, or core_urls for several",
            ));
        }
        InvalidSetting::check(
            self.core_urls.len() <= MAX_CORE_URLS,
            "core_urls",
            "may list at most 64 cores",
        )?;
        let mut targets: Vec<CoreTarget> = Vec::with_capacity(self.core_urls.len());
        for url in &self.core_urls {
            if targets.iter().any(|t| t.url == *url) {
                return Err(InvalidSetting::new(
                    "core_urls",
                    format!("lists {url:?} twice"),
                ));
            }
            targets.push(self.core_target("core_urls", url)?);
        }
        Ok(targets)
    }

    /// One core's URL, from the setting `key`, checked and with its TLS.
    fn core_target(&self, key: &'static str, url: &str) -> Result<CoreTarget, InvalidSetting> {
        let rule = || format!("{url:?} must be an http:// or https:// URL");
        let https = url.starts_with("https://");
        if !(https || url.starts_with("http://")) {
            return Err(InvalidSetting::new(key, rule()));
        }
        let endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|_| InvalidSetting::new(key, rule()))?;
        let Some(host) = endpoint.uri().host().filter(|h| !h.is_empty()) else {
            return Err(InvalidSetting::new(key, rule()));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = endpoint
            .uri()
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let name = (!is_ip).then(|| (host.clone(), port));
        if !https {
            InvalidSetting::check(
                self.core_ca_file.is_none() && self.core_tls_domain.is_none(),
                "core_ca_file",
                "and core_tls_domain are for https:// core URLs",
            )?;
            return Ok(CoreTarget {
                url: url.to_owned(),
                endpoint,
                tls: None,
                name,
            });
        }
        let Some(ca_file) = &self.core_ca_file else {
            return Err(InvalidSetting::new(
                "core_ca_file",
                format!(
                    "is needed for the https:// {key} {url:?}: the PEM of the CA that signed the core's certificate"
                ),
            ));
        };
        let pem = std::fs::read(ca_file).map_err(|err| {
            InvalidSetting::new(
                "core_ca_file",
                format!("{}: cannot be read: {err}", ca_file.display()),
            )
        })?;
        // The name the certificate is checked against: the setting, else the URL's host
        // (also for the addresses a name resolves to, which the certificate does not carry).
        let domain = self.core_tls_domain.clone().unwrap_or(host);
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name(domain);
        let endpoint = endpoint.tls_config(tls.clone()).map_err(|err| {
            InvalidSetting::new("core_ca_file", format!("{}: {err}", ca_file.display()))
        })?;
        Ok(CoreTarget {
            url: url.to_owned(),
            endpoint,
            tls: Some(tls),
            name,
        })
    }
}

/// One core URL from the settings, checked: what [`crate::upstream::Upstream`] connects to.
#[derive(Clone)]
pub struct CoreTarget {
    /// As written in the settings (the `core` label of the metrics while it is one core).
    pub url: String,
    /// The URL as a gRPC endpoint, with its TLS.
    pub endpoint: Endpoint,
    /// An `https://` URL's TLS: also what each address its name resolves to is checked with.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// The host and port when the host is a DNS name rather than an IP address.
    pub name: Option<(String, u16)>,
}

/// `core_urls` from a list (TOML, `[a, b]` in the environment) or one string of URLs
/// separated by commas or whitespace (`CHAT_EDGE_CORE_URLS=http://a:50051,http://b:50051`).
fn url_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let list = match Form::deserialize(deserializer)? {
        Form::List(list) => list,
        Form::Text(text) => text
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::to_owned)
            .collect(),
    };
    Ok(list
        .into_iter()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect())
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
    fn several_cores_come_from_a_comma_separated_variable_or_a_list() {
        for value in [
            "http://core-a:50051,http://core-b:50051",
            "http://core-a:50051, http://core-b:50051",
            "[http://core-a:50051, http://core-b:50051]",
        ] {
            let settings =
                EdgeSettings::load_from(None, env(&[("CHAT_EDGE_CORE_URLS", value)])).unwrap();
            assert_eq!(
                settings.core_urls,
                ["http://core-a:50051", "http://core-b:50051"],
                "{value}"
            );
            let s = EdgeSettings {
                auth: valid().auth,
                ..settings
            };
            let targets = s.core_targets().unwrap();
            let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
            assert_eq!(urls, ["http://core-a:50051", "http://core-b:50051"]);
            assert_eq!(targets[0].name, Some(("core-a".to_string(), 50051)));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(
            &file,
            "core_urls = [\"http://10.0.0.1:50051\", \"http://10.0.0.2:50051\"]\n",
        )
        .unwrap();
        let settings = EdgeSettings::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(settings.core_urls.len(), 2);
        let s = EdgeSettings {
            auth: valid().auth,
            ..settings
        };
        let targets = s.core_targets().unwrap();
        assert!(
            targets.iter().all(|t| t.name.is_none()),
            "IP addresses are not resolved"
        );
    }

    #[test]
    fn one_core_url_stays_one_core() {
        let targets = valid().core_targets().unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].url, DEFAULT_CORE_URL);
        let settings = EdgeSettings::load_from(
            None,
            env(&[("CHAT_EDGE_CORE_URL", "http://chat-core:50051")]),
        )
        .unwrap();
        assert!(settings.core_url_set);
        assert!(settings.core_urls.is_empty());
        let s = EdgeSettings {
            auth: valid().auth,
            ..settings
        };
        let targets = s.core_targets().unwrap();
        assert_eq!(targets[0].name, Some(("chat-core".to_string(), 50051)));
    }

    #[test]
    fn core_url_and_core_urls_together_are_refused_naming_core_urls() {
        let message = |s: &EdgeSettings| s.validate().unwrap_err().to_string();
        // Both in the environment, even with core_url at its default value.
        let loaded = EdgeSettings::load_from(
            None,
            env(&[
                ("CHAT_EDGE_CORE_URL", DEFAULT_CORE_URL),
                ("CHAT_EDGE_CORE_URLS", "http://a:50051,http://b:50051"),
            ]),
        )
        .unwrap();
        let s = EdgeSettings {
            auth: valid().auth,
            ..loaded
        };
        let err = message(&s);
        assert!(
            err.contains("core_urls") && err.contains("core_url "),
            "{err}"
        );
        // Built directly: a core_url other than the default beside core_urls.
        let mut s = valid();
        s.core_url = "http://core:50051".into();
        s.core_urls = vec!["http://a:50051".into()];
        assert!(message(&s).contains("core_urls"));
    }

    #[test]
    fn each_core_url_is_checked_naming_its_setting() {
        let message = |s: &EdgeSettings| s.validate().unwrap_err().to_string();
        let mut s = valid();
        s.core_urls = vec!["http://a:50051".into(), "core-b:50051".into()];
        let err = message(&s);
        assert!(
            err.contains("core_urls") && err.contains("core-b:50051"),
            "{err}"
        );
        let mut s = valid();
        s.core_urls = vec!["http://a:50051".into(), "http://a:50051".into()];
        assert!(message(&s).contains("twice"));
        let mut s = valid();
        s.core_urls = (0..=MAX_CORE_URLS)
            .map(|i| format!("http://10.0.0.{i}:50051"))
            .collect();
        assert!(message(&s).contains("at most 64"));
        // The same TLS rules for every URL: https needs the CA, http may not have one.
        let mut s = valid();
        s.core_urls = vec!["http://a:50051".into(), "https://b:50051".into()];
        let err = message(&s);
        assert!(
            err.contains("core_ca_file") && err.contains("https://b:50051"),
            "{err}"
        );
        let mut s = valid();
        s.core_urls = vec!["http://a:50051".into()];
        s.core_tls_domain = Some("chat-core".into());
        assert!(message(&s).contains("core_ca_file"));
    }

    #[test]
    fn the_probe_and_resolve_intervals_are_bounded() {
        let message = |s: &EdgeSettings| s.validate().unwrap_err().to_string();
        let mut s = valid();
        s.core_probe_interval_ms = 10;
        assert!(message(&s).contains("core_probe_interval_ms"));
        let mut s = valid();
        s.core_probe_timeout_ms = 5_000;
        assert!(message(&s).contains("core_probe_timeout_ms"));
        let mut s = valid();
        s.core_resolve_interval_ms = 10;
        assert!(message(&s).contains("core_resolve_interval_ms"));
        let mut s = valid();
        s.core_resolve_interval_ms = 0;
        assert!(s.validate().is_ok());
        assert_eq!(s.core_resolve_interval(), None);
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
