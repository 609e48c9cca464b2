//! The logs an operator reads (issue seeds 003 and 004): a scripted session through the real
//! edge and core, then each line it must have left in the captured JSON logs, at `info`, with
//! its ids and figures, and never a token or the message text. One test in this binary: the
//! capture is the process's, installed before anything logs.

use std::path::Path;

use chat_core::notify::{NotifySettings, SmsSettings};
use chat_tests::sms_sink::SmsSink;
use chat_tests::{StackOptions, Ws, log_capture, spawn_stack};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TEXT: &str = "Where is my parcel number 88231?";
const REASON: &str = "The assistant cannot find my parcel";

/// The captured log lines whose message is `message`.
fn lines<'a>(logs: &'a [Value], message: &str) -> Vec<&'a Value> {
    logs.iter()
        .filter(|line| line["fields"]["message"] == message)
        .collect()
}

/// The one `info` line with `message` whose fields include every `(key, value)` of `want`;
/// panics listing the lines with that message when there is none.
fn find<'a>(logs: &'a [Value], message: &str, want: &[(&str, Value)]) -> &'a Value {
    let candidates = lines(logs, message);
    candidates
        .iter()
        .copied()
        .find(|line| {
            line["level"] == "INFO"
                && want
                    .iter()
                    .all(|(key, value)| line["fields"][key] == *value)
        })
        .unwrap_or_else(|| panic!("no info line {message:?} with {want:?} among {candidates:#?}"))
}

fn read_logs(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn a_scripted_session_leaves_every_operator_line_with_ids_and_no_text() {
    let path = log_capture::capture_file();
    let mut sink = SmsSink::start().await;
    let sms = SmsSettings {
        base_url: sink.base_url.clone(),
        account: "AC0000000001".into(),
        from: "+15550100".into(),
        to: vec!["+15550199".into()],
        token: Some("sms-token-for-log-tests".to_string().into()),
        ..SmsSettings::default()
    };
    let stack = spawn_stack(StackOptions::default().core(move |c| {
        c.chat.typing_per_minute = 1;
        c.notify = NotifySettings {
            sms: Some(sms),
            ..NotifySettings::default()
        };
    }))
    .await;

    // A refused token.
    let mut refused = Ws::open(&format!("{}?token=not-a-token", stack.ws_url())).await;
    assert_eq!(refused.recv_type("error").await["data"]["code"], 401);

    // A session: connect, a turn, one typing event too many, a help request.
    let (mut alice, session) = stack.connect("dora").await;
    let conn_id = session["data"]["connectionId"].clone();
    alice.send_message(None, TEXT, "log-1").await;
    let ack = alice.recv_type("ack").await;
    let chat = ack["data"]["chatId"].clone();
    alice.recv_reply().await;
    for _ in 0..2 {
        alice
            .send(json!({"type": "typing", "data": {"chatId": chat, "isTyping": true}}))
            .await;
    }
    let limited = alice.recv_type("error").await;
    assert_eq!(limited["data"]["code"], 429);
    alice
        .send(json!({"type": "help_request", "data": {"chatId": chat, "reason": REASON}}))
        .await;
    sink.next().await;

    // An operator takes the session over and hands it back.
    let (mut admin, _) = stack.connect_with_roles("olga", &["admin"]).await;
    admin
        .send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    admin.recv_type("operator_joined").await;
    admin
        .send(json!({"type": "release", "data": {"chatId": chat}}))
        .await;
    admin.recv_type("operator_left").await;

    // The user leaves (close 1000); the operator's socket is closed by the shutdown (1012).
    alice
        .inner
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .expect("close");
    // Answered (or dropped) once the edge has read the close, and logged it.
    alice.recv_close().await;
    stack.stop().await;

    let logs = read_logs(&path);
    let user = json!("dora");
    find(
        &logs,
        "authentication failed",
        &[("reason", json!("token invalid: not a JWT"))],
    );
    find(
        &logs,
        "socket connected",
        &[("user", user.clone()), ("conn", conn_id.clone())],
    );
    let reply = find(
        &logs,
        "reply stored",
        &[("chat", chat.clone()), ("user", user.clone())],
    );
    for key in [
        "model",
        "status",
        "ttft_ms",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
    ] {
        assert!(
            !reply["fields"][key].is_null(),
            "reply stored without {key}: {reply}"
        );
    }
    assert_eq!(reply["fields"]["status"], "complete");
    find(
        &logs,
        "rate limit hit",
        &[("user", user.clone()), ("limit", json!("typing"))],
    );
    find(
        &logs,
        "help requested",
        &[("chat", chat.clone()), ("user", user.clone())],
    );
    find(
        &logs,
        "notification sent",
        &[
            ("chat", chat.clone()),
            ("user", user.clone()),
            ("channel", json!("sms")),
        ],
    );
    find(
        &logs,
        "takeover started",
        &[
            ("chat", chat.clone()),
            ("user", user.clone()),
            ("operator", json!("olga")),
        ],
    );
    find(
        &logs,
        "takeover ended",
        &[
            ("chat", chat.clone()),
            ("operator", json!("olga")),
            ("how", json!("release")),
        ],
    );
    let closed = find(
        &logs,
        "socket closed",
        &[
            ("user", user.clone()),
            ("conn", conn_id),
            ("close_code", json!(1000)),
        ],
    );
    assert!(closed["fields"]["duration_ms"].is_u64(), "{closed}");
    find(
        &logs,
        "socket closed",
        &[("user", json!("olga")), ("close_code", json!(1012))],
    );

    // Never the text, the reason or a token.
    assert!(well_formed(&logs), "every line has a level and fields");
    for line in &logs {
        let text = line.to_string();
        assert!(
            !text.contains("parcel number 88231"),
            "message text logged: {text}"
        );
        assert!(!text.contains(REASON), "help reason logged: {text}");
        assert!(!text.contains("not-a-token"), "token logged: {text}");
    }
}

/// Every captured line is an object with a level and fields (the JSON format operators ship).
fn well_formed(logs: &[Value]) -> bool {
    logs.iter()
        .all(|line| line["level"].is_string() && line["fields"].is_object())
}
