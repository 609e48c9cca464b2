//! `chat-core`: reads settings, starts telemetry, binds, and serves until SIGINT/SIGTERM.

use std::path::PathBuf;

use chat_core::{Application, Settings};
use chat_runtime::{init_tracing, shutdown_signal};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The chat core: sessions, rooms, LLM streaming and storage, served over gRPC.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; `CHAT_*` environment variables override it.
    #[arg(long, env = "CHAT_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref()).map_err(anyhow::Error::msg)?;
    init_tracing(&settings.log);
    let app = Application::build(settings).await?;
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    app.run(token).await?;
    Ok(())
}
