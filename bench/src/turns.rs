//! Scenario 2, chat turns per second: `clients` clients each send a message, wait for the
//! whole short reply (ours: the stored final `message`), and send the next, for `duration`
//! (a closed loop: the rate is what the system sustains). Ours keeps each client in one chat
//! on the short-reply model, so every turn is two stored messages. Measures turns per second,
//! turn latency (request to end of reply) and CPU per turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::client::{self, Socket};
use crate::load::{CpuMark, CpuUse, Target};
use crate::procs::Process;
use crate::stats::Samples;
use crate::systems::{self, System};

#[derive(Debug, Default)]
pub struct TurnResult {
    pub clients: usize,
    pub turns: usize,
    pub failed: usize,
    pub latency: Samples,
    pub cpu: CpuUse,
    pub first_error: Option<String>,
}

impl TurnResult {
    pub fn per_second(&self) -> f64 {
        let secs = self.cpu.wall.as_secs_f64();
        if secs > 0.0 {
            self.turns as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs the scenario against `target`.
///
/// # Errors
/// When the clients cannot be set up or `/proc` cannot be read; failed turns are counted.
pub async fn run(
    target: &Target,
    system: Option<&System>,
    upstream: &Process,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<TurnResult> {
    let mut sockets: Vec<Option<(Socket, Option<String>)>> = match system {
        Some(system) => {
            let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
            let opened = crate::load::open_sockets(system, &prefix, 0..clients).await?;
            let mut ready = Vec::with_capacity(clients);
            for mut socket in opened {
                let chat = match target {
                    Target::Ours { .. } => {
                        Some(client::ours_create_chat(&mut socket, systems::SHORT_MODEL).await?)
                    }
                    _ => None,
                };
                ready.push(Some((socket, chat)));
            }
            ready
        }
        None => (0..clients).map(|_| None).collect(),
    };
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for socket in sockets.drain(..) {
        let barrier = Arc::clone(&barrier);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut socket = socket;
            // One warm-up turn each (new connections to the upstream, the chat's first reply).
            let _ = turn(&target, socket.as_mut()).await;
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut latencies = Samples::default();
            let mut turns = 0;
            let mut failed = 0;
            let mut first_error = None;
            while Instant::now() < deadline {
                match turn(&target, socket.as_mut()).await {
                    Ok(total) => {
                        turns += 1;
                        latencies.push(total);
                    }
                    Err(err) => {
                        failed += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{err:#}"));
                        }
                        // A broken socket fails at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (turns, failed, latencies, first_error)
        }));
    }
    barrier.wait().await;
    let mark = CpuMark::take(system.map(|s| &s.process), upstream)?;
    let mut result = TurnResult {
        clients,
        ..TurnResult::default()
    };
    for task in tasks {
        let (turns, failed, latencies, first_error) = task.await?;
        result.turns += turns;
        result.failed += failed;
        result.latency.extend(latencies);
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.cpu = mark.since(system.map(|s| &s.process), upstream)?;
    Ok(result)
}

async fn turn(
    target: &Target,
    socket: Option<&mut (Socket, Option<String>)>,
) -> anyhow::Result<Duration> {
    const CONTENT: &str = "Hi!";
    let reply = match (target, socket) {
        (
            Target::Direct {
                client, short_url, ..
            },
            _,
        ) => client::direct_turn(client, short_url, CONTENT).await?,
        (Target::Node { .. }, Some((socket, _))) => {
            client::node_turn(socket, "short", CONTENT).await?
        }
        (Target::Ours { .. }, Some((socket, chat))) => {
            client::ours_turn(socket, chat.as_deref(), CONTENT).await?.0
        }
        _ => anyhow::bail!("a relay client without a socket"),
    };
    Ok(reply.total)
}
