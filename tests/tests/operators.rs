//! Humans in the loop over real sockets: help requests, takeover, operator messages, release,
//! and the lease an operator loses when they vanish.

use chat_core::storage;
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Backend, Llm, StackOptions, Ws, spawn_default, spawn_stack};
use serde_json::json;

/// alice's chat after one finished turn.
async fn alice_chat(ws: &mut Ws) -> String {
    ws.send_message(None, "I have a question", "a-1").await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    ws.recv_reply().await;
    chat
}

#[tokio::test]
async fn an_operator_takes_over_and_hands_back_on_sqlite() {
    an_operator_takes_over_chats_with_the_user_and_hands_back_to_the_assistant(Backend::Sqlite)
        .await;
}

#[tokio::test]
async fn an_operator_takes_over_and_hands_back_on_postgres() {
    an_operator_takes_over_chats_with_the_user_and_hands_back_to_the_assistant(Backend::Postgres)
        .await;
}

async fn an_operator_takes_over_chats_with_the_user_and_hands_back_to_the_assistant(
    backend: Backend,
) {
    let script = FakeScript::reply(&["Happy ", "to help"]);
    let stack = spawn_stack(
        StackOptions::default()
            .backend(backend)
            .llm(Llm::OpenAi(script)),
    )
    .await;
    let (mut alice, _) = stack.connect("alice").await;
    let chat = alice_chat(&mut alice).await;
    let (mut admin, _) = stack.connect_with_roles("admin", &["admin"]).await;
    let (mut admin2, _) = stack.connect_with_roles("admin2", &["admin"]).await;

    alice
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    assert_eq!(
        alice.recv_type("error").await["data"]["code"],
        403,
        "only admins take over"
    );

    admin
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    let operator = json!({"id": "admin", "name": "admin name"});
    for ws in [&mut alice, &mut admin] {
        let joined = ws.recv_type("operator_joined").await;
        assert_eq!(
            joined["data"],
            json!({"chatId": chat, "operator": operator})
        );
        assert_eq!(joined["seq"], 3);
        let update = ws.recv_type("chat_update").await;
        assert_eq!(update["data"]["updates"], json!({"operator": operator}));
        assert_eq!(update["seq"], 4);
    }
    admin2
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    let conflict = admin2.recv_type("error").await;
    assert_eq!(conflict["data"]["code"], 409);

    // The user's message reaches the operator, and the assistant stays silent.
    alice
        .send_message(Some(&chat), "Can a person help?", "a-2")
        .await;
    alice.recv_type("ack").await;
    let seen = alice.recv_type("message").await;
    assert_eq!(seen["data"]["message"]["content"], "Can a person help?");
    let at_admin = admin.recv_type("message").await;
    assert_eq!(at_admin["data"]["message"]["userId"], "alice");
    alice
        .expect_silence(std::time::Duration::from_millis(400))
        .await;

    // The operator's message appears with role admin and their name.
    admin
        .send_message(Some(&chat), "Hi, I'm a human. How can I help?", "op-1")
        .await;
    let from_operator = alice.recv_type("message").await;
    let m = &from_operator["data"]["message"];
    assert_eq!(m["role"], "admin");
    assert_eq!(m["userId"], "admin");
    assert_eq!(m["metadata"]["operatorName"], "admin name");
    alice
        .expect_silence(std::time::Duration::from_millis(300))
        .await;

    // Release: the user sees the operator leave; the assistant answers again, told about it.
    admin2
        .send(json!({"type": "release", "data": {"chatId": chat}}))
        .await;
    assert_eq!(
        admin2.recv_type("error").await["data"]["code"],
        409,
        "only the holder releases"
    );
    admin
        .send(json!({"type": "release", "data": {"chatId": chat}}))
        .await;
    let left = alice.recv_type("operator_left").await;
    assert_eq!(left["data"], json!({"chatId": chat, "operator": operator}));
    let update = alice.recv_type("chat_update").await;
    assert_eq!(update["data"]["updates"], json!({"operator": null}));

    alice.send_message(Some(&chat), "Thanks!", "a-3").await;
    let reply = alice.recv_reply().await;
    let fin = reply
        .iter()
        .find(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .expect("reply");
    assert_eq!(fin["data"]["message"]["content"], "Happy to help");
    let request = stack
        .fake
        .as_ref()
        .expect("fake")
        .requests()
        .last()
        .cloned()
        .expect("request");
    let prompt = request.to_string();
    assert!(
        prompt.contains("human support operator"),
        "the prompt says an operator handled messages"
    );
    assert!(
        prompt.contains("[Human operator admin name]: Hi, I'm a human."),
        "operator turns are marked"
    );

    let row = storage::get_chat(&stack.db, &chat)
        .await
        .expect("get")
        .expect("chat");
    assert!(row.admin_assisted);
    assert_eq!(row.operator_id, None);
}

#[tokio::test]
async fn taking_over_stops_the_reply_in_flight_and_no_assistant_text_follows() {
    let script = FakeScript::reply(&["one ", "two ", "three"]).hanging_after(2);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut alice, _) = stack.connect("alice").await;
    alice.send_message(None, "go on", "a-1").await;
    let chat = alice.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    alice.recv_type("message_chunk").await;
    alice.recv_type("message_chunk").await;

    let (mut admin, _) = stack.connect_with_roles("admin", &["admin"]).await;
    admin
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    let (_, before) = alice.recv_until(|f| f["type"] == "operator_joined").await;
    let stopped = before
        .iter()
        .find(|f| f["type"] == "message")
        .expect("the stopped reply comes first");
    assert_eq!(stopped["data"]["message"]["status"], "stopped");
    assert_eq!(stopped["data"]["message"]["content"], "one two ");
    let (_, after) = alice.recv_until(|f| f["type"] == "chat_update").await;
    assert!(
        after
            .iter()
            .all(|f| f["type"] != "message_chunk" && f["type"] != "message"),
        "{after:?}"
    );
    alice
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
    assert!(
        stack
            .fake
            .as_ref()
            .expect("fake")
            .wait_for_disconnect(chat_tests::WAIT)
            .await
    );
}

#[tokio::test]
async fn an_operator_who_vanishes_loses_the_chat_after_the_lease() {
    let stack = spawn_stack(StackOptions::default().core(|c| c.chat.operator_lease_secs = 1)).await;
    let (mut alice, _) = stack.connect("alice").await;
    let chat = alice_chat(&mut alice).await;
    let (mut admin, _) = stack.connect_with_roles("admin", &["admin"]).await;
    admin
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    alice.recv_type("operator_joined").await;
    admin.recv_type("operator_joined").await;
    admin.recv_type("chat_update").await;
    // While connected, the lease is renewed: still held after two lease periods.
    admin
        .expect_silence(std::time::Duration::from_millis(2200))
        .await;
    assert_eq!(
        storage::get_chat(&stack.db, &chat)
            .await
            .expect("get")
            .expect("chat")
            .operator_id
            .as_deref(),
        Some("admin")
    );
    drop(admin);
    let left = alice.recv_type("operator_left").await;
    assert_eq!(left["data"]["operator"]["id"], "admin");
    // The assistant answers again.
    alice.send_message(Some(&chat), "anyone?", "a-2").await;
    let reply = alice.recv_reply().await;
    assert!(
        reply
            .iter()
            .any(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
    );
}

#[tokio::test]
async fn a_help_request_flags_the_chat_once() {
    let stack = spawn_default().await;
    let (mut alice, _) = stack.connect("alice").await;
    let chat = alice_chat(&mut alice).await;
    alice
        .send(
            json!({"type": "help_request", "data": {"chatId": chat, "reason": "I need a person"}}),
        )
        .await;
    let update = alice.recv_type("chat_update").await;
    assert_eq!(update["data"]["updates"], json!({"needsHelp": true}));
    assert_eq!(update["seq"], 3);
    assert!(
        storage::get_chat(&stack.db, &chat)
            .await
            .expect("get")
            .expect("chat")
            .needs_help
    );
    alice
        .send(json!({"type": "help_request", "data": {"chatId": chat}}))
        .await;
    assert_eq!(alice.recv_type("error").await["data"]["code"], 409);
    let (mut bob, _) = stack.connect("bob").await;
    bob.send(json!({"type": "help_request", "data": {"chatId": chat}}))
        .await;
    assert_eq!(bob.recv_type("error").await["data"]["code"], 403);
}
