//! Token rules of issue 7 end to end: a token whose `nbf` is still ahead (beyond the leeway)
//! is refused like an expired one by the edge (401, close 1008) and by the core on its own
//! (`UNAUTHENTICATED`); an HS256 secret under 32 bytes stops either server at start, naming
//! its variable.

use chat_proto::pb::chat::{ListModelsRequest, chat_service_client::ChatServiceClient};
use chat_tests::{SECRET, Ws, log_capture, spawn_default};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A token signed with the stack's secret, `nbf` seconds from now (recorded for the log scan).
fn starting_in(user: &str, nbf: i64) -> String {
    let now = i64::try_from(chat_auth::now_secs()).expect("time");
    let claims = json!({"sub": user, "exp": now + 7200, "nbf": now + nbf});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign");
    log_capture::record("token", &token);
    token
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    request
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused_by_the_edge_and_the_core() {
    let stack = spawn_default().await;
    // An hour ahead: far beyond the 30 s leeway.
    let early = starting_in("early-bird", 3600);

    // The edge: query string and header, at the upgrade.
    let mut ws = Ws::open(&format!("{}?token={early}", stack.ws_url())).await;
    assert_eq!(
        ws.recv().await["data"],
        json!({"code": 401, "message": "Authentication failed", "retryable": false})
    );
    assert_eq!(ws.recv_close().await, Some(1008));
    let mut request = stack.ws_url().into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {early}").parse().expect("header"),
    );
    let (mut ws, _) = Ws::open_request(request).await.expect("upgrade");
    assert_eq!(ws.recv().await["data"]["code"], 401);
    assert_eq!(ws.recv_close().await, Some(1008));

    // The edge: an in-band refresh to it ends a live connection.
    let (mut ws, _) = stack.connect("early-bird").await;
    ws.send(json!({"type": "auth", "data": {"token": early}}))
        .await;
    assert_eq!(ws.recv_type("error").await["data"]["code"], 401);
    assert_eq!(ws.recv_close().await, Some(1008));

    // The edge's REST routes.
    let response = reqwest::Client::new()
        .get(stack.http_url("/api/sessions"))
        .bearer_auth(&early)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);

    // The core on its own, through a direct gRPC client: the same refusal.
    let mut core = ChatServiceClient::new(stack.grpc().await);
    let refused = core
        .list_models(with_token(ListModelsRequest::default(), &early))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "Authentication failed");

    // Within the leeway (clock skew) the same token shape is accepted everywhere.
    let skewed = starting_in("early-bird", 10);
    let mut ws = Ws::open(&format!("{}?token={skewed}", stack.ws_url())).await;
    assert_eq!(
        ws.recv_type("session").await["data"]["userId"],
        "early-bird"
    );
    let models = core
        .list_models(with_token(ListModelsRequest::default(), &skewed))
        .await
        .expect("accepted");
    assert!(!models.into_inner().models.is_empty());
}

#[tokio::test]
async fn an_hs256_secret_under_32_bytes_stops_both_servers_naming_the_variable() {
    let short = "s".repeat(chat_auth::MIN_HS256_SECRET_BYTES - 1);
    log_capture::record("secret", &short);
    let dir = tempfile::tempdir().expect("dir");

    let mut core = chat_core::Settings {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: None,
        auth: chat_auth::AuthSettings::hs256(short.clone()),
        ..chat_core::Settings::default()
    };
    core.database.url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let err = chat_core::Application::build(core)
        .await
        .err()
        .map(|e| e.to_string())
        .expect("the core refuses to start");
    assert!(err.contains("CHAT_AUTH__SECRET"), "{err}");
    assert!(err.contains("at least 32"), "{err}");
    assert!(!err.contains(&short), "the secret is never shown: {err}");

    // As the binaries load it: from the environment.
    let env = [("CHAT_EDGE_AUTH__SECRET".to_string(), short.clone())];
    let edge = chat_edge::EdgeSettings::load_from(None, env).expect("loads");
    let err = chat_edge::Edge::build(edge)
        .await
        .err()
        .map(|e| e.to_string())
        .expect("the edge refuses to start");
    assert!(err.contains("CHAT_EDGE_AUTH__SECRET"), "{err}");
    assert!(err.contains("at least 32"), "{err}");
    assert!(!err.contains(&short), "the secret is never shown: {err}");

    // 32 bytes are enough.
    let env = [(
        "CHAT_EDGE_AUTH__SECRET".to_string(),
        "s".repeat(chat_auth::MIN_HS256_SECRET_BYTES),
    )];
    let mut edge = chat_edge::EdgeSettings::load_from(None, env).expect("loads");
    edge.http_addr = "127.0.0.1:0".parse().expect("addr");
    assert!(chat_edge::Edge::build(edge).await.is_ok());
}
