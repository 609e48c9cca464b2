//! REST beside the socket: reads with the same bearer token, JSON errors, health probes.

use chat_tests::spawn_default;
use serde_json::{Value, json};

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sessions_history_and_models_are_served_to_their_owner_only() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.send_message(None, "first question", "m1").await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    ws.recv_reply().await;
    let alice = stack.token("alice", &[]);

    let (status, page) = get(
        &stack.http_url(&format!("/api/sessions/{chat}/messages?limit=1")),
        Some(&alice),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["chatId"], chat.as_str());
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["messages"][0]["role"], "assistant");
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["lastSeq"], 2);
    let cursor = page["cursor"].as_str().expect("cursor").to_string();
    let (_, older) = get(
        &stack.http_url(&format!("/api/chat/history/{chat}?before={cursor}")),
        Some(&alice),
    )
    .await;
    assert_eq!(older["messages"][0]["content"], "first question");
    assert_eq!(older["hasMore"], false);

    let (status, sessions) = get(&stack.http_url("/api/sessions"), Some(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(sessions["sessions"][0]["title"], "first question");
    assert_eq!(sessions["sessions"][0]["adminAssisted"], false);

    let (status, models) = get(&stack.http_url("/api/models"), Some(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(models["defaultModel"], "demo");
    assert_eq!(models["agents"][0]["id"], "assistant");

    let bob = stack.token("bob", &[]);
    let (status, body) = get(
        &stack.http_url(&format!("/api/sessions/{chat}/messages")),
        Some(&bob),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": {"code": 403, "message": "Access denied to chat"}})
        )
    );
    let (status, body) = get(
        &stack.http_url("/api/sessions/no-such-chat/messages"),
        Some(&alice),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], 404);
    let (status, body) = get(
        &stack.http_url(&format!("/api/sessions/{chat}/messages?limit=500")),
        Some(&alice),
    )
    .await;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!(400)));
    let (status, body) = get(&stack.http_url("/api/sessions"), None).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": {"code": 401, "message": "Authentication failed"}})
        )
    );
    let (status, _) = get(&stack.http_url("/api/sessions"), Some("garbage")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn health_probes_report_liveness_readiness_and_connections() {
    let stack = spawn_default().await;
    assert_eq!(
        get(&stack.http_url("/healthz"), None).await,
        (200, json!({"status": "ok"}))
    );
    let (status, ready) = get(&stack.http_url("/readyz"), None).await;
    assert_eq!(status, 200, "{ready}");
    let (mut ws, _) = stack.connect("alice").await;
    let (_idle, _) = stack.connect("bob").await;
    let (status, health) = get(&stack.http_url("/ws/health"), None).await;
    assert_eq!(status, 200);
    assert_eq!(health["activeChats"], 0, "{health}");
    // One chat with a joined member.
    chat_tests::chat_with_one_turn(&mut ws, "hello").await;
    for path in ["/ws/health", "/api/websocket/health"] {
        let (status, health) = get(&stack.http_url(path), None).await;
        assert_eq!(status, 200);
        assert_eq!(health["status"], "ok");
        // Seed 001 reads connections, activeChats and uptime; seed 003 connectedClients.
        assert_eq!(health["connections"], 2);
        assert_eq!(health["connectedClients"], 2);
        assert_eq!(health["activeChats"], 1, "{health}");
        assert!(health["uptime"].is_u64());
        assert_eq!(health["uptime"], health["uptimeSeconds"]);
    }
    let page = reqwest::get(stack.http_url("/"))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("<html") || page.contains("<!doctype html>"));
}

#[tokio::test]
async fn readiness_fails_when_the_core_is_gone() {
    let stack = chat_tests::spawn_stack(
        chat_tests::StackOptions::default().edge(|e| e.core_url = "http://127.0.0.1:1".into()),
    )
    .await;
    let (status, body) = get(&stack.http_url("/readyz"), None).await;
    assert_eq!((status, body), (503, json!({"status": "unavailable"})));
    // The edge's own figures still answer; the core's count is unknown.
    let (status, health) = get(&stack.http_url("/ws/health"), None).await;
    assert_eq!(status, 200);
    assert_eq!(health["activeChats"], Value::Null, "{health}");
    // And a socket gets a retryable 503 and 1013 instead of hanging.
    let mut ws = chat_tests::Ws::open(&format!(
        "{}?token={}",
        stack.ws_url(),
        stack.token("alice", &[])
    ))
    .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 503);
    assert_eq!(error["data"]["retryable"], true);
    assert_eq!(ws.recv_close().await, Some(1013));
}

#[tokio::test]
async fn prometheus_metrics_are_served_by_the_edge_and_the_core() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.send_message(None, "count me", "m1").await;
    ws.recv_reply().await;
    ws.send_text("not json").await;
    ws.recv_type("error").await;

    let response = reqwest::get(stack.http_url("/metrics"))
        .await
        .expect("edge metrics");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let edge = response.text().await.expect("text");
    for series in [
        "chat_edge_connections",
        "chat_edge_frames_in_total",
        "chat_edge_frames_out_total",
        "chat_edge_rejected_frames_total{code=\"400\"}",
        "chat_core_connections",
        "chat_core_messages_total{role=\"user\"}",
        "chat_core_replies_total{model=\"demo\",status=\"complete\"}",
        "chat_core_reply_seconds_bucket{model=\"demo\"",
        "chat_core_llm_tokens_total{model=\"demo\",kind=\"completion\"}",
    ] {
        assert!(edge.contains(series), "edge /metrics lacks {series}");
    }

    let core_addr = stack.core_metrics_addr.expect("core metrics listener");
    let core = reqwest::get(format!("http://{core_addr}/metrics"))
        .await
        .expect("core metrics");
    assert_eq!(core.status(), 200);
    assert!(
        core.text()
            .await
            .expect("text")
            .contains("chat_core_replies_total")
    );
}
