//! Benchmark: memory per idle WebSocket and the latency of a chat turn, measured on the real
//! binaries. Prints figures; asserts nothing (speed and memory are read, not unit-tested).
//!
//! ```sh
//! cargo build --release -p chatctl
//! cargo run --release -p chat-tests --example connections -- [SOCKETS] [TURNS]
//! ```
//!
//! It starts `target/release/chatctl dev` as its own process (core + edge, SQLite, demo model
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

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat_tests::Ws;
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Kills the server it started when the benchmark ends, panics included.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sockets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let data = tempfile::tempdir().expect("temp dir");
    let config = data.path().join("core.toml");
    std::fs::write(
        &config,
        "[llm.providers.demo]\nkind = \"demo\"\nword_delay_ms = 0\n",
    )
    .expect("config");
    // BENCH_URL=<printed page URL> and BENCH_PID=<server pid> measure a server started by hand.
    let (url, pid, child) = match (std::env::var("BENCH_URL"), std::env::var("BENCH_PID")) {
        (Ok(url), Ok(pid)) => (url, pid.parse::<u32>().expect("BENCH_PID"), None),
        _ => {
            let bin = std::env::current_exe()
                .expect("exe")
                .ancestors()
                .nth(2)
                .expect("target dir")
                .join("chatctl");
            let mut child = Command::new(&bin)
                .args(["dev", "--port", "0", "--grpc-port", "0", "--config"])
                .arg(&config)
                .arg("--data-dir")
                .arg(data.path())
                .env(
                    "CHAT_DATABASE__URL",
                    format!("sqlite://{}", data.path().join("bench.db").display()),
                )
                .env("RUST_LOG", "warn")
                // Every socket here is the same demo user.
                .env("CHAT_CHAT__MAX_CONNECTIONS_PER_USER", "1000000")
                .env("CHAT_CHAT__USER_MESSAGES_PER_MINUTE", "1000000")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} (build it with cargo build --release -p chatctl): {e}",
                        bin.display()
                    )
                });
            let mut url = String::new();
            for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
                let line = line.expect("line");
                if let Some(rest) = line.trim().strip_prefix("open:") {
                    url = rest.trim().to_string();
                    break;
                }
            }
            (url, child.id(), Some(child))
        }
    };
    let _server = KillOnDrop(child);
    let (base, token) = url.split_once("/?token=").expect("printed URL");
    let ws_url = format!("{}/ws?token={token}", base.replace("http://", "ws://"));

    eprintln!("server at {base}");
    // Warm up: one connection and one turn, so lazily built state is not counted per socket.
    let mut warm = Ws::open(&ws_url).await;
    warm.recv_type("session").await;
    warm.send_message(None, "warm up", "warm").await;
    warm.recv_reply().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

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
    let after = rss_kib(pid);

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
