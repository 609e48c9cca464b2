//! Typed settings of `chat-edge`: defaults, then an optional TOML file, then `CHAT_EDGE_*`
//! environment variables (`__` separates levels: `CHAT_EDGE_AUTH__SECRET`).

use std::net::SocketAddr;
use std::path::Path;

use chat_auth::AuthSettings;
use chat_runtime::LogSettings;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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

/// Per-connection and per-edge limits (the per-user ones live in the core).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeLimits {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub frames_per_minute: u32,
    /// Frames refused for rate in one minute after which the connection is closed (1008).
    pub abuse_strikes: u32,
    pub heartbeat_interval_ms: u64,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_connections: 10_000,
            frames_per_minute: 60,
            abuse_strikes: 20,
            heartbeat_interval_ms: 30_000,
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

impl EdgeSettings {
    /// Defaults < `file` < `CHAT_EDGE_*` environment, then validation.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let settings = Self::load_unchecked(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Like [`EdgeSettings::load`] without validation (`chatctl dev` fills in more first).
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::new()
            .merge(Serialized::defaults(EdgeLimits::default()).key("limits"))
            .merge(Serialized::defaults(LogSettings::default()).key("log"));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("CHAT_EDGE_").split("__"));
        figment
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))
    }

    pub fn validate(&self) -> Result<(), String> {
        chat_auth::Verifier::new(&self.auth).map_err(|e| e.to_string())?;
        self.log.validate()?;
        if !(self.core_url.starts_with("http://") || self.core_url.starts_with("https://")) {
            return Err(format!(
                "core_url {:?} must start with http:// or https://",
                self.core_url
            ));
        }
        if self.core_channels == 0 || self.core_channels > 64 {
            return Err("core_channels must be between 1 and 64".into());
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024
            || l.max_connections == 0
            || l.frames_per_minute == 0
            || l.heartbeat_interval_ms < 1000
        {
            return Err("limits: max_frame_bytes >= 1024, max_connections > 0, frames_per_minute > 0, heartbeat_interval_ms >= 1000".into());
        }
        Ok(())
    }
}
