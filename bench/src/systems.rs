//! The systems under test, each started as child processes on loopback:
//!
//! - **ours**: the release `chatctl dev` (core and edge in one process, over real gRPC, on
//!   SQLite in a temporary directory, or on the PostgreSQL database of `--database-url`), its
//!   core pointed at the fake upstream through an OpenAI-kind provider for each of the three
//!   scripts, and the per-user rates and the edge's connection caps lifted so the load is not
//!   refused (every other setting is the default);
//! - **node**: `bench/node/relay.mjs`, a minimal `ws` relay like the seeds' stack (no auth,
//!   no storage): one upstream request per client message, each delta forwarded as a frame.
//!
//! Both are killed when their [`System`] drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chat_auth::{AuthSettings, MintRequest, Minter};
use tokio::process::Command;

use crate::procs::{self, Process};
use crate::upstream::Upstream;

/// Which protocol the driver speaks to a system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Reading the fake upstream's SSE directly: the baseline.
    Direct,
    /// The Node `ws` relay.
    Node,
    /// Our edge and core (`docs/protocol.md`), on SQLite.
    Ours,
    /// The same on PostgreSQL (`--database-url`).
    OursPostgres,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct upstream",
            Kind::Node => "Node ws relay",
            Kind::Ours => "ours (chatctl dev, SQLite)",
            Kind::OursPostgres => "ours (chatctl dev, PostgreSQL)",
        }
    }

    /// Whether the driver speaks our protocol to it.
    pub fn is_ours(self) -> bool {
        matches!(self, Kind::Ours | Kind::OursPostgres)
    }
}

/// A running relay: its process, its WebSocket address, and how to authenticate to it.
pub struct System {
    pub kind: Kind,
    pub process: Process,
    pub addr: SocketAddr,
    /// Ours on SQLite: the database file.
    pub sqlite: Option<PathBuf>,
    minter: Option<Minter>,
}

impl System {
    /// The WebSocket URL for `user` (with a token minted for them when the system wants one).
    ///
    /// # Errors
    /// When a token cannot be minted.
    pub fn ws_url(&self, user: &str) -> anyhow::Result<String> {
        match &self.minter {
            Some(minter) => {
                let token = minter.mint(&MintRequest {
                    user_id: user.to_owned(),
                    name: Some(user.to_owned()),
                    roles: Vec::new(),
                    ttl_secs: 86_400,
                })?;
                Ok(format!("ws://{}/ws?token={token}", self.addr))
            }
            None => Ok(format!("ws://{}/", self.addr)),
        }
    }
}

/// Model ids of the three scripts in our core's catalogue.
pub const STREAM_MODEL: &str = "fake-stream";
pub const SHORT_MODEL: &str = "fake-short";
pub const FANOUT_MODEL: &str = "fake-fanout";

/// Starts `chatctl dev` from `chatctl` with its data under `dir`, on SQLite there, or on
/// `database_url` (a PostgreSQL database the caller made fresh for the run).
///
/// # Errors
/// When it does not start or its `/readyz` does not answer 200 within 60 s.
pub async fn start_ours(
    chatctl: &Path,
    dir: &Path,
    upstream: &Upstream,
    database_url: Option<&str>,
) -> anyhow::Result<System> {
    let port = procs::free_port()?;
    let grpc_port = procs::free_port()?;
    let (kind, name) = match database_url {
        Some(_) => (Kind::OursPostgres, "ours-pg"),
        None => (Kind::Ours, "ours"),
    };
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let sqlite_url = format!("sqlite://{}", data.join("chat.db").display());
    let core_toml = data.join("core.toml");
    let edge_toml = data.join("edge.toml");
    std::fs::write(
        &core_toml,
        core_config(&data, database_url.unwrap_or(&sqlite_url), upstream),
    )?;
    std::fs::write(&edge_toml, EDGE_CONFIG)?;
    // A fresh secret per run; the driver mints its tokens with it.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut command = Command::new(chatctl);
    command
        .arg("dev")
        .args(["--port", &port.to_string()])
        .args(["--grpc-port", &grpc_port.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&core_toml)
        .arg("--edge-config")
        .arg(&edge_toml)
        .env("CHAT_AUTH__SECRET", &secret)
        // Keep settings of the caller's environment out of the run.
        .env_remove("CHAT_DATABASE__URL")
        .env_remove("CHAT_CONFIG")
        .env_remove("CHAT_EDGE_CONFIG");
    let mut process = Process::spawn("chatctl dev", command, &dir.join(format!("{name}.log")))?;
    procs::wait_ready(
        &mut process,
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(60),
    )
    .await?;
    let minter = Minter::new(&AuthSettings::hs256(secret)).context("minting bench tokens")?;
    Ok(System {
        kind,
        process,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        sqlite: database_url.is_none().then(|| data.join("chat.db")),
        minter: Some(minter),
    })
}

/// The core's settings: the defaults, but the fake upstream as the models, the database at
/// `database_url`, and the per-user rates out of the way of a load test (every bench user is a
/// different user, so the per-user connection cap stays at its default).
fn core_config(data: &Path, database_url: &str, upstream: &Upstream) -> String {
    format!(
        r#"[database]
url = "{database_url}"

[files]
local_dir = "{files}"

[chat]
user_messages_per_minute = 1000000
chats_per_minute = 1000000
joins_per_minute = 1000000
history_per_minute = 1000000
resumes_per_minute = 1000000

[grpc]
max_concurrent_streams = 65536

[llm]
default_model = "{STREAM_MODEL}"

[llm.providers.fake-stream]
kind = "openai"
base_url = "{stream}"

[llm.providers.fake-short]
kind = "openai"
base_url = "{short}"

[[llm.models]]
id = "{STREAM_MODEL}"
name = "Fake upstream, streamed reply"
provider = "fake-stream"
upstream = "fake-model"

[llm.providers.fake-fanout]
kind = "openai"
base_url = "{fanout}"

[[llm.models]]
id = "{SHORT_MODEL}"
name = "Fake upstream, short reply"
provider = "fake-short"
upstream = "fake-model"

[[llm.models]]
id = "{FANOUT_MODEL}"
name = "Fake upstream, fan-out reply"
provider = "fake-fanout"
upstream = "fake-model"
"#,
        files = data.join("files").display(),
        stream = upstream.stream_url,
        short = upstream.short_url,
        fanout = upstream.fanout_url,
    )
}

/// The edge's settings: connection caps above what the suite opens, the per-socket frame rate
/// out of the way (the turns scenario sends one frame per turn).
const EDGE_CONFIG: &str = r#"[limits]
max_connections = 300000
max_http_connections = 100000
frames_per_minute = 1000000
"#;

/// Starts the Node relay from `node_dir` (`relay.mjs` and its `node_modules`).
///
/// # Errors
/// When `node` cannot be started or the relay does not listen within 20 s.
pub async fn start_node(
    node_dir: &Path,
    dir: &Path,
    upstream: &Upstream,
) -> anyhow::Result<System> {
    let port = procs::free_port()?;
    let script: PathBuf = node_dir.join("relay.mjs");
    anyhow::ensure!(
        node_dir.join("node_modules/ws").is_dir(),
        "{} has no node_modules/ws: run bench/run.sh (or npm ci in bench/node) first",
        node_dir.display()
    );
    let mut command = Command::new("node");
    command
        .arg(&script)
        .env("PORT", port.to_string())
        .env("UPSTREAM_STREAM", &upstream.stream_url)
        .env("UPSTREAM_SHORT", &upstream.short_url)
        .env("UPSTREAM_FANOUT", &upstream.fanout_url)
        .current_dir(node_dir);
    let mut process = Process::spawn("node relay", command, &dir.join("node.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    procs::wait_listening(&mut process, addr, Duration::from_secs(20)).await?;
    Ok(System {
        kind: Kind::Node,
        process,
        addr,
        sqlite: None,
        minter: None,
    })
}
