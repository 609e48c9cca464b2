//! Graceful shutdown: sockets are told to reconnect (1012) and a reply in flight still
//! finishes and is stored, so a reconnecting client finds it.

use std::time::Duration;

use chat_core::storage;
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Llm, StackOptions, spawn_stack};

#[tokio::test]
async fn shutdown_closes_sockets_with_1012_and_finishes_the_reply_in_flight() {
    let words: Vec<String> = (0..8).map(|i| format!("part{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let script = FakeScript::reply(&refs).with_delay(Duration::from_millis(60));
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let db = stack.db.clone();
    let (mut ws, _) = stack.connect("alice").await;
    let (mut idle, _) = stack.connect("bob").await;
    ws.send_message(None, "a long answer please", "m1").await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    ws.recv_type("message_chunk").await;

    let stopping = tokio::spawn(stack.stop());
    assert_eq!(ws.recv_close().await, Some(1012));
    assert_eq!(idle.recv_close().await, Some(1012));
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("stops in time")
        .expect("stopped");

    let (rows, _) = storage::history(&db, &chat, None, 10)
        .await
        .expect("history");
    let reply = rows
        .iter()
        .find(|r| r.role == "assistant")
        .expect("the reply was stored");
    assert_eq!(reply.status, "complete");
    assert_eq!(reply.content, words.concat());
}
