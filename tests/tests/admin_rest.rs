//! The admin REST routes of the edge against a running stack: 401 and 403, a 400 naming the
//! parameter for every filter that cannot be read, the happy paths against what the database
//! holds, and the requests of docs/protocol.md answered as documented.

use std::collections::BTreeSet;

use chat_core::storage;
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Llm, Stack, StackOptions, operator_sessions, spawn_default, spawn_stack};
use serde_json::{Value, json};

async fn get(stack: &Stack, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(stack.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const ROUTES: [&str; 5] = [
    "/api/admin/sessions",
    "/api/admin/sessions/some-chat",
    "/api/admin/usage",
    "/api/admin/help-requests",
    "/api/admin/feed",
];

#[tokio::test]
async fn non_admins_get_403_and_callers_without_a_valid_token_401() {
    let stack = spawn_default().await;
    let alice = stack.token("alice", &[]);
    let service = stack.token("svc", &["service"]);
    for route in ROUTES {
        for token in [&alice, &service] {
            let (status, body) = get(&stack, route, Some(token)).await;
            assert_eq!(status, 403, "{route}");
            assert_eq!(
                body,
                json!({"error": {"code": 403, "message": "Admin role required"}})
            );
        }
        let (status, body) = get(&stack, route, None).await;
        assert_eq!(status, 401, "{route}");
        assert_eq!(body["error"]["code"], 401);
        let (status, _) = get(&stack, route, Some("not-a-jwt")).await;
        assert_eq!(status, 401, "{route}");
        // Even a bad filter from a non-admin is a 403: nothing is read for them.
        let (status, _) = get(&stack, &format!("{route}?limit=x&by=week"), Some(&alice)).await;
        assert_eq!(status, 403, "{route}");
    }
}

#[tokio::test]
async fn a_filter_that_cannot_be_read_is_a_400_naming_the_parameter() {
    let stack = spawn_default().await;
    let admin = stack.token("admin", &["admin"]);
    let cases = [
        ("/api/admin/sessions?needsHelp=maybe", "needsHelp"),
        ("/api/admin/sessions?assisted=1", "assisted"),
        ("/api/admin/sessions?from=yesterday", "from"),
        ("/api/admin/sessions?to=2024-13-01", "to"),
        ("/api/admin/sessions?sort=size", "sort"),
        ("/api/admin/sessions?order=up", "order"),
        ("/api/admin/sessions?limit=ten", "limit"),
        ("/api/admin/sessions/some-chat?limit=-1", "limit"),
        ("/api/admin/usage?by=week", "by"),
        ("/api/admin/usage?from=1714564800", "from"),
        // Values the core checks: the core names its field, the edge the parameter.
        ("/api/admin/sessions?limit=500", "limit"),
        ("/api/admin/sessions?limit=0", "limit"),
        ("/api/admin/sessions?status=paused", "status"),
        ("/api/admin/sessions?cursor=not-a-cursor", "cursor"),
    ];
    for (path, field) in cases {
        let (status, body) = get(&stack, path, Some(&admin)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], 400, "{path}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test]
async fn the_admin_routes_serve_what_the_core_holds() {
    let script = FakeScript::reply(&["sure"]).with_usage(5, 3);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let chats = operator_sessions(&stack).await;
    let admin = stack.token("admin", &["admin"]);
    let ids = |page: &Value| -> BTreeSet<String> {
        page["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| s["chatId"].as_str().expect("chatId").to_owned())
            .collect()
    };

    let (status, all) = get(&stack, "/api/admin/sessions", Some(&admin)).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), chats.values().cloned().collect());
    assert_eq!(all["nextCursor"], Value::Null);
    for (query, owner) in [
        ("needsHelp=true", "alice"),
        ("assisted=true", "bob"),
        ("status=ended", "carol"),
        ("user=dave", "dave"),
    ] {
        let (status, page) = get(
            &stack,
            &format!("/api/admin/sessions?{query}"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(
            ids(&page),
            BTreeSet::from([chats[owner].clone()]),
            "{query}"
        );
        assert_eq!(page["sessions"][0]["ownerId"], owner);
    }
    let (_, by_user) = get(
        &stack,
        "/api/admin/sessions?sort=user&order=asc",
        Some(&admin),
    )
    .await;
    let owners: Vec<&str> = by_user["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["ownerId"].as_str().expect("owner"))
        .collect();
    assert_eq!(owners, ["alice", "bob", "carol", "dave"]);
    let (_, first) = get(
        &stack,
        "/api/admin/sessions?sort=user&order=asc&limit=3",
        Some(&admin),
    )
    .await;
    let cursor = first["nextCursor"].as_str().expect("next page").to_owned();
    let (_, rest) = get(
        &stack,
        &format!("/api/admin/sessions?sort=user&order=asc&limit=3&cursor={cursor}"),
        Some(&admin),
    )
    .await;
    assert_eq!(rest["sessions"][0]["ownerId"], "dave");

    // Detail: the stored transcript, the takeover and release in the audit.
    let bob = &chats["bob"];
    let (status, detail) = get(&stack, &format!("/api/admin/sessions/{bob}"), Some(&admin)).await;
    assert_eq!(status, 200, "{detail}");
    let (stored, _) = storage::history(&stack.db, bob, None, 100)
        .await
        .expect("history");
    let shown: Vec<&str> = detail["transcript"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(
        shown,
        stored
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
    );
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| a["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["takeover", "release"]);
    assert_eq!(detail["session"]["metrics"]["promptTokens"], 5);
    let (status, _) = get(&stack, "/api/admin/sessions/no-such-chat", Some(&admin)).await;
    assert_eq!(status, 404);

    // Usage: one reply of 5 + 3 tokens per turn, five turns.
    let (status, usage) = get(&stack, "/api/admin/usage?by=user", Some(&admin)).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["by"], "user");
    assert_eq!(usage["total"]["replies"], 5);
    assert_eq!(usage["total"]["promptTokens"], 25);
    assert_eq!(usage["total"]["completionTokens"], 15);
    let dave = usage["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"] == "dave")
        .expect("dave's row");
    assert_eq!(dave["replies"], 2);
    assert_eq!(dave["promptTokens"], 10);
}

/// `actual` has the fields of `documented`, each with the same JSON type (or `null` where
/// either side leaves an optional field empty); each array element is shaped like the
/// documented first element.
fn same_shape(path: &str, documented: &Value, actual: &Value) -> Result<(), String> {
    match (documented, actual) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        // Message metadata carries only the keys that apply (as on the socket).
        (Value::Object(_), Value::Object(a)) if path.ends_with(".metadata") => {
            let known = [
                "model",
                "promptTokens",
                "completionTokens",
                "ttftMs",
                "latencyMs",
                "operatorName",
                "finishReason",
                "messageIndex",
                "totalMessages",
            ];
            match a.keys().find(|k| !known.contains(&k.as_str())) {
                Some(k) => Err(format!("{path}: undocumented {k}")),
                None => Ok(()),
            }
        }
        (Value::Object(d), Value::Object(a)) => {
            let dk: BTreeSet<&String> = d.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            if dk != ak {
                return Err(format!("{path}: documented {dk:?}, served {ak:?}"));
            }
            d.iter()
                .try_for_each(|(k, v)| same_shape(&format!("{path}.{k}"), v, &a[k]))
        }
        (Value::Array(d), Value::Array(a)) => match d.first() {
            Some(first) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| same_shape(&format!("{path}[{i}]"), first, v)),
            None => Ok(()),
        },
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (d, a) => Err(format!("{path}: documented {d}, served {a}")),
    }
}

/// The ```` ```{fence} ```` block of docs/protocol.md.
fn doc_block(fence: &str) -> String {
    let doc = include_str!("../../docs/protocol.md");
    let open = format!("```{fence}\n");
    let block = doc
        .split(open.as_str())
        .nth(1)
        .unwrap_or_else(|| panic!("no ```{fence} block in docs/protocol.md"));
    block.split("\n```").next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_documented_requests_are_answered_as_documented() {
    let stack = spawn_default().await;
    let chats = operator_sessions(&stack).await;
    let admin = stack.token("admin", &["admin"]);
    let alice = stack.token("alice", &[]);
    for (name, token) in [
        ("sessions", &admin),
        ("session", &admin),
        ("usage", &admin),
        ("invalid", &admin),
        ("forbidden", &alice),
    ] {
        let request = doc_block(&format!("http admin-{name}"));
        let path = request
            .strip_prefix("GET ")
            .unwrap_or_else(|| panic!("admin-{name}: a GET"))
            .trim()
            // The documented chat is bob's here: the one with an audit trail.
            .replace("chat-7", &chats["bob"]);
        let documented: Value =
            serde_json::from_str(&doc_block(&format!("json admin-{name}"))).expect("doc JSON");
        let (status, body) = get(&stack, &path, Some(token)).await;
        match documented["error"]["code"].as_u64() {
            Some(code) => {
                assert_eq!(u64::from(status), code, "{path}");
                assert_eq!(body, documented, "{path}");
            }
            None => {
                assert_eq!(status, 200, "{path}: {body}");
                same_shape(name, &documented, &body).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

/// The next `event:`/`data:` pair of a Server-Sent Events body (comments skipped).
async fn next_event(body: &mut reqwest::Response, buffer: &mut String) -> (String, Value) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !event.is_empty() {
                return (event, serde_json::from_str(&data).expect("JSON data"));
            }
            continue;
        }
        let chunk = tokio::time::timeout(chat_tests::WAIT, body.chunk())
            .await
            .expect("an event in time")
            .expect("the stream")
            .expect("the stream is open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_help_queue_and_the_live_feed_serve_the_admin_page() {
    let stack = spawn_default().await;
    let admin = stack.token("root", &["admin"]);
    // The feed, as the page's EventSource opens it: the token in the query.
    let mut feed = reqwest::Client::new()
        .get(stack.http_url(&format!("/api/admin/feed?token={admin}")))
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();

    let (mut alice, _) = stack.connect("alice").await;
    let chat = chat_tests::chat_with_one_turn(&mut alice, "hello").await;
    let (event, created) = next_event(&mut feed, &mut buffer).await;
    assert_eq!(
        (event.as_str(), &created["kind"]),
        ("change", &json!("created")),
        "{created}"
    );
    assert_eq!(
        (&created["chatId"], &created["userId"]),
        (&json!(chat), &json!("alice"))
    );
    let (_, message) = next_event(&mut feed, &mut buffer).await;
    assert_eq!(
        (&message["kind"], &message["role"]),
        (&json!("message"), &json!("user"))
    );

    alice
        .send(
            json!({"type": "help_request", "data": {"chatId": chat, "reason": "a person, please"}}),
        )
        .await;
    alice.recv_type("chat_update").await;
    let (_, help) = loop {
        let next = next_event(&mut feed, &mut buffer).await;
        if next.1["kind"] == "needs_help" {
            break next;
        }
    };
    assert_eq!(help["changes"]["needsHelp"], true, "{help}");

    let (status, queue) = get(&stack, "/api/admin/help-requests", Some(&admin)).await;
    assert_eq!(status, 200, "{queue}");
    let requests = queue["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 1, "{queue}");
    assert_eq!(
        (
            &requests[0]["chatId"],
            &requests[0]["userId"],
            &requests[0]["reason"],
            &requests[0]["resolvedAt"]
        ),
        (
            &json!(chat),
            &json!("alice"),
            &json!("a person, please"),
            &Value::Null
        )
    );
    let id = requests[0]["id"].as_str().expect("id").to_owned();
    let resolve = |token: String| {
        let url = stack.http_url(&format!("/api/admin/help-requests/{id}/resolve"));
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("resolve");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(resolve(stack.token("alice", &[])).await.0, 403);
    let (status, resolved) = resolve(admin.clone()).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["resolvedBy"], "root");
    assert!(resolved["resolvedAt"].is_string(), "{resolved}");
    assert_eq!(resolve(admin.clone()).await.0, 409);
    let (_, resolved_change) = loop {
        let next = next_event(&mut feed, &mut buffer).await;
        if next.1["kind"] == "help_resolved" {
            break next;
        }
    };
    assert_eq!(resolved_change["changes"]["needsHelp"], false);
    let (_, open) = get(&stack, "/api/admin/help-requests", Some(&admin)).await;
    assert_eq!(open["requests"], json!([]));
    let (_, all) = get(&stack, "/api/admin/help-requests?all=true", Some(&admin)).await;
    assert_eq!(all["requests"].as_array().map(Vec::len), Some(1));
    let (status, bad) = get(&stack, "/api/admin/help-requests?all=maybe", Some(&admin)).await;
    assert_eq!((status, &bad["error"]["field"]), (400, &json!("all")));
}
