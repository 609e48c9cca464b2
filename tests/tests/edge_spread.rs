//! Several edges spreading their streams over several cores: two `chat-core` processes over
//! one PostgreSQL sharing rooms through a real Redis, and two `chat-edge` processes each
//! configured with both cores (`CHAT_EDGE_CORE_URLS`). Sockets through either edge land on
//! both cores (each core's own count of connections says where), and members on different
//! cores see one room. One core killed with SIGKILL: the sockets on it are closed with 1012,
//! every new socket through either edge lands on the survivor, and a reconnected member has
//! a full chat turn there.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chat_proto::pb::chat::GetStatsRequest;
use chat_proto::pb::chat::chat_service_client::ChatServiceClient;
use chat_tests::core_process::CoreProcess;
use chat_tests::edge_process::EdgeProcess;
use chat_tests::redis_server::RedisServer;
use chat_tests::{Ws, chatctl_path, fresh_postgres_database, token};
use serde_json::{Value, json};

/// How long a test waits for the edges to see a change it polls for.
const SETTLE: Duration = Duration::from_secs(20);

/// A core of the cluster: the demo model with no delay, rooms over `redis_url`.
fn start_core(dir: &Path, redis_url: &str, database_url: &str) -> CoreProcess {
    std::fs::create_dir_all(dir).expect("core dir");
    let config = format!(
        "[llm.providers.demo]\nkind = \"demo\"\nword_delay_ms = 0\n\n\
         [cluster]\nredis_url = \"{redis_url}\"\n\n\
         [files]\nlocal_dir = \"{}\"\n",
        dir.join("files").display()
    );
    CoreProcess::start(dir, &config, database_url)
}

/// The core's own count of client streams open on it (`GetStats`, no token needed).
async fn connections(core: SocketAddr) -> u32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{core}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("core reachable");
    let mut chat = ChatServiceClient::new(channel);
    chat.get_stats(GetStatsRequest {})
        .await
        .expect("stats")
        .into_inner()
        .connections
}

async fn counts(cores: &[SocketAddr]) -> Vec<u32> {
    let mut all = Vec::new();
    for core in cores {
        all.push(connections(*core).await);
    }
    all
}

/// Opens a socket for `user` through `edge` and reads its `session`; returns it with the
/// index (in `cores`, the live ones) of the core whose count of connections rose by one.
async fn open_on(edge: &EdgeProcess, user: &str, cores: &[SocketAddr]) -> (Ws, usize) {
    let before = counts(cores).await;
    let mut ws = Ws::open(&edge.ws_url(&token(user))).await;
    ws.recv_type("session").await;
    // The core counts the stream as it opens it; polled, as there is no event to wait on.
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = counts(cores).await;
        let risen: Vec<usize> = (0..cores.len()).filter(|i| now[*i] > before[*i]).collect();
        if let [core] = risen[..] {
            assert_eq!(now[core], before[core] + 1, "one stream for one socket");
            return (ws, core);
        }
        assert!(
            risen.is_empty() && Instant::now() < deadline,
            "{user}'s socket did not show on exactly one core: {before:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The edge's `/readyz`: its status code and body.
async fn readiness(edge: &EdgeProcess) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}/readyz", edge.addr))
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the edge reports `serving` of its cores serving.
async fn until_serving(edge: &EdgeProcess, serving: u64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, body) = readiness(edge).await;
        if body["cores"]["serving"] == serving {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never saw {serving} cores serving: {body}"
        );
        // The cores report SERVING once Redis is subscribed: no event reaches the test.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One gauge of the edge's `/metrics` for `core` (`None` when it has no such series).
async fn core_gauge(edge: &EdgeProcess, name: &str, core: SocketAddr) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", edge.addr))
        .await
        .expect("metrics answers")
        .text()
        .await
        .expect("metrics text");
    let series = format!("{name}{{core=\"http://{core}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

/// The frames until the assistant's reply to `text` is complete, with the user's message
/// among them; panics if either is missing.
async fn sees_turn(ws: &mut Ws, text: &str) {
    let mut saw_message = false;
    let frames = ws.recv_reply().await;
    for frame in &frames {
        if frame["type"] == "message" && frame["data"]["message"]["content"] == text {
            saw_message = true;
        }
    }
    assert!(
        saw_message,
        "the message {text:?} did not arrive: {frames:?}"
    );
}

#[tokio::test]
async fn two_edges_spread_sockets_over_two_cores_and_move_to_the_survivor_when_one_dies() {
    chatctl_path();
    let redis = RedisServer::start().await;
    let database = fresh_postgres_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut core_a = start_core(&dir.path().join("a"), &redis.url(), &database);
    let core_b = start_core(&dir.path().join("b"), &redis.url(), &database);
    let both = [core_a.addr, core_b.addr];
    let edges = [
        EdgeProcess::start_over(&both, &[]),
        EdgeProcess::start_over(&both, &[]),
    ];
    for edge in &edges {
        until_serving(edge, 2).await;
        let (status, body) = readiness(edge).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cores"], json!({"serving": 2, "total": 2}));
    }

    // Four sockets through each edge: each edge puts two on each core (the fewest streams
    // first, equals in turn).
    let mut sockets: Vec<(Ws, usize, usize, String)> = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        let mut per_core = [0; 2];
        for i in 0..4 {
            let user = format!("spread-{e}-{i}");
            let (ws, core) = open_on(edge, &user, &both).await;
            per_core[core] += 1;
            sockets.push((ws, e, core, user));
        }
        assert_eq!(
            per_core,
            [2, 2],
            "edge {e} spread its sockets over both cores"
        );
        for core in both {
            assert_eq!(
                core_gauge(edge, "chat_edge_core_streams", core).await,
                Some(2.0)
            );
            assert_eq!(
                core_gauge(edge, "chat_edge_core_healthy", core).await,
                Some(1.0)
            );
        }
    }

    // One member on each core, in one chat: each sees the other's message and its reply.
    // Carol's first socket goes through the first edge; through the second, the next one on
    // the other core (at most two tries: that edge's fewest streams).
    let (first, first_core) = open_on(&edges[0], "carol", &both).await;
    let mut extra: Vec<Ws> = Vec::new();
    let (other, other_edge) = loop {
        let (ws, core) = open_on(&edges[1], "carol", &both).await;
        if core != first_core {
            break (ws, 1);
        }
        extra.push(ws);
        assert!(extra.len() < 2, "the second edge kept carol on one core");
    };
    // `on_a` is the member on core A (index 0), `on_b` the one on core B.
    let ((mut on_a, a_edge), (mut on_b, _)) = if first_core == 0 {
        ((first, 0), (other, other_edge))
    } else {
        ((other, other_edge), (first, 0))
    };
    on_a.send_message(None, "hello from core A", "carol-1")
        .await;
    let chat = on_a.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat id")
        .to_string();
    on_a.recv_reply().await;
    on_b.send(json!({"type": "chat_update", "data": {"action": "join", "chatId": chat}}))
        .await;
    on_b.recv_type("history").await;
    on_b.send_message(Some(&chat), "hello from core B", "carol-2")
        .await;
    sees_turn(&mut on_b, "hello from core B").await;
    sees_turn(&mut on_a, "hello from core B").await;
    on_a.send_message(Some(&chat), "and back on core A", "carol-3")
        .await;
    sees_turn(&mut on_b, "and back on core A").await;

    // Core A dies. Its sockets are closed with 1012 by their edges (the client reconnects
    // and resumes); the others stay.
    core_a.stop("KILL");
    assert_eq!(on_a.recv_close().await, Some(1012), "closed to reconnect");
    if first_core == 0 {
        for ws in &mut extra {
            assert_eq!(ws.recv_close().await, Some(1012));
        }
    }
    for (ws, _, core, user) in sockets.iter_mut() {
        if *core == 0 {
            assert_eq!(ws.recv_close().await, Some(1012), "{user} on the dead core");
        }
    }
    for edge in &edges {
        let (status, body) = readiness(edge).await;
        assert_eq!(status, 200, "one core serving is enough: {body}");
        assert_eq!(body["cores"], json!({"serving": 1, "total": 2}));
    }

    // Every new socket through either edge lands on the survivor, at once.
    let survivor = [core_b.addr];
    let mut after = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        for i in 0..3 {
            let (ws, core) = open_on(edge, &format!("after-{e}-{i}"), &survivor).await;
            assert_eq!(core, 0);
            // Kept open: a socket closing meanwhile would hide the next one in the count.
            after.push(ws);
        }
        assert_eq!(
            core_gauge(edge, "chat_edge_core_healthy", core_a.addr).await,
            Some(0.0)
        );
        assert_eq!(
            core_gauge(edge, "chat_edge_core_streams", core_a.addr).await,
            Some(0.0),
            "edge {e} has nothing left on the dead core"
        );
    }

    // The member that was on A reconnects through the same edge, lands on B, rejoins the
    // chat, and has a full turn there, seen by the other member too.
    let (mut back, _) = open_on(&edges[a_edge], "carol", &survivor).await;
    back.send(json!({"type": "chat_update", "data": {"action": "join", "chatId": chat}}))
        .await;
    let history = back.recv_type("history").await;
    let texts: Vec<&str> = history["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        texts.contains(&"hello from core B"),
        "the history holds the other core's messages: {texts:?}"
    );
    back.send_message(Some(&chat), "after the crash", "carol-4")
        .await;
    sees_turn(&mut back, "after the crash").await;
    sees_turn(&mut on_b, "after the crash").await;
    assert!(core_b.panics().is_empty(), "{:?}", core_b.panics());
}
