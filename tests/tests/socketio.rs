//! Seed 003's Socket.IO client, for real: `tests/socketio/scenario.mjs` drives the edge's
//! `/socket.io/` endpoint with `socket.io-client` from npm (installed by `scripts/test.sh`)
//! through connect, history, a streamed turn, a duplicate, typing and presence between two
//! users, read receipts, bad tokens, reconnect and long polling. This test starts the stack,
//! prepares a chat shared by two users, and fails with the script's output when a step does.

use std::path::PathBuf;
use std::time::Duration;

use chat_auth::{AuthSettings, MintRequest, Minter};
use chat_tests::spawn_default;
use serde_json::json;

fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio")
}

#[tokio::test]
async fn seed_003s_socket_io_client_works_unchanged() {
    let dir = scenario_dir();
    assert!(
        dir.join("node_modules/socket.io-client").is_dir(),
        "socket.io-client is not installed in {}: run scripts/test.sh (it runs `npm ci` there)",
        dir.display()
    );
    let stack = spawn_default().await;

    // A chat of alice's with bob as a member, made over the JSON protocol.
    let (mut ws, _) = stack.connect("alice").await;
    ws.send(json!({"type": "chat_update", "data": {"action": "create", "title": "Shared"}}))
        .await;
    let created = ws.recv_type("chat_update").await;
    let shared = created["data"]["chatId"]
        .as_str()
        .expect("chat id")
        .to_owned();
    ws.send(json!({"type": "chat_update", "data": {"action": "add_member", "chatId": shared, "userId": "bob"}}))
        .await;
    ws.send(json!({"type": "ping", "data": {"timestamp": 1}}))
        .await;
    let (_, before) = ws.recv_type_collect("pong").await;
    assert!(
        before.iter().all(|f| f["type"] != "error"),
        "add_member failed: {before:?}"
    );
    drop(ws);

    let forged = Minter::new(&AuthSettings::hs256("a-different-secret-0123456789-abcdef"))
        .expect("minter")
        .mint(&MintRequest {
            user_id: "alice".into(),
            name: None,
            roles: vec![],
            ttl_secs: 3600,
        })
        .expect("mint");
    let run = tokio::process::Command::new("node")
        .arg("scenario.mjs")
        .current_dir(&dir)
        .env("SIO_URL", format!("http://{}", stack.edge_addr))
        .env("TOKEN_ALICE", stack.token("alice", &[]))
        .env("TOKEN_BOB", stack.token("bob", &[]))
        .env("TOKEN_FORGED", forged)
        .env("SHARED_CHAT", &shared)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the scenario finishes within two minutes")
        .expect("node runs (Node 20 is required)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Socket.IO scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for step in [
        "bad tokens are refused with connect_error",
        "history on connect",
        "a streamed turn",
        "a duplicate messageId is acked as such",
        "bad messages get clear errors",
        "typing, presence and read receipts between two users",
        "reconnect and history again",
        "the auth query parameter over long polling",
    ] {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "step {step:?} did not run:\n{stdout}"
        );
    }

    // What the client saw is what was stored: one chat for connectionId db-1, with the two
    // turns over websocket and one over polling, no second reply to the duplicate.
    let chats = chat_core::storage::list_user_chats(&stack.db, "alice", 10)
        .await
        .expect("chats");
    let keyed = chats
        .iter()
        .find(|c| c.title.starts_with("Which tables"))
        .expect("the keyed chat");
    assert_eq!(keyed.message_count, 6, "{keyed:?}");
}

/// Engine.IO's long polling by hand: the handshake, a namespace connect with `auth`, and what
/// the server answers to it.
async fn polling_connect(base: &str, origin: &str, auth: serde_json::Value) -> (String, String) {
    let client = reqwest::Client::new();
    let open = client
        .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
        .header("origin", origin)
        .send()
        .await
        .expect("handshake");
    assert_eq!(open.status(), 200);
    let cors = open
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = open.text().await.expect("open packet");
    let packet: serde_json::Value =
        serde_json::from_str(body.strip_prefix('0').expect("an open packet")).expect("JSON");
    let sid = packet["sid"].as_str().expect("sid").to_owned();
    let url = format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}");
    let posted = client
        .post(&url)
        .header("origin", origin)
        .body(format!("40{auth}"))
        .send()
        .await
        .expect("connect packet");
    assert_eq!(posted.status(), 200);
    let answer = client
        .get(&url)
        .header("origin", origin)
        .send()
        .await
        .expect("poll")
        .text()
        .await
        .expect("answer");
    (cors, answer)
}

#[tokio::test]
async fn origins_are_checked_and_cross_origin_polling_is_allowed_for_them() {
    let stack = chat_tests::spawn_stack(
        chat_tests::StackOptions::default()
            .edge(|e| e.allowed_origins = vec!["https://app.example".into()]),
    )
    .await;
    let base = format!("http://{}", stack.edge_addr);
    let token = stack.token("alice", &[]);

    let (cors, answer) =
        polling_connect(&base, "https://app.example", json!({"token": token})).await;
    assert_eq!(cors, "https://app.example", "CORS for an allowed origin");
    // Packets of one poll are separated by U+001E.
    assert!(
        answer.split('\u{1e}').any(|p| p.starts_with("40{\"sid\"")),
        "connected: {answer:?}"
    );

    let (cors, answer) =
        polling_connect(&base, "https://evil.example", json!({"token": token})).await;
    assert_eq!(cors, "", "no CORS for another origin");
    assert!(
        answer
            .split('\u{1e}')
            .any(|p| p.starts_with("44") && p.contains("Origin not allowed")),
        "{answer:?}"
    );

    let (_, answer) = polling_connect(&base, "https://app.example", json!({})).await;
    assert!(answer.contains("Authentication failed"), "{answer}");
}
