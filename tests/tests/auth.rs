//! Authentication at the edge and in the core: every carrier of PROTOCOL.md, every bad token,
//! expiry on a live connection, in-band refresh.

use std::time::Duration;

use chat_tests::{SECRET, Ws, spawn_default};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> u64 {
    chat_auth::now_secs()
}

/// Signs arbitrary claims with the stack's secret (to build expired or odd tokens).
fn sign(claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
}

/// Tokens that must all be refused, by name.
fn bad_tokens(good: &str) -> Vec<(&'static str, String)> {
    let other_key = chat_auth::Minter::new(&chat_auth::AuthSettings::hs256(
        "a-completely-different-secret-of-32-bytes",
    ))
    .and_then(|m| {
        m.mint(&chat_auth::MintRequest {
            user_id: "mallory".into(),
            name: None,
            roles: vec!["admin".into()],
            ttl_secs: 600,
        })
    })
    .expect("mint");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(r#"{{"sub":"eve","exp":{}}}"#, now() + 600).as_bytes())
    );
    let mut tampered = good.to_string();
    let last = tampered.pop();
    tampered.push(if last == Some('A') { 'B' } else { 'A' });
    vec![
        ("expired", sign(json!({"sub": "old", "exp": now() - 3600}))),
        ("without exp", sign(json!({"sub": "forever"}))),
        ("without sub", sign(json!({"exp": now() + 600}))),
        ("signed with another key", other_key),
        ("alg none", none),
        ("tampered signature", tampered),
        ("garbage", "not-a-token".into()),
    ]
}

#[tokio::test]
async fn bad_tokens_get_401_and_close_1008_through_every_carrier() {
    let stack = spawn_default().await;
    let good = stack.token("alice", &[]);
    for (what, token) in bad_tokens(&good) {
        // Query string.
        let mut ws = Ws::open(&format!("{}?token={token}", stack.ws_url())).await;
        let error = ws.recv().await;
        assert_eq!(error["type"], "error", "{what}");
        assert_eq!(
            error["data"],
            json!({"code": 401, "message": "Authentication failed", "retryable": false}),
            "{what}"
        );
        assert_eq!(ws.recv_close().await, Some(1008), "{what}");

        // Authorization header.
        let mut request = stack.ws_url().into_client_request().expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (mut ws, _) = Ws::open_request(request).await.expect("upgrade");
        assert_eq!(ws.recv().await["data"]["code"], 401, "{what}");
        assert_eq!(ws.recv_close().await, Some(1008), "{what}");
    }
    // No token at all.
    let mut ws = Ws::open(&stack.ws_url()).await;
    assert_eq!(ws.recv().await["data"]["code"], 401);
    assert_eq!(ws.recv_close().await, Some(1008));
}

#[tokio::test]
async fn a_valid_token_works_through_the_header_and_the_subprotocol() {
    let stack = spawn_default().await;
    let token = stack.token("alice", &[]);

    let mut request = stack.ws_url().into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = Ws::open_request(request).await.expect("upgrade");
    assert_eq!(ws.recv_type("session").await["data"]["userId"], "alice");

    let mut request = format!("ws://{}/api/v1/chat/ws", stack.edge_addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("chat.v1, bearer.{token}").parse().expect("header"),
    );
    let (mut ws, response) = Ws::open_request(request).await.expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chat.v1")
    );
    assert_eq!(ws.recv_type("session").await["data"]["userId"], "alice");

    let mut ws = Ws::open(&format!("ws://{}/chat?token={token}", stack.edge_addr)).await;
    assert_eq!(ws.recv_type("session").await["data"]["userId"], "alice");
}

#[tokio::test]
async fn a_token_that_expires_on_a_live_connection_closes_it_unless_refreshed() {
    let stack = spawn_default().await;
    // Expires in 2 s (the leeway applies to opening, not to the live deadline).
    let mut short = Ws::open(&format!(
        "{}?token={}",
        stack.ws_url(),
        stack.token_for("alice", &[], 2)
    ))
    .await;
    short.recv_type("session").await;
    let mut refreshed = Ws::open(&format!(
        "{}?token={}",
        stack.ws_url(),
        stack.token_for("alice", &[], 2)
    ))
    .await;
    refreshed.recv_type("session").await;
    refreshed
        .send(json!({"type": "auth", "data": {"token": stack.token("alice", &[])}}))
        .await;
    let again = refreshed.recv_type("session").await;
    assert_eq!(again["data"]["userId"], "alice");

    let error = short.recv_type("error").await;
    assert_eq!(error["data"]["code"], 401);
    assert_eq!(short.recv_close().await, Some(1008));

    tokio::time::sleep(Duration::from_millis(500)).await;
    refreshed
        .send(json!({"type": "ping", "data": {"timestamp": 5}}))
        .await;
    assert_eq!(refreshed.recv_type("pong").await["data"]["timestamp"], 5);
}

#[tokio::test]
async fn an_auth_frame_with_a_bad_or_foreign_token_closes_with_1008() {
    let stack = spawn_default().await;
    for token in ["garbage".to_string(), stack.token("someone-else", &[])] {
        let (mut ws, _) = stack.connect("alice").await;
        ws.send(json!({"type": "auth", "data": {"token": token}}))
            .await;
        assert_eq!(ws.recv_type("error").await["data"]["code"], 401);
        assert_eq!(ws.recv_close().await, Some(1008));
    }
}

#[tokio::test]
async fn a_disallowed_origin_is_refused_at_the_upgrade_with_403() {
    let stack = chat_tests::spawn_stack(
        chat_tests::StackOptions::default()
            .edge(|e| e.allowed_origins = vec!["https://app.example".into()]),
    )
    .await;
    let token = stack.token("alice", &[]);
    let mut request = format!("{}?token={token}", stack.ws_url())
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    match Ws::open_request(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut request = format!("{}?token={token}", stack.ws_url())
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("origin", "https://app.example".parse().expect("header"));
    let (mut ws, _) = Ws::open_request(request).await.expect("allowed origin");
    ws.recv_type("session").await;
}
