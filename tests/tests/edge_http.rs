//! Plain HTTP at the edge against hostile clients (issue 7): headers trickled one byte at a
//! time are cut off at the header-read timeout, a connection on which nothing moves is dropped
//! at the idle timeout, connections past the cap are answered 503, oversized bodies get 413 on
//! every route, every response carries the security headers, and `/metrics` can sit behind a
//! token or on its own listener. The edge runs alone (its core is never dialled by these
//! routes) and is driven over raw TCP sockets and reqwest.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_auth::AuthSettings;
use chat_edge::pages::{API_POLICY, PAGE_POLICY};
use chat_edge::{Edge, EdgeSettings};
use chat_tests::{SECRET, WAIT, edge_health, read_http_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

/// An edge on a random loopback port, with no core behind it.
struct LoneEdge {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    _stop: DropGuard,
}

async fn lone_edge(tweak: impl FnOnce(&mut EdgeSettings)) -> LoneEdge {
    let mut settings = EdgeSettings {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        // Nothing listens here; the channels connect lazily and these tests never use them.
        core_url: "http://127.0.0.1:9".into(),
        auth: AuthSettings::hs256(SECRET),
        ..EdgeSettings::default()
    };
    tweak(&mut settings);
    let edge = Edge::build(settings).await.expect("edge starts");
    let addr = edge.local_addr();
    let metrics_addr = edge.metrics_addr();
    let stop = CancellationToken::new();
    tokio::spawn(edge.run(stop.clone()));
    LoneEdge {
        addr,
        metrics_addr,
        _stop: stop.drop_guard(),
    }
}

/// Reads until the edge closes the connection (EOF or reset); returns what arrived.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buffer)).await {
            Err(_) => panic!("the edge kept the connection open"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Waits until the edge's health counts `expected` plain HTTP connections, the health request's
/// own included.
async fn http_connections_become(addr: SocketAddr, expected: u64) {
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            ticks.tick().await;
            if edge_health(addr).await["httpConnections"] == expected {
                return;
            }
        }
    })
    .await;
    assert!(reached.is_ok(), "httpConnections never became {expected}");
}

#[tokio::test]
async fn headers_sent_one_byte_at_a_time_are_cut_off_at_the_header_read_timeout() {
    let edge = lone_edge(|s| {
        s.limits.header_read_timeout_ms = 500;
        s.limits.http_idle_timeout_ms = 60_000;
    })
    .await;
    let tcp = TcpStream::connect(edge.addr).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    // A request that would take 20 s at one byte per 100 ms, each byte keeping the
    // connection busy (so the idle timeout does not apply).
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(170)
    );
    let started = Instant::now();
    let dripping = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        for byte in request.bytes() {
            ticks.tick().await;
            if write.write_all(&[byte]).await.is_err() {
                return false;
            }
        }
        true
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(WAIT, read.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    assert!(closed.is_ok(), "the edge kept a trickling connection open");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}, the timeout is 500 ms"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "served anyway: {answer}");
    assert!(
        !dripping.await.expect("dripper"),
        "the edge read the whole trickled request"
    );
}

#[tokio::test]
async fn a_connection_that_stops_reading_its_responses_is_dropped_at_the_idle_timeout() {
    let edge = lone_edge(|s| {
        s.limits.header_read_timeout_ms = 60_000;
        s.limits.http_idle_timeout_ms = 500;
    })
    .await;
    http_connections_become(edge.addr, 1).await;
    // Pipelined requests for the page's script whose answers are never read: once the
    // socket buffers are full, no byte moves either way.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(edge.addr).await.expect("connect");
    let (_read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let request = b"GET /chat.js HTTP/1.1\r\nHost: edge\r\n\r\n";
        for _ in 0..5_000 {
            if write.write_all(request).await.is_err() {
                return;
            }
        }
    });
    http_connections_become(edge.addr, 2).await;
    let stuck = Instant::now();
    http_connections_become(edge.addr, 1).await;
    assert!(
        stuck.elapsed() < WAIT,
        "the stalled connection was kept for {:?}",
        stuck.elapsed()
    );
    writer.abort();
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_and_a_freed_slot_serves_again() {
    let edge = lone_edge(|s| {
        s.limits.max_http_connections = 2;
        s.limits.header_read_timeout_ms = 60_000;
    })
    .await;
    // Two connections that send nothing hold both slots.
    let first = TcpStream::connect(edge.addr).await.expect("connect");
    let _second = TcpStream::connect(edge.addr).await.expect("connect");
    let mut third = TcpStream::connect(edge.addr).await.expect("connect");
    let answer = String::from_utf8_lossy(&read_to_close(&mut third).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");

    drop(first);
    let served = tokio::time::timeout(WAIT, async {
        loop {
            let mut tcp = TcpStream::connect(edge.addr).await.expect("connect");
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
                .await
                .expect("request");
            let head = read_http_head(&mut tcp).await;
            if head.starts_with("HTTP/1.1 200") {
                return;
            }
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        }
    })
    .await;
    assert!(served.is_ok(), "the freed slot was never reused");
}

/// Every route the edge serves, the WebSocket upgrade included.
const ROUTES: [&str; 14] = [
    "/",
    "/chat.html",
    "/chat.js",
    "/chat.css",
    "/ws",
    "/chat",
    "/api/v1/chat/ws",
    "/healthz",
    "/readyz",
    "/ws/health",
    "/api/sessions",
    "/api/sessions/c1/messages",
    "/api/chat/history/c1",
    "/api/models",
];

#[tokio::test]
async fn every_route_answers_413_to_a_body_over_the_limit() {
    let edge = lone_edge(|s| s.limits.max_body_bytes = 1024).await;
    let client = reqwest::Client::new();
    for path in ROUTES.iter().chain(&["/metrics"]) {
        let url = format!("http://{}{path}", edge.addr);
        let response = client
            .get(&url)
            .body(vec![b'x'; 1025])
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 413, "{path}");
    }
    let fits = client
        .get(format!("http://{}/healthz", edge.addr))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .expect("answered");
    assert_eq!(fits.status(), 200, "a body at the limit is let through");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_the_pages_a_strict_policy() {
    let edge = lone_edge(|_| {}).await;
    let client = reqwest::Client::new();
    for path in ROUTES.iter().chain(&["/metrics", "/no-such-page"]) {
        let response = client
            .get(format!("http://{}{path}", edge.addr))
            .send()
            .await
            .expect("answered");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_owned()
        };
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        let is_page = ["/", "/chat.html", "/chat.js", "/chat.css"].contains(path);
        assert_eq!(
            policy,
            if is_page { PAGE_POLICY } else { API_POLICY },
            "{path}"
        );
    }

    // The page loads its script and style from the edge and inlines neither.
    let page = client
        .get(format!("http://{}/", edge.addr))
        .send()
        .await
        .expect("page");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.expect("html");
    assert!(html.contains(r#"<script type="module" src="/chat.js"></script>"#));
    assert!(!html.contains("<script>") && !html.contains("<style"));
    for (path, content_type, marker) in [
        (
            "/chat.js",
            "text/javascript; charset=utf-8",
            "function connect()",
        ),
        ("/chat.css", "text/css; charset=utf-8", "#composer"),
        ("/base.css", "text/css; charset=utf-8", ":root"),
        ("/pages.css", "text/css; charset=utf-8", ".session"),
        (
            "/sessions.html",
            "text/html; charset=utf-8",
            r#"<script src="/sessions.js">"#,
        ),
        (
            "/sessions.js",
            "text/javascript; charset=utf-8",
            "/api/sessions",
        ),
        (
            "/admin.html",
            "text/html; charset=utf-8",
            r#"<script type="module" src="/admin.js">"#,
        ),
        ("/admin.js", "text/javascript; charset=utf-8", "EventSource"),
        ("/pages.json", "application/json", r#""tokenUrl":null"#),
        (
            "/chat-client.js",
            "text/javascript; charset=utf-8",
            "export class ChatClient",
        ),
        (
            "/api/asyncapi.json",
            "application/json",
            r#""asyncapi": "3.0.0""#,
        ),
    ] {
        let response = client
            .get(format!("http://{}{path}", edge.addr))
            .send()
            .await
            .expect("file");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert!(
            response.text().await.expect("body").contains(marker),
            "{path}"
        );
    }
}

const METRICS_TOKEN: &str = "a-metrics-token-for-tests";

#[tokio::test]
async fn metrics_behind_a_token_answer_only_the_bearer_of_it() {
    let edge = lone_edge(|s| s.metrics.token = Some(METRICS_TOKEN.to_string().into())).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/metrics", edge.addr);
    let without = client.get(&url).send().await.expect("answered");
    assert_eq!(without.status(), 401);
    assert_eq!(without.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .get(&url)
        .bearer_auth("a-metrics-token-for-tesTS")
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(right.status(), 200);
    let text = right.text().await.expect("text");
    assert!(!text.contains(METRICS_TOKEN), "the token is never echoed");
    // The token guards /metrics only.
    let health = client
        .get(format!("http://{}/healthz", edge.addr))
        .send()
        .await
        .expect("answered");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn metrics_on_their_own_address_leave_the_public_port() {
    let edge = lone_edge(|s| s.metrics.addr = Some("127.0.0.1:0".parse().expect("addr"))).await;
    let metrics_addr = edge.metrics_addr.expect("a metrics listener");
    let client = reqwest::Client::new();
    let public = client
        .get(format!("http://{}/metrics", edge.addr))
        .send()
        .await
        .expect("answered");
    assert_eq!(public.status(), 404, "not on the public port");
    let private = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("answered");
    assert_eq!(private.status(), 200);
    assert_eq!(private.headers()["x-content-type-options"], "nosniff");
    let other = client
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves metrics only"
    );
}

#[tokio::test]
async fn every_route_of_the_openapi_document_is_served_and_answers_as_documented() {
    let edge = lone_edge(|_| {}).await;
    let client = reqwest::Client::new();
    let doc: serde_json::Value = client
        .get(format!("http://{}/api/openapi.json", edge.addr))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    // The REST routes the other tests drive are all there (the pages and the socket are not
    // REST: the socket is /api/asyncapi.json's).
    let rest = ROUTES
        .iter()
        .filter(|p| p.starts_with("/api/") || ["/healthz", "/readyz", "/ws/health"].contains(p))
        .filter(|p| **p != "/api/v1/chat/ws");
    for path in rest.chain(&["/metrics", "/api/uploads", "/api/admin/feed"]) {
        let documented = paths.keys().any(|p| {
            let pattern: Vec<&str> = p.split('/').collect();
            let actual: Vec<&str> = path.split('/').collect();
            pattern.len() == actual.len()
                && pattern
                    .iter()
                    .zip(&actual)
                    .all(|(a, b)| a == b || a.starts_with('{'))
        });
        assert!(
            documented,
            "{path} is served but not in the OpenAPI document"
        );
    }
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().expect("path item") {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let response = client
                .request(method.clone(), format!("http://{}{concrete}", edge.addr))
                .send()
                .await
                .expect("answered");
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            // The router's own 404 (no such route) has no body; the edge's have a JSON error.
            assert!(
                status != 405 && (status != 404 || body.contains("\"error\"")),
                "{method} {path}: {status} {body}"
            );
            // Every status it answered is one the document lists.
            let listed = operation["responses"]
                .as_object()
                .expect("responses")
                .contains_key(&status.to_string());
            assert!(
                listed || status == 503,
                "{method} {path} answered {status}, which the document does not list"
            );
        }
    }
}
