//! `chatctl` driven as a process against a running stack: the session list with each filter,
//! sort and page checked against what the database holds, session detail, the help queue, the
//! live feed, a takeover through a pipe while a reply streams, usage equal to the stored usage,
//! health, and the one-line errors and exit codes for a missing, invalid or non-admin token and
//! for an unreachable core.

use std::collections::{BTreeMap, BTreeSet};

use chat_core::storage::{self, ChatRow};
use chat_tests::fake_llm::FakeScript;
use chat_tests::{
    Backend, Llm, Stack, StackOptions, chat_with_one_turn, operator_sessions, run_chatctl,
    spawn_default, spawn_stack,
};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// The exit codes of `chatctl --help`.
const EXIT_UNREACHABLE: i32 = 3;
const EXIT_UNAUTHENTICATED: i32 = 4;
const EXIT_NOT_ADMIN: i32 = 5;
const EXIT_CONFLICT: i32 = 8;

async fn chatctl(stack: &Stack, token: &str, args: &[&str]) -> chat_tests::CliRun {
    let run = run_chatctl(stack.chatctl(Some(token)), args, None).await;
    assert_eq!(run.code, Some(0), "chatctl {args:?} failed: {run:?}");
    run
}

async fn rows(stack: &Stack, chats: &BTreeMap<&'static str, String>) -> Vec<ChatRow> {
    let mut rows = Vec::new();
    for id in chats.values() {
        rows.push(
            storage::get_chat(&stack.db, id)
                .await
                .expect("read chat")
                .expect("chat stored"),
        );
    }
    rows
}

fn ids(list: &Value) -> Vec<String> {
    list["sessions"]
        .as_array()
        .expect("sessions array")
        .iter()
        .map(|s| s["chatId"].as_str().expect("chatId").to_owned())
        .collect()
}

fn set(ids: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    ids.into_iter().collect()
}

fn rfc3339(at: chrono::NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[tokio::test]
async fn sessions_list_filters_sorts_and_pages_as_the_database_says_on_sqlite() {
    sessions_list_matches_the_database(Backend::Sqlite).await;
}

#[tokio::test]
async fn sessions_list_filters_sorts_and_pages_as_the_database_says_on_postgres() {
    sessions_list_matches_the_database(Backend::Postgres).await;
}

async fn sessions_list_matches_the_database(backend: Backend) {
    let stack = spawn_stack(StackOptions::default().backend(backend)).await;
    let chats = operator_sessions(&stack).await;
    let rows = rows(&stack, &chats).await;
    let admin = stack.token("admin", &["admin"]);
    let everyone = set(rows.iter().map(|r| r.id.clone()));

    let list = |args: Vec<String>| {
        let stack = &stack;
        let admin = admin.clone();
        async move {
            let mut full = vec![
                "sessions".to_owned(),
                "list".to_owned(),
                "--json".to_owned(),
            ];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            chatctl(stack, &admin, &refs).await.json()
        }
    };
    let matching = |keep: &dyn Fn(&ChatRow) -> bool| {
        set(rows.iter().filter(|r| keep(r)).map(|r| r.id.clone()))
    };

    assert_eq!(set(ids(&list(vec![]).await)), everyone);
    // Each filter, against the stored rows.
    let filters: Vec<(Vec<&str>, BTreeSet<String>)> = vec![
        (
            vec!["--user", "alice"],
            matching(&|r| r.owner_id == "alice"),
        ),
        (
            vec!["--status", "ended"],
            matching(&|r| r.status == "ended"),
        ),
        (
            vec!["--status", "active"],
            matching(&|r| r.status == "active"),
        ),
        (vec!["--needs-help"], matching(&|r| r.needs_help)),
        (vec!["--needs-help=false"], matching(&|r| !r.needs_help)),
        (vec!["--assisted"], matching(&|r| r.admin_assisted)),
        (vec!["--assisted=false"], matching(&|r| !r.admin_assisted)),
        (
            vec![
                "--status",
                "active",
                "--assisted=false",
                "--needs-help=false",
            ],
            matching(&|r| r.status == "active" && !r.admin_assisted && !r.needs_help),
        ),
    ];
    for (args, expected) in filters {
        let got = set(ids(
            &list(args.iter().map(|a| a.to_string()).collect()).await
        ));
        assert_eq!(got, expected, "chatctl sessions list {args:?}");
        assert!(!expected.is_empty(), "the fixture covers {args:?}");
    }
    // The time range: started at or after `from`, before `to`.
    let mut by_start = rows.clone();
    by_start.sort_by_key(|r| r.started_at);
    let (from, to) = (by_start[1].started_at, by_start[3].started_at);
    let got = set(ids(&list(vec![
        "--from".into(),
        rfc3339(from),
        "--to".into(),
        rfc3339(to),
    ])
    .await));
    assert_eq!(
        got,
        matching(&|r| r.started_at >= from && r.started_at < to),
        "time range"
    );
    let today = chrono::Utc::now().date_naive().to_string();
    let got = set(ids(&list(vec![
        "--from".into(),
        today.clone(),
        "--to".into(),
        today,
    ])
    .await));
    assert_eq!(got, everyone, "plain dates cover the whole UTC day");

    // Each sort, both ways: the stored values come out in order (durations as the session's
    // metrics store them).
    let by_id: BTreeMap<String, &ChatRow> = rows.iter().map(|r| (r.id.clone(), r)).collect();
    let mut durations = BTreeMap::new();
    for id in by_id.keys() {
        let (_, metrics) = storage::session_of(&stack.db, id)
            .await
            .expect("read metrics")
            .expect("metrics stored");
        durations.insert(id.clone(), metrics.duration_ms);
    }
    for sort in ["last-activity", "started", "duration", "user"] {
        for order in ["--asc", "--desc"] {
            let got = ids(&list(vec!["--sort".into(), sort.into(), order.into()]).await);
            assert_eq!(set(got.clone()), everyone, "{sort} {order}");
            let keys: Vec<String> = got
                .iter()
                .map(|id| {
                    let r = by_id[id];
                    match sort {
                        "last-activity" => rfc3339(r.last_activity_at),
                        "started" => rfc3339(r.started_at),
                        "duration" => format!("{:020}", durations[id]),
                        _ => r.owner_id.clone(),
                    }
                })
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if order == "--desc" {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "sorted by {sort} {order}");
        }
    }
    // The default is last activity, newest first.
    let newest_first = ids(&list(vec![]).await);
    assert_eq!(
        newest_first,
        ids(&list(vec![
            "--sort".into(),
            "last-activity".into(),
            "--desc".into()
        ])
        .await)
    );

    // Cursor paging: pages of two, then --all with pages of one, give the same order.
    let first = list(vec!["--limit".into(), "2".into()]).await;
    assert_eq!(ids(&first), newest_first[..2]);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = list(vec![
        "--limit".into(),
        "2".into(),
        "--cursor".into(),
        cursor,
    ])
    .await;
    assert_eq!(ids(&second), newest_first[2..]);
    assert_eq!(second["nextCursor"], Value::Null);
    let all = list(vec!["--limit".into(), "1".into(), "--all".into()]).await;
    assert_eq!(ids(&all), newest_first);

    // The table for people: a header and one line per session.
    let table = chatctl(&stack, &admin, &["sessions", "list"]).await.stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("CHAT"), "{table}");
    assert_eq!(lines.len(), 1 + rows.len(), "{table}");
    for id in &newest_first {
        assert!(table.contains(id.as_str()), "{table}");
    }
}

#[tokio::test]
async fn sessions_show_prints_metrics_transcript_audit_and_help_requests() {
    let stack = spawn_default().await;
    let chats = operator_sessions(&stack).await;
    let admin = stack.token("admin", &["admin"]);
    let bob = &chats["bob"];
    let detail = chatctl(&stack, &admin, &["sessions", "show", bob, "--json"])
        .await
        .json();
    let (stored, _) = storage::history(&stack.db, bob, None, 100)
        .await
        .expect("history");
    assert_eq!(detail["session"]["chatId"], bob.as_str());
    assert_eq!(detail["session"]["ownerId"], "bob");
    assert_eq!(detail["session"]["adminAssisted"], true);
    let messages = detail["transcript"]["messages"]
        .as_array()
        .expect("messages");
    assert_eq!(
        messages.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        stored.iter().map(|m| json!(m.id)).collect::<Vec<_>>()
    );
    let metrics = &detail["session"]["metrics"];
    assert_eq!(metrics["userMessages"], 1);
    assert_eq!(metrics["assistantMessages"], 1);
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| a["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["takeover", "release"]);
    assert_eq!(detail["audit"][0]["actorId"], "admin");

    let alice = &chats["alice"];
    let detail = chatctl(&stack, &admin, &["sessions", "show", alice, "--json"])
        .await
        .json();
    assert_eq!(detail["helpRequests"][0]["reason"], "a person please");
    let text = chatctl(&stack, &admin, &["sessions", "show", alice])
        .await
        .stdout;
    for expected in [
        "transcript",
        "audit",
        "help requests",
        "needs help",
        "a person please",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    let missing = run_chatctl(
        stack.chatctl(Some(&admin)),
        &["sessions", "show", "no-such-chat"],
        None,
    )
    .await;
    assert_eq!(missing.code, Some(7), "{missing:?}");
}

#[tokio::test]
async fn the_help_queue_lists_and_resolves_requests() {
    let stack = spawn_default().await;
    let chats = operator_sessions(&stack).await;
    let admin = stack.token("admin", &["admin"]);
    let open = chatctl(&stack, &admin, &["help-requests", "--json"])
        .await
        .json();
    let requests = open["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 1, "{open}");
    let request = &requests[0];
    assert_eq!(request["chatId"], chats["alice"].as_str());
    assert_eq!(request["userId"], "alice");
    assert_eq!(request["reason"], "a person please");
    assert_eq!(request["resolvedAt"], Value::Null);
    let id = request["id"].as_str().expect("id").to_owned();

    let table = chatctl(&stack, &admin, &["help-requests"]).await.stdout;
    assert!(
        table.contains(&id) && table.contains("a person please"),
        "{table}"
    );

    let resolved = chatctl(&stack, &admin, &["help-requests", "resolve", &id]).await;
    assert!(resolved.stdout.contains(&id), "{resolved:?}");
    let row = storage::get_chat(&stack.db, &chats["alice"])
        .await
        .expect("read")
        .expect("chat");
    assert!(!row.needs_help, "resolving clears the flag");
    let open = chatctl(&stack, &admin, &["help-requests", "--json"])
        .await
        .json();
    assert_eq!(open["requests"], json!([]));
    let all = chatctl(&stack, &admin, &["help-requests", "--all", "--json"])
        .await
        .json();
    assert_eq!(all["requests"][0]["id"], id.as_str());
    assert_eq!(all["requests"][0]["resolvedBy"], "admin");
    let again = run_chatctl(
        stack.chatctl(Some(&admin)),
        &["help-requests", "resolve", &id],
        None,
    )
    .await;
    assert_eq!(again.code, Some(EXIT_CONFLICT), "{again:?}");
}

#[tokio::test]
async fn watch_prints_one_line_per_change_as_it_happens() {
    let stack = spawn_default().await;
    let admin = stack.token("admin", &["admin"]);
    let mut cmd = stack.chatctl(Some(&admin));
    cmd.args(["watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("chatctl watch starts");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = tokio::time::timeout(chat_tests::WAIT, stderr.next_line())
        .await
        .expect("watch subscribes")
        .expect("stderr");
    assert!(ready.is_some_and(|l| l.contains("watching")));
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();

    let (mut alice, _) = stack.connect("alice").await;
    let chat = chat_with_one_turn(&mut alice, "watch me").await;
    // Until the reply is stored: the session's changes in the order they happened (other kinds,
    // such as the automatic title, may come between).
    let mut kinds = Vec::new();
    while kinds
        .last()
        .map(|(k, r): &(String, Value)| (k.as_str(), r.clone()))
        != Some(("message", json!("assistant")))
    {
        let line = tokio::time::timeout(chat_tests::WAIT, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("only {kinds:?} arrived"))
            .expect("stdout")
            .expect("watch keeps running");
        let change: Value = serde_json::from_str(&line).expect("one JSON object per line");
        assert_eq!(change["chatId"], chat.as_str(), "{line}");
        assert_eq!(change["userId"], "alice");
        assert!(
            change["at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        kinds.push((
            change["kind"].as_str().expect("kind").to_owned(),
            change["role"].clone(),
        ));
    }
    assert_eq!(kinds[0].0, "created", "{kinds:?}");
    let user_message = kinds
        .iter()
        .position(|k| *k == ("message".to_owned(), json!("user")))
        .expect("the user's message");
    assert!(user_message < kinds.len() - 1, "{kinds:?}");
    child.kill().await.expect("stop watch");
}

#[tokio::test]
async fn takeover_through_a_pipe_while_a_reply_streams_hands_back_after_its_line_is_acked() {
    let script = FakeScript::reply(&["one ", "two ", "three"]).hanging_after(2);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let (mut alice, _) = stack.connect("alice").await;
    alice.send_message(None, "tell me more", "a-1").await;
    let chat = alice.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    alice.recv_type("message_chunk").await;
    alice.recv_type("message_chunk").await;

    let admin = stack.token("admin", &["admin"]);
    let run = run_chatctl(
        stack.chatctl(Some(&admin)),
        &["takeover", &chat],
        Some("Hello, I am a person.\n/release\n"),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("holding"), "{run:?}");
    assert!(
        run.stdout.contains("user alice: tell me more"),
        "the transcript streams in: {run:?}"
    );
    assert!(run.stdout.contains("Hello, I am a person."), "{run:?}");
    assert!(run.stdout.contains("handed back"), "{run:?}");

    // The user: the stopped reply, the operator joining, the operator's line, the operator leaving.
    let (joined, before) = alice.recv_until(|f| f["type"] == "operator_joined").await;
    assert_eq!(
        joined["data"]["operator"],
        json!({"id": "admin", "name": "admin name"})
    );
    let stopped = before
        .iter()
        .find(|f| f["type"] == "message")
        .expect("the reply in flight is stored first");
    assert_eq!(stopped["data"]["message"]["status"], "stopped");
    let (_, during) = alice.recv_until(|f| f["type"] == "operator_left").await;
    let from_operator: Vec<&Value> = during.iter().filter(|f| f["type"] == "message").collect();
    assert_eq!(from_operator.len(), 1, "{during:?}");
    let m = &from_operator[0]["data"]["message"];
    assert_eq!(m["role"], "admin");
    assert_eq!(m["content"], "Hello, I am a person.");
    assert_eq!(m["metadata"]["operatorName"], "admin name");
    assert!(
        during
            .iter()
            .all(|f| f["type"] != "message_chunk" && f["data"]["message"]["role"] != "assistant"),
        "no assistant text after operator_joined: {during:?}"
    );

    let row = storage::get_chat(&stack.db, &chat)
        .await
        .expect("read")
        .expect("chat");
    assert!(row.admin_assisted);
    assert_eq!(row.operator_id, None, "released");
    let (stored, _) = storage::history(&stack.db, &chat, None, 100)
        .await
        .expect("history");
    assert!(
        stored
            .iter()
            .any(|m| m.content == "Hello, I am a person." && m.role == "admin")
    );
}

#[tokio::test]
async fn usage_by_user_model_and_day_equals_the_stored_usage_on_sqlite() {
    usage_equals_the_stored_usage(Backend::Sqlite).await;
}

#[tokio::test]
async fn usage_by_user_model_and_day_equals_the_stored_usage_on_postgres() {
    usage_equals_the_stored_usage(Backend::Postgres).await;
}

async fn usage_equals_the_stored_usage(backend: Backend) {
    let script = FakeScript::reply(&["fine ", "thanks"]).with_usage(11, 7);
    let stack = spawn_stack(
        StackOptions::default()
            .backend(backend)
            .llm(Llm::OpenAi(script)),
    )
    .await;
    let mut chats = Vec::new();
    for (user, turns) in [("alice", 2), ("bob", 1)] {
        let (mut ws, _) = stack.connect(user).await;
        let chat = chat_with_one_turn(&mut ws, "hi").await;
        for turn in 1..turns {
            ws.send_message(Some(&chat), "again", &format!("{user}-{turn}"))
                .await;
            ws.recv_reply().await;
        }
        chats.push(chat);
    }
    chat_tests::usage_stored(&stack.db, &chats).await;
    // What the database holds, by user, model and day.
    let mut expected: BTreeMap<(&str, String), (i64, i64, i64)> = BTreeMap::new();
    for chat in &chats {
        let (messages, _) = storage::history(&stack.db, chat, None, 100)
            .await
            .expect("history");
        for m in messages.iter().filter(|m| m.role == "assistant") {
            let u = storage::usage_for_message(&stack.db, &m.id)
                .await
                .expect("usage")
                .expect("a usage row per reply");
            let day = u.created_at.date().to_string();
            for key in [
                ("user", u.user_id.clone()),
                ("model", u.model.clone()),
                ("day", day),
            ] {
                let e = expected.entry(key).or_default();
                *e = (e.0 + 1, e.1 + u.prompt_tokens, e.2 + u.completion_tokens);
            }
        }
    }
    let admin = stack.token("admin", &["admin"]);
    for by in ["user", "model", "day"] {
        let usage = chatctl(&stack, &admin, &["usage", "--by", by, "--json"])
            .await
            .json();
        assert_eq!(usage["by"], by);
        let rows: BTreeMap<String, (i64, i64, i64)> = usage["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let n = |k: &str| r[k].as_i64().expect("number");
                (
                    r["key"].as_str().expect("key").to_owned(),
                    (n("replies"), n("promptTokens"), n("completionTokens")),
                )
            })
            .collect();
        let want: BTreeMap<String, (i64, i64, i64)> = expected
            .iter()
            .filter(|((group, _), _)| *group == by)
            .map(|((_, key), v)| (key.clone(), *v))
            .collect();
        assert_eq!(rows, want, "usage by {by}");
        let total = want
            .values()
            .fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
        assert_eq!(usage["total"]["replies"], total.0);
        assert_eq!(usage["total"]["promptTokens"], total.1);
        assert_eq!(usage["total"]["completionTokens"], total.2);
    }
    assert_eq!(expected[&("user", "alice".to_owned())], (2, 22, 14));
    let table = chatctl(&stack, &admin, &["usage", "--by", "user"])
        .await
        .stdout;
    assert!(table.starts_with("USER"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("TOTAL") && l.contains("54")),
        "{table}"
    );
    // A range that ends before the replies holds none.
    let none = chatctl(
        &stack,
        &admin,
        &["usage", "--by", "user", "--to", "2000-01-01", "--json"],
    )
    .await
    .json();
    assert_eq!(none["rows"], json!([]));
}

#[tokio::test]
async fn health_exits_zero_when_the_core_is_serving() {
    let stack = spawn_default().await;
    let run = run_chatctl(stack.chatctl(None), &["health"], None).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("SERVING"), "{run:?}");
}

#[tokio::test]
async fn a_non_admin_or_missing_or_invalid_token_gets_one_line_and_its_own_exit_code() {
    let stack = spawn_default().await;
    let alice = stack.token("alice", &[]);
    let cases: [(Option<&str>, i32, &str); 3] = [
        (Some(&alice), EXIT_NOT_ADMIN, "not an admin"),
        (None, EXIT_UNAUTHENTICATED, "no token"),
        (Some("not-a-jwt"), EXIT_UNAUTHENTICATED, "refused the token"),
    ];
    for (token, code, says) in cases {
        for args in [
            &["sessions", "list"][..],
            &["usage"],
            &["help-requests"],
            &["watch"],
        ] {
            let run = run_chatctl(stack.chatctl(token), args, None).await;
            assert_eq!(run.code, Some(code), "{args:?} with {token:?}: {run:?}");
            assert!(run.stdout.is_empty(), "{run:?}");
            assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
            assert!(run.stderr.starts_with("chatctl: "), "{run:?}");
            assert!(run.stderr.contains(says), "{run:?}");
        }
    }
    let run = run_chatctl(
        stack.chatctl(Some(&alice)),
        &["takeover", "some-chat"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(EXIT_NOT_ADMIN), "{run:?}");
    assert!(!run.stderr.contains(&alice), "the token is never printed");
}

#[tokio::test]
async fn an_unreachable_core_gets_one_line_and_its_own_exit_code() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let stack = spawn_default().await;
    let admin = stack.token("admin", &["admin"]);
    for args in [&["sessions", "list"][..], &["health"], &["takeover", "x"]] {
        let mut cmd = stack.chatctl(Some(&admin));
        cmd.env("CHATCTL_CORE", format!("http://127.0.0.1:{port}"));
        let run = run_chatctl(cmd, args, None).await;
        assert_eq!(run.code, Some(EXIT_UNREACHABLE), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(run.stderr.contains("cannot reach the core"), "{run:?}");
    }
    // The flag wins over the environment.
    let run = run_chatctl(
        stack.chatctl(Some(&admin)),
        &["--core", &format!("http://127.0.0.1:{port}"), "health"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(EXIT_UNREACHABLE), "{run:?}");
}
