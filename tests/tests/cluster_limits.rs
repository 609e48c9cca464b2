//! Per-user limits across cores: `chat-core` processes over one PostgreSQL sharing a real
//! Redis (`redis-server`), each with its own `chat-edge`. A message budget spent through both
//! cores is refused on either (429); the connection cap counts every core's connections, and
//! a killed core's connections stop counting once its heartbeat expires. With Redis stopped
//! each core limits on its own (rates: its share of the budget; caps: its own count) and
//! keeps serving.

use std::time::{Duration, Instant};

use chat_tests::core_process::CoreProcess;
use chat_tests::edge_process::EdgeProcess;
use chat_tests::redis_server::RedisServer;
use chat_tests::{Ws, fresh_postgres_database, token};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Two messages a minute (one every 30 s, so the test never sees a refill), two connections.
fn config(redis_url: &str) -> String {
    format!(
        r#"
[llm.providers.demo]
kind = "demo"
word_delay_ms = 0

[chat]
user_messages_per_minute = 2
max_connections_per_user = 2

[cluster]
redis_url = "{redis_url}"
"#
    )
}

/// A core process and the edge in front of it.
struct Node {
    core: CoreProcess,
    edge: EdgeProcess,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(database: &str, redis: &RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let core = CoreProcess::start(dir.path(), &config(&redis.url()), database);
        let edge = EdgeProcess::start(core.addr);
        Self {
            core,
            edge,
            _dir: dir,
        }
    }

    /// Opens a socket for `user`: its `session`, or the refusal (`error` frame, close code).
    async fn connect(&self, user: &str) -> Result<Ws, (Value, Option<u16>)> {
        let mut ws = Ws::open(&self.edge.ws_url(&token(user))).await;
        let (first, _) = ws
            .recv_until(|f| f["type"] == "session" || f["type"] == "error")
            .await;
        if first["type"] == "session" {
            Ok(ws)
        } else {
            let close = ws.recv_close().await;
            Err((first, close))
        }
    }

    async fn metrics(&self) -> String {
        reqwest::get(self.core.metrics_url())
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits until this core has counted `n` live cores (it counts every 2 s): then its
    /// limits reach Redis and its fallback share is known.
    async fn until_live_cores(&self, n: usize) {
        let want = format!("chat_core_cluster_live_cores {n}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.metrics().await.lines().any(|l| l == want) {
            assert!(
                Instant::now() < deadline,
                "core {} never counted {n} live cores",
                self.core.addr
            );
            // A gauge has no event to wait on: read it again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends a message and returns what answered it: its `ack` or its `error`.
async fn send(ws: &mut Ws, chat: Option<&str>, text: &str, id: &str) -> Value {
    ws.send_message(chat, text, id).await;
    let (frame, _) = ws
        .recv_until(|f| {
            (f["type"] == "ack" || f["type"] == "error") && f["data"]["messageId"] == id
        })
        .await;
    frame
}

fn assert_rate_limited(frame: &Value, what: &str) {
    assert_eq!(frame["type"], "error", "{what}: {frame}");
    assert_eq!(frame["data"]["code"], 429, "{what}: {frame}");
    assert!(
        frame["data"]["retryAfterMs"]
            .as_i64()
            .is_some_and(|ms| ms > 0 && ms <= 60_000),
        "{what}: {frame}"
    );
}

fn assert_refused(refusal: Result<Ws, (Value, Option<u16>)>, what: &str) {
    match refusal {
        Ok(_) => panic!("{what}: the connection was accepted"),
        Err((error, close)) => {
            assert_eq!(error["data"]["code"], 429, "{what}: {error}");
            assert_eq!(close, Some(1013), "{what}");
        }
    }
}

/// A subscription to Redis's expired-key events (`redis-cli`, kept running).
struct Expiries {
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl Expiries {
    async fn subscribe(redis: &RedisServer) -> Self {
        redis.cli(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]);
        let mut child = tokio::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "--raw"])
            .args(["SUBSCRIBE", "__keyevent@0__:expired"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli (Debian's redis-tools)");
        let stdout = child.stdout.take().expect("stdout");
        let mut expiries = Self {
            lines: BufReader::new(stdout).lines(),
            _child: child,
        };
        // "subscribe", the channel, then the count of subscriptions: listening from here on.
        expiries.until(|line| line == "1").await;
        expiries
    }

    async fn until(&mut self, want: impl Fn(&str) -> bool) {
        let wait = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.next_line().await.expect("redis-cli output") {
                if want(&line) {
                    return;
                }
            }
            panic!("redis-cli ended");
        });
        wait.await.expect("the expiry did not come within 20 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_budget_and_the_connection_cap_hold_across_cores() {
    let redis = RedisServer::start().await;
    let database = fresh_postgres_database().await;
    let a = Node::start(&database, &redis);
    let b = Node::start(&database, &redis);
    a.until_live_cores(2).await;
    b.until_live_cores(2).await;

    // Alice spends her two messages a minute, one through each core: the third is refused
    // on both.
    let mut alice_a = a.connect("alice").await.expect("alice on A");
    let ack = send(&mut alice_a, None, "one", "m-1").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let chat = ack["data"]["chatId"].as_str().expect("chat id").to_string();
    let mut alice_b = b.connect("alice").await.expect("alice on B");
    let ack = send(&mut alice_b, Some(&chat), "two", "m-2").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let refused = send(&mut alice_b, Some(&chat), "three", "m-3").await;
    assert_rate_limited(&refused, "the third message on core B");
    let refused = send(&mut alice_a, Some(&chat), "four", "m-4").await;
    assert_rate_limited(&refused, "the third message on core A");
    drop((alice_a, alice_b));

    // Bob may hold two sockets in all: one on each core, then neither core lets in a third.
    let bob_a = a.connect("bob").await.expect("bob's first");
    let _bob_b = b.connect("bob").await.expect("bob's second");
    assert_refused(b.connect("bob").await, "bob's third, on core B");
    assert_refused(a.connect("bob").await, "bob's third, on core A");
    // One closes: its count leaves Redis just after (in the background), then B lets one in.
    drop(bob_a);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _bob_again = loop {
        match b.connect("bob").await {
            Ok(ws) => break ws,
            Err(refusal) => {
                assert!(
                    Instant::now() < deadline,
                    "bob's closed socket still counts: {refusal:?}"
                );
            }
        }
    };

    // Carol fills her cap on a third core, which is then killed: her sockets there stop
    // counting once its heartbeat expires, with nothing left to decrement them.
    let mut c = Node::start(&database, &redis);
    c.until_live_cores(3).await;
    let _carol_1 = c.connect("carol").await.expect("carol's first");
    let _carol_2 = c.connect("carol").await.expect("carol's second");
    assert_refused(a.connect("carol").await, "carol's third, on core A");
    let mut expiries = Expiries::subscribe(&redis).await;
    c.core.stop("KILL");
    expiries
        .until(|key| key.starts_with("chat:events:core:"))
        .await;
    let carol = a.connect("carol").await;
    assert!(
        carol.is_ok(),
        "the killed core's connections still count: {:?}",
        carol.err()
    );
    assert!(a.core.panics().is_empty() && b.core.panics().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_each_core_limits_on_its_own_and_keeps_serving() {
    let mut redis = RedisServer::start().await;
    let database = fresh_postgres_database().await;
    let a = Node::start(&database, &redis);
    let b = Node::start(&database, &redis);
    a.until_live_cores(2).await;
    b.until_live_cores(2).await;
    redis.stop().await;

    // Two live cores were counted: each grants half of the two messages a minute.
    let mut dave_a = a.connect("dave").await.expect("dave on A");
    let ack = send(&mut dave_a, None, "one", "d-1").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let reply = dave_a.recv_reply().await;
    assert!(!reply.is_empty(), "core A still answers");
    assert_rate_limited(
        &send(&mut dave_a, None, "two", "d-2").await,
        "the second message on core A",
    );
    let mut dave_b = b.connect("dave").await.expect("dave on B");
    let ack = send(&mut dave_b, None, "three", "d-3").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_rate_limited(
        &send(&mut dave_b, None, "four", "d-4").await,
        "the second message on core B",
    );

    // Connections: each core counts its own.
    let _erin_a1 = a.connect("erin").await.expect("erin's first on A");
    let _erin_a2 = a.connect("erin").await.expect("erin's second on A");
    assert_refused(a.connect("erin").await, "erin's third on A");
    let _erin_b1 = b.connect("erin").await.expect("erin's first on B");

    let metrics = a.metrics().await;
    for kind in ["rate", "connections"] {
        let name = format!("chat_core_cluster_limits_fallback_total{{kind=\"{kind}\"}}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&name) && !l.ends_with(" 0")),
            "no {kind} fallback counted in: {metrics}"
        );
    }
    // The switch is logged once, however many decisions were taken without Redis; the keys
    // (they hold user ids) never are.
    let log = std::fs::read_to_string(&a.core.log).expect("core A's log");
    let switches = log
        .lines()
        .filter(|l| l.contains("cluster limits: Redis unreachable"))
        .count();
    assert_eq!(switches, 1, "the fallback was logged {switches} times");
    assert!(!log.contains(":rate:") && !log.contains(":conns:"));
    assert!(a.core.panics().is_empty() && b.core.panics().is_empty());
}
