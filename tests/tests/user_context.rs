//! User context documents: an internal service (or an admin) pushes a user's tasks, groups and
//! preferences over REST (`PUT /api/users/{id}/context`, seed 000's `POST
//! /api/chat/context/{id}`) or gRPC (`SetUserContext`), the user and services read it back, and
//! the next reply's prompt carries it, rendered one field per line. Bad bodies, strangers and
//! oversized documents are refused and change nothing.

use chat_core::llm::LlmSettings;
use chat_proto::pb::chat::{self as pb, chat_service_client::ChatServiceClient};
use chat_tests::fake_llm::FakeScript;
use chat_tests::{Llm, StackOptions, authorized, spawn_default, spawn_stack};
use serde_json::{Value, json};

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The document the tests store; its texts are secrets the log scan looks for.
fn document() -> Value {
    for text in ["Finish the essay", "Read chapter 4", "Chess club"] {
        chat_tests::log_capture::record("context", text);
    }
    json!({
        "tasks": ["Finish the essay", "Read chapter 4"],
        "groups": ["Physics", "Chess club"],
        "preferences": {"tone": "brief"},
    })
}

#[tokio::test]
async fn a_service_pushes_a_users_context_and_the_next_prompt_carries_it() {
    let script = FakeScript::reply(&["Noted."]);
    let stack = spawn_stack(StackOptions::default().llm(Llm::OpenAi(script))).await;
    let service = stack.token("tasks-service", &["service"]);
    let url = stack.http_url("/api/users/ada/context");

    let (status, stored) = call(
        reqwest::Method::PUT,
        &url,
        Some(&service),
        Some(document().to_string()),
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["userId"], "ada");
    assert_eq!(stored["tasks"], document()["tasks"]);
    assert_eq!(stored["updatedBy"], "tasks-service");
    assert!(
        stored["lastUpdated"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // The user reads their own document back.
    let ada = stack.token("ada", &[]);
    let (status, read) = call(reqwest::Method::GET, &url, Some(&ada), None).await;
    assert_eq!((status, &read), (200, &stored));

    let (mut ws, _) = stack.connect("ada").await;
    ws.send_message(None, "What should I do next?", "ctx-1")
        .await;
    ws.recv_type("ack").await;
    ws.recv_reply().await;
    let body = &stack.fake.as_ref().expect("fake llm").requests()[0];
    let settings = LlmSettings::default();
    let agent = settings
        .agents
        .iter()
        .find(|a| a.id == settings.default_agent)
        .expect("default agent");
    assert_eq!(
        body["messages"][0],
        json!({
            "role": "system",
            "content": format!(
                "{}\n\nWhat is known about the user (their context document):\n\
                 - groups: Physics, Chess club\n- preferences: {{\"tone\":\"brief\"}}\n\
                 - tasks: Finish the essay, Read chapter 4",
                agent.system_prompt
            ),
        }),
        "{body}"
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "What should I do next?"})
    );
    stack.stop().await;
}

#[tokio::test]
async fn seed_000s_route_and_grpc_set_and_read_the_same_document() {
    let stack = spawn_default().await;
    let service = stack.token("tasks-service", &["service"]);
    // Seed 000's context model: `userId` and `lastUpdated` belong to the record.
    let mut body = document();
    body["userId"] = "someone-else".into();
    body["lastUpdated"] = "2020-01-01T00:00:00Z".into();
    let (status, stored) = call(
        reqwest::Method::POST,
        &stack.http_url("/api/chat/context/grace"),
        Some(&service),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["userId"], "grace");
    assert_ne!(stored["lastUpdated"], "2020-01-01T00:00:00Z");

    let mut client = ChatServiceClient::new(stack.grpc().await);
    let got = client
        .get_user_context(authorized(
            pb::GetUserContextRequest {
                user_id: "grace".into(),
            },
            &service,
        ))
        .await
        .expect("get")
        .into_inner();
    let got_doc = chat_proto::json::struct_to_json(got.document.as_ref().expect("document"));
    assert_eq!(Value::Object(got_doc), document());

    // gRPC replaces it; REST reads the new one.
    let Value::Object(next) = json!({"tasks": ["Revise"]}) else {
        unreachable!("an object literal")
    };
    client
        .set_user_context(authorized(
            pb::SetUserContextRequest {
                user_id: "grace".into(),
                document: Some(chat_proto::json::struct_from_json(&next)),
            },
            &service,
        ))
        .await
        .expect("set");
    let (status, read) = call(
        reqwest::Method::GET,
        &stack.http_url("/api/chat/context/grace"),
        Some(&service),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read["tasks"], json!(["Revise"]));
    assert!(read.get("groups").is_none(), "replaced, not merged: {read}");
    stack.stop().await;
}

#[tokio::test]
async fn strangers_bad_bodies_and_oversized_documents_are_refused_and_change_nothing() {
    let stack = spawn_default().await;
    let service = stack.token("tasks-service", &["service"]);
    let url = stack.http_url("/api/users/lin/context");
    let (status, _) = call(
        reqwest::Method::PUT,
        &url,
        Some(&service),
        Some(document().to_string()),
    )
    .await;
    assert_eq!(status, 200);

    let user = stack.token("lin", &[]);
    let stranger = stack.token("mallory", &[]);
    let huge = json!({"notes": "x".repeat(70 * 1024)}).to_string();
    /// What is tried, how, with which token and body, and the status it must get.
    type Case<'a> = (
        &'a str,
        reqwest::Method,
        Option<&'a str>,
        Option<String>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "no token",
            reqwest::Method::PUT,
            None,
            Some("{}".into()),
            401,
        ),
        (
            "the user sets their own",
            reqwest::Method::PUT,
            Some(&user),
            Some("{}".into()),
            403,
        ),
        (
            "a stranger reads",
            reqwest::Method::GET,
            Some(&stranger),
            None,
            403,
        ),
        (
            "not JSON",
            reqwest::Method::PUT,
            Some(&service),
            Some("tasks: none".into()),
            400,
        ),
        (
            "not an object",
            reqwest::Method::PUT,
            Some(&service),
            Some("[1, 2]".into()),
            400,
        ),
        (
            "over 64 KiB",
            reqwest::Method::PUT,
            Some(&service),
            Some(huge),
            413,
        ),
    ];
    for (what, method, token, body, want) in cases {
        let (status, error) = call(method, &url, token, body).await;
        assert_eq!(status, want, "{what}: {error}");
        assert_eq!(error["error"]["code"], want, "{what}: {error}");
    }
    let (status, read) = call(reqwest::Method::GET, &url, Some(&user), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["tasks"], document()["tasks"], "unchanged");

    let (status, error) = call(
        reqwest::Method::GET,
        &stack.http_url("/api/users/nobody/context"),
        Some(&service),
        None,
    )
    .await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!(404)));
    stack.stop().await;
}

/// The context service a deployment may name in `chat.context_url`: kim has a document, lou's
/// lookup fails (500), max's never answers. Counts the lookups per user.
async fn context_service() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/users/{id}/context",
            axum::routing::get(
                |State(hits): State<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
                 Path(id): Path<String>| async move {
                    hits.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(id.clone());
                    match id.as_str() {
                        "kim" => axum::Json(json!({"tasks": ["Water the plants"]})).into_response(),
                        "lou" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                        _ => std::future::pending().await,
                    }
                },
            ),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

#[tokio::test]
async fn a_document_not_pushed_is_fetched_from_the_context_url_cached_and_never_holds_up_a_reply() {
    let (addr, hits) = context_service().await;
    let script = FakeScript::reply(&["Noted."]);
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(script))
            .core(move |c| {
                c.chat.context_url = format!("http://{addr}/users/{{userId}}/context");
                c.chat.context_fetch_timeout_ms = 300;
            }),
    )
    .await;
    let systems = |stack: &chat_tests::Stack| -> Vec<String> {
        stack
            .fake
            .as_ref()
            .expect("fake llm")
            .requests()
            .iter()
            .map(|b| {
                b["messages"][0]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let section = "What is known about the user (their context document):\n";

    // kim: fetched once, used by both replies.
    let (mut kim, _) = stack.connect("kim").await;
    kim.send_message(None, "first", "k-1").await;
    let chat = kim.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    kim.recv_reply().await;
    kim.send_message(Some(&chat), "second", "k-2").await;
    kim.recv_type("ack").await;
    kim.recv_reply().await;
    let fetched = format!("{section}- tasks: Water the plants");
    assert!(
        systems(&stack).iter().all(|s| s.ends_with(&fetched)),
        "{:?}",
        systems(&stack)
    );
    assert_eq!(
        *hits.lock().unwrap_or_else(|p| p.into_inner()),
        vec!["kim"],
        "cached"
    );

    // lou (500) and max (no answer within 300 ms): answered without a document.
    for user in ["lou", "max"] {
        let (mut ws, _) = stack.connect(user).await;
        ws.send_message(None, "hello", &format!("{user}-1")).await;
        ws.recv_type("ack").await;
        let reply = ws.recv_reply().await;
        let fin = reply
            .iter()
            .find(|f| f["type"] == "message")
            .expect("the final message");
        assert_eq!(fin["data"]["message"]["status"], "complete", "{user}");
        let last = systems(&stack).last().cloned().unwrap_or_default();
        assert!(!last.contains(section), "{user}: {last}");
    }

    // A pushed document wins over the service's.
    let service = stack.token("tasks-service", &["service"]);
    let (status, _) = call(
        reqwest::Method::PUT,
        &stack.http_url("/api/users/kim/context"),
        Some(&service),
        Some(json!({"tasks": ["Pushed task"]}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    kim.send_message(Some(&chat), "third", "k-3").await;
    kim.recv_type("ack").await;
    kim.recv_reply().await;
    let last = systems(&stack).last().cloned().unwrap_or_default();
    assert!(
        last.ends_with(&format!("{section}- tasks: Pushed task")),
        "{last}"
    );
    assert_eq!(
        hits.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|h| *h == "kim")
            .count(),
        1
    );
    stack.stop().await;
}

/// The whole request each provider gets for a turn with everything in it: the agent's prompt,
/// the user's document, the message's own `context`, and the chat's history before the new
/// message, byte for byte as the upstream API expects it.
#[tokio::test]
async fn the_upstream_request_carries_agent_prompt_document_message_context_and_history() {
    for anthropic in [false, true] {
        let script = FakeScript::reply(&["Answer."]);
        let llm = if anthropic {
            Llm::Anthropic(script)
        } else {
            Llm::OpenAi(script)
        };
        let stack = spawn_stack(StackOptions::default().llm(llm)).await;
        let service = stack.token("tasks-service", &["service"]);
        let (status, _) = call(
            reqwest::Method::PUT,
            &stack.http_url("/api/users/ivy/context"),
            Some(&service),
            Some(json!({"groups": ["Biology"]}).to_string()),
        )
        .await;
        assert_eq!(status, 200);
        let (mut ws, _) = stack.connect("ivy").await;
        ws.send_message(None, "What is a cell?", "p-1").await;
        let chat = ws.recv_type("ack").await["data"]["chatId"]
            .as_str()
            .expect("chat")
            .to_string();
        ws.recv_reply().await;
        ws.send(json!({"type": "message", "messageId": "p-2", "data": {
            "chatId": chat, "content": "And a nucleus?", "context": {"page": "chapter-2"}}}))
            .await;
        ws.recv_type("ack").await;
        ws.recv_reply().await;

        let settings = LlmSettings::default();
        let agent = settings
            .agents
            .iter()
            .find(|a| a.id == settings.default_agent)
            .expect("default agent");
        let system = format!(
            "{}\n\nWhat is known about the user (their context document):\n- groups: Biology\
             \n\nContext the application attached to the latest message (JSON):\n{{\"page\":\"chapter-2\"}}",
            agent.system_prompt
        );
        let history = json!([
            {"role": "user", "content": "What is a cell?"},
            {"role": "assistant", "content": "Answer."},
            {"role": "user", "content": "And a nucleus?"},
        ]);
        let body = stack.fake.as_ref().expect("fake").requests()[1].clone();
        let expected = if anthropic {
            json!({"model": "upstream-model", "system": system, "messages": history,
                   "max_tokens": 1024, "stream": true})
        } else {
            let mut messages = vec![json!({"role": "system", "content": system})];
            messages.extend(history.as_array().cloned().unwrap_or_default());
            json!({"model": "upstream-model", "messages": messages, "stream": true,
                   "stream_options": {"include_usage": true}, "max_tokens": 1024})
        };
        assert_eq!(body, expected, "anthropic: {anthropic}");
        stack.stop().await;
    }
}
