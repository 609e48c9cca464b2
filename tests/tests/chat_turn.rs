//! One chat turn end to end: browser frame -> edge -> gRPC -> core -> LLM -> back, stored.

use std::time::Duration;

use chat_core::storage;
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Backend, Llm, ReplyText, StackOptions, Ws, spawn_default, spawn_stack};
use serde_json::{Value, json};

/// Splits a reply's frames into (chunks, final message) and checks their order:
/// typing true, chunks with index 0.., the final message, typing false.
fn reply_parts(frames: &[Value]) -> (Vec<Value>, Value) {
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds.first(),
        Some(&"typing"),
        "a reply starts with typing: {kinds:?}"
    );
    assert_eq!(frames[0]["data"]["isTyping"], true);
    assert_eq!(kinds.last(), Some(&"typing"));
    let chunks: Vec<Value> = frames
        .iter()
        .filter(|f| f["type"] == "message_chunk")
        .cloned()
        .collect();
    let finals: Vec<&Value> = frames.iter().filter(|f| f["type"] == "message").collect();
    assert_eq!(finals.len(), 1, "exactly one final message: {kinds:?}");
    let final_pos = kinds.iter().position(|k| *k == "message").unwrap_or(0);
    assert!(
        kinds[..final_pos]
            .iter()
            .skip(1)
            .all(|k| *k == "message_chunk"),
        "chunks come before the final message: {kinds:?}"
    );
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(
            chunk["data"]["index"], i as i64,
            "chunk indexes count from 0 without gaps"
        );
    }
    (chunks, finals[0].clone())
}

fn concat(chunks: &[Value]) -> String {
    chunks
        .iter()
        .map(|c| c["data"]["delta"].as_str().unwrap_or(""))
        .collect()
}

/// Sends a first message without a chat id; returns (ack, user message, reply frames).
async fn first_turn(ws: &mut Ws, content: &str) -> (Value, Value, Vec<Value>) {
    ws.send_message(None, content, "client-1").await;
    let ack = ws.recv().await;
    assert_eq!(ack["type"], "ack", "the ack comes first: {ack}");
    let user = ws.recv().await;
    assert_eq!(
        user["type"], "message",
        "then the sender's own message: {user}"
    );
    let reply = ws.recv_reply().await;
    (ack, user, reply)
}

async fn demo_turn_is_streamed_acked_and_stored(backend: Backend) {
    let stack = spawn_stack(StackOptions::default().backend(backend)).await;
    let (mut ws, session) = stack.connect("alice").await;
    let s = &session["data"];
    assert_eq!(s["userId"], "alice");
    assert_eq!(s["name"], "alice name");
    assert_eq!(s["heartbeatIntervalMs"], 30000);
    assert_eq!(
        s["limits"],
        json!({"maxMessageChars": 10000, "maxFrameBytes": 65536})
    );
    assert_eq!(s["defaultModel"], "demo");
    assert_eq!(s["activeChatId"], Value::Null);
    assert!(s["connectionId"].as_str().is_some_and(|c| !c.is_empty()));

    let (ack, user, reply) = first_turn(&mut ws, "  Hello there, assistant  ").await;
    let a = &ack["data"];
    assert_eq!(a["messageId"], "client-1");
    assert_eq!(a["status"], "sent");
    assert_eq!(a["duplicate"], false);
    assert_eq!(a["seq"], 1);
    let chat_id = a["chatId"].as_str().expect("chat id").to_string();

    assert_eq!(user["seq"], 1);
    assert_eq!(user["data"]["messageId"], "client-1");
    let m = &user["data"]["message"];
    assert_eq!(
        m["content"], "Hello there, assistant",
        "content is stored trimmed"
    );
    assert_eq!(m["role"], "user");
    assert_eq!(m["userId"], "alice");
    assert_eq!(m["id"], a["id"]);

    let (chunks, last) = reply_parts(&reply);
    assert!(chunks.len() > 3, "the demo streams word by word");
    let fin = &last["data"]["message"];
    assert_eq!(last["seq"], 2);
    assert_eq!(fin["role"], "assistant");
    assert_eq!(fin["userId"], "assistant");
    assert_eq!(fin["status"], "complete");
    assert_eq!(
        fin["content"].as_str(),
        Some(concat(&chunks).as_str()),
        "the final message equals the chunks"
    );
    assert!(
        fin["content"].as_str().is_some_and(|c| c.contains("demo")),
        "the demo says it is the demo"
    );
    assert_eq!(fin["metadata"]["model"], "demo");
    assert!(
        fin["metadata"]["completionTokens"]
            .as_i64()
            .is_some_and(|n| n > 0)
    );
    assert!(fin["metadata"]["latencyMs"].as_i64().is_some());
    assert!(
        chunks.iter().all(|c| c["data"]["messageId"] == fin["id"]),
        "chunks name the final message's id"
    );

    let (rows, more) = storage::history(&stack.db, &chat_id, None, 10)
        .await
        .expect("history");
    assert!(!more);
    let stored: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|r| (r.seq, r.role.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(
        stored,
        vec![(1, "user", "complete"), (2, "assistant", "complete")]
    );
    let usage = storage::usage_for_message(&stack.db, &rows[1].id)
        .await
        .expect("usage")
        .expect("usage row");
    assert_eq!(usage.model, "demo");
    assert!(usage.completion_tokens > 0 && usage.prompt_tokens > 0);

    // The chat is named from the first message and listed over REST.
    let token = stack.token("alice", &[]);
    let sessions: Value = reqwest::Client::new()
        .get(stack.http_url("/api/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("rest")
        .json()
        .await
        .expect("json");
    assert_eq!(sessions["sessions"][0]["chatId"], chat_id.as_str());
    assert_eq!(sessions["sessions"][0]["title"], "Hello there, assistant");
    assert_eq!(sessions["sessions"][0]["messageCount"], 2);
    stack.stop().await;
}

#[tokio::test]
async fn a_demo_turn_is_streamed_acked_and_stored_on_sqlite() {
    demo_turn_is_streamed_acked_and_stored(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_demo_turn_is_streamed_acked_and_stored_on_postgres() {
    demo_turn_is_streamed_acked_and_stored(Backend::Postgres).await;
}

#[tokio::test]
async fn an_openai_compatible_stream_arrives_in_order_with_usage_stored() {
    let script = FakeScript::reply(&["Hel", "lo", ", wor", "ld!"]).with_usage(42, 7);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut ws, _) = stack.connect("bob").await;
    let (_, _, reply) = first_turn(&mut ws, "Say hello").await;
    let (chunks, last) = reply_parts(&reply);
    let deltas: Vec<&str> = chunks
        .iter()
        .map(|c| c["data"]["delta"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(deltas, vec!["Hel", "lo", ", wor", "ld!"]);
    let fin = &last["data"]["message"];
    assert_eq!(fin["content"], "Hello, world!");
    assert_eq!(fin["metadata"]["promptTokens"], 42);
    assert_eq!(fin["metadata"]["completionTokens"], 7);
    assert_eq!(fin["metadata"]["model"], "fake-openai");
    assert!(fin["metadata"]["ttftMs"].as_i64().is_some());

    let usage = chat_tests::usage_of(&stack, fin).await;
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.estimated
        ),
        (42, 7, false)
    );

    let fake = stack.fake.as_ref().expect("fake llm");
    let body = &fake.requests()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "upstream-model");
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages.last().map(|m| m["content"].clone()),
        Some(json!("Say hello"))
    );
}

#[tokio::test]
async fn an_anthropic_stream_arrives_in_order_with_usage_stored() {
    let script = FakeScript::reply(&["Bonjour", " à", " tous"]).with_usage(30, 3);
    let stack = spawn_stack(StackOptions::default().llm(Llm::Anthropic(script))).await;
    let (mut ws, _) = stack.connect("carol").await;
    let (_, _, reply) = first_turn(&mut ws, "Greet in French").await;
    let (chunks, last) = reply_parts(&reply);
    assert_eq!(concat(&chunks), "Bonjour à tous");
    let fin = &last["data"]["message"];
    assert_eq!(fin["content"], "Bonjour à tous");
    assert_eq!(fin["metadata"]["promptTokens"], 30);
    assert_eq!(fin["metadata"]["completionTokens"], 3);
    let body = &stack.fake.as_ref().expect("fake").requests()[0];
    assert!(
        body["system"].as_str().is_some_and(|s| !s.is_empty()),
        "the agent prompt goes in `system`"
    );
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn the_same_turn_works_through_grpc_connect_directly() {
    use chat_proto::pb::chat::{
        self as pb, chat_service_client::ChatServiceClient, client_event, server_event::Event,
    };
    use futures::StreamExt;

    let stack = spawn_default().await;
    let mut client = ChatServiceClient::new(stack.grpc().await);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", stack.token("svc-user", &[]));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("metadata"));
    let mut events = client.connect(request).await.expect("connect").into_inner();
    async fn next_of(events: &mut tonic::Streaming<pb::ServerEvent>) -> Option<Event> {
        let next = tokio::time::timeout(chat_tests::WAIT, events.next())
            .await
            .expect("event in time");
        next.expect("stream open").expect("event ok").event
    }
    assert!(
        matches!(next_of(&mut events).await, Some(Event::Session(s)) if s.user_id == "svc-user")
    );
    tx.send(pb::ClientEvent {
        message_id: String::new(),
        timestamp_ms: 0,
        event: Some(client_event::Event::Message(pb::SendMessage {
            content: "hello over gRPC".into(),
            message_id: "g-1".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let Some(Event::Ack(ack)) = next_of(&mut events).await else {
        panic!("ack first")
    };
    assert_eq!(
        (ack.message_id.as_str(), ack.seq, ack.duplicate),
        ("g-1", 1, false)
    );
    let mut text = String::new();
    let final_message = loop {
        match next_of(&mut events).await {
            Some(Event::MessageChunk(c)) => text.push_str(&c.delta),
            Some(Event::Message(m))
                if m.message
                    .as_ref()
                    .is_some_and(|m| m.role == pb::Role::Assistant as i32) =>
            {
                break m;
            }
            _ => {}
        }
    };
    let message = final_message.message.expect("message");
    assert_eq!(message.content, text);
    assert_eq!(message.seq, 2);
    assert_eq!(message.status, pb::MessageStatus::Complete as i32);

    // Unary calls with the same token.
    let mut call = tonic::Request::new(pb::GetHistoryRequest {
        chat_id: ack.chat_id.clone(),
        before: None,
        limit: None,
    });
    call.metadata_mut()
        .insert("authorization", bearer.parse().expect("metadata"));
    let history = client
        .get_history(call)
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.messages.len(), 2);
    assert_eq!(history.last_seq, 2);

    // And without a token: refused.
    let status = client
        .list_models(tonic::Request::new(pb::ListModelsRequest {}))
        .await
        .expect_err("unauthenticated");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_resent_message_id_is_acked_as_duplicate_and_starts_no_second_reply() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("dave").await;
    let (ack, _, _) = first_turn(&mut ws, "once only").await;
    let chat_id = ack["data"]["chatId"].as_str().expect("chat").to_string();

    // Resent with the chat id, and again as if the first ack was lost (no chat id).
    for chat in [Some(chat_id.as_str()), None] {
        ws.send_message(chat, "once only", "client-1").await;
        let again = ws.recv().await;
        assert_eq!(again["type"], "ack");
        assert_eq!(again["data"]["duplicate"], true);
        assert_eq!(again["data"]["id"], ack["data"]["id"]);
        assert_eq!(again["data"]["seq"], 1);
        assert_eq!(again["data"]["chatId"], chat_id.as_str());
    }
    ws.expect_silence(Duration::from_millis(400)).await;
    let (rows, _) = storage::history(&stack.db, &chat_id, None, 10)
        .await
        .expect("history");
    assert_eq!(rows.len(), 2, "one user message and one reply");
}

#[tokio::test]
async fn stop_cancels_the_reply_upstream_and_keeps_the_partial_text() {
    let script = FakeScript::reply(&["one ", "two ", "three ", "four"]).hanging_after(2);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut ws, _) = stack.connect("erin").await;
    ws.send_message(None, "count slowly", "c1").await;
    let ack = ws.recv_type("ack").await;
    let chat_id = ack["data"]["chatId"].as_str().expect("chat").to_string();
    let first = ws.recv_type("message_chunk").await;
    assert_eq!(first["data"]["index"], 0);
    let second = ws.recv_type("message_chunk").await;
    assert_eq!(second["data"]["index"], 1);

    ws.send(json!({"type": "stop", "data": {"chatId": chat_id}}))
        .await;
    let last = ws.recv_type("message").await;
    let fin = &last["data"]["message"];
    assert_eq!(fin["status"], "stopped");
    assert_eq!(fin["content"], "one two ");
    let typing = ws.recv_type("typing").await;
    assert_eq!(typing["data"]["isTyping"], false);
    let fake = stack.fake.as_ref().expect("fake");
    assert!(
        fake.wait_for_disconnect(Duration::from_secs(5)).await,
        "the upstream request is dropped"
    );
    let (rows, _) = storage::history(&stack.db, &chat_id, None, 10)
        .await
        .expect("history");
    assert_eq!(rows[1].status, "stopped");
}

#[tokio::test]
async fn a_reply_survives_a_dropped_connection_and_resumes_exactly_once() {
    let words: Vec<String> = (0..12).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let script = FakeScript::reply(&refs).with_delay(Duration::from_millis(80));
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut ws, _) = stack.connect("frank").await;
    ws.send_message(None, "tell me a long story", "c1").await;
    let ack = ws.recv_type("ack").await;
    let chat_id = ack["data"]["chatId"].as_str().expect("chat").to_string();
    let c0 = ws.recv_type("message_chunk").await;
    let c1 = ws.recv_type("message_chunk").await;
    let reply_id = c1["data"]["messageId"].as_str().expect("id").to_string();
    assert_eq!(
        (c0["data"]["index"].as_i64(), c1["data"]["index"].as_i64()),
        (Some(0), Some(1))
    );
    drop(ws);

    let (mut ws, session) = stack.connect("frank").await;
    assert_eq!(session["data"]["activeChatId"], chat_id.as_str());
    ws.send(json!({"type": "resume", "data": {"chats": [
        {"chatId": chat_id, "lastSeq": 1, "streaming": {"messageId": reply_id, "lastIndex": 1}}
    ]}}))
    .await;
    let mut reply = ReplyText::after(1, "w0 w1 ");
    let fin = loop {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("message_chunk") => reply.push(&frame),
            Some("message") => break frame,
            _ => {}
        }
    };
    assert_eq!(fin["seq"], 2);
    assert_eq!(fin["data"]["message"]["content"], words.concat().as_str());
    assert_eq!(
        reply.text,
        words.concat(),
        "replayed and live chunks add up to the whole reply"
    );
}

#[tokio::test]
async fn a_failing_provider_is_retried_before_the_first_token() {
    let script = FakeScript::reply(&["fine"]).failing_first(&[503, 429]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut ws, _) = stack.connect("gina").await;
    let (_, _, reply) = first_turn(&mut ws, "are you there?").await;
    let (_, last) = reply_parts(&reply);
    assert_eq!(last["data"]["message"]["content"], "fine");
    assert_eq!(stack.fake.as_ref().expect("fake").request_count(), 3);
}

#[tokio::test]
async fn a_provider_that_keeps_failing_gives_a_failed_reply_and_a_502() {
    let script = FakeScript::reply(&["never"]).failing_first(&[500, 500, 500, 500, 500]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut ws, _) = stack.connect("hank").await;
    ws.send_message(None, "hello?", "c1").await;
    let last = ws.recv_type("message").await; // the user's own message
    assert_eq!(last["data"]["message"]["role"], "user");
    let (fin, _) = ws.recv_type_collect("message").await;
    assert_eq!(fin["data"]["message"]["status"], "failed");
    assert!(
        fin["data"]["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("unavailable")),
        "the apology text"
    );
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 502);
}

#[tokio::test]
async fn a_resume_of_1000_missed_events_across_chats_with_a_reply_streaming_arrives_whole() {
    let words: Vec<String> = (0..30).map(|i| format!("v{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let script = FakeScript::reply(&refs).with_delay(Duration::from_millis(30));
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(script))
            .core(|c| c.chat.single_active_session = false),
    )
    .await;
    let (mut ws, _) = stack.connect("ivy").await;
    let mut chats = Vec::new();
    for title in ["first", "second"] {
        ws.send(json!({"type": "chat_update", "data": {"action": "create", "title": title}}))
            .await;
        let created = ws.recv_type("chat_update").await;
        chats.push(
            created["data"]["chatId"]
                .as_str()
                .expect("chat id")
                .to_string(),
        );
    }
    // 600 missed in each chat: 1,200 events, far more than a connection's outbox (256).
    for chat in &chats {
        chat_tests::fill_chat(&stack.db, chat, "ivy", 600).await;
    }
    ws.send_message(Some(&chats[0]), "and now a story", "story-1")
        .await;
    let ack = ws.recv_type("ack").await;
    assert_eq!(ack["data"]["seq"], 601);
    let first = ws.recv_type("message_chunk").await;
    let reply_id = first["data"]["messageId"].as_str().expect("id").to_string();
    drop(ws);

    let (mut ws, _) = stack.connect("ivy").await;
    ws.send(json!({"type": "resume", "data": {"chats": [
        {"chatId": chats[0], "lastSeq": 0, "streaming": {"messageId": reply_id, "lastIndex": 0}},
        {"chatId": chats[1], "lastSeq": 0},
    ]}}))
    .await;
    let mut next_seq = [1i64, 1];
    let mut reply = ReplyText::after(0, "v0 ");
    while next_seq[0] <= 602 || next_seq[1] <= 600 {
        let frame = ws.recv().await;
        assert_ne!(frame["type"], "history", "no reset: {frame}");
        let chat = frame["data"]["chatId"].as_str().unwrap_or_default();
        let Some(slot) = chats.iter().position(|c| c == chat) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("message") => {
                assert_eq!(
                    frame["seq"], next_seq[slot],
                    "chat {slot}: in order, once: {frame}"
                );
                next_seq[slot] += 1;
                if frame["seq"] == 602 {
                    assert_eq!(frame["data"]["message"]["id"], reply_id.as_str());
                    assert_eq!(frame["data"]["message"]["content"], words.concat().as_str());
                }
            }
            Some("message_chunk") => reply.push(&frame),
            _ => {}
        }
    }
    assert_eq!(
        reply.text,
        words.concat(),
        "replayed and live chunks make the whole reply"
    );
}

/// A reply the model cut at its output token limit is stored whole as sent, `complete`, with
/// `metadata.finishReason: "length"` (OpenAI `finish_reason: "length"`, Anthropic
/// `stop_reason: "max_tokens"`); a reply that ended normally has no `finishReason`.
#[tokio::test]
async fn a_reply_cut_at_the_token_limit_says_so_in_its_metadata() {
    use chat_tests::fake_llm::{sse_data, sse_event};
    let openai = FakeScript::frames(vec![
        sse_data(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Cut at"},"finish_reason":null}]}"#,
        ),
        sse_data(
            r#"{"choices":[{"index":0,"delta":{"content":" the limit"},"finish_reason":"length"}]}"#,
        ),
        sse_data("[DONE]"),
    ]);
    let anthropic = FakeScript::frames(vec![
        sse_event(
            "message_start",
            r#"{"type":"message_start","message":{"usage":{"input_tokens":5}}}"#,
        ),
        sse_event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Cut at the limit"}}"#,
        ),
        sse_event(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":4}}"#,
        ),
        sse_event("message_stop", r#"{"type":"message_stop"}"#),
    ]);
    for llm in [Llm::OpenAi(openai), Llm::Anthropic(anthropic)] {
        let stack = spawn_stack(StackOptions::default().llm(llm)).await;
        let (mut ws, _) = stack.connect("tess").await;
        let (_, _, reply) = first_turn(&mut ws, "Write at length").await;
        let (_, last) = reply_parts(&reply);
        let fin = &last["data"]["message"];
        assert_eq!(fin["content"], "Cut at the limit");
        assert_eq!(fin["status"], "complete");
        assert_eq!(fin["metadata"]["finishReason"], "length", "{fin}");
        stack.stop().await;
    }
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(FakeScript::default()))).await;
    let (mut ws, _) = stack.connect("tess").await;
    let (_, _, reply) = first_turn(&mut ws, "Say hello").await;
    let (_, last) = reply_parts(&reply);
    assert!(
        last["data"]["message"]["metadata"]
            .get("finishReason")
            .is_none(),
        "{last}"
    );
    stack.stop().await;
}
