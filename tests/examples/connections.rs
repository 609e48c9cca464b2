//! Benchmark: memory per idle WebSocket and the latency of a chat turn, measured on the real
//! binaries. Prints figures; asserts nothing (speed and memory are read, not unit-tested).
//!
//! ```sh
//! cargo build --release -p chatctl
//! cargo run --release -p chat-tests --example connections -- [SOCKETS] [TURNS]
//! ```
//!
//! It starts `target/release/chatctl dev` as its own process ([`DevServer`]) (core + edge, SQLite, demo model
//! without word delay) on free ports, opens SOCKETS idle connections from this process (each
//! authenticated and past its `session` frame), and reads the server's resident memory from
//! `/proc/<pid>/status` before and after. Then it runs TURNS demo turns on one socket and reports
//! the time to the first chunk and to the final message.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use chat_tests::Ws;
use chat_tests::dev_server::DevServer;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sockets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let server = DevServer::start(
        "[llm.providers.demo]\nkind = \"demo\"\nword_delay_ms = 0\n",
        // Every socket here is the same demo user.
        &[
            ("CHAT_CHAT__MAX_CONNECTIONS_PER_USER", "1000000"),
            ("CHAT_CHAT__USER_MESSAGES_PER_MINUTE", "1000000"),
        ],
    );
    let ws_url = server.ws_url();
    eprintln!("server at {}", server.url);
    // Warm up: one connection and one turn, so lazily built state is not counted per socket.
    let mut warm = Ws::open(&ws_url).await;
    warm.recv_type("session").await;
    warm.send_message(None, "warm up", "warm").await;
    warm.recv_reply().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();

    let started = Instant::now();
    eprintln!("warm-up done; opening {sockets} sockets");
    let mut idle = Vec::with_capacity(sockets);
    for i in 0..sockets {
        if i % 500 == 0 {
            eprintln!("  {i} open");
        }
        let mut ws = Ws::open(&ws_url).await;
        let session = tokio::time::timeout(Duration::from_secs(5), ws.recv_type("session")).await;
        assert!(session.is_ok(), "socket {i}: no session frame within 5 s");
        idle.push(ws);
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();

    let mut first_chunk = Vec::with_capacity(turns);
    let mut full = Vec::with_capacity(turns);
    for i in 0..turns {
        let sent = Instant::now();
        warm.send(json!({"type": "message", "data": {"content": format!("turn {i}"), "messageId": format!("t{i}")}})).await;
        let (_, skipped) = warm.recv_type_collect("message_chunk").await;
        assert!(
            skipped.iter().all(|f| f["type"] != "error"),
            "turn {i} failed: {skipped:?}"
        );
        first_chunk.push(sent.elapsed());
        warm.recv_reply().await;
        full.push(sent.elapsed());
    }
    first_chunk.sort();
    full.sort();

    println!("idle sockets:            {sockets}");
    println!("server RSS before/after: {} KiB / {} KiB", before, after);
    println!(
        "server memory per idle socket (core + edge): {:.1} KiB",
        (after.saturating_sub(before)) as f64 / sockets as f64
    );
    println!(
        "connect + auth + session: {:.0} sockets/s",
        sockets as f64 / connect_time.as_secs_f64()
    );
    println!(
        "demo turn over {turns} turns: first chunk p50 {:?} p99 {:?}; final message p50 {:?} p99 {:?}",
        percentile(&first_chunk, 0.5),
        percentile(&first_chunk, 0.99),
        percentile(&full, 0.5),
        percentile(&full, 0.99)
    );
    drop(idle);
}
