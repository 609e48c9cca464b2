//! Typed settings of `chat-core`: built-in defaults, then an optional TOML file, then
//! `CHAT_*` environment variables (`__` separates levels: `CHAT_DATABASE__URL`,
//! `CHAT_AUTH__SECRET`). `CHAT_EDGE_*` variables are the edge's and `CHAT_CONFIG` names the
//! file, so neither is read as a setting: both processes can share one environment. Secrets
//! are accepted only from the environment; tests build the struct directly.
//!
//! The limits the edge enforces per socket (`chat.max_frame_bytes`,
//! `chat.heartbeat_interval_ms`) are set here only: the core announces them in `session`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chat_auth::{AuthConfigError, AuthSettings};
use chat_proto::limits;
use chat_runtime::{InvalidSetting, SettingsError, SettingsLoader};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::llm::LlmSettings;
use crate::notify::NotifySettings;
pub use chat_runtime::LogSettings;

/// The environment prefix of the core's settings.
pub const ENV_PREFIX: &str = "CHAT_";
/// The edge's prefix, which shares [`ENV_PREFIX`]'s first letters but none of its keys.
const EDGE_ENV_PREFIX: &str = "CHAT_EDGE_";
/// The variable `chat-core --config` reads its file path from.
pub const CONFIG_ENV: &str = "CHAT_CONFIG";

/// Why the core's settings cannot be used. Every message names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, or a value does not parse.
    #[error(transparent)]
    Load(#[from] SettingsError),
    /// `[auth]` cannot verify tokens (names `CHAT_AUTH__SECRET` when the secret is missing).
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// `[llm]` does not hold together (the catalogue's own explanation).
    #[error("llm: {0}")]
    Llm(String),
    /// A value out of its range.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics` (plain HTTP); unset to serve no metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub llm: LlmSettings,
    pub chat: ChatSettings,
    /// The gRPC server's own limits (message size, streams per connection, keepalive).
    pub grpc: GrpcSettings,
    pub log: LogSettings,
    /// Operator alerts by email and SMS; off unless a channel is configured.
    pub notify: NotifySettings,
    /// Uploads: size limit, store, download URLs.
    pub files: crate::files::FileSettings,
    /// Several cores sharing live room events through Redis; off unless `redis_url` is set.
    pub cluster: crate::cluster::ClusterSettings,
    /// Encryption at rest: the keys, from the environment only.
    pub encryption: EncryptionSettings,
    /// What loading the environment warned about (seed aliases shadowed by the project's own
    /// variables); logged at start.
    #[serde(skip)]
    pub env_warnings: Vec<String>,
}

/// The seeds' variable names the core reads, below its own (`CHAT_*`); `LLM_API_KEY` and
/// `LLM_BASE_URL` are read with the provider variables (`OPENAI_*`).
pub const SEED_ALIASES: &[(&str, &str)] = &[
    ("JWT_SECRET", "auth.secret"),
    ("MESSAGE_RATE_LIMIT", "chat.user_messages_per_minute"),
];

impl Default for Settings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            database: DatabaseSettings::default(),
            auth: AuthSettings::default(),
            llm: LlmSettings::default(),
            chat: ChatSettings::default(),
            grpc: GrpcSettings::default(),
            log: LogSettings::default(),
            notify: NotifySettings::default(),
            files: crate::files::FileSettings::default(),
            cluster: crate::cluster::ClusterSettings::default(),
            encryption: EncryptionSettings::default(),
            env_warnings: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://data/chat.db` (embedded default) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
    /// How long a call waits for a working connection before failing with 503 (retryable).
    pub acquire_timeout_ms: u64,
    /// SQLite: how long a write waits for another writer's lock before failing with 503.
    pub busy_timeout_ms: u64,
    /// How often readiness checks that the database answers and takes writes.
    pub check_interval_ms: u64,
}

impl DatabaseSettings {
    /// The pool's options from these settings.
    pub fn pool_options(&self) -> crate::storage::PoolOptions {
        crate::storage::PoolOptions {
            max_connections: self.max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.acquire_timeout_ms),
            busy_timeout: std::time::Duration::from_millis(self.busy_timeout_ms),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chat.db".into(),
            max_connections: 8,
            acquire_timeout_ms: 10_000,
            busy_timeout_ms: 5_000,
            check_interval_ms: 5_000,
        }
    }
}

/// `[encryption]`: keys for encryption at rest ([`crate::crypto`]). Only from the environment:
/// `CHAT_ENCRYPTION__KEYS="k2:<base64 of 32 bytes>,k1:<...>"`, the first key current (new
/// writes), the others kept to read older data until it is re-encrypted. A config file that
/// sets `encryption.keys` is refused. Unset or empty: nothing is encrypted.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionSettings {
    pub keys: Option<SecretString>,
}

impl EncryptionSettings {
    /// The keys allowed only in the environment.
    pub const ENV_ONLY_KEYS: &'static [&'static str] = &["encryption.keys"];

    /// The keyring these settings describe. Fails naming what is wrong with the keys (never
    /// the key bytes).
    pub fn keyring(&self) -> Result<crate::crypto::Keyring, crate::crypto::CryptoError> {
        match &self.keys {
            None => Ok(crate::crypto::Keyring::off()),
            Some(keys) => crate::crypto::Keyring::parse(keys.expose_secret()),
        }
    }
}

/// Limits and behaviour of chats. Every tunable limit of the protocol is here, so operators can
/// tune it; the fixed ones are in [`chat_proto::limits`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// Longest message content, in characters, after trimming.
    pub max_message_chars: u32,
    /// Largest WebSocket frame the edge accepts, at most 1 MiB (announced in the `session`
    /// frame; the edge enforces what the core announces).
    pub max_frame_bytes: u32,
    /// Interval of WebSocket pings (announced in the `session` frame; the edge pings at it).
    pub heartbeat_interval_ms: u64,
    /// How many recent messages are considered for the prompt (then cut to the token budget).
    pub prompt_history_messages: i64,
    /// Events buffered per connection before it counts as too slow and is dropped.
    pub outbound_buffer: usize,
    /// The most durable events one `resume` replays per chat (paced to the connection); a
    /// larger gap is answered with the latest history and `reset: true`.
    pub resume_max_events: u32,
    /// User messages per minute per user (across all connections and edges of this core).
    pub user_messages_per_minute: u32,
    /// Typing events per minute per user.
    pub typing_per_minute: u32,
    /// New chats per minute per user (`chat_update {action: "create"}`, or a message without
    /// a `chatId`).
    pub chats_per_minute: u32,
    /// `chat_update {action: "join"}` frames per minute per user.
    pub joins_per_minute: u32,
    /// History pages per minute per user (`history` frames, `GetHistory` calls).
    pub history_per_minute: u32,
    /// Chats resumed per minute per user (each chat of a `resume` frame counts).
    pub resumes_per_minute: u32,
    /// `read` receipt frames per minute per user (each one stores a durable event).
    pub read_receipts_per_minute: u32,
    /// File uploads per minute per user (each stores up to `files.max_bytes`).
    pub uploads_per_minute: u32,
    /// Live connections per user (on every core of a `[cluster]`); one more is refused with
    /// close 1013.
    pub max_connections_per_user: usize,
    /// Presence (`online`, `away`, `offline`) is told to a chat only while it has at most this
    /// many joined connections (on the core where the change happens): in a larger room every
    /// join would cost an event per member, O(members²) as the room forms. 0: never told.
    pub presence_max_members: usize,
    /// How long an operator's takeover outlives its connection (renewed while connected).
    pub operator_lease_secs: u64,
    /// A session with no activity for this long ends (status `ended`, end time and duration
    /// stored, members told); 0 never ends one for idleness.
    pub session_idle_timeout_secs: u64,
    /// One active session per user: starting a new one ends the user's other active sessions.
    /// A message to an ended session continues it (and so ends the others).
    pub single_active_session: bool,
    /// Session changes buffered per `WatchSessions` watcher before it counts as too slow and
    /// its stream is ended.
    pub watch_buffer: usize,
    /// Where to fetch a user's context document when none was pushed (`SetUserContext`, `PUT
    /// /api/users/{userId}/context`): an `http(s)` URL with `{userId}` (replaced by the id,
    /// percent-encoded), answered with a JSON object. Empty: nothing is fetched.
    pub context_url: String,
    /// Sessions with no activity for this many days are deleted, with their messages and the
    /// files only they held; 0 keeps them forever.
    pub retention_days: u32,
    /// How long a fetched document, or a failed fetch, is reused per user.
    pub context_cache_secs: u64,
    /// Longest wait for a fetch; past it (or on any failure) the reply goes on without it.
    pub context_fetch_timeout_ms: u64,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            max_message_chars: limits::MAX_MESSAGE_CHARS,
            max_frame_bytes: limits::MAX_FRAME_BYTES,
            heartbeat_interval_ms: limits::HEARTBEAT_INTERVAL_MS,
            prompt_history_messages: 50,
            outbound_buffer: 256,
            resume_max_events: 1000,
            user_messages_per_minute: 30,
            typing_per_minute: 10,
            chats_per_minute: 30,
            joins_per_minute: 60,
            history_per_minute: 120,
            resumes_per_minute: 300,
            read_receipts_per_minute: 120,
            uploads_per_minute: 20,
            max_connections_per_user: 5,
            presence_max_members: 100,
            operator_lease_secs: 30,
            session_idle_timeout_secs: 15 * 60,
            single_active_session: true,
            watch_buffer: 1024,
            context_url: String::new(),
            context_cache_secs: 60,
            retention_days: 0,
            context_fetch_timeout_ms: 1000,
        }
    }
}

/// The gRPC server's limits, which hold for internal services that reach the core without an
/// edge as much as for edges.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Largest message the core decodes, in bytes; 0 means 8 x `chat.max_frame_bytes` (a frame
    /// the edge accepts grows at most 5.5 times from JSON to protobuf: `[0,0,...]`). A larger
    /// message ends its call with `OUT_OF_RANGE` (on the stream, after an error event 413).
    pub max_message_bytes: u32,
    /// Concurrent calls (streams) on one HTTP/2 connection. An edge multiplexes its sockets
    /// over `core_channels` connections, so keep `limits.max_connections / core_channels`
    /// of every edge below it.
    pub max_concurrent_streams: u32,
    /// Interval of HTTP/2 pings to each peer.
    pub keepalive_interval_secs: u64,
    /// A peer that does not answer a ping within this long is disconnected.
    pub keepalive_timeout_secs: u64,
    /// PEM certificate chain (server's first) for gRPC over TLS; with `tls_key_file`. Unset:
    /// plain HTTP/2, for a private network. Read at start: a new certificate needs a restart.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 0,
            max_concurrent_streams: 4096,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 20,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl GrpcSettings {
    /// [`GrpcSettings::max_message_bytes`] with its default filled in.
    pub fn message_limit(&self, chat: &ChatSettings) -> usize {
        match self.max_message_bytes {
            0 => chat.max_frame_bytes as usize * 8,
            n => n as usize,
        }
    }

    fn validate(&self, chat: &ChatSettings) -> Result<(), InvalidSetting> {
        InvalidSetting::check(
            self.max_message_bytes == 0 || self.max_message_bytes >= chat.max_frame_bytes,
            "grpc.max_message_bytes",
            "must be 0 (8 x chat.max_frame_bytes) or at least chat.max_frame_bytes",
        )?;
        InvalidSetting::check(
            self.max_concurrent_streams > 0,
            "grpc.max_concurrent_streams",
            "must be greater than 0",
        )?;
        InvalidSetting::check(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "grpc.tls_cert_file",
            "and grpc.tls_key_file must be set together",
        )?;
        InvalidSetting::check(
            self.keepalive_interval_secs > 0 && self.keepalive_timeout_secs > 0,
            "grpc.keepalive_interval_secs",
            "keepalive interval and timeout must be greater than 0",
        )
    }

    /// The server's TLS, when `tls_cert_file` and `tls_key_file` are set; the error names
    /// the file that cannot be read or used.
    pub fn tls(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Ok(None);
        };
        let read = |key_name: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|err| format!("grpc.{key_name} {}: cannot be read: {err}", path.display()))
        };
        let identity = tonic::transport::Identity::from_pem(
            read("tls_cert_file", cert)?,
            read("tls_key_file", key)?,
        );
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        // tonic parses the PEM when the server is built: try it now, so a bad file stops the
        // start instead of the first connection.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|err| {
                format!(
                    "grpc.tls_cert_file {} / grpc.tls_key_file {}: not a usable certificate and key: {err}",
                    cert.display(),
                    key.display()
                )
            })?;
        Ok(Some(config))
    }
}

impl Settings {
    /// Defaults < `file` (when given) < `CHAT_*` environment, then [`Settings::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let settings = Self::load_unchecked(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Like [`Settings::load`] without validation, for callers that fill in more first
    /// (`chatctl dev` supplies a development secret and paths).
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, chat_runtime::process_env())
    }

    /// Like [`Settings::load_unchecked`] with the environment given as `(name, value)` pairs
    /// instead of read from the process: the `CHAT_*` settings, and the provider variables
    /// the LLM catalogue reads (`OPENAI_API_KEY`, ...).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut loader = SettingsLoader::new(ENV_PREFIX)
            .ignore_prefix(EDGE_ENV_PREFIX)
            .ignore_var(CONFIG_ENV)
            .verbatim(NotifySettings::VERBATIM_KEYS)
            .verbatim(crate::files::FileSettings::VERBATIM_KEYS)
            .defaults("files", crate::files::FileSettings::default())
            .verbatim(AuthSettings::VERBATIM_KEYS)
            .env_only(EncryptionSettings::ENV_ONLY_KEYS)
            .defaults("database", DatabaseSettings::default())
            .defaults("chat", ChatSettings::default())
            .defaults("grpc", GrpcSettings::default())
            .defaults("log", LogSettings::default());
        for (name, key) in SEED_ALIASES {
            loader = loader.alias(name, key);
        }
        let mut settings: Settings = loader.load(file, env.iter().cloned())?;
        settings.env_warnings = loader.alias_warnings(&env);
        let llm_warnings = settings.llm.apply_env(|name| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        });
        settings.env_warnings.extend(llm_warnings);
        Ok(settings)
    }

    /// Checks what serde cannot: cross references, ranges, keys. The first problem found is
    /// returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        chat_auth::Verifier::new(&self.auth)?;
        self.llm
            .validate()
            .map_err(|e| ConfigError::Llm(e.to_string()))?;
        self.chat.validate()?;
        self.grpc.validate(&self.chat)?;
        self.cluster.validate()?;
        InvalidSetting::check(
            self.database.max_connections > 0,
            "database.max_connections",
            "must be greater than 0",
        )?;
        for (value, key) in [
            (
                self.database.acquire_timeout_ms,
                "database.acquire_timeout_ms",
            ),
            (
                self.database.check_interval_ms,
                "database.check_interval_ms",
            ),
        ] {
            InvalidSetting::check(value >= 100, key, "must be at least 100")?;
        }
        self.log.validate()?;
        self.notify.validate()?;
        self.encryption.keyring().map_err(|e| {
            let why = match e {
                crate::crypto::CryptoError::BadKeys(why) => why,
                other => other.to_string(),
            };
            InvalidSetting::new("encryption.keys", format!("(CHAT_ENCRYPTION__KEYS): {why}"))
        })?;
        let f = &self.files;
        InvalidSetting::check(f.max_bytes > 0, "files.max_bytes", "must be greater than 0")?;
        InvalidSetting::check(
            f.url_ttl_secs > 0,
            "files.url_ttl_secs",
            "must be greater than 0",
        )?;
        InvalidSetting::check(
            (1..=100).contains(&f.max_attachments),
            "files.max_attachments",
            "must be from 1 to 100",
        )?;
        InvalidSetting::check(
            f.scan_timeout_ms > 0,
            "files.scan_timeout_ms",
            "must be greater than 0",
        )?;
        if let Some(addr) = &f.clamd_addr {
            InvalidSetting::check(
                addr.rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
                "files.clamd_addr",
                "must be host:port, e.g. 127.0.0.1:3310",
            )?;
        }
        Ok(())
    }
}

impl ChatSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = "must be greater than 0";
        InvalidSetting::check(
            self.context_url.is_empty()
                || ((self.context_url.starts_with("http://")
                    || self.context_url.starts_with("https://"))
                    && self.context_url.contains("{userId}")),
            "chat.context_url",
            "must be empty or an http(s) URL containing {userId}",
        )?;
        InvalidSetting::check(
            self.context_fetch_timeout_ms > 0,
            "chat.context_fetch_timeout_ms",
            positive,
        )?;
        InvalidSetting::check(
            self.max_message_chars > 0,
            "chat.max_message_chars",
            positive,
        )?;
        InvalidSetting::check(
            (1024..=limits::FRAME_BYTES_CEILING).contains(&self.max_frame_bytes),
            "chat.max_frame_bytes",
            &format!("must be from 1024 to {}", limits::FRAME_BYTES_CEILING),
        )?;
        InvalidSetting::check(
            self.heartbeat_interval_ms >= 1000,
            "chat.heartbeat_interval_ms",
            "must be at least 1000",
        )?;
        InvalidSetting::check(
            self.outbound_buffer >= 8,
            "chat.outbound_buffer",
            "must be at least 8",
        )?;
        InvalidSetting::check(
            self.user_messages_per_minute > 0,
            "chat.user_messages_per_minute",
            positive,
        )?;
        for (value, key) in [
            (self.resume_max_events, "chat.resume_max_events"),
            (self.typing_per_minute, "chat.typing_per_minute"),
            (self.chats_per_minute, "chat.chats_per_minute"),
            (self.joins_per_minute, "chat.joins_per_minute"),
            (self.history_per_minute, "chat.history_per_minute"),
            (self.resumes_per_minute, "chat.resumes_per_minute"),
            (
                self.read_receipts_per_minute,
                "chat.read_receipts_per_minute",
            ),
            (self.uploads_per_minute, "chat.uploads_per_minute"),
        ] {
            InvalidSetting::check(value > 0, key, positive)?;
        }
        InvalidSetting::check(
            self.max_connections_per_user > 0,
            "chat.max_connections_per_user",
            positive,
        )?;
        InvalidSetting::check(
            self.watch_buffer >= 8,
            "chat.watch_buffer",
            "must be at least 8",
        )?;
        InvalidSetting::check(
            self.operator_lease_secs > 0,
            "chat.operator_lease_secs",
            positive,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("core.toml");
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write: {e}"));
        (dir, path)
    }

    fn valid() -> Settings {
        Settings {
            auth: AuthSettings::hs256("a-secret-of-enough-length-for-hs256"),
            ..Settings::default()
        }
    }

    #[test]
    fn a_toml_file_sets_values_and_an_unknown_key_is_named() {
        let (_dir, path) =
            file("grpc_addr = \"127.0.0.1:6000\"\n[chat]\nmax_message_chars = 500\n");
        let settings = Settings::load_unchecked(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.grpc_addr.port(), 6000);
        assert_eq!(settings.chat.max_message_chars, 500);
        assert_eq!(
            settings.chat.user_messages_per_minute, 30,
            "defaults fill the rest"
        );

        let (_dir, path) = file("[chat]\nmax_mesage_chars = 500\n");
        let err = Settings::load_unchecked(Some(&path))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("max_mesage_chars"), "{err}");
        let err = Settings::load_unchecked(Some(Path::new("/no/such/file.toml")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn validation_says_what_to_fix() {
        let err = Settings::default()
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("CHAT_AUTH__SECRET"), "{err}");
        assert!(valid().validate().is_ok());

        let mut s = valid();
        s.chat.max_message_chars = 0;
        assert!(
            s.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("max_message_chars")
        );
        let mut s = valid();
        s.log.format = "xml".into();
        assert!(
            s.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("log.format")
        );
        let mut s = valid();
        s.llm.default_model = "missing".into();
        assert!(
            s.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .starts_with("llm:")
        );
        let mut s = valid();
        s.chat.operator_lease_secs = 0;
        assert!(
            s.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("operator_lease_secs")
        );
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_secret_of_digits_only_stays_the_string_it_was_written_as() {
        let digits = "01234567890123456789012345678901234";
        let settings = Settings::load_from(None, env(&[("CHAT_AUTH__SECRET", digits)]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.validate().is_ok());
        use secrecy::ExposeSecret;
        let secret = settings
            .auth
            .secret
            .as_ref()
            .map(|s| s.expose_secret().to_string());
        assert_eq!(
            secret.as_deref(),
            Some(digits),
            "leading zero kept, not a number"
        );
    }

    #[test]
    fn the_edges_variables_and_the_file_variable_do_not_stop_the_core() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT_EDGE_LIMITS__FRAMES_PER_MINUTE", "5"),
                ("CHAT_EDGE_CORE_URL", "http://core:50051"),
                ("CHAT_CONFIG", "/etc/chat/core.toml"),
                ("CHAT_AUTH__SECRET", "a-secret-of-enough-length-for-hs256"),
                ("CHAT_DATABASE__URL", "postgres://chat@db/chat"),
                ("CHAT_CHAT__MAX_MESSAGE_CHARS", "500"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.database.url, "postgres://chat@db/chat");
        assert_eq!(settings.chat.max_message_chars, 500);
        assert!(
            settings.validate().is_ok(),
            "the secret came from CHAT_AUTH__SECRET"
        );

        let err = Settings::load_from(None, env(&[("CHAT_EDGY__X", "1")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("edgy"),
            "other unknown CHAT_ keys still fail: {err}"
        );
    }

    #[test]
    fn encryption_keys_come_from_the_environment_only() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT_AUTH__SECRET", "a-secret-of-enough-length-for-hs256"),
                ("CHAT_ENCRYPTION__KEYS", &format!("k1:{key}")),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.validate().is_ok());
        let keyring = settings
            .encryption
            .keyring()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keyring.current_id(), Some("k1"));
        assert!(!format!("{settings:?}").contains(key), "never printed");

        let (_dir, path) = file(&format!("[encryption]\nkeys = \"k1:{key}\"\n"));
        let err = Settings::load_from(Some(&path), env(&[]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("CHAT_ENCRYPTION__KEYS"), "{err}");
        assert!(!err.contains(key), "{err}");

        let mut s = valid();
        s.encryption.keys = Some(SecretString::from("k1:short"));
        let err = s
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("encryption.keys"), "{err}");
    }

    #[test]
    fn provider_variables_come_from_the_given_environment() {
        let settings = Settings::load_from(None, env(&[("OPENAI_API_KEY", "sk-test")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.llm.providers.contains_key("openai"));
    }

    #[test]
    fn a_frame_limit_over_the_edges_ceiling_is_refused() {
        let mut s = valid();
        s.chat.max_frame_bytes = limits::FRAME_BYTES_CEILING + 1;
        let err = s
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("chat.max_frame_bytes"), "{err}");
        s.chat.max_frame_bytes = limits::FRAME_BYTES_CEILING;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn the_example_file_loads_and_shows_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/core.example.toml"
        ));
        let settings = Settings::load_from(
            Some(path),
            env(&[("CHAT_AUTH__SECRET", "a-secret-of-enough-length-for-hs256")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.validate().is_ok());
        let defaults = ChatSettings::default();
        assert_eq!(settings.chat.max_frame_bytes, defaults.max_frame_bytes);
        assert_eq!(
            settings.chat.heartbeat_interval_ms,
            defaults.heartbeat_interval_ms
        );
        let files = crate::files::FileSettings::default();
        assert_eq!(
            (settings.files.max_bytes, settings.files.url_ttl_secs),
            (files.max_bytes, files.url_ttl_secs)
        );
    }
}
