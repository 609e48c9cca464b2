//! Typed settings of `chat-edge`: defaults, then an optional TOML file, then `CHAT_EDGE_*`
//! environment variables (`__` separates levels: `CHAT_EDGE_AUTH__SECRET`; `CHAT_EDGE_CONFIG`
//! names the file and is not a setting).
//!
//! The per-socket frame size and heartbeat are not here: the core sets them
//! (`chat.max_frame_bytes`, `chat.heartbeat_interval_ms`) and announces them in the `session`
//! event the edge enforces them from. An old file that still names them under `[limits]` is
//! refused at start as an unknown field.

use std::net::SocketAddr;
use std::path::Path;

use chat_auth::{AuthConfigError, AuthSettings};
use chat_runtime::{InvalidSetting, LogSettings, SettingsError, SettingsLoader};
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
    /// The core's gRPC address.
    pub core_url: String,
    /// HTTP/2 connections to the core; WebSocket streams are spread over them.
    pub core_channels: usize,
    pub auth: AuthSettings,
    pub limits: EdgeLimits,
    /// Browser origins allowed to open a WebSocket; empty allows any origin.
    pub allowed_origins: Vec<String>,
    pub log: LogSettings,
}

/// Per-connection and per-edge limits the edge owns (the per-user ones live in the core).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeLimits {
    pub max_connections: usize,
    pub frames_per_minute: u32,
    /// Frames refused for rate in one minute after which the connection is closed (1008).
    pub abuse_strikes: u32,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            frames_per_minute: 60,
            abuse_strikes: 20,
        }
    }
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            core_url: "http://127.0.0.1:50051".into(),
            core_channels: 4,
            auth: AuthSettings::default(),
            limits: EdgeLimits::default(),
            allowed_origins: Vec::new(),
            log: LogSettings::default(),
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
        SettingsLoader::new(ENV_PREFIX)
            .ignore_var(CONFIG_ENV)
            .defaults("limits", EdgeLimits::default())
            .defaults("log", LogSettings::default())
            .load(file, env)
    }

    /// Checks what serde cannot; the first problem found is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        chat_auth::Verifier::new(&self.auth)?;
        self.log.validate()?;
        self.core_endpoint()?;
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
        Ok(())
    }

    /// The core's address as a gRPC endpoint; fails naming `core_url` unless it is an
    /// `http://` or `https://` URL.
    pub fn core_endpoint(&self) -> Result<Endpoint, InvalidSetting> {
        let url = &self.core_url;
        let rule = || format!("{url:?} must be an http:// or https:// URL");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InvalidSetting::new("core_url", rule()));
        }
        Endpoint::from_shared(url.clone()).map_err(|_| InvalidSetting::new("core_url", rule()))
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
