//! Fuzzing over real sockets: sends FRAMES random and mutated frames (default 100,000) from
//! SOCKETS concurrent connections to the real `chatctl dev` binary and reports what the server
//! did: panics in its log (must be zero), frames answered, errors by code, closes by code (each
//! closed socket reconnects), whether it still serves a normal turn, and its memory before and
//! after. Prints figures; asserts only that nothing panicked and the server survived.
//!
//! ```sh
//! cargo build --release -p chatctl
//! cargo run --release -p chat-tests --example barrage -- [FRAMES] [SOCKETS] [SEED]
//! ```
//!
//! The frames are every client frame type with random values in its fields, valid frames with
//! their text mutated (bytes deleted, duplicated, replaced), deeply nested and oversized JSON,
//! and binary frames. Rate limits are lifted so that the frames reach the decoder and the core
//! instead of being refused for rate. A fixed SEED gives the same frames every run.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat_tests::Ws;
use chat_tests::dev_server::DevServer;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// xorshift64*: small, seedable, and good enough to pick frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const FIELDS: [&str; 16] = [
    "chatId",
    "content",
    "messageId",
    "isTyping",
    "messageIds",
    "action",
    "title",
    "model",
    "userId",
    "before",
    "limit",
    "chats",
    "status",
    "reason",
    "timestamp",
    "context",
];

fn random_value(rng: &mut Rng, chats: &[String]) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(-1),
        4 => json!(1.5e300),
        5 => json!(""),
        6 => json!("x".repeat(rng.below(200))),
        7 => json!("🙂\u{0}\u{7}../../etc/passwd"),
        8 => json!(rng.pick(chats)),
        9 => json!([rng.pick(chats), rng.next()]),
        10 => {
            json!({"chatId": rng.pick(chats), "lastSeq": rng.next() as i64, "streaming": {"messageId": "m", "lastIndex": i64::MAX}})
        }
        11 => json!(rng.pick(&[
            "join",
            "leave",
            "create",
            "rename",
            "select_model",
            "end",
            "add_member",
            "remove_member",
            "online",
            "away",
            "demo"
        ])),
        12 => nested(rng.below(120)),
        13 => json!({"a": {"b": [1, {"c": null}]}}),
        14 => json!(format!("m-{}", rng.below(50))),
        _ => json!(i64::MAX),
    }
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, i| {
        if i % 2 == 0 {
            json!([inner])
        } else {
            json!({ "k": inner })
        }
    })
}

/// A frame of a random type (or none) with random fields.
fn random_frame(rng: &mut Rng, types: &[&str], chats: &[String]) -> Value {
    let mut data = serde_json::Map::new();
    for _ in 0..rng.below(5) {
        data.insert(rng.pick(&FIELDS).to_string(), random_value(rng, chats));
    }
    let mut frame = json!({"type": rng.pick(types), "data": data});
    if rng.below(3) == 0 {
        frame["messageId"] = random_value(rng, chats);
    }
    frame
}

/// A frame's text with a few random edits (kept valid UTF-8: edits are by character).
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(4) {
        if chars.is_empty() {
            break;
        }
        let at = rng.below(chars.len());
        match rng.below(4) {
            0 => {
                let end = (at + rng.below(8)).min(chars.len());
                chars.drain(at..end);
            }
            1 => chars.insert(
                at,
                *rng.pick(&['{', '}', '[', ']', '"', ',', ':', '\\', '0', 'é']),
            ),
            2 => {
                let end = (at + rng.below(16)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
            _ => chars[at] = char::from_u32(rng.below(0x2FF) as u32).unwrap_or('?'),
        }
    }
    chars.into_iter().collect()
}

#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    errors: BTreeMap<u64, u64>,
    closes: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.received += other.received;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.closes {
            *self.closes.entry(k).or_default() += v;
        }
    }

    fn count(&mut self, message: Message) -> bool {
        match message {
            Message::Text(text) => {
                self.received += 1;
                if let Ok(frame) = serde_json::from_str::<Value>(text.as_str())
                    && frame["type"] == "error"
                {
                    let code = frame["data"]["code"].as_u64().unwrap_or_default();
                    *self.errors.entry(code).or_default() += 1;
                }
                true
            }
            Message::Close(frame) => {
                let code = frame.map_or("none".to_string(), |f| u16::from(f.code).to_string());
                *self.closes.entry(code).or_default() += 1;
                false
            }
            _ => true,
        }
    }
}

async fn open(url: &str) -> Ws {
    let mut ws = Ws::open(url).await;
    ws.recv_type("session").await;
    ws
}

/// One socket's share of the barrage; reconnects whenever the server closes it.
async fn run_socket(url: String, frames: u64, seed: u64, chats: Vec<String>) -> Tally {
    let types: Vec<&str> = chat_edge::frames::CLIENT_FRAME_TYPES
        .into_iter()
        .filter(|t| *t != "auth")
        .chain(["bogus", ""])
        .collect();
    let mut rng = Rng(seed | 1);
    let mut tally = Tally::default();
    let mut ws = open(&url).await;
    for _ in 0..frames {
        let message = match rng.below(100) {
            0..=49 => Message::text(random_frame(&mut rng, &types, &chats).to_string()),
            50..=89 => {
                let valid = random_frame(&mut rng, &types, &chats).to_string();
                Message::text(mutate(&mut rng, &valid))
            }
            90..=95 => Message::text(json!({"type": "message", "data": {"content": "deep", "messageId": format!("d{}", rng.next()), "context": nested(20 + rng.below(200))}}).to_string()),
            96..=98 => Message::binary(vec![0u8, 159, 146, 150]),
            // Over the 64 KiB frame limit: the server closes with 1009.
            _ => Message::text("x".repeat(70 * 1024)),
        };
        tally.sent += 1;
        let mut open_now = ws.inner.send(message).await.is_ok();
        // Read what is already there without waiting, so the socket never falls far behind.
        while open_now {
            match ws.inner.next().now_or_never() {
                Some(Some(Ok(message))) => open_now = tally.count(message),
                Some(Some(Err(_)) | None) => {
                    *tally.closes.entry("abrupt".into()).or_default() += 1;
                    open_now = false;
                }
                None => break,
            }
        }
        if !open_now {
            ws = open(&url).await;
        }
    }
    // Drain the rest briefly.
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(200), ws.inner.next()).await
    {
        if !tally.count(message) {
            break;
        }
    }
    tally
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let frames: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let sockets: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let unlimited = "1000000000";
    let mut server = DevServer::start(
        "[llm.providers.demo]\nkind = \"demo\"\nword_delay_ms = 0\n",
        &[
            ("CHAT_CHAT__MAX_CONNECTIONS_PER_USER", "1000"),
            ("CHAT_CHAT__USER_MESSAGES_PER_MINUTE", unlimited),
            ("CHAT_CHAT__TYPING_PER_MINUTE", unlimited),
            ("CHAT_CHAT__CHATS_PER_MINUTE", unlimited),
            ("CHAT_CHAT__JOINS_PER_MINUTE", unlimited),
            ("CHAT_CHAT__HISTORY_PER_MINUTE", unlimited),
            ("CHAT_CHAT__RESUMES_PER_MINUTE", unlimited),
            ("CHAT_CHAT__READ_RECEIPTS_PER_MINUTE", unlimited),
            ("CHAT_EDGE_LIMITS__FRAMES_PER_MINUTE", unlimited),
        ],
    );
    let url = server.ws_url();
    // Two chats of the demo user, so some frames name real ones.
    let mut setup = open(&url).await;
    let mut chats = Vec::new();
    for i in 0..2 {
        setup
            .send_message(None, "seed chat", &format!("seed-{i}"))
            .await;
        let ack = setup.recv_type("ack").await;
        chats.push(ack["data"]["chatId"].as_str().expect("chat").to_string());
        setup.recv_reply().await;
    }
    chats.push("no-such-chat".into());
    let before = server.rss_kib();
    eprintln!(
        "server at {}; sending {frames} frames over {sockets} sockets",
        server.url
    );

    let started = Instant::now();
    let per_socket = frames / sockets.max(1);
    let tasks: Vec<_> = (0..sockets)
        .map(|i| {
            tokio::spawn(run_socket(
                url.clone(),
                per_socket,
                seed.wrapping_mul(1_000_003).wrapping_add(i),
                chats.clone(),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("socket task"));
    }
    let elapsed = started.elapsed();
    let after = server.rss_kib();

    // The server still does its job.
    let alive = server.alive();
    let mut check = open(&url).await;
    check
        .send_message(None, "still there?", "final-check")
        .await;
    let reply = check.recv_reply().await;
    let answered = reply
        .iter()
        .any(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant");
    let panics = server.panics();

    println!(
        "frames sent:        {} in {:.1} s ({:.0}/s)",
        tally.sent,
        elapsed.as_secs_f64(),
        tally.sent as f64 / elapsed.as_secs_f64()
    );
    println!("frames received:    {}", tally.received);
    println!("errors by code:     {:?}", tally.errors);
    println!(
        "closes by code:     {:?} (each socket reconnected)",
        tally.closes
    );
    println!("server RSS:         {before} KiB before, {after} KiB after");
    println!("server alive:       {alive}; normal turn afterwards answered: {answered}");
    println!("panics in the log:  {}", panics.len());
    for line in &panics {
        println!("  {line}");
    }
    assert!(panics.is_empty(), "the server panicked");
    assert!(alive && answered, "the server stopped serving");
}
