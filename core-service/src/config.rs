//! Typed settings of `chat-core`: built-in defaults, then an optional TOML file, then
//! `CHAT_*` environment variables (`__` separates levels: `CHAT_DATABASE__URL`,
//! `CHAT_AUTH__SECRET`). Secrets are accepted only from the environment; tests build the
//! struct directly.

use std::net::SocketAddr;
use std::path::Path;

use chat_auth::AuthSettings;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::llm::LlmSettings;
pub use chat_runtime::LogSettings;

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
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            database: DatabaseSettings::default(),
            auth: AuthSettings::default(),
            llm: LlmSettings::default(),
            chat: ChatSettings::default(),
            log: LogSettings::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://data/chat.db` (embedded default) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chat.db".into(),
            max_connections: 8,
        }
    }
}

/// Limits and behaviour of chats. Every limit of the protocol is here, so operators can tune it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// Longest message content, in characters, after trimming.
    pub max_message_chars: u32,
    /// Largest WebSocket frame the edge accepts (announced in the `session` frame).
    pub max_frame_bytes: u32,
    /// Interval of WebSocket pings (announced in the `session` frame).
    pub heartbeat_interval_ms: u64,
    /// How many recent messages are considered for the prompt (then cut to the token budget).
    pub prompt_history_messages: i64,
    /// Events buffered per connection before it counts as too slow and is dropped.
    pub outbound_buffer: usize,
    /// User messages per minute per user (across all connections and edges of this core).
    pub user_messages_per_minute: u32,
    /// Typing events per minute per user.
    pub typing_per_minute: u32,
    /// Live connections per user on this core; one more is refused with close 1013.
    pub max_connections_per_user: usize,
    /// How long an operator's takeover outlives its connection (renewed while connected).
    pub operator_lease_secs: u64,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            max_message_chars: 10_000,
            max_frame_bytes: 64 * 1024,
            heartbeat_interval_ms: 30_000,
            prompt_history_messages: 50,
            outbound_buffer: 256,
            user_messages_per_minute: 30,
            typing_per_minute: 10,
            max_connections_per_user: 5,
            operator_lease_secs: 30,
        }
    }
}

impl Settings {
    /// Defaults < `file` (when given) < `CHAT_*` environment, then [`Settings::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let settings = Self::load_unchecked(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Like [`Settings::load`] without validation, for callers that fill in more first
    /// (`chatctl dev` supplies a development secret and paths).
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::new()
            .merge(Serialized::defaults(DatabaseSettings::default()).key("database"))
            .merge(Serialized::defaults(ChatSettings::default()).key("chat"))
            .merge(Serialized::defaults(LogSettings::default()).key("log"));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("CHAT_").split("__"));
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        settings.llm.apply_env(|name| std::env::var(name).ok());
        Ok(settings)
    }

    /// Checks what serde cannot: cross references, ranges, keys.
    pub fn validate(&self) -> Result<(), String> {
        chat_auth::Verifier::new(&self.auth).map_err(|e| e.to_string())?;
        self.llm.validate().map_err(|e| format!("llm: {e}"))?;
        let c = &self.chat;
        if c.max_message_chars == 0 || c.max_frame_bytes < 1024 || c.heartbeat_interval_ms < 1000 {
            return Err("chat: max_message_chars must be > 0, max_frame_bytes >= 1024, heartbeat_interval_ms >= 1000".into());
        }
        if c.outbound_buffer < 8
            || c.user_messages_per_minute == 0
            || c.typing_per_minute == 0
            || c.max_connections_per_user == 0
        {
            return Err(
                "chat: outbound_buffer must be >= 8, rates and max_connections_per_user > 0".into(),
            );
        }
        if self.database.max_connections == 0 {
            return Err("database.max_connections must be > 0".into());
        }
        if c.operator_lease_secs == 0 {
            return Err("chat.operator_lease_secs must be > 0".into());
        }
        self.log.validate()?;
        Ok(())
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
            auth: AuthSettings::hs256("a-secret-of-enough-length"),
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
            .unwrap_or_default();
        assert!(err.contains("max_mesage_chars"), "{err}");
        let err = Settings::load_unchecked(Some(Path::new("/no/such/file.toml")))
            .err()
            .unwrap_or_default();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn validation_says_what_to_fix() {
        let err = Settings::default().validate().err().unwrap_or_default();
        assert!(err.contains("CHAT_AUTH__SECRET"), "{err}");
        assert!(valid().validate().is_ok());

        let mut s = valid();
        s.chat.max_message_chars = 0;
        assert!(
            s.validate()
                .err()
                .unwrap_or_default()
                .contains("max_message_chars")
        );
        let mut s = valid();
        s.log.format = "xml".into();
        assert!(
            s.validate()
                .err()
                .unwrap_or_default()
                .contains("log.format")
        );
        let mut s = valid();
        s.llm.default_model = "missing".into();
        assert!(s.validate().err().unwrap_or_default().starts_with("llm:"));
        let mut s = valid();
        s.chat.operator_lease_secs = 0;
        assert!(
            s.validate()
                .err()
                .unwrap_or_default()
                .contains("operator_lease_secs")
        );
    }
}
