//! Scenario 3, memory per idle WebSocket: the system's resident memory before any socket,
//! then after opening idle sockets up to each count in turn (5,000, then 5,000 more to
//! 10,000, ...), each socket authenticated and answered (ours: its `session` frame) and held
//! by a task that keeps reading it, so heartbeats are answered. The figure is (RSS now - RSS
//! before) / sockets open, for the server's processes only. Run on a freshly started system,
//! so memory freed by earlier load is not reused and hidden.

use std::time::Duration;

use futures::StreamExt as _;
use tokio::task::JoinSet;

use crate::client::Socket;
use crate::systems::System;

/// Pause after the last socket opened before reading memory (lazy allocations settle).
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct IdleResult {
    pub baseline_kib: u64,
    /// (sockets open, RSS in KiB) after each step.
    pub steps: Vec<(usize, u64)>,
    pub error: Option<String>,
}

impl IdleResult {
    /// KiB per socket at each step.
    pub fn per_socket(&self) -> Vec<(usize, f64)> {
        self.steps
            .iter()
            .map(|&(n, rss)| (n, rss.saturating_sub(self.baseline_kib) as f64 / n as f64))
            .collect()
    }
}

/// Runs the scenario; stops at the first step that cannot be reached (recorded in `error`).
///
/// # Errors
/// When `/proc` cannot be read.
pub async fn run(system: &System, counts: &[usize]) -> anyhow::Result<IdleResult> {
    tokio::time::sleep(SETTLE).await;
    let mut result = IdleResult {
        baseline_kib: system.process.rss_kib()?,
        ..IdleResult::default()
    };
    let prefix = format!("i-{}", uuid::Uuid::new_v4().simple());
    let mut holders = JoinSet::new();
    let mut open = 0;
    for &count in counts {
        if count <= open {
            continue;
        }
        match crate::load::open_sockets(system, &prefix, open..count).await {
            Ok(sockets) => {
                for socket in sockets {
                    holders.spawn(hold(socket));
                }
                open = count;
            }
            Err(err) => {
                result.error = Some(format!("at {count} sockets: {err:#}"));
                break;
            }
        }
        eprintln!("  {} idle sockets open to {}", open, system.kind.label());
        tokio::time::sleep(SETTLE).await;
        result.steps.push((open, system.process.rss_kib()?));
    }
    // Dropping the holders closes the sockets.
    holders.shutdown().await;
    Ok(result)
}

/// Keeps one socket read (tungstenite answers pings while reading) until it ends.
async fn hold(mut socket: Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}
