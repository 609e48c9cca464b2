//! `chat-edge`: reads settings, starts telemetry, binds, and serves until SIGINT/SIGTERM.

use std::path::PathBuf;

use chat_edge::{Edge, EdgeSettings};
use chat_runtime::{init_tracing, shutdown_signal};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The WebSocket edge of the chat backend.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; `CHAT_EDGE_*` environment variables override it.
    #[arg(long, env = chat_edge::config::CONFIG_ENV)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = EdgeSettings::load(args.config.as_deref())?;
    init_tracing(&settings.log);
    let edge = Edge::build(settings).await?;
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    edge.run(token).await?;
    Ok(())
}
