//! Process plumbing shared by the binaries: the settings loader ([`settings`]), structured
//! logging set up from settings (with an optional JSON-lines copy for the test suite), the process-wide Prometheus registry, and the one shutdown
//! signal (SIGINT or SIGTERM).

pub mod settings;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

pub use settings::{InvalidSetting, SettingsError, SettingsLoader, process_env};

/// Text safe in a URL path segment or an RFC 5987 `filename*`: unreserved characters kept,
/// every other byte `%XX`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

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
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::check(
            matches!(self.format.as_str(), "pretty" | "json"),
            "log.format",
            "must be \"pretty\" or \"json\"",
        )
    }
}

/// Starts tracing: JSON or human-readable, filtered by `RUST_LOG` or the setting. A second
/// call (tests, `chatctl dev` running two services) keeps the first subscriber.
pub fn init_tracing(log: &LogSettings) {
    let _ = install(Some(log), None);
}

/// A copy of the log for later inspection: every event that passes `filter` (an `EnvFilter`
/// directive, independent of `RUST_LOG`), as one JSON object per line appended to `file`.
/// The end-to-end suite writes one per test process and scans them for secrets.
pub struct LogCopy {
    pub file: std::fs::File,
    pub filter: String,
}

/// Like [`init_tracing`] (stderr output only when `log` is given), plus `copy`. False when a
/// subscriber was already installed in this process, so the copy would stay empty.
pub fn init_tracing_with_copy(log: Option<&LogSettings>, copy: LogCopy) -> bool {
    install(log, Some(copy))
}

fn install(log: Option<&LogSettings>, copy: Option<LogCopy>) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, fmt};
    let stderr = log.map(|log| {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
        // Logs go to stderr: stdout belongs to what a program prints on purpose (chatctl's
        // URLs and tokens), and a reader that stops draining stdout must not block the server.
        let layer = fmt::layer().with_writer(std::io::stderr);
        let layer = if log.format == "json" {
            layer.json().boxed()
        } else {
            layer.boxed()
        };
        layer.with_filter(filter)
    });
    let copy = copy.map(|copy| {
        // One `write` per event (the formatter buffers the line), so lines never interleave.
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::sync::Mutex::new(copy.file))
            .with_filter(EnvFilter::new(&copy.filter))
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(copy)
        .try_init()
        .is_ok()
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

/// The process's metrics registry, installed as the global `metrics` recorder on first use.
/// One per process: when core and edge share a process (`chatctl dev`, tests), both
/// `/metrics` endpoints show everything.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        const SECONDS: &[f64] = &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let builder = PrometheusBuilder::new();
        // Only fails for an empty bucket list, which SECONDS is not.
        let builder =
            match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; ours then stays empty.
        let _ = metrics::set_global_recorder(recorder);
        spawn_upkeep(handle.clone());
        handle
    })
}

/// How often [`spawn_upkeep`] folds the histograms' new samples into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds, on a thread of its
/// own (the registry is made before any runtime and outlives them). A recorder built with
/// `build_recorder` keeps every sample until the next scrape otherwise: a core nobody scrapes
/// grew by a few hundred bytes a turn without end (found by the 30-minute soak, heaptrack:
/// `metrics_util::AtomicBucket::push`). Only a thread that cannot start skips it, logged.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    match spawned {
        Ok(thread) => {
            let _ = UPKEEP.set(thread);
        }
        // Before logging may be set up, so straight to stderr.
        Err(err) => {
            eprintln!("metrics upkeep thread not started ({err}): histograms grow until scraped")
        }
    }
}

/// The upkeep thread, kept so that it can be seen to run.
static UPKEEP: OnceLock<std::thread::JoinHandle<()>> = OnceLock::new();

/// The Prometheus text exposition of everything recorded in this process.
pub fn render_metrics() -> String {
    metrics().render()
}

#[cfg(test)]
mod upkeep_tests {
    /// The registry starts its upkeep thread with it (without one, histogram samples pile up
    /// until a scrape). The spawned handle is checked rather than `/proc/self/task`: a new
    /// thread names itself only once it runs, so reading its name there raced its start.
    #[test]
    fn the_metrics_registry_runs_its_upkeep_thread() {
        let _ = super::metrics();
        let Some(upkeep) = super::UPKEEP.get() else {
            panic!("the upkeep thread was not started");
        };
        assert_eq!(upkeep.thread().name(), Some("metrics-upkeep"));
        assert!(!upkeep.is_finished(), "the upkeep thread has stopped");
    }
}
