//! Scenario 1, concurrent streams: N clients each ask for the 50-delta reply at the same
//! moment, one warm-up round then `rounds` measured rounds, on a socket opened beforehand (the
//! direct baseline: an HTTP request on a pooled connection). Measures time to first token,
//! per-token inter-arrival, lost or reordered chunks, and CPU per streamed token.
//!
//! Every client is its own task (the driver uses every core), and a barrier starts each round
//! for all of them at once. Ours sends every round's message into the chat the first round
//! created, as a conversation goes on.

use std::sync::Arc;

use tokio::sync::Barrier;

use crate::client::{self, Reply};
use crate::load::{CpuMark, CpuUse, Target};
use crate::procs::Process;
use crate::stats::Samples;
use crate::systems::System;

/// What one system did at one concurrency.
#[derive(Debug, Default)]
pub struct StreamResult {
    pub streams: usize,
    pub ttft: Samples,
    pub gaps: Samples,
    /// Replies that ended as they should.
    pub replies: usize,
    /// Turns that ended in an error (an error frame such as a 503 refusal, a broken socket).
    pub failed: usize,
    /// Replies that ended normally but with fewer or more chunks than the script sent.
    pub short: usize,
    /// Chunks missing from the replies that ended normally.
    pub lost_chunks: usize,
    pub chunks: usize,
    pub expected_chunks: usize,
    /// Replies whose chunk indices were not 0, 1, 2, ...
    pub out_of_order: usize,
    pub cpu: CpuUse,
    pub first_error: Option<String>,
}

/// Runs the scenario against `target` (`system` is its process, none for the direct read).
///
/// # Errors
/// When the sockets cannot be opened or `/proc` cannot be read; failed replies are counted,
/// not returned.
pub async fn run(
    target: &Target,
    system: Option<&System>,
    upstream: &Process,
    streams: usize,
    rounds: usize,
    deltas: usize,
) -> anyhow::Result<StreamResult> {
    let mut sockets: Vec<Option<client::Socket>> = match system {
        Some(system) => {
            let prefix = format!("s{streams}-{}", uuid::Uuid::new_v4().simple());
            crate::load::open_sockets(system, &prefix, 0..streams)
                .await?
                .into_iter()
                .map(Some)
                .collect()
        }
        None => (0..streams).map(|_| None).collect(),
    };
    // The clients, and this controller to take readings between rounds.
    let barrier = Arc::new(Barrier::new(streams + 1));
    let mut tasks = Vec::with_capacity(streams);
    for socket in sockets.drain(..) {
        let barrier = Arc::clone(&barrier);
        let target = target.clone();
        tasks.push(tokio::spawn(client_task(target, socket, barrier, rounds)));
    }
    barrier.wait().await; // round 0: warm-up
    let mut mark = None;
    for round in 1..=rounds {
        barrier.wait().await;
        if round == 1 {
            mark = Some(CpuMark::take(system.map(|s| &s.process), upstream)?);
        }
    }
    barrier.wait().await; // every measured round done
    let cpu = match mark {
        Some(mark) => mark.since(system.map(|s| &s.process), upstream)?,
        None => CpuUse::default(),
    };

    let mut result = StreamResult {
        streams,
        expected_chunks: streams * rounds * deltas,
        cpu,
        ..StreamResult::default()
    };
    for task in tasks {
        let outcomes = task.await?;
        for outcome in outcomes {
            match outcome {
                Ok(reply) => {
                    if reply.chunks == deltas {
                        result.replies += 1;
                    } else {
                        result.short += 1;
                        result.lost_chunks += deltas.saturating_sub(reply.chunks);
                    }
                    if !reply.in_order {
                        result.out_of_order += 1;
                    }
                    result.chunks += reply.chunks;
                    if let Some(ttft) = reply.ttft {
                        result.ttft.push(ttft);
                    }
                    for gap in reply.gaps {
                        result.gaps.push(gap);
                    }
                }
                Err(err) => {
                    result.failed += 1;
                    if result.first_error.is_none() {
                        result.first_error = Some(format!("{err:#}"));
                    }
                }
            }
        }
    }
    Ok(result)
}

/// One client: a warm-up turn, then `rounds` measured turns, each started by the barrier;
/// the measured turns' outcomes. It waits at every barrier even after a failure, so the
/// others are never held up.
async fn client_task(
    target: Target,
    mut socket: Option<client::Socket>,
    barrier: Arc<Barrier>,
    rounds: usize,
) -> Vec<anyhow::Result<Reply>> {
    let mut chat: Option<String> = None;
    let mut outcomes = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        barrier.wait().await;
        let outcome = turn(&target, socket.as_mut(), &mut chat).await;
        if round > 0 {
            outcomes.push(outcome);
        }
    }
    barrier.wait().await;
    outcomes
}

async fn turn(
    target: &Target,
    socket: Option<&mut client::Socket>,
    chat: &mut Option<String>,
) -> anyhow::Result<Reply> {
    const CONTENT: &str = "Tell me a story in fifty words.";
    match (target, socket) {
        (
            Target::Direct {
                client, stream_url, ..
            },
            _,
        ) => client::direct_turn(client, stream_url, CONTENT).await,
        (Target::Node { .. }, Some(socket)) => client::node_turn(socket, "stream", CONTENT).await,
        (Target::Ours { .. }, Some(socket)) => {
            let (reply, id) = client::ours_turn(socket, chat.as_deref(), CONTENT).await?;
            *chat = Some(id);
            Ok(reply)
        }
        _ => anyhow::bail!("a relay client without a socket"),
    }
}
