//! Rooms: several users and tabs in one chat see each other's events in `seq` order; members
//! are managed by the owner; outsiders see nothing.

use std::time::Duration;

use chat_core::storage;
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Backend, Llm, StackOptions, spawn_default, spawn_stack};
use serde_json::{Value, json};

fn chat_update(action: &str, chat: &str, extra: Value) -> Value {
    let mut data = json!({"action": action, "chatId": chat});
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    json!({"type": "chat_update", "data": data})
}

/// The durable seqs of a run of frames, which must count up by one.
fn assert_contiguous(frames: &[Value], from: i64, who: &str) -> i64 {
    let seqs: Vec<i64> = frames.iter().filter_map(|f| f["seq"].as_i64()).collect();
    let expected: Vec<i64> = (from..from + seqs.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "{who} sees durable events in seq order without gaps"
    );
    from + seqs.len() as i64
}

#[tokio::test]
async fn members_and_tabs_share_a_chat_and_outsiders_see_nothing_on_sqlite() {
    members_and_tabs_share_a_chat_and_outsiders_see_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn members_and_tabs_share_a_chat_and_outsiders_see_nothing_on_postgres() {
    members_and_tabs_share_a_chat_and_outsiders_see_nothing(Backend::Postgres).await;
}

async fn members_and_tabs_share_a_chat_and_outsiders_see_nothing(backend: Backend) {
    let stack = spawn_stack(StackOptions::default().backend(backend)).await;
    let (mut alice1, _) = stack.connect("alice").await;
    alice1
        .send(json!({"type": "chat_update", "data": {"action": "create", "title": "Team room"}}))
        .await;
    let created = alice1.recv_type("chat_update").await;
    let chat = created["data"]["chatId"]
        .as_str()
        .expect("chat id")
        .to_string();
    assert_eq!(created["data"]["updates"]["title"], "Team room");
    alice1
        .send(chat_update("add_member", &chat, json!({"userId": "bob"})))
        .await;
    alice1
        .send(chat_update("add_member", &chat, json!({"userId": "bob"})))
        .await;
    assert_eq!(
        alice1.recv_type("error").await["data"]["code"],
        409,
        "adding twice is a conflict"
    );

    let (mut alice2, _) = stack.connect("alice").await;
    alice2.send(chat_update("join", &chat, json!({}))).await;
    let history = alice2.recv_type("history").await;
    assert_eq!(history["data"]["messages"], json!([]));
    assert_eq!(history["data"]["lastSeq"], 0);

    let (mut bob, _) = stack.connect("bob").await;
    bob.send(chat_update("join", &chat, json!({}))).await;
    bob.recv_type("history").await;
    // alice's first tab also saw her second tab arrive; both tabs now see bob.
    for tab in [&mut alice1, &mut alice2] {
        let (presence, _) = tab
            .recv_until(|f| f["type"] == "presence" && f["data"]["userId"] == "bob")
            .await;
        assert_eq!(
            presence["data"],
            json!({"userId": "bob", "status": "online", "chatId": chat})
        );
    }

    let (mut carol, _) = stack.connect("carol").await;
    carol.send(chat_update("join", &chat, json!({}))).await;
    let denied = carol.recv_type("error").await;
    assert_eq!(denied["data"]["code"], 403);
    assert_eq!(denied["data"]["message"], "Access denied to chat");

    // bob speaks: everyone joined sees his message and the assistant's reply.
    bob.send_message(Some(&chat), "hello team", "b-1").await;
    let is_reply_end = |f: &Value| {
        f["type"] == "typing"
            && f["data"]["userId"] == "assistant"
            && f["data"]["isTyping"] == false
    };
    let mut logs: Vec<Vec<Value>> = Vec::new();
    for ws in [&mut alice1, &mut alice2, &mut bob] {
        let (end, mut seen) = ws.recv_until(is_reply_end).await;
        seen.push(end);
        let messages: Vec<&Value> = seen.iter().filter(|f| f["type"] == "message").collect();
        assert_eq!(messages.len(), 2, "the user message and the reply");
        assert_eq!(messages[0]["data"]["message"]["content"], "hello team");
        assert_eq!(messages[0]["data"]["message"]["userId"], "bob");
        assert_eq!(messages[1]["data"]["message"]["role"], "assistant");
        logs.push(seen);
    }
    let user_message_id = logs[0]
        .iter()
        .find(|f| f["type"] == "message")
        .map(|f| f["data"]["message"]["id"].clone())
        .unwrap_or_default();

    // Typing reaches the others, not the typist.
    bob.send(json!({"type": "typing", "data": {"chatId": chat, "isTyping": true}}))
        .await;
    for tab in [&mut alice1, &mut alice2] {
        let typing = tab.recv_type("typing").await;
        assert_eq!(typing["data"]["userId"], "bob");
        assert_eq!(typing["data"]["isTyping"], true);
    }

    // A receipt is stored and broadcast with the next seq, confirmed.
    alice2.send(json!({"type": "read_receipt", "data": {"chatId": chat, "messageIds": [user_message_id]}})).await;
    for (i, ws) in [&mut alice1, &mut alice2, &mut bob].into_iter().enumerate() {
        let (receipt, before) = ws.recv_until(|f| f["type"] == "read_receipt").await;
        assert!(
            before.iter().all(|f| f["type"] != "message"),
            "nothing durable in between"
        );
        assert_eq!(
            receipt["data"],
            json!({"chatId": chat, "messageIds": [user_message_id], "userId": "alice", "confirmed": true})
        );
        logs[i].push(receipt);
    }
    // A rename is a durable chat update too (sent after everyone saw the receipt: two
    // connections' frames have no order between them).
    alice1
        .send(chat_update(
            "rename",
            &chat,
            json!({"title": "Renamed room"}),
        ))
        .await;
    for (i, ws) in [&mut alice1, &mut alice2, &mut bob].into_iter().enumerate() {
        let renamed = ws.recv_type("chat_update").await;
        assert_eq!(renamed["data"]["updates"], json!({"title": "Renamed room"}));
        logs[i].push(renamed);
        assert_contiguous(&logs[i], 1, &format!("connection {i}"));
    }
    assert_eq!(
        storage::get_chat(&stack.db, &chat)
            .await
            .expect("get")
            .expect("chat")
            .title,
        "Renamed room"
    );

    // carol saw none of it.
    carol.expect_silence(Duration::from_millis(300)).await;

    // bob steps away: his chats hear it.
    bob.send(json!({"type": "presence", "data": {"status": "away"}}))
        .await;
    for tab in [&mut alice1, &mut alice2] {
        let away = tab.recv_type("presence").await;
        assert_eq!(
            away["data"],
            json!({"userId": "bob", "status": "away", "chatId": chat})
        );
    }

    // bob's last connection leaves: the others see him go offline.
    drop(bob);
    for tab in [&mut alice1, &mut alice2] {
        let gone = tab.recv_type("presence").await;
        assert_eq!(
            gone["data"],
            json!({"userId": "bob", "status": "offline", "chatId": chat})
        );
    }

    // Removing bob takes his access away.
    alice1
        .send(chat_update(
            "remove_member",
            &chat,
            json!({"userId": "bob"}),
        ))
        .await;
    alice1
        .send(json!({"type": "ping", "data": {"timestamp": 9}}))
        .await;
    alice1.recv_type("pong").await;
    let (mut bob, _) = stack.connect("bob").await;
    bob.send(chat_update("join", &chat, json!({}))).await;
    assert_eq!(bob.recv_type("error").await["data"]["code"], 403);
}

#[tokio::test]
async fn history_pages_are_stable_while_messages_keep_arriving() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.send_message(None, "message 0", "m0").await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    ws.recv_reply().await;
    for i in 1..5 {
        ws.send_message(Some(&chat), &format!("message {i}"), &format!("m{i}"))
            .await;
        ws.recv_reply().await;
    }
    // 10 messages: seq 1..=10. Newest page first.
    ws.send(json!({"type": "history", "data": {"chatId": chat, "limit": 4}}))
        .await;
    let page = ws.recv_type("history").await;
    let seqs = |p: &Value| {
        p["data"]["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|x| x["seq"].as_i64().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(seqs(&page), vec![7, 8, 9, 10]);
    assert_eq!(page["data"]["hasMore"], true);
    assert_eq!(page["data"]["lastSeq"], 10);
    let cursor = page["data"]["cursor"].clone();

    // A new message arrives between pages; the next page is unaffected.
    ws.send_message(Some(&chat), "interloper", "m5").await;
    ws.recv_reply().await;
    ws.send(json!({"type": "history", "data": {"chatId": chat, "limit": 4, "before": cursor}}))
        .await;
    let page = ws.recv_type("history").await;
    assert_eq!(seqs(&page), vec![3, 4, 5, 6]);
    ws.send(json!({"type": "history", "data": {"chatId": chat, "limit": 4, "before": page["data"]["cursor"]}})).await;
    let page = ws.recv_type("history").await;
    assert_eq!(seqs(&page), vec![1, 2]);
    assert_eq!(page["data"]["hasMore"], false);
    assert_eq!(page["data"]["lastSeq"], 12);
}

#[tokio::test]
async fn the_chosen_model_persists_on_the_chat_and_answers_the_next_message() {
    let stack = spawn_stack(
        StackOptions::default().llm(Llm::OpenAi(FakeScript::reply(&["from ", "fake"]))),
    )
    .await;
    let (mut ws, session) = stack.connect("alice").await;
    let models: Vec<&str> = session["data"]["models"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        models.contains(&"demo") && models.contains(&"fake-openai"),
        "{models:?}"
    );
    ws.send(json!({"type": "chat_update", "data": {"action": "create", "model": "demo"}}))
        .await;
    let chat = ws.recv_type("chat_update").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    ws.send_message(Some(&chat), "hi", "m1").await;
    let reply = ws.recv_reply().await;
    let fin = reply
        .iter()
        .find(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .expect("final");
    assert_eq!(fin["data"]["message"]["metadata"]["model"], "demo");

    ws.send(chat_update(
        "select_model",
        &chat,
        json!({"model": "fake-openai"}),
    ))
    .await;
    let changed = ws.recv_type("chat_update").await;
    assert_eq!(changed["data"]["updates"], json!({"model": "fake-openai"}));
    assert_eq!(
        storage::get_chat(&stack.db, &chat)
            .await
            .expect("get")
            .expect("chat")
            .model,
        "fake-openai"
    );
    ws.send_message(Some(&chat), "again", "m2").await;
    let reply = ws.recv_reply().await;
    let fin = reply
        .iter()
        .find(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .expect("final");
    assert_eq!(fin["data"]["message"]["content"], "from fake");
    assert_eq!(fin["data"]["message"]["metadata"]["model"], "fake-openai");

    ws.send(chat_update("end", &chat, json!({}))).await;
    assert_eq!(
        ws.recv_type("chat_update").await["data"]["updates"],
        json!({"status": "ended"})
    );
    ws.send(chat_update("end", &chat, json!({}))).await;
    assert_eq!(ws.recv_type("error").await["data"]["code"], 409);
}

#[tokio::test]
async fn a_room_larger_than_presence_max_members_gets_no_presence() {
    let stack = spawn_stack(StackOptions::default().core(|core| {
        core.chat.presence_max_members = 2;
    }))
    .await;
    let (mut first, _) = stack.connect("alice").await;
    first
        .send(json!({"type": "chat_update", "data": {"action": "create", "title": "Big room"}}))
        .await;
    let created = first.recv_type("chat_update").await;
    let chat = created["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    for user in ["bob", "carol"] {
        first
            .send(chat_update("add_member", &chat, json!({"userId": user})))
            .await;
    }
    // Two joined (at the limit): the first hears the second arrive.
    let (mut bob, _) = stack.connect("bob").await;
    bob.send(chat_update("join", &chat, json!({}))).await;
    bob.recv_type("history").await;
    let (presence, _) = first
        .recv_until(|f| f["type"] == "presence" && f["data"]["userId"] == "bob")
        .await;
    assert_eq!(presence["data"]["status"], "online");
    // A third: past the limit, nobody is told, of the join or of a status change.
    let (mut carol, _) = stack.connect("carol").await;
    carol.send(chat_update("join", &chat, json!({}))).await;
    carol.recv_type("history").await;
    carol
        .send(json!({"type": "presence", "data": {"status": "away"}}))
        .await;
    // Messages still reach everyone; before carol's, no presence of hers.
    carol
        .send_message(Some(&chat), "hello big room", "c-1")
        .await;
    for ws in [&mut first, &mut bob] {
        let (message, before) = ws
            .recv_until(|f| {
                f["type"] == "message" && f["data"]["message"]["content"] == "hello big room"
            })
            .await;
        assert_eq!(message["data"]["message"]["userId"], "carol");
        assert!(
            before.iter().all(|f| f["type"] != "presence"),
            "no presence in a room past the limit: {before:?}"
        );
    }
}
