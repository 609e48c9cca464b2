//! `chatctl dev`: the whole stack in one process for local use. The core and the edge are
//! each their own server on loopback and the edge talks to the core over real gRPC, exactly
//! as in production; only the process boundary is missing.
//!
//! Each reads its own settings as its binary does: the core `--config` and `CHAT_*`, the edge
//! `--edge-config` and `CHAT_EDGE_*` (the prefixes cannot collide: the core ignores
//! `CHAT_EDGE_*`). Then `chatctl dev` fills in what a local stack needs: the ports given on
//! its command line, the edge pointed at this core, one development secret for both, and
//! unless configured, a SQLite database under `--data-dir`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use chat_auth::{MintRequest, Minter};
use chat_core::{Application, Settings};
use chat_edge::{Edge, EdgeSettings};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// Edge (HTTP/WebSocket) port, on loopback.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Core (gRPC) port, on loopback.
    #[arg(long, default_value_t = 50051)]
    grpc_port: u16,
    /// Where the SQLite database and the dev secret live.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Optional core config file (TOML); `CHAT_*` variables apply as usual.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Optional edge config file (TOML); `CHAT_EDGE_*` variables apply as usual.
    #[arg(long)]
    edge_config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let auth = super::dev_auth(&args.data_dir)?;

    let mut core = Settings::load_unchecked(args.config.as_deref()).context("core settings")?;
    core.grpc_addr = SocketAddr::new(loopback, args.grpc_port);
    if std::env::var("CHAT_DATABASE__URL").is_err() && args.config.is_none() {
        core.database.url = format!("sqlite://{}", args.data_dir.join("chat.db").display());
    }
    if std::env::var("CHAT_FILES__LOCAL_DIR").is_err() && args.config.is_none() {
        core.files.local_dir = args.data_dir.join("files");
    }
    core.auth = auth.clone();
    // Core and edge share one process and so one metrics registry: the edge's `/metrics`
    // shows both, and no second port is needed (or can be taken by something else).
    core.metrics_addr = None;
    chat_runtime::init_tracing(&core.log);
    let core_app = Application::build(core.clone())
        .await
        .context("starting the core")?;
    let core_addr = core_app.local_addr();

    let mut edge =
        EdgeSettings::load_unchecked(args.edge_config.as_deref()).context("edge settings")?;
    edge.http_addr = SocketAddr::new(loopback, args.port);
    edge.core_url = format!("http://{core_addr}");
    edge.auth = auth.clone();
    let edge_app = Edge::build(edge).await.context("starting the edge")?;
    let edge_addr = edge_app.local_addr();

    let minter = Minter::new(&auth)?;
    let mint = |user: &str, name: &str, roles: &[&str]| {
        minter.mint(&MintRequest {
            user_id: user.into(),
            name: Some(name.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ttl_secs: 7 * 86_400,
        })
    };
    let user_token = mint("demo", "Demo User", &[])?;
    let admin_token = mint("admin", "Admin", &["admin"])?;
    let models: Vec<&str> = core.llm.models.iter().map(|m| m.id.as_str()).collect();

    println!();
    println!("  chat backend (dev) is running");
    println!("  open:        http://{edge_addr}/?token={user_token}");
    println!("  as admin:    http://{edge_addr}/?token={admin_token}");
    println!("  admin page:  http://{edge_addr}/admin.html?token={admin_token}");
    println!("  sessions:    http://{edge_addr}/sessions.html");
    println!("  websocket:   ws://{edge_addr}/ws");
    println!("  metrics:     http://{edge_addr}/metrics");
    println!("  core gRPC:   {core_addr}");
    println!("  database:    {}", core.database.url);
    println!(
        "  models:      {} (default {})",
        models.join(", "),
        core.llm.default_model
    );
    println!();
    println!("  demo user token:  {user_token}");
    println!("  admin token:      {admin_token}");
    println!(
        "  operators:        export CHATCTL_CORE=http://{core_addr} CHATCTL_TOKEN={admin_token}"
    );
    println!();
    println!("  Ctrl-C to stop.");

    let shutdown = CancellationToken::new();
    let core_task = tokio::spawn(core_app.run(shutdown.clone()));
    let edge_task = tokio::spawn(edge_app.run(shutdown.clone()));
    chat_runtime::shutdown_signal().await;
    shutdown.cancel();
    let (edge_result, core_result) = tokio::join!(edge_task, core_task);
    edge_result??;
    core_result??;
    Ok(())
}
