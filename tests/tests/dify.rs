//! A Dify chat app as the model: the reply streams from its chat-messages API, usage comes from
//! `message_end`, the app's conversation id is kept per chat and sent with the chat's next
//! message (a new chat starts a new conversation), and a stream that fails or stops short of
//! `message_end` is stored as `failed` with the text that arrived.

use chat_tests::fake_llm::{FakeScript, sse_data};
use chat_tests::{Llm, StackOptions, Ws, spawn_stack};
use serde_json::{Value, json};

/// Sends `content` (to `chat`, or a new chat) and returns the chat id and the final message.
async fn turn(ws: &mut Ws, chat: Option<&str>, content: &str, id: &str) -> (String, Value) {
    ws.send_message(chat, content, id).await;
    let ack = ws.recv_type("ack").await;
    let (fin, _) = ws
        .recv_until(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .await;
    let chat = ack["data"]["chatId"].as_str().expect("chat").to_string();
    (chat, fin["data"]["message"].clone())
}

#[tokio::test]
async fn a_dify_app_answers_with_usage_and_keeps_each_chats_conversation() {
    let script = FakeScript::reply(&["Hello", " from", " Dify."]).with_usage(21, 3);
    let stack = spawn_stack(StackOptions::default().llm(Llm::Dify(script))).await;
    let (mut ws, _) = stack.connect("dora").await;

    let (chat, first) = turn(&mut ws, None, "Hi there", "d-1").await;
    assert_eq!(first["content"], "Hello from Dify.");
    assert_eq!(first["status"], "complete");
    assert_eq!(first["metadata"]["promptTokens"], 21);
    assert_eq!(first["metadata"]["completionTokens"], 3);
    let usage = chat_tests::usage_of(&stack, &first).await;
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.estimated
        ),
        (21, 3, false)
    );

    let (_, second) = turn(&mut ws, Some(&chat), "And again", "d-2").await;
    assert_eq!(second["status"], "complete");
    let (_, other) = turn(&mut ws, None, "A new chat", "d-3").await;
    assert_eq!(other["status"], "complete");

    let fake = stack.fake.as_ref().expect("fake llm");
    let received = fake.received();
    assert!(
        received.iter().all(|r| r.path == "/v1/chat-messages"),
        "{:?}",
        received.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(
        received[0].header("authorization").as_deref(),
        Some(format!("Bearer {}", chat_tests::FAKE_API_KEY).as_str())
    );
    let bodies = fake.requests();
    let system = bodies[0]["inputs"]["system_prompt"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !system.is_empty(),
        "our system prompt travels in inputs: {}",
        bodies[0]
    );
    assert_eq!(
        bodies[0],
        json!({"inputs": {"system_prompt": system}, "query": "Hi there",
               "response_mode": "streaming", "user": "dora", "conversation_id": ""})
    );
    // The fake names the first conversation `conv-0`; the chat's next message continues it,
    // and another chat starts its own.
    assert_eq!(bodies[1]["conversation_id"], "conv-0");
    assert_eq!(bodies[1]["query"], "And again");
    assert_eq!(bodies[2]["conversation_id"], "");
    stack.stop().await;
}

#[tokio::test]
async fn a_dify_error_event_mid_reply_stores_the_text_so_far_as_failed() {
    let message = |answer: &str| {
        sse_data(
            &json!({"event": "message", "answer": answer, "conversation_id": "conv-x"}).to_string(),
        )
    };
    let script = FakeScript::frames(vec![
        message("Half an "),
        message("answer"),
        sse_data(
            r#"{"event":"error","status":500,"code":"internal_server_error","message":"model crashed"}"#,
        ),
    ]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::Dify(script))).await;
    let (mut ws, _) = stack.connect("dora").await;
    let (_, fin) = turn(&mut ws, None, "Tell me", "d-err").await;
    assert_eq!(fin["status"], "failed", "{fin}");
    assert_eq!(fin["content"], "Half an answer");
    // Usage is still stored, estimated (the app sent none).
    let usage = chat_tests::usage_of(&stack, &fin).await;
    assert!(usage.estimated);
    stack.stop().await;
}

#[tokio::test]
async fn a_stream_that_ends_before_message_end_is_a_failed_reply_not_a_complete_one() {
    let script = FakeScript::frames(vec![sse_data(
        &json!({"event": "message", "answer": "Cut sh", "conversation_id": "conv-y"}).to_string(),
    )]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::Dify(script))).await;
    let (mut ws, _) = stack.connect("dora").await;
    let (_, fin) = turn(&mut ws, None, "Tell me", "d-cut").await;
    assert_eq!(fin["status"], "failed", "{fin}");
    assert_eq!(fin["content"], "Cut sh");
    stack.stop().await;
}

#[tokio::test]
async fn a_dify_app_is_retried_on_429_and_5xx_and_falls_back_when_it_refuses() {
    // Two retryable failures, then the answer.
    let script = FakeScript::reply(&["Back", " again."]).failing_first(&[429, 503]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::Dify(script))).await;
    let (mut ws, _) = stack.connect("dora").await;
    let (_, fin) = turn(&mut ws, None, "Are you there?", "d-retry").await;
    assert_eq!(
        (fin["status"].clone(), fin["content"].clone()),
        (json!("complete"), json!("Back again."))
    );
    assert_eq!(stack.fake.as_ref().expect("fake").request_count(), 3);
    stack.stop().await;

    // A 400 is not retried: the model's fallback (the demo) answers instead.
    let script = FakeScript::reply(&["unused"]).failing_first(&[400]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::Dify(script)).core(|c| {
        if let Some(model) = c.llm.models.iter_mut().find(|m| m.id == "fake-dify") {
            model.fallback = Some("demo".into());
        }
    }))
    .await;
    let (mut ws, _) = stack.connect("dora").await;
    let (_, fin) = turn(&mut ws, None, "Hello", "d-fallback").await;
    assert_eq!(fin["status"], "complete", "{fin}");
    assert_eq!(fin["metadata"]["model"], "demo");
    assert_eq!(
        stack.fake.as_ref().expect("fake").request_count(),
        1,
        "not retried"
    );
    stack.stop().await;
}
