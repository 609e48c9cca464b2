//! Scenario 6, the soak: `clients` sockets to ours (a freshly started stack on SQLite), each
//! in its own chat, each asking for the short reply every `interval` (the clients start spread
//! over the first interval), for `duration`. The server's resident memory is read once a
//! minute; "memory flat" is read from how it moves after the first minute, once every
//! socket, chat and cache exists. Turns, failures and turn latency are counted per minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::{self, Socket};
use crate::stats::Samples;
use crate::systems::{self, System};

/// How often memory and the counts are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// One reading.
#[derive(Debug, Clone)]
pub struct SoakSample {
    pub at: Duration,
    pub rss_kib: u64,
    pub turns: usize,
    pub failed: usize,
}

#[derive(Debug, Default)]
pub struct SoakResult {
    pub clients: usize,
    pub interval: Duration,
    pub baseline_kib: u64,
    pub samples: Vec<SoakSample>,
    pub latency: Samples,
    pub first_error: Option<String>,
}

impl SoakResult {
    /// RSS change from the first reading after a minute to the last, in KiB, and per minute.
    pub fn drift(&self) -> Option<(i64, f64)> {
        let first = self.samples.first()?;
        let last = self.samples.last()?;
        let minutes = (last.at - first.at).as_secs_f64() / 60.0;
        let change = last.rss_kib as i64 - first.rss_kib as i64;
        Some((
            change,
            if minutes > 0.0 {
                change as f64 / minutes
            } else {
                0.0
            },
        ))
    }
}

/// Runs the soak against `system` (ours).
///
/// # Errors
/// When the sockets cannot be opened or `/proc` cannot be read; failed turns are counted.
pub async fn run(
    system: &System,
    clients: usize,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<SoakResult> {
    let mut result = SoakResult {
        clients,
        interval,
        baseline_kib: system.process.rss_kib()?,
        ..SoakResult::default()
    };
    let prefix = format!("s-{}", uuid::Uuid::new_v4().simple());
    let opened = crate::load::open_sockets(system, &prefix, 0..clients).await?;
    let turns = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for (i, socket) in opened.into_iter().enumerate() {
        let (turns, failed) = (turns.clone(), failed.clone());
        // Spread over the first interval, so the load is steady rather than in waves.
        let offset = interval.mul_f64(i as f64 / clients.max(1) as f64);
        tasks.push(tokio::spawn(client_loop(
            socket, offset, interval, deadline, turns, failed,
        )));
    }
    let mut next = started + SAMPLE_EVERY;
    while next <= deadline {
        tokio::time::sleep_until(next.into()).await;
        result.samples.push(SoakSample {
            at: started.elapsed(),
            rss_kib: system.process.rss_kib()?,
            turns: turns.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
        });
        eprintln!(
            "  soak: {} min, RSS {} MiB, {} turns, {} failed",
            result.samples.len(),
            result.samples.last().map_or(0, |s| s.rss_kib / 1024),
            turns.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        next += SAMPLE_EVERY;
    }
    for task in tasks {
        let (latencies, first_error) = task.await?;
        result.latency.extend(latencies);
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    Ok(result)
}

/// One client: a chat of its own, then a turn every `interval` until `deadline`.
async fn client_loop(
    mut socket: Socket,
    offset: Duration,
    interval: Duration,
    deadline: Instant,
    turns: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> (Samples, Option<String>) {
    let mut latencies = Samples::default();
    let mut first_error = None;
    let chat = match client::ours_create_chat(&mut socket, systems::SHORT_MODEL).await {
        Ok(chat) => chat,
        Err(err) => {
            failed.fetch_add(1, Ordering::Relaxed);
            return (latencies, Some(format!("{err:#}")));
        }
    };
    let mut next = Instant::now() + offset;
    while next < deadline {
        // Waiting reads the socket, so the edge's heartbeat pings are answered meanwhile.
        let _ = tokio::time::timeout_at(next.into(), client::drain(&mut socket)).await;
        match client::ours_turn(&mut socket, Some(&chat), "How are you?").await {
            Ok((reply, _)) => {
                turns.fetch_add(1, Ordering::Relaxed);
                latencies.push(reply.total);
            }
            Err(err) => {
                failed.fetch_add(1, Ordering::Relaxed);
                if first_error.is_none() {
                    first_error = Some(format!("{err:#}"));
                }
            }
        }
        // Slots missed while the server was behind are skipped, not made up for (after the
        // deadline, too): `next` is never in the past.
        next += interval;
        let now = Instant::now();
        while next < now {
            next += interval;
        }
    }
    (latencies, first_error)
}
