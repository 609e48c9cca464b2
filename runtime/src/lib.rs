//! Process plumbing shared by the binaries: structured logging set up from settings, and the
//! one shutdown signal (SIGINT or SIGTERM).

use serde::{Deserialize, Serialize};

/// The `[log]` table of a service's config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            filter: "info".into(),
        }
    }
}

impl LogSettings {
    pub fn validate(&self) -> Result<(), String> {
        match self.format.as_str() {
            "pretty" | "json" => Ok(()),
            _ => Err("log.format must be \"pretty\" or \"json\"".into()),
        }
    }
}

/// Starts tracing: JSON or human-readable, filtered by `RUST_LOG` or the setting. A second
/// call (tests, `chatctl dev` running two services) keeps the first subscriber.
pub fn init_tracing(log: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    // Logs go to stderr: stdout belongs to what a program prints on purpose (chatctl's URLs
    // and tokens), and a reader that stops draining stdout must not block the server.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
