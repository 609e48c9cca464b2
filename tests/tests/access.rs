//! Access on every path: another user's chat and message ids are refused (403 or 404) by every
//! socket frame, gRPC call and REST route that takes one; the refusal changes nothing and
//! nothing of that chat reaches the caller, then or later.

use chat_core::storage;
use chat_proto::pb::chat::{self as pb, chat_service_client::ChatServiceClient};
use chat_tests::{Stack, Ws, authorized, spawn_default};
use serde_json::{Value, json};

/// Alice's chat with one exchange in it: (alice's socket, chat id).
async fn alices_chat(stack: &Stack) -> (Ws, String) {
    let (mut alice, _) = stack.connect("alice").await;
    alice.send_message(None, "secret plans", "a1").await;
    let ack = alice.recv_type("ack").await;
    let chat = ack["data"]["chatId"].as_str().expect("chat id").to_string();
    alice.recv_reply().await;
    (alice, chat)
}

/// Nothing is queued for `ws` but what it asks for now: the next frame after a ping is its
/// pong, so no event of another chat was delivered before it.
async fn assert_nothing_leaked(ws: &mut Ws, who: &str) {
    ws.send(json!({"type": "ping", "data": {"timestamp": 42}}))
        .await;
    let next = ws.recv().await;
    assert_eq!(next["type"], "pong", "{who} received {next}");
}

/// A gRPC request carrying `token`.
fn frame(ty: &str, data: Value) -> Value {
    json!({"type": ty, "data": data, "messageId": format!("probe-{ty}")})
}

#[tokio::test]
async fn another_users_chat_is_refused_on_every_frame_call_and_route() {
    let stack = spawn_default().await;
    let (mut alice, chat) = alices_chat(&stack).await;
    let before = storage::history(&stack.db, &chat, None, 100)
        .await
        .expect("history")
        .0;
    let (mut mallory, _) = stack.connect("mallory").await;
    let update = |action: &str, extra: Value| {
        let mut data = json!({"action": action, "chatId": chat});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        frame("chat_update", data)
    };
    let probes = [
        (
            "message",
            frame(
                "message",
                json!({"chatId": chat, "content": "let me in", "messageId": "m1"}),
            ),
        ),
        (
            "typing",
            frame("typing", json!({"chatId": chat, "isTyping": true})),
        ),
        (
            "read_receipt",
            frame(
                "read_receipt",
                json!({"chatId": chat, "messageIds": [before[0].id]}),
            ),
        ),
        ("join", update("join", json!({}))),
        ("leave", update("leave", json!({}))),
        ("rename", update("rename", json!({"title": "mine now"}))),
        (
            "select_model",
            update("select_model", json!({"model": "demo"})),
        ),
        ("end", update("end", json!({}))),
        (
            "add_member",
            update("add_member", json!({"userId": "mallory"})),
        ),
        (
            "remove_member",
            update("remove_member", json!({"userId": "alice"})),
        ),
        ("history", frame("history", json!({"chatId": chat}))),
        ("stop", frame("stop", json!({"chatId": chat}))),
        (
            "resume",
            frame("resume", json!({"chats": [{"chatId": chat, "lastSeq": 0}]})),
        ),
        (
            "help_request",
            frame("help_request", json!({"chatId": chat})),
        ),
        ("takeover", frame("takeover", json!({"chatId": chat}))),
        ("release", frame("release", json!({"chatId": chat}))),
    ];
    for (name, probe) in probes {
        mallory.send(probe).await;
        let answer = mallory.recv().await;
        assert_eq!(answer["type"], "error", "{name}: {answer}");
        let code = answer["data"]["code"].as_u64().unwrap_or_default();
        assert!(code == 403 || code == 404, "{name} answered {answer}");
        assert!(
            !answer.to_string().contains("secret"),
            "{name} leaked content: {answer}"
        );
    }

    // gRPC, as an internal service with Mallory's token would call it.
    let mut client = ChatServiceClient::new(stack.grpc().await);
    let mallory_token = stack.token("mallory", &[]);
    let authorized = |msg| authorized(msg, &mallory_token);
    let history = client
        .get_history(authorized(pb::GetHistoryRequest {
            chat_id: chat.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("history of another user's chat");
    assert_eq!(history.code(), tonic::Code::PermissionDenied);
    let post = client
        .post_message(self::authorized(
            pb::SendMessage {
                chat_id: chat.clone(),
                content: "let me in".into(),
                message_id: "g1".into(),
                ..Default::default()
            },
            &mallory_token,
        ))
        .await
        .expect_err("post to another user's chat");
    assert_eq!(post.code(), tonic::Code::PermissionDenied);

    // REST.
    let token = stack.token("mallory", &[]);
    for path in [
        format!("/api/sessions/{chat}/messages"),
        format!("/api/chat/history/{chat}"),
    ] {
        let response = reqwest::Client::new()
            .get(stack.http_url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("rest");
        assert_eq!(response.status(), 403, "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("secret"), "{path} leaked: {body}");
    }

    // Nothing changed, and Alice's next exchange does not reach Mallory.
    let after = storage::history(&stack.db, &chat, None, 100)
        .await
        .expect("history")
        .0;
    assert_eq!(after, before, "the refused frames stored nothing");
    let row = storage::get_chat(&stack.db, &chat)
        .await
        .expect("chat")
        .expect("exists");
    assert_eq!(
        (row.title.as_str(), row.status.as_str(), row.needs_help),
        ("secret plans", "active", false)
    );
    assert_eq!(
        storage::member_ids(&stack.db, &chat)
            .await
            .expect("members"),
        vec!["alice".to_string()]
    );
    alice.send_message(Some(&chat), "more secrets", "a2").await;
    alice.recv_reply().await;
    assert_nothing_leaked(&mut mallory, "mallory").await;
}

#[tokio::test]
async fn a_removed_member_cannot_rejoin_by_resending_an_old_message_id() {
    let stack = spawn_default().await;
    let (mut alice, chat) = alices_chat(&stack).await;
    alice
        .send(json!({"type": "chat_update", "data": {"action": "add_member", "chatId": chat, "userId": "bob"}}))
        .await;
    let (mut bob, _) = stack.connect("bob").await;
    bob.send_message(Some(&chat), "hi all", "b1").await;
    assert_eq!(bob.recv_type("ack").await["data"]["duplicate"], false);
    bob.recv_reply().await;
    alice
        .send(json!({"type": "chat_update", "data": {"action": "remove_member", "chatId": chat, "userId": "bob"}}))
        .await;
    // Alice's ping answered means her removal was processed.
    assert_nothing_leaked_after_own_frames(&mut alice).await;

    // A new socket, as after a reconnect; the page's outbox resends what it thinks unacked.
    let (mut bob, _) = stack.connect("bob").await;
    for resend in [
        json!({"type": "message", "data": {"content": "hi all", "messageId": "b1"}}),
        json!({"type": "message", "data": {"chatId": chat, "content": "hi all", "messageId": "b1"}}),
    ] {
        bob.send(resend).await;
        let answer = bob.recv().await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["data"]["code"], 403, "{answer}");
        assert_eq!(answer["data"]["messageId"], "b1");
    }
    alice.send_message(Some(&chat), "bob is gone", "a2").await;
    alice.recv_reply().await;
    assert_nothing_leaked(&mut bob, "bob").await;
}

/// Waits until the server has processed everything `ws` sent so far.
async fn assert_nothing_leaked_after_own_frames(ws: &mut Ws) {
    ws.send(json!({"type": "ping", "data": {"timestamp": 7}}))
        .await;
    ws.recv_type("pong").await;
}
