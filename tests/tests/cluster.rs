//! Two cores over one PostgreSQL sharing live room events through a real Redis
//! (`redis-server`), each with its own edge. One user on both edges and an operator write to
//! one chat concurrently through both cores (a second operator on the other core is refused the
//! chat): every member sees each durable event once, in
//! `seq` order, the same sequence on both sides. Redis killed mid-test: the cores keep serving
//! their own members, report NOT_SERVING, and when Redis is back the event written meanwhile
//! reaches the other side in order (filled in from the database), nothing durable lost.

use std::collections::HashSet;

use chat_tests::redis_server::RedisServer;
use chat_tests::{Stack, StackOptions, Ws, fresh_postgres_database, spawn_stack};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn core(database_url: &str, redis_url: &str) -> Stack {
    let (db, redis) = (database_url.to_string(), redis_url.to_string());
    spawn_stack(StackOptions::default().core(move |core| {
        core.database.url = db;
        core.cluster.redis_url = Some(redis);
        core.chat.user_messages_per_minute = 1_000;
    }))
    .await
}

/// The core's readiness as a stream of changes.
struct Readiness(tonic::Streaming<tonic_health::pb::HealthCheckResponse>);

impl Readiness {
    async fn watch(stack: &Stack) -> Self {
        let stream = HealthClient::new(stack.grpc().await)
            .watch(HealthCheckRequest {
                service: "chat.v1.ChatService".into(),
            })
            .await
            .expect("health watch")
            .into_inner();
        Self(stream)
    }

    /// Waits for the status `want` (passing over others).
    async fn until(&mut self, want: ServingStatus) {
        let wait = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(change) = self.0.message().await.expect("health stream") {
                if change.status == want as i32 {
                    return;
                }
            }
            panic!("the health stream ended");
        });
        wait.await
            .unwrap_or_else(|_| panic!("the core never reported {want:?}"));
    }
}

/// What one member saw: every durable event's `seq`, and the message texts.
#[derive(Default)]
struct Seen {
    seqs: Vec<i64>,
    texts: Vec<String>,
}

impl Seen {
    fn take(&mut self, frame: &Value) {
        if let Some(seq) = frame["seq"].as_i64() {
            self.seqs.push(seq);
        }
        if frame["type"] == "message"
            && let Some(text) = frame["data"]["message"]["content"].as_str()
        {
            self.texts.push(text.to_string());
        }
    }

    /// Reads frames until every text in `want` has arrived.
    async fn until_texts(&mut self, ws: &mut Ws, want: &[String]) {
        while !want.iter().all(|t| self.texts.contains(t)) {
            let frame = ws.recv().await;
            self.take(&frame);
        }
    }

    fn assert_in_order(&self, who: &str) {
        let mut sorted = self.seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            self.seqs, sorted,
            "{who} saw durable events out of order or twice: {:?}",
            self.seqs
        );
    }
}

/// Every `seq` the chat has after `from`, as stored.
async fn seqs_after(stack: &Stack, chat: &str, from: i64) -> Vec<i64> {
    let last = chat_core::storage::last_seq(&stack.db, chat)
        .await
        .expect("last seq");
    (from + 1..=last).collect()
}

async fn send(ws: &mut Ws, chat: &str, text: &str, id: &str, seen: &mut Seen) {
    ws.send_message(Some(chat), text, id).await;
    // The ack, and whatever else arrives first (recorded).
    loop {
        let frame = ws.recv().await;
        seen.take(&frame);
        if frame["type"] == "ack" && frame["data"]["messageId"] == id {
            return;
        }
        assert_ne!(frame["type"], "error", "sending {text:?}: {frame}");
    }
}

#[tokio::test]
async fn members_on_two_cores_see_one_room_in_order_and_redis_can_restart() {
    let mut redis = RedisServer::start().await;
    let database = fresh_postgres_database().await;
    let a = core(&database, &redis.url()).await;
    let b = core(&database, &redis.url()).await;
    let (mut ready_a, mut ready_b) = (Readiness::watch(&a).await, Readiness::watch(&b).await);
    ready_a.until(ServingStatus::Serving).await;
    ready_b.until(ServingStatus::Serving).await;
    // Each core keeps its heartbeat (B, started second, left owed replies to A).
    let beats = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--raw",
            "KEYS",
            "chat:events:core:*",
        ])
        .output()
        .expect("redis-cli (Debian's redis-tools, beside redis-server)");
    let beats = String::from_utf8_lossy(&beats.stdout);
    assert_eq!(beats.lines().count(), 2, "heartbeats: {beats:?}");

    // Alice starts a chat on core A (the demo model answers), an operator takes it over there
    // (the assistant is silent from then on), and Alice joins it on core B too.
    let (mut alice_a, _) = a.connect("alice").await;
    alice_a.send_message(None, "hello", "m-0").await;
    let chat = alice_a.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    alice_a.recv_reply().await;
    let (mut operator, _) = a.connect_with_roles("olga", &["admin"]).await;
    operator
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    operator.recv_type("operator_joined").await;
    // The operator's hold is the database's, so it holds on the other core too.
    let (mut rival, _) = b.connect_with_roles("rita", &["admin"]).await;
    rival
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    assert_eq!(
        rival.recv_type("error").await["data"]["code"],
        409,
        "a second operator, on the other core"
    );
    let (mut alice_b, _) = b.connect("alice").await;
    alice_b
        .send(json!({"type": "chat_update", "data": {"action": "join", "chatId": chat}}))
        .await;
    let history = alice_b.recv_type("history").await;
    let joined_at = history["data"]["lastSeq"].as_i64().expect("lastSeq");
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());

    // Both sides write at once, through both cores.
    let texts_a: Vec<String> = (0..6).map(|i| format!("from core A #{i}")).collect();
    let texts_b: Vec<String> = (0..6).map(|i| format!("from core B #{i}")).collect();
    tokio::join!(
        async {
            for (i, text) in texts_a.iter().enumerate() {
                send(&mut alice_a, &chat, text, &format!("a-{i}"), &mut seen_a).await;
            }
        },
        async {
            for (i, text) in texts_b.iter().enumerate() {
                send(&mut alice_b, &chat, text, &format!("b-{i}"), &mut seen_b).await;
            }
        },
    );
    let all: Vec<String> = texts_a.iter().chain(&texts_b).cloned().collect();
    seen_a.until_texts(&mut alice_a, &all).await;
    seen_b.until_texts(&mut alice_b, &all).await;
    seen_a.assert_in_order("the member on core A");
    seen_b.assert_in_order("the member on core B");
    // B joined after the takeover: it has every durable event after its history, no gap.
    let expected = seqs_after(&a, &chat, joined_at).await;
    assert_eq!(
        seen_b.seqs, expected,
        "the member on core B missed or repeated events"
    );
    let tail: Vec<i64> = seen_a
        .seqs
        .iter()
        .copied()
        .filter(|s| *s > joined_at)
        .collect();
    assert_eq!(tail, expected, "both members saw the same events");

    // Redis goes away: each core still serves its own members, and says it is not ready.
    redis.stop().await;
    ready_a.until(ServingStatus::NotServing).await;
    ready_b.until(ServingStatus::NotServing).await;
    send(
        &mut alice_a,
        &chat,
        "while Redis was down",
        "a-down",
        &mut seen_a,
    )
    .await;
    seen_a
        .until_texts(&mut alice_a, &["while Redis was down".to_string()])
        .await;

    // Back: the next event on core B shows B's member the gap, which is filled from the
    // database, in order; core A's member gets B's event live.
    redis.start_again().await;
    ready_a.until(ServingStatus::Serving).await;
    ready_b.until(ServingStatus::Serving).await;
    send(
        &mut alice_b,
        &chat,
        "after Redis came back",
        "b-back",
        &mut seen_b,
    )
    .await;
    let late = [
        "while Redis was down".to_string(),
        "after Redis came back".to_string(),
    ];
    seen_b.until_texts(&mut alice_b, &late).await;
    seen_a.until_texts(&mut alice_a, &late).await;
    seen_a.assert_in_order("the member on core A, after the Redis restart");
    seen_b.assert_in_order("the member on core B, after the Redis restart");
    let expected = seqs_after(&a, &chat, joined_at).await;
    assert_eq!(seen_b.seqs, expected, "core B's member after the restart");
    let down_at = seen_b
        .texts
        .iter()
        .position(|t| t == "while Redis was down")
        .expect("filled in");
    let back_at = seen_b
        .texts
        .iter()
        .position(|t| t == "after Redis came back")
        .expect("live");
    assert!(
        down_at < back_at,
        "the filled-in event came before the later one"
    );
    let distinct: HashSet<&String> = seen_b.texts.iter().collect();
    assert_eq!(
        distinct.len(),
        seen_b.texts.len(),
        "a message shown twice on core B"
    );
}
