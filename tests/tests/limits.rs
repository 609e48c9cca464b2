//! Limits over real sockets: per-user message rate (core), per-connection frame rate and abuse
//! (edge), connections per user (core) and per edge, heartbeat. The refill over time is
//! covered with injected clocks in the unit tests of `chat::validate` and `bridge`.

use std::time::Duration;

use chat_core::storage;
use chat_tests::{StackOptions, Ws, spawn_stack};
use serde_json::json;

#[tokio::test]
async fn the_per_user_message_rate_answers_429_across_connections_and_stores_nothing() {
    let stack =
        spawn_stack(StackOptions::default().core(|c| c.chat.user_messages_per_minute = 2)).await;
    let (mut tab1, _) = stack.connect("alice").await;
    let (mut tab2, _) = stack.connect("alice").await;
    tab1.send_message(None, "one", "m1").await;
    let chat = tab1.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    tab1.recv_reply().await;
    tab2.send_message(Some(&chat), "two", "m2").await;
    tab2.recv_type("ack").await;
    tab2.send_message(Some(&chat), "three", "m3").await;
    let error = tab2.recv_type("error").await;
    assert_eq!(error["data"]["code"], 429);
    assert_eq!(error["data"]["retryable"], true);
    assert_eq!(error["data"]["messageId"], "m3");
    assert!(
        error["data"]["retryAfterMs"]
            .as_i64()
            .is_some_and(|ms| ms > 0 && ms <= 30_000)
    );
    let (rows, _) = storage::history(&stack.db, &chat, None, 100)
        .await
        .expect("history");
    assert!(
        rows.iter().all(|r| r.content != "three"),
        "the refused message is not stored"
    );
}

#[tokio::test]
async fn the_per_connection_frame_rate_answers_429_then_closes_sustained_abuse_with_1008() {
    let stack = spawn_stack(StackOptions::default().edge(|e| {
        e.limits.frames_per_minute = 5;
        e.limits.abuse_strikes = 3;
    }))
    .await;
    let (mut ws, _) = stack.connect("alice").await;
    for i in 0..5 {
        ws.send(json!({"type": "ping", "data": {"timestamp": i}}))
            .await;
        assert_eq!(ws.recv().await["type"], "pong");
    }
    ws.send(json!({"type": "ping", "data": {"timestamp": 5}}))
        .await;
    let limited = ws.recv().await;
    assert_eq!(limited["data"]["code"], 429);
    assert!(
        limited["data"]["retryAfterMs"]
            .as_i64()
            .is_some_and(|ms| ms > 0 && ms <= 12_000)
    );
    // A second connection of the same user has its own budget.
    let (mut other, _) = stack.connect("alice").await;
    other
        .send(json!({"type": "ping", "data": {"timestamp": 1}}))
        .await;
    assert_eq!(other.recv().await["type"], "pong");

    ws.send(json!({"type": "ping", "data": {"timestamp": 6}}))
        .await;
    assert_eq!(ws.recv().await["data"]["code"], 429);
    ws.send(json!({"type": "ping", "data": {"timestamp": 7}}))
        .await;
    assert_eq!(ws.recv_close().await, Some(1008));
}

#[tokio::test]
async fn a_user_over_the_connection_limit_is_refused_with_1013() {
    let stack =
        spawn_stack(StackOptions::default().core(|c| c.chat.max_connections_per_user = 2)).await;
    let (_a, _) = stack.connect("alice").await;
    let (_b, _) = stack.connect("alice").await;
    let mut third = Ws::open(&format!(
        "{}?token={}",
        stack.ws_url(),
        stack.token("alice", &[])
    ))
    .await;
    let error = third.recv_type("error").await;
    assert_eq!(error["data"]["code"], 429);
    assert_eq!(third.recv_close().await, Some(1013));
    // Other users are not affected.
    let (_c, session) = stack.connect("bob").await;
    assert_eq!(session["data"]["userId"], "bob");
}

#[tokio::test]
async fn an_edge_at_its_connection_limit_refuses_with_1013() {
    let stack = spawn_stack(StackOptions::default().edge(|e| e.limits.max_connections = 2)).await;
    let (_a, _) = stack.connect("alice").await;
    let (_b, _) = stack.connect("bob").await;
    let mut third = Ws::open(&format!(
        "{}?token={}",
        stack.ws_url(),
        stack.token("carol", &[])
    ))
    .await;
    assert_eq!(third.recv_type("error").await["data"]["code"], 503);
    assert_eq!(third.recv_close().await, Some(1013));
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped_and_a_live_one_is_kept() {
    // The core sets the heartbeat and announces it in `session`; the edge pings at it.
    let stack =
        spawn_stack(StackOptions::default().core(|c| c.chat.heartbeat_interval_ms = 1000)).await;
    let (mut silent, _) = stack.connect("alice").await;
    let (mut live, _) = stack.connect("bob").await;
    // `live` keeps reading, so its client answers every ping; `silent` reads nothing.
    live.expect_silence(Duration::from_millis(3500)).await;
    assert_eq!(silent.recv_close().await, Some(1001));
    live.send(json!({"type": "ping", "data": {"timestamp": 1}}))
        .await;
    assert_eq!(live.recv_type("pong").await["data"]["timestamp"], 1);
}
