//! A crash mid-reply: the real `chatctl dev` process is killed with SIGKILL while a reply
//! streams, started again on the same database, and the client that reconnects and resumes
//! gets the interrupted reply as a final `failed` message under the id its chunks carried,
//! with the text the core had checkpointed, and its `seq`. Nothing is left "streaming". A
//! graceful stop (SIGTERM) mid-reply lets the reply finish and be stored first.

use chat_tests::dev_server::DevServer;
use chat_tests::{Ws, chatctl_path};
use serde_json::{Value, json};

/// The demo model, slow enough (150 ms a word) that the kill lands mid-reply.
const CONFIG: &str = "[llm.providers.demo]\nkind = \"demo\"\nword_delay_ms = 150\n";

#[tokio::test]
async fn a_reply_interrupted_by_kill_9_is_stored_as_failed_and_resumed_as_such() {
    // DevServer runs the chatctl next to this test's build.
    chatctl_path();
    let server = DevServer::start(CONFIG, &[]);
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.recv_type("session").await;
    ws.send_message(None, "Tell me a long story, please", "crash-1")
        .await;
    let ack = ws.recv_type("ack").await;
    let chat = ack["data"]["chatId"].as_str().expect("chat id").to_string();
    let question_seq = ack["data"]["seq"].as_i64().expect("seq");

    // Chunks over more than a second: the core has checkpointed some of the text.
    let mut seen = String::new();
    let mut last: Option<(String, i64)> = None;
    while seen.split_whitespace().count() < 10 {
        let chunk = ws.recv_type("message_chunk").await;
        let d = &chunk["data"];
        seen.push_str(d["delta"].as_str().unwrap_or_default());
        last = Some((
            d["messageId"].as_str().expect("message id").to_string(),
            d["index"].as_i64().expect("index"),
        ));
    }
    let (reply_id, last_index) = last.expect("a chunk");
    let data = server.kill();

    let server = DevServer::start_in(data, CONFIG, &[]);
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.recv_type("session").await;
    ws.send(json!({"type": "resume", "data": {"chats": [{
        "chatId": chat,
        "lastSeq": question_seq,
        "streaming": {"messageId": reply_id, "lastIndex": last_index},
    }]}}))
    .await;
    let (fin, _) = ws
        .recv_until(|f: &Value| {
            f["type"] == "message" && f["data"]["message"]["role"] == "assistant"
        })
        .await;
    assert_eq!(fin["seq"], question_seq + 1, "{fin}");
    let message = &fin["data"]["message"];
    assert_eq!(
        message["id"],
        reply_id.as_str(),
        "the id its chunks carried"
    );
    assert_eq!(message["status"], "failed");
    let content = message["content"].as_str().expect("content");
    assert!(
        !content.is_empty() && (seen.starts_with(content) || content.starts_with(&seen)),
        "the checkpointed text, the start of the same reply: {content:?} / {seen:?}"
    );

    // Nothing streams any more: a ping is answered with no chunk before it.
    ws.send(json!({"type": "ping", "data": {"timestamp": 5}}))
        .await;
    let (pong, before) = ws.recv_until(|f: &Value| f["type"] == "pong").await;
    assert_eq!(pong["data"]["timestamp"], 5);
    assert!(
        before.iter().all(|f| f["type"] != "message_chunk"),
        "{before:?}"
    );
    assert!(server.panics().is_empty(), "{:?}", server.panics());
}

#[tokio::test]
async fn a_graceful_stop_mid_reply_stores_the_whole_reply_before_exiting() {
    chatctl_path();
    let server = DevServer::start(CONFIG, &[]);
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.recv_type("session").await;
    ws.send_message(None, "Tell me a story", "term-1").await;
    let ack = ws.recv_type("ack").await;
    let chat = ack["data"]["chatId"].as_str().expect("chat id").to_string();
    let first = ws.recv_type("message_chunk").await;
    let reply_id = first["data"]["messageId"].as_str().expect("id").to_string();
    let data = server.terminate();

    let server = DevServer::start_in(data, CONFIG, &[]);
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.recv_type("session").await;
    ws.send(json!({"type": "resume", "data": {"chats": [{"chatId": chat, "lastSeq": ack["data"]["seq"]}]}}))
        .await;
    let (fin, _) = ws
        .recv_until(|f: &Value| {
            f["type"] == "message" && f["data"]["message"]["role"] == "assistant"
        })
        .await;
    let message = &fin["data"]["message"];
    assert_eq!(message["id"], reply_id.as_str());
    assert_eq!(
        message["status"], "complete",
        "finished within the grace period: {fin}"
    );
    assert!(server.panics().is_empty(), "{:?}", server.panics());
}
