//! What the scenarios share: which system a client talks to ([`Target`]), opening the
//! clients' sockets in bounded batches, and the CPU readings taken around a measured window.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::client::{self, Socket};
use crate::procs::{self, Process};
use crate::systems::{Kind, System};

/// Handshakes in flight at once while a scenario opens its sockets.
const OPEN_CONCURRENCY: usize = 256;

/// Where a client sends its turns; cheap to clone into every client task.
#[derive(Clone, Debug)]
pub enum Target {
    /// The fake upstream itself, at these OpenAI base URLs.
    Direct {
        client: reqwest::Client,
        stream_url: String,
        short_url: String,
    },
    Node {
        addr: SocketAddr,
    },
    /// Ours, on SQLite or PostgreSQL (`kind`).
    Ours {
        addr: SocketAddr,
        kind: Kind,
    },
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Direct { .. } => Kind::Direct,
            Target::Node { .. } => Kind::Node,
            Target::Ours { kind, .. } => *kind,
        }
    }

    pub fn of(system: &System) -> Target {
        match system.kind {
            Kind::Node => Target::Node { addr: system.addr },
            kind => Target::Ours {
                addr: system.addr,
                kind,
            },
        }
    }

    pub fn direct(stream_url: &str, short_url: &str) -> Target {
        Target::Direct {
            // No pool limit: one connection per concurrent stream, kept for the next round,
            // as the core's provider keeps its connections.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(300))
                .build()
                .unwrap_or_default(),
            stream_url: stream_url.to_owned(),
            short_url: short_url.to_owned(),
        }
    }
}

/// Opens `count` sockets to `system`, one user each (`{prefix}-{i}`), and waits for each to be
/// usable (ours: its `session` frame). Sockets come back in no particular order.
///
/// # Errors
/// When any socket cannot be opened.
pub async fn open_sockets(
    system: &System,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<Socket>> {
    let urls = range
        .map(|i| system.ws_url(&format!("{prefix}-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addr = system.addr;
    let kind = system.kind;
    futures::stream::iter(urls)
        .map(|url| async move {
            let mut socket = client::open(addr, &url).await?;
            if kind.is_ours() {
                client::ours_session(&mut socket).await?;
            }
            anyhow::Ok(socket)
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await
        .with_context(|| format!("opening sockets to {}", kind.label()))
}

/// CPU used by the processes of interest over a measured window.
#[derive(Clone, Debug, Default)]
pub struct CpuUse {
    /// The system under test's processes (none for the direct baseline).
    pub server: Option<Duration>,
    pub upstream: Duration,
    pub driver: Duration,
    pub wall: Duration,
}

/// CPU readings at the start of a window.
pub struct CpuMark {
    server: Option<Duration>,
    upstream: Duration,
    driver: Duration,
    at: Instant,
}

impl CpuMark {
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn take(server: Option<&Process>, upstream: &Process) -> anyhow::Result<CpuMark> {
        Ok(CpuMark {
            server: server.map(Process::cpu).transpose()?,
            upstream: upstream.cpu()?,
            driver: procs::own_cpu()?,
            at: Instant::now(),
        })
    }

    /// The CPU used since this mark.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn since(&self, server: Option<&Process>, upstream: &Process) -> anyhow::Result<CpuUse> {
        let server_now = server.map(Process::cpu).transpose()?;
        Ok(CpuUse {
            server: match (server_now, self.server) {
                (Some(now), Some(then)) => Some(now.saturating_sub(then)),
                _ => None,
            },
            upstream: upstream.cpu()?.saturating_sub(self.upstream),
            driver: procs::own_cpu()?.saturating_sub(self.driver),
            wall: self.at.elapsed(),
        })
    }
}
