//! Seed 001's and seed 000's clients over a real socket: the summary `chat_update` after each
//! stored message, `messageIndex`/`totalMessages` in message metadata, `?auth=` as a token
//! carrier, `?batch=` coalescing, and the seeds' environment names read as aliases.
//! (The health bodies are checked in `rest.rs`.)

use std::time::Duration;

use chat_core::config::Settings;
use chat_edge::EdgeSettings;
use chat_tests::fake_llm::{self, FakeScript};
use chat_tests::{SECRET, StackOptions, Ws, is_summary, spawn_default, spawn_stack};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn members_get_a_summary_after_each_stored_message_and_metadata_numbers_messages() {
    let stack = spawn_default().await;
    let url = format!("{}?token={}", stack.ws_url(), stack.token("alice", &[]));
    let mut ws = Ws::open(&url).await.with_summaries();
    ws.recv_type("session").await;

    ws.send_message(None, "hello there", "m-1").await;
    let ack = ws.recv_type("ack").await;
    let chat = ack["data"]["chatId"].as_str().expect("chat").to_owned();
    let mine = ws.recv_type("message").await;
    let meta = &mine["data"]["message"]["metadata"];
    assert_eq!(
        (meta["messageIndex"].clone(), meta["totalMessages"].clone()),
        (json!(1), json!(1))
    );
    // The summary follows the message it summarises, and carries no seq.
    let summary = ws.recv().await;
    assert!(is_summary(&summary), "{summary}");
    assert_eq!(
        summary["data"],
        json!({"chatId": chat, "updates": {"messageCount": 1, "lastMessage": "hello there"}})
    );
    assert!(summary.get("seq").is_none());

    let reply = ws.recv_reply().await;
    let kinds: Vec<&str> = reply.iter().filter_map(|f| f["type"].as_str()).collect();
    let final_at = kinds
        .iter()
        .position(|k| *k == "message")
        .expect("final message");
    assert_eq!(kinds[final_at + 1], "chat_update", "{kinds:?}");
    let answer = &reply[final_at]["data"]["message"];
    assert_eq!(answer["metadata"]["messageIndex"], 2);
    assert_eq!(answer["metadata"]["totalMessages"], 2);
    let summary = &reply[final_at + 1];
    assert!(is_summary(summary), "{summary}");
    assert_eq!(summary["data"]["updates"]["messageCount"], 2);
    let content = answer["content"].as_str().expect("content");
    let preview = summary["data"]["updates"]["lastMessage"]
        .as_str()
        .expect("preview");
    if content.chars().count() <= 100 {
        assert_eq!(preview, content);
    } else {
        assert_eq!(preview.chars().count(), 100);
        assert!(preview.ends_with('…'));
    }

    // A long message is previewed in at most 100 characters.
    let long = "x".repeat(250);
    ws.send_message(Some(&chat), &long, "m-2").await;
    let (summary, _) = ws.recv_until(is_summary).await;
    let preview = summary["data"]["updates"]["lastMessage"]
        .as_str()
        .expect("preview");
    assert_eq!(preview.chars().count(), 100);
    assert_eq!(preview, format!("{}…", "x".repeat(99)));
    assert_eq!(summary["data"]["updates"]["messageCount"], 3);
    ws.recv_reply().await;

    // History numbers the messages the same way.
    ws.send(json!({"type": "history", "data": {"chatId": chat}}))
        .await;
    let history = ws.recv_type("history").await;
    let indexes: Vec<i64> = history["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["metadata"]["messageIndex"].as_i64().expect("index"))
        .collect();
    assert_eq!(indexes, vec![1, 2, 3, 4]);

    // Resume replays durable events only: messages, never a summary.
    let mut again = Ws::open(&url).await.with_summaries();
    again.recv_type("session").await;
    again
        .send(json!({"type": "resume", "data": {"chats": [{"chatId": chat, "lastSeq": 0}]}}))
        .await;
    let mut replayed = Vec::new();
    while replayed.len() < 4 {
        let frame = again.recv().await;
        assert!(!is_summary(&frame), "resume replayed a summary: {frame}");
        if frame["type"] == "message" {
            replayed.push(frame);
        }
    }
    again
        .send(json!({"type": "ping", "data": {"timestamp": 7}}))
        .await;
    let (pong, before) = again.recv_type_collect("pong").await;
    assert_eq!(pong["data"]["timestamp"], 7);
    assert!(before.iter().all(|f| !is_summary(f)), "{before:?}");
}

#[tokio::test]
async fn the_auth_query_parameter_carries_the_token_for_sockets_and_rest() {
    let stack = spawn_default().await;
    let token = stack.token("alice", &[]);
    let mut ws = Ws::open(&format!("{}?auth={token}", stack.ws_url())).await;
    let session = ws.recv_type("session").await;
    assert_eq!(session["data"]["userId"], "alice");

    let mut bad = Ws::open(&format!("{}?auth=not-a-jwt", stack.ws_url())).await;
    let refused = bad.recv().await;
    assert_eq!(refused["data"]["code"], 401);
    assert_eq!(bad.recv_close().await, Some(1008));

    let sessions = reqwest::get(stack.http_url(&format!("/api/sessions?auth={token}")))
        .await
        .expect("sessions");
    assert_eq!(sessions.status(), 200);
}

/// Reads raw text frames (the test client's own parsing would not show the batch wrapper).
async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.inner.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = next {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

#[tokio::test]
async fn batching_coalesces_frames_in_order_and_is_opt_in() {
    let stack = spawn_default().await;
    let token = stack.token("alice", &[]);

    // Out of range or not a number: refused at the upgrade with a reason.
    for bad in ["5", "1001", "soon", ""] {
        let response = reqwest::Client::new()
            .get(stack.http_url(&format!("/ws?token={token}&batch={bad}")))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), 400, "batch={bad}");
        let body = response.text().await.expect("body");
        assert!(body.contains("from 10 to 1000"), "{body}");
    }

    let mut ws = Ws::open(&format!("{}?token={token}&batch=50", stack.ws_url())).await;
    let first = next_text(&mut ws).await;
    assert_eq!(first["type"], "batch", "{first}");
    assert!(first["timestamp"].is_i64());
    assert_eq!(first["data"]["messages"][0]["type"], "session");

    // A whole turn: every inner frame as it would be unbatched, in order.
    ws.send_message(None, "hello", "m-1").await;
    let mut inner: Vec<Value> = Vec::new();
    let mut batches = 0;
    while !inner.iter().any(|f| {
        f["type"] == "typing"
            && f["data"]["userId"] == "assistant"
            && f["data"]["isTyping"] == false
    }) {
        let batch = next_text(&mut ws).await;
        assert_eq!(batch["type"], "batch", "{batch}");
        let messages = batch["data"]["messages"].as_array().expect("messages");
        assert!(!messages.is_empty(), "no empty batches");
        inner.extend(messages.iter().cloned());
        batches += 1;
    }
    let kinds: Vec<&str> = inner.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(kinds[0], "ack", "{kinds:?}");
    assert_eq!(kinds[1], "message", "{kinds:?}");
    let chunks: Vec<i64> = inner
        .iter()
        .filter(|f| f["type"] == "message_chunk")
        .map(|f| f["data"]["index"].as_i64().expect("index"))
        .collect();
    assert_eq!(chunks, (0..chunks.len() as i64).collect::<Vec<_>>());
    assert!(
        batches < inner.len(),
        "{} frames came in {batches} batches: nothing was coalesced",
        inner.len()
    );

    // Without the option nothing changes: the first frame is the session itself.
    let mut plain = Ws::open(&format!("{}?token={token}", stack.ws_url())).await;
    assert_eq!(next_text(&mut plain).await["type"], "session");
}

fn exposed(secret: &Option<secrecy::SecretString>) -> Option<String> {
    use secrecy::ExposeSecret;
    secret.as_ref().map(|s| s.expose_secret().to_owned())
}

#[test]
fn seed_names_are_aliases_below_the_projects_own_with_a_warning_when_they_differ() {
    let core = Settings::load_from(
        None,
        env(&[
            ("JWT_SECRET", "seed-secret-0123456789-0123456789"),
            ("MESSAGE_RATE_LIMIT", "100"),
            ("LLM_API_KEY", "sk-seed"),
            ("LLM_BASE_URL", "http://127.0.0.1:9/v1"),
        ]),
    )
    .expect("loads");
    assert_eq!(
        exposed(&core.auth.secret).as_deref(),
        Some("seed-secret-0123456789-0123456789")
    );
    assert_eq!(core.chat.user_messages_per_minute, 100);
    let openai = &core.llm.providers["openai"];
    assert_eq!(openai.base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
    assert!(core.env_warnings.is_empty(), "{:?}", core.env_warnings);

    // The project's own names win, with a warning naming both (never the values).
    let core = Settings::load_from(
        None,
        env(&[
            ("JWT_SECRET", "seed-secret-0123456789-0123456789"),
            ("CHAT_AUTH__SECRET", "own-secret-0123456789-0123456789"),
            ("MESSAGE_RATE_LIMIT", "100"),
            ("CHAT_CHAT__USER_MESSAGES_PER_MINUTE", "100"),
            ("LLM_API_KEY", "sk-seed"),
            ("OPENAI_API_KEY", "sk-own"),
        ]),
    )
    .expect("loads");
    assert_eq!(
        exposed(&core.auth.secret).as_deref(),
        Some("own-secret-0123456789-0123456789")
    );
    assert_eq!(
        exposed(&core.llm.providers["openai"].api_key).as_deref(),
        Some("sk-own")
    );
    assert_eq!(core.env_warnings.len(), 2, "{:?}", core.env_warnings);
    assert!(
        core.env_warnings[0].contains("JWT_SECRET")
            && core.env_warnings[0].contains("CHAT_AUTH__SECRET")
    );
    assert!(
        core.env_warnings[1].contains("LLM_API_KEY")
            && core.env_warnings[1].contains("OPENAI_API_KEY")
    );
    for warning in &core.env_warnings {
        assert!(
            !warning.contains("secret-0123") && !warning.contains("sk-"),
            "{warning}"
        );
    }

    let edge = EdgeSettings::load_from(
        None,
        env(&[
            ("WS_PORT", "3001"),
            ("CHAT_EDGE_HTTP_ADDR", "127.0.0.1:4000"),
            ("MAX_CONNECTIONS", "7"),
        ]),
    )
    .expect("loads");
    assert_eq!(edge.http_addr.port(), 4000);
    assert_eq!(edge.limits.max_connections, 7);
    assert_eq!(edge.env_warnings.len(), 1, "{:?}", edge.env_warnings);
    assert!(edge.env_warnings[0].contains("WS_PORT"));

    // A bad value names the variable.
    let err = EdgeSettings::load_from(None, env(&[("WS_PORT", "http")]))
        .expect_err("not a port")
        .to_string();
    assert!(err.contains("WS_PORT"), "{err}");
    let err = EdgeSettings::load_from(None, env(&[("MAX_CONNECTIONS", "many")]))
        .expect_err("not a number")
        .to_string();
    assert!(err.contains("limits.max_connections"), "{err}");
    let mut bad_path =
        EdgeSettings::load_from(None, env(&[("WS_PATH", "/healthz")])).expect("loads");
    bad_path.auth = chat_auth::AuthSettings::hs256(SECRET);
    let err = bad_path.validate().expect_err("taken path").to_string();
    assert!(err.contains("ws_path"), "{err}");
}

#[tokio::test]
async fn a_stack_configured_only_by_seed_names_serves_them() {
    let port = chat_tests::free_port();
    let fake = fake_llm::spawn(FakeScript::reply(&["Seeded ", "reply."])).await;
    let core_env = env(&[
        ("JWT_SECRET", SECRET),
        ("MESSAGE_RATE_LIMIT", "2"),
        ("LLM_API_KEY", "sk-seed-key"),
        ("LLM_BASE_URL", &fake.openai_base_url()),
    ]);
    let edge_env = env(&[
        ("JWT_SECRET", SECRET),
        ("WS_PORT", &port.to_string()),
        ("WS_PATH", "/seed/ws"),
        ("MAX_CONNECTIONS", "1"),
    ]);
    let stack = spawn_stack(
        StackOptions::default()
            .core(move |s| {
                let seeded = Settings::load_from(None, core_env).expect("core settings");
                s.auth = seeded.auth;
                s.chat.user_messages_per_minute = seeded.chat.user_messages_per_minute;
                s.llm = seeded.llm;
            })
            .edge(move |s| {
                let mut seeded = EdgeSettings::load_from(None, edge_env).expect("edge settings");
                seeded.core_url = s.core_url.clone();
                *s = seeded;
            }),
    )
    .await;
    assert_eq!(stack.edge_addr.port(), port);

    let url = format!(
        "ws://127.0.0.1:{port}/seed/ws?auth={}",
        stack.token("alice", &[])
    );
    let mut ws = Ws::open(&url).await;
    ws.recv_type("session").await;
    // LLM_API_KEY and LLM_BASE_URL name an OpenAI-compatible service: the reply is the fake's.
    ws.send_message(None, "hi", "m-1").await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_owned();
    let reply = ws.recv_reply().await;
    let answer = reply
        .iter()
        .find(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .expect("final message");
    assert_eq!(answer["data"]["message"]["content"], "Seeded reply.");
    assert_eq!(
        fake.received()[0].header("authorization").as_deref(),
        Some("Bearer sk-seed-key")
    );
    // MESSAGE_RATE_LIMIT=2: the third message in a minute is refused.
    ws.send_message(Some(&chat), "two", "m-2").await;
    ws.recv_type("ack").await;
    ws.send_message(Some(&chat), "three", "m-3").await;
    let refused = ws.recv_type("error").await;
    assert_eq!(refused["data"]["code"], 429, "{refused}");
    // MAX_CONNECTIONS=1: a second socket is turned away.
    let mut second = Ws::open(&url).await;
    let full = second.recv().await;
    assert_eq!(full["data"]["code"], 503, "{full}");
    assert_eq!(second.recv_close().await, Some(1013));
}
