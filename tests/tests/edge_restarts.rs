//! An edge that goes away mid-reply, stopped (SIGTERM) or killed (SIGKILL): its clients
//! reconnect to another edge of the same core and resume, and each ends with the whole reply
//! exactly once (replayed and live chunks add up to the stored final message) and a clear
//! status. The edge keeps no chat state, so any edge serves the resume.

use std::time::Duration;

use chat_tests::edge_process::EdgeProcess;
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Llm, ReplyText, StackOptions, Ws, spawn_stack};
use serde_json::{Value, json};

async fn the_reply_survives_its_edge(signal: &str, expected_close: Option<u16>) {
    let words: Vec<String> = (0..30).map(|i| format!("x{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let script = FakeScript::reply(&refs).with_delay(Duration::from_millis(40));
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let mut edge = EdgeProcess::start(stack.core_addr);
    let token = stack.token("quinn", &[]);

    let mut ws = Ws::open(&edge.ws_url(&token)).await;
    ws.recv_type("session").await;
    ws.send_message(None, "a long answer, please", "e-1").await;
    let ack = ws.recv_type("ack").await;
    let chat = ack["data"]["chatId"].as_str().expect("chat").to_string();
    let mut text = String::new();
    let mut last = (String::new(), -1i64);
    while last.1 < 2 {
        let chunk = ws.recv_type("message_chunk").await;
        text.push_str(chunk["data"]["delta"].as_str().unwrap_or_default());
        last = (
            chunk["data"]["messageId"].as_str().expect("id").to_string(),
            chunk["data"]["index"].as_i64().expect("index"),
        );
    }
    edge.stop(signal);
    assert_eq!(
        ws.recv_close().await,
        expected_close,
        "how the socket ended"
    );

    // The other edge: resume from what this client saw.
    let (mut ws, _) = stack.connect("quinn").await;
    ws.send(json!({"type": "resume", "data": {"chats": [{
        "chatId": chat,
        "lastSeq": ack["data"]["seq"],
        "streaming": {"messageId": last.0, "lastIndex": last.1},
    }]}}))
    .await;
    let mut reply = ReplyText::after(last.1, &text);
    let fin = loop {
        let frame: Value = ws.recv().await;
        match frame["type"].as_str() {
            Some("message_chunk") => reply.push(&frame),
            Some("message") if frame["data"]["message"]["role"] == "assistant" => break frame,
            _ => {}
        }
    };
    let message = &fin["data"]["message"];
    assert_eq!(message["id"], last.0.as_str());
    assert_eq!(
        message["status"], "complete",
        "the reply ran on through the edge's end"
    );
    assert_eq!(message["content"], words.concat().as_str());
    assert_eq!(
        reply.text,
        words.concat(),
        "chunks across both edges make the reply once"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_client_whose_edge_is_killed_mid_reply_resumes_on_another_edge() {
    // Killed: no close frame reaches the client.
    the_reply_survives_its_edge("KILL", None).await;
}

#[tokio::test]
async fn a_client_whose_edge_stops_mid_reply_gets_1012_and_resumes_on_another_edge() {
    the_reply_survives_its_edge("TERM", Some(1012)).await;
}
