//! A reply outlives its core: two real `chat-core` processes over one PostgreSQL and a real
//! Redis, an edge on each. Alice's first tab (edge A, core A) asks; her second tab (edge B,
//! core B) follows the chat. Core A is killed (SIGKILL) mid-reply. Core B sees A's heartbeat
//! go, claims the reply and continues it under the same message id: the second tab's chunks go
//! on, numbered after the last one it got, and the final message is the whole demo reply,
//! exactly what was streamed. The first tab reconnects through edge B, resumes from the last
//! chunk it saw, and ends with the same reply, each chunk once.
//!
//! And while both cores live: a socket that moves to the other core mid-reply resumes there,
//! getting the chunks that crossed from the streaming core and then the rest, each once.

use std::time::{Duration, Instant};

use chat_tests::core_process::CoreProcess;
use chat_tests::edge_process::EdgeProcess;
use chat_tests::redis_server::RedisServer;
use chat_tests::{ReplyText, Ws, fresh_postgres_database, token};
use serde_json::{Value, json};

/// The demo model at 100 ms a word: a reply of about 50 words streams for 5 s, so the kill
/// lands mid-reply.
fn config(redis_url: &str) -> String {
    format!(
        r#"
[llm.providers.demo]
kind = "demo"
word_delay_ms = 100

[cluster]
redis_url = "{redis_url}"
"#
    )
}

/// Two cores over one PostgreSQL and one Redis, an edge on each, and Alice's first tab on
/// edge A with a new chat.
struct Two {
    _redis: RedisServer,
    _dirs: [tempfile::TempDir; 2],
    core_a: CoreProcess,
    core_b: CoreProcess,
    edge_a: EdgeProcess,
    edge_b: EdgeProcess,
    first: Ws,
    chat: String,
    token: String,
}

impl Two {
    async fn start() -> Self {
        // The binaries run beside this test's build.
        chat_tests::chatctl_path();
        let redis = RedisServer::start().await;
        let database = fresh_postgres_database().await;
        let config = config(&redis.url());
        let dirs = [
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        ];
        let core_a = CoreProcess::start(dirs[0].path(), &config, &database);
        let core_b = CoreProcess::start(dirs[1].path(), &config, &database);
        let edge_a = EdgeProcess::start(core_a.addr);
        let edge_b = EdgeProcess::start(core_b.addr);
        let token = token("alice");
        let mut first = Ws::open(&edge_a.ws_url(&token)).await;
        first.recv_type("session").await;
        first
            .send(json!({"type": "chat_update", "data": {"action": "create"}}))
            .await;
        let created = first.recv_type("chat_update").await;
        let chat = created["data"]["chatId"]
            .as_str()
            .expect("chat")
            .to_string();
        Self {
            _redis: redis,
            _dirs: dirs,
            core_a,
            core_b,
            edge_a,
            edge_b,
            first,
            chat,
            token,
        }
    }
}

/// Reads `ws` until the assistant's final message, checking each chunk is the next one.
async fn until_final(ws: &mut Ws, seen: &mut ReplyText) -> Value {
    loop {
        let frame: Value = ws.recv().await;
        match frame["type"].as_str() {
            Some("message_chunk") => seen.push(&frame),
            Some("message") if frame["data"]["message"]["role"] == "assistant" => return frame,
            _ => {}
        }
    }
}

/// Asks the long question in `chat` and reads the reply's first three chunks: the question's
/// `seq`, the reply's id, and what streamed.
async fn ask(ws: &mut Ws, chat: &str) -> (i64, String, ReplyText) {
    ws.send_message(Some(chat), QUESTION, "q-1").await;
    let asked_at = ws.recv_type("ack").await["data"]["seq"]
        .as_i64()
        .expect("seq");
    let mut seen = ReplyText::after(-1, "");
    let mut reply_id = String::new();
    while seen.next_index < 3 {
        let chunk = ws.recv_type("message_chunk").await;
        reply_id = chunk["data"]["messageId"].as_str().expect("id").to_string();
        seen.push(&chunk);
    }
    (asked_at, reply_id, seen)
}

/// A question whose quote makes the demo's reply long.
const QUESTION: &str = "Please tell me, in as many words as you can manage, how a reply can \
                        outlive the process that started streaming it to me";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_core_is_killed_is_continued_by_another_core() {
    let Two {
        mut core_a,
        core_b,
        edge_a: _edge_a,
        edge_b,
        mut first,
        chat,
        token,
        // Bound, so Redis and the cores' folders live to the end of the test.
        _redis,
        _dirs,
    } = Two::start().await;
    let mut second = Ws::open(&edge_b.ws_url(&token)).await;
    second.recv_type("session").await;
    second
        .send(json!({"type": "chat_update", "data": {"action": "join", "chatId": chat}}))
        .await;
    second.recv_type("history").await;

    // Both tabs get the first chunks, the second through Redis.
    let (asked_at, reply_id, mut seen_first) = ask(&mut first, &chat).await;
    let mut seen_second = ReplyText::after(-1, "");
    while seen_second.next_index < 3 {
        seen_second.push(&second.recv_type("message_chunk").await);
    }

    core_a.stop("KILL");
    let killed = Instant::now();

    // The second tab's stream goes on: the chunks A sent before it died, then B's, numbered
    // on, under the same id, until the final message.
    let mut continued_after = None;
    let fin = loop {
        let frame: Value = second.recv().await;
        match frame["type"].as_str() {
            Some("message_chunk") => {
                assert_eq!(frame["data"]["messageId"], reply_id.as_str(), "{frame}");
                seen_second.push(&frame);
                continued_after.get_or_insert_with(|| killed.elapsed());
            }
            Some("message") if frame["data"]["message"]["role"] == "assistant" => break frame,
            _ => {}
        }
    };
    let message = &fin["data"]["message"];
    assert_eq!(
        message["id"],
        reply_id.as_str(),
        "the id its chunks carried"
    );
    assert_eq!(message["status"], "complete", "{fin}");
    assert_eq!(fin["seq"], asked_at + 1, "{fin}");
    let content = message["content"].as_str().expect("content");
    assert_eq!(
        content, seen_second.text,
        "the final message is exactly what streamed"
    );
    assert!(
        content.starts_with("This is the built-in demo model")
            && content.ends_with("for real answers."),
        "the whole demo reply, continued where it stopped, nothing repeated: {content:?}"
    );
    let continued_after = continued_after.expect("chunks after the kill");
    eprintln!(
        "the first chunk after the kill reached the other core's member {continued_after:?} after it"
    );
    // The heartbeat lives 3 s and each core looks every second: within about 4 s by design;
    // the bound leaves room for a loaded machine.
    assert!(
        continued_after < Duration::from_secs(8),
        "taken over {continued_after:?} after the kill"
    );

    // The first tab lost its core: its edge closes it (try again later), and it reconnects
    // through the other edge and resumes.
    let closed = first.recv_close().await;
    assert!(
        closed.is_some_and(|code| code != 1008),
        "closed with {closed:?}"
    );
    let mut first = Ws::open(&edge_b.ws_url(&token)).await;
    first.recv_type("session").await;
    first
        .send(json!({"type": "resume", "data": {"chats": [{
            "chatId": chat,
            "lastSeq": asked_at,
            "streaming": {"messageId": reply_id, "lastIndex": seen_first.next_index - 1},
        }]}}))
        .await;
    let fin = until_final(&mut first, &mut seen_first).await;
    assert_eq!(fin["data"]["message"]["id"], reply_id.as_str());
    assert_eq!(fin["seq"], asked_at + 1);
    assert!(
        content.starts_with(&seen_first.text),
        "the resumed tab's chunks are the start of the same reply: {:?}",
        seen_first.text
    );
    assert!(core_b.panics().is_empty(), "{:?}", core_b.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_streaming_on_one_core_resumes_through_another() {
    let Two {
        core_a,
        core_b,
        edge_a: _edge_a,
        edge_b,
        mut first,
        chat,
        token,
        // Bound, so Redis and the cores' folders live to the end of the test.
        _redis,
        _dirs,
    } = Two::start().await;
    let (asked_at, reply_id, mut seen) = ask(&mut first, &chat).await;
    // The socket moves to the other edge, on the other core, while core A still streams:
    // core B sends the chunks that crossed since, then the rest live, each once.
    drop(first);
    let mut moved = Ws::open(&edge_b.ws_url(&token)).await;
    moved.recv_type("session").await;
    moved
        .send(json!({"type": "resume", "data": {"chats": [{
            "chatId": chat,
            "lastSeq": asked_at,
            "streaming": {"messageId": reply_id, "lastIndex": seen.next_index - 1},
        }]}}))
        .await;
    let fin = until_final(&mut moved, &mut seen).await;
    let message = &fin["data"]["message"];
    assert_eq!(message["id"], reply_id.as_str());
    assert_eq!(message["status"], "complete");
    assert_eq!(fin["seq"], asked_at + 1);
    assert_eq!(
        message["content"], seen.text,
        "replayed and live chunks add up to the stored reply"
    );
    assert!(core_a.panics().is_empty() && core_b.panics().is_empty());
}
