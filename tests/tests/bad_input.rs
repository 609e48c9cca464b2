//! Every kind of bad input over a real socket gets the documented error, changes nothing, and
//! leaves the connection working (except where the protocol says to close).

use chat_core::storage;
use chat_tests::{Stack, StackOptions, Ws, spawn_default};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// alice's chat (one turn) and bob's chat, as (stack, alice's socket, alice's chat, bob's chat).
async fn two_chats() -> (Stack, Ws, String, String) {
    two_chats_with(StackOptions::default()).await
}

async fn two_chats_with(options: StackOptions) -> (Stack, Ws, String, String) {
    let stack = chat_tests::spawn_stack(options).await;
    let (mut bob, _) = stack.connect("bob").await;
    bob.send_message(None, "bob's private chat", "b1").await;
    let bob_chat = bob.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    bob.recv_reply().await;
    let (mut alice, _) = stack.connect("alice").await;
    alice.send_message(None, "alice's chat", "a1").await;
    let alice_chat = alice.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    alice.recv_reply().await;
    (stack, alice, alice_chat, bob_chat)
}

/// (what is wrong, raw frame, expected code, expected field, expected message fragment)
fn cases(
    mine: &str,
    theirs: &str,
) -> Vec<(
    &'static str,
    String,
    u64,
    Option<&'static str>,
    &'static str,
)> {
    let f = |v: Value| v.to_string();
    let long = "x".repeat(10_001);
    let big_context: serde_json::Map<String, Value> = (0..300)
        .map(|i| (format!("key{i}"), json!("valuevaluevaluevaluevaluevalue")))
        .collect();
    let many_ids: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    vec![
        (
            "not JSON",
            "this is not json".into(),
            400,
            None,
            "Invalid JSON",
        ),
        (
            "truncated JSON",
            "{\"type\":\"message\",".into(),
            400,
            None,
            "Invalid JSON",
        ),
        ("an array", "[1,2,3]".into(), 400, None, ""),
        ("no type", f(json!({"data": {}})), 400, Some("type"), ""),
        (
            "unknown type",
            f(json!({"type": "bogus", "data": {}})),
            400,
            Some("type"),
            "Unknown message type",
        ),
        (
            "type not a string",
            f(json!({"type": 7, "data": {}})),
            400,
            Some("type"),
            "",
        ),
        (
            "data not an object",
            f(json!({"type": "message", "data": "hi"})),
            400,
            Some("data"),
            "",
        ),
        (
            "message without content",
            f(json!({"type": "message", "data": {"messageId": "e1"}})),
            400,
            Some("data.content"),
            "",
        ),
        (
            "message without messageId",
            f(json!({"type": "message", "data": {"content": "hi"}})),
            400,
            Some("data.messageId"),
            "",
        ),
        (
            "content a number",
            f(json!({"type": "message", "data": {"content": 5, "messageId": "e2"}})),
            400,
            Some("data.content"),
            "",
        ),
        (
            "content blank",
            f(json!({"type": "message", "data": {"content": "   ", "messageId": "e3"}})),
            400,
            Some("data.content"),
            "",
        ),
        (
            "content too long",
            f(json!({"type": "message", "data": {"content": long, "messageId": "e4"}})),
            413,
            Some("data.content"),
            "",
        ),
        (
            "messageId too long",
            f(json!({"type": "message", "data": {"content": "hi", "messageId": "m".repeat(65)}})),
            400,
            Some("data.messageId"),
            "",
        ),
        (
            "chatId unknown",
            f(
                json!({"type": "message", "data": {"chatId": "no-such-chat", "content": "hi", "messageId": "e5"}}),
            ),
            404,
            None,
            "",
        ),
        (
            "chatId of another user",
            f(
                json!({"type": "message", "data": {"chatId": theirs, "content": "hi", "messageId": "e6"}}),
            ),
            403,
            None,
            "Access denied to chat",
        ),
        (
            "chatId malformed",
            f(
                json!({"type": "message", "data": {"chatId": "../../etc", "content": "hi", "messageId": "e7"}}),
            ),
            400,
            Some("data.chatId"),
            "",
        ),
        (
            "chatId a number",
            f(
                json!({"type": "message", "data": {"chatId": 12, "content": "hi", "messageId": "e8"}}),
            ),
            400,
            Some("data.chatId"),
            "",
        ),
        (
            "unknown agent",
            f(
                json!({"type": "message", "data": {"content": "hi", "messageId": "e9", "agentId": "nobody"}}),
            ),
            400,
            Some("data.agentId"),
            "",
        ),
        (
            "context too large",
            f(
                json!({"type": "message", "data": {"content": "hi", "messageId": "e10", "context": big_context}}),
            ),
            413,
            Some("data.context"),
            "",
        ),
        (
            "context not an object",
            f(
                json!({"type": "message", "data": {"content": "hi", "messageId": "e11", "context": [1]}}),
            ),
            400,
            Some("data.context"),
            "",
        ),
        (
            "unknown attachment",
            f(
                json!({"type": "message", "data": {"content": "hi", "messageId": "e12", "attachments": ["file-1"]}}),
            ),
            404,
            None,
            "",
        ),
        (
            "attachments not strings",
            f(
                json!({"type": "message", "data": {"content": "hi", "messageId": "e13", "attachments": [1]}}),
            ),
            400,
            None,
            "",
        ),
        (
            "typing without chatId",
            f(json!({"type": "typing", "data": {"isTyping": true}})),
            400,
            Some("data.chatId"),
            "",
        ),
        (
            "typing flag a string",
            f(json!({"type": "typing", "data": {"chatId": mine, "isTyping": "yes"}})),
            400,
            Some("data.isTyping"),
            "",
        ),
        (
            "typing in another user's chat",
            f(json!({"type": "typing", "data": {"chatId": theirs, "isTyping": true}})),
            403,
            None,
            "",
        ),
        (
            "receipt with no ids",
            f(json!({"type": "read_receipt", "data": {"chatId": mine, "messageIds": []}})),
            400,
            Some("data.messageIds"),
            "",
        ),
        (
            "receipt with 101 ids",
            f(json!({"type": "read_receipt", "data": {"chatId": mine, "messageIds": many_ids}})),
            400,
            Some("data.messageIds"),
            "",
        ),
        (
            "receipt for unknown messages",
            f(json!({"type": "read_receipt", "data": {"chatId": mine, "messageIds": ["nope"]}})),
            404,
            None,
            "",
        ),
        (
            "unknown chat action",
            f(json!({"type": "chat_update", "data": {"action": "explode", "chatId": mine}})),
            400,
            Some("data.action"),
            "",
        ),
        (
            "join another user's chat",
            f(json!({"type": "chat_update", "data": {"action": "join", "chatId": theirs}})),
            403,
            None,
            "Access denied to chat",
        ),
        (
            "join an unknown chat",
            f(json!({"type": "chat_update", "data": {"action": "join", "chatId": "nope"}})),
            404,
            None,
            "",
        ),
        (
            "select an unknown model",
            f(
                json!({"type": "chat_update", "data": {"action": "select_model", "chatId": mine, "model": "gpt-9"}}),
            ),
            400,
            Some("data.model"),
            "",
        ),
        (
            "rename to blank",
            f(
                json!({"type": "chat_update", "data": {"action": "rename", "chatId": mine, "title": "  "}}),
            ),
            400,
            Some("data.title"),
            "",
        ),
        (
            "rename another user's chat",
            f(
                json!({"type": "chat_update", "data": {"action": "rename", "chatId": theirs, "title": "mine now"}}),
            ),
            403,
            None,
            "",
        ),
        (
            "end another user's chat",
            f(json!({"type": "chat_update", "data": {"action": "end", "chatId": theirs}})),
            403,
            None,
            "",
        ),
        (
            "history limit 0",
            f(json!({"type": "history", "data": {"chatId": mine, "limit": 0}})),
            400,
            Some("data.limit"),
            "",
        ),
        (
            "history limit 101",
            f(json!({"type": "history", "data": {"chatId": mine, "limit": 101}})),
            400,
            Some("data.limit"),
            "",
        ),
        (
            "history bad cursor",
            f(json!({"type": "history", "data": {"chatId": mine, "before": "abc"}})),
            400,
            Some("data.before"),
            "",
        ),
        (
            "history of another user's chat",
            f(json!({"type": "history", "data": {"chatId": theirs}})),
            403,
            None,
            "",
        ),
        (
            "stop in another user's chat",
            f(json!({"type": "stop", "data": {"chatId": theirs}})),
            403,
            None,
            "",
        ),
        (
            "resume chats not a list",
            f(json!({"type": "resume", "data": {"chats": 3}})),
            400,
            Some("data.chats"),
            "",
        ),
        (
            "resume another user's chat",
            f(json!({"type": "resume", "data": {"chats": [{"chatId": theirs, "lastSeq": 0}]}})),
            403,
            None,
            "",
        ),
        (
            "resume negative seq",
            f(json!({"type": "resume", "data": {"chats": [{"chatId": mine, "lastSeq": -1}]}})),
            400,
            None,
            "",
        ),
        (
            "presence offline from a client",
            f(json!({"type": "presence", "data": {"status": "offline"}})),
            400,
            Some("data.status"),
            "",
        ),
        (
            "presence unknown status",
            f(json!({"type": "presence", "data": {"status": "busy"}})),
            400,
            Some("data.status"),
            "",
        ),
    ]
}

#[tokio::test]
async fn every_bad_frame_gets_its_documented_error_and_changes_nothing() {
    let (stack, mut ws, mine, theirs) = two_chats().await;
    for (what, frame, code, field, fragment) in cases(&mine, &theirs) {
        ws.send_text(&frame).await;
        let error = ws.recv().await;
        assert_eq!(
            error["type"], "error",
            "{what}: expected an error, got {error}"
        );
        let data = &error["data"];
        assert_eq!(data["code"], code, "{what}: {error}");
        if let Some(field) = field {
            assert_eq!(data["field"], field, "{what}: {error}");
        }
        assert!(
            data["message"]
                .as_str()
                .is_some_and(|m| m.contains(fragment) && !m.is_empty()),
            "{what}: {error}"
        );
        assert!(
            data["retryable"].is_boolean(),
            "{what}: retryable is always present"
        );
    }

    // Errors name the frame they answer.
    ws.send(json!({"type": "history", "messageId": "frame-7", "data": {"chatId": "nope"}}))
        .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["messageId"], "frame-7");

    // The connection still works.
    ws.send(json!({"type": "ping", "data": {"timestamp": 1234}}))
        .await;
    let pong = ws.recv_type("pong").await;
    assert_eq!(pong["data"]["timestamp"], 1234);

    // Nothing was stored: each chat still has its one turn.
    for chat in [&mine, &theirs] {
        let (rows, _) = storage::history(&stack.db, chat, None, 100)
            .await
            .expect("history");
        assert_eq!(rows.len(), 2, "chat {chat} unchanged");
        let chat_row = storage::get_chat(&stack.db, chat)
            .await
            .expect("get")
            .expect("chat");
        assert_eq!(chat_row.status, "active");
        assert_ne!(chat_row.title, "mine now");
    }
    assert_eq!(
        storage::list_user_chats(&stack.db, "alice", 100)
            .await
            .expect("chats")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_binary_frame_gets_400_and_the_connection_keeps_working() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.inner
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .expect("send");
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 400);
    ws.send(json!({"type": "ping", "data": {"timestamp": 1}}))
        .await;
    ws.recv_type("pong").await;
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_the_connection_with_1009() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("alice").await;
    let huge =
        json!({"type": "message", "data": {"content": "y".repeat(70 * 1024), "messageId": "big"}});
    let _ = ws.inner.send(Message::Text(huge.to_string().into())).await;
    assert_eq!(ws.recv_close().await, Some(1009));
    assert!(
        storage::list_user_chats(&stack.db, "alice", 10)
            .await
            .expect("chats")
            .is_empty()
    );
}

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test]
async fn a_barrage_of_random_frames_never_breaks_the_connection_or_touches_others_data() {
    let options = StackOptions::default().edge(|e| e.limits.frames_per_minute = 10_000);
    let (stack, mut ws, mine, theirs) = two_chats_with(options).await;
    // Every frame type but `auth` (a bad token there closes the socket, by design), plus two
    // that do not exist.
    let mut types: Vec<&str> = chat_edge::frames::CLIENT_FRAME_TYPES
        .into_iter()
        .filter(|t| *t != "auth")
        .collect();
    types.extend(["bogus", ""]);
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(9_007_199_254_740_993u64),
        json!(""),
        json!("x"),
        json!("../../etc/passwd"),
        json!("\u{0}\u{7}"),
        json!("🙂".repeat(3000)),
        json!([]),
        json!([1, "a", null]),
        json!({}),
        json!({"nested": {"deep": [1, 2, 3]}}),
        json!(mine),
        json!(theirs),
        json!([mine]),
        json!([theirs]),
        json!("join"),
        json!("select_model"),
        json!("remove_member"),
        json!("rename"),
        json!("end"),
        json!("online"),
        json!("offline"),
        json!("demo"),
        json!("x".repeat(70)),
    ];
    let fields = [
        "chatId",
        "content",
        "messageId",
        "isTyping",
        "messageIds",
        "action",
        "title",
        "model",
        "agentId",
        "userId",
        "before",
        "limit",
        "chats",
        "reason",
        "status",
        "timestamp",
        "context",
        "attachments",
        "lastSeq",
        "streaming",
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for _ in 0..400 {
        let mut data = serde_json::Map::new();
        for _ in 0..(rng.next() % 6) {
            data.insert((*rng.pick(&fields)).to_string(), rng.pick(&values).clone());
        }
        let mut frame = json!({"type": *rng.pick(&types), "data": data});
        if rng.next().is_multiple_of(4) {
            frame["messageId"] = rng.pick(&values).clone();
        }
        ws.send(frame).await;
    }
    // The connection still answers, after everything above was handled.
    ws.send(json!({"type": "ping", "data": {"timestamp": 4242}}))
        .await;
    let (pong, _) = ws
        .recv_until(|f| f["type"] == "pong" && f["data"]["timestamp"] == 4242)
        .await;
    assert_eq!(pong["data"]["timestamp"], 4242);
    // bob's chat is exactly as bob left it.
    let (rows, _) = storage::history(&stack.db, &theirs, None, 100)
        .await
        .expect("history");
    assert_eq!(rows.len(), 2);
    let chat = storage::get_chat(&stack.db, &theirs)
        .await
        .expect("get")
        .expect("chat");
    assert_eq!(
        (chat.status.as_str(), chat.title.as_str(), chat.needs_help),
        ("active", "bob's private chat", false)
    );
    assert_eq!(
        storage::member_ids(&stack.db, &theirs)
            .await
            .expect("members"),
        vec!["bob"]
    );
}
