//! Hostile WebSocket clients at the edge (issue 7): a client that stops reading while a long
//! reply streams is closed and its slot freed with its queued frames bounded, and a frame
//! nested deeper than the edge's limit is refused with 400 naming the field, the connection
//! staying open. Driven over real sockets against the real core, edge and fake LLM.

use std::time::{Duration, Instant};

use chat_tests::fake_llm::FakeScript;
use chat_tests::{
    Llm, Stack, StackOptions, WAIT, edge_health, masked_text_frame, raw_websocket, spawn_stack,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply far larger than every buffer between the edge and a client that reads nothing:
/// `pieces` chunks of 4 KiB, then the model hangs (the reply stays in flight).
fn long_reply(pieces: usize) -> FakeScript {
    let piece = "x".repeat(4096);
    let pieces: Vec<&str> = (0..pieces).map(|_| piece.as_str()).collect();
    FakeScript::reply(&pieces).hanging_after(pieces.len())
}

/// Opens a socket that sends one message and then never reads, on a 4 KiB receive buffer.
async fn reader_that_stops(stack: &Stack, user: &str) -> TcpStream {
    let path = format!("/ws?token={}", stack.token(user, &[]));
    let mut tcp = raw_websocket(stack.edge_addr, &path, Some(4096)).await;
    let frame = json!({"type": "message", "messageId": "slow-1", "data": {"content": "go"}});
    tcp.write_all(&masked_text_frame(&frame.to_string()))
        .await
        .expect("message sent");
    tcp
}

/// What the edge's health showed while a slow socket lived.
struct Observed {
    /// The most frames and bytes queued.
    frames: u64,
    bytes: u64,
    /// When the queue last changed, if it ever held anything.
    last_change: Option<Instant>,
    /// When the connection count came back.
    closed_at: Instant,
}

/// Polls the edge's health until its connection count comes back to `connections`, noting
/// the queue's figures. Panics after [`WAIT`].
async fn watch_until_connections_are(stack: &Stack, connections: u64) -> Observed {
    let mut seen = (0, 0);
    let (mut frames, mut bytes, mut last_change) = (0, 0, None);
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            ticks.tick().await;
            let health = edge_health(stack.edge_addr).await;
            if health["connections"] == connections {
                return Instant::now();
            }
            let now = (
                health["queuedFrames"].as_u64().expect("queuedFrames"),
                health["queuedBytes"].as_u64().expect("queuedBytes"),
            );
            if now != seen {
                seen = now;
                last_change = Some(Instant::now());
            }
            frames = frames.max(now.0);
            bytes = bytes.max(now.1);
        }
    })
    .await;
    let closed_at = waited.expect("the slow socket was never closed");
    Observed {
        frames,
        bytes,
        last_change,
        closed_at,
    }
}

/// Reads what the edge had sent until it closed the connection: EOF or a reset.
async fn read_until_closed(tcp: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buffer)).await {
            Err(_) => panic!("the edge did not close the connection"),
            Ok(Ok(0) | Err(_)) => return total,
            Ok(Ok(n)) => total += n,
        }
    }
}

/// The core freed the user's connection too: with one connection per user allowed, a new
/// one is admitted (retried while the core is still noticing the dropped stream).
async fn core_admits_again(stack: &Stack, user: &str) {
    let url = format!("{}?token={}", stack.ws_url(), stack.token(user, &[]));
    let admitted = tokio::time::timeout(WAIT, async {
        loop {
            let mut ws = chat_tests::Ws::open(&url).await;
            if ws.recv().await["type"] == "session" {
                return;
            }
        }
    })
    .await;
    assert!(admitted.is_ok(), "the core kept the dropped connection");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_by_the_send_deadline_and_its_slot_freed() {
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(long_reply(2_000)))
            .core(|c| c.chat.max_connections_per_user = 1)
            .edge(|e| {
                // Room for the whole reply: only the send deadline can close this socket.
                e.limits.send_queue_frames = 100_000;
                e.limits.send_queue_bytes = 64 * 1024 * 1024;
                e.limits.send_timeout_ms = 500;
            }),
    )
    .await;
    let before = edge_health(stack.edge_addr).await["connections"]
        .as_u64()
        .expect("connections");
    let mut tcp = reader_that_stops(&stack, "alice").await;
    let seen = watch_until_connections_are(&stack, before).await;
    // The queue grew while the socket took nothing, then stopped when the model hung: from
    // then on only the deadline of the frame stuck in the socket could close it.
    let stuck_since = seen.last_change.expect("frames queued up for the socket");
    let after = seen.closed_at - stuck_since;
    assert!(
        after < Duration::from_millis(500 + 1_500),
        "closed {after:?} after the last frame, the deadline is 500 ms"
    );
    let health = edge_health(stack.edge_addr).await;
    assert_eq!(health["queuedFrames"], 0, "{health}");
    assert_eq!(health["queuedBytes"], 0, "{health}");
    assert!(seen.bytes <= 2_000 * 4_200, "never more than the reply");
    let received = read_until_closed(&mut tcp).await;
    assert!(
        received < 2_000 * 4_096,
        "the client got {received} bytes: the reply was not all delivered"
    );
    core_admits_again(&stack, "alice").await;
}

/// While the reply keeps coming and the socket takes nothing, the queue stays within its
/// bounds (the bridge waits for room, at most the deadline) until the socket is closed.
#[tokio::test]
async fn a_client_whose_queue_fills_is_closed_and_the_queue_never_exceeds_its_bounds() {
    const FRAMES: u64 = 16;
    const BYTES: u64 = 64 * 1024;
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(long_reply(4_000)))
            .core(|c| c.chat.max_connections_per_user = 1)
            .edge(|e| {
                e.limits.send_queue_frames = FRAMES as usize;
                e.limits.send_queue_bytes = BYTES as usize;
                e.limits.send_timeout_ms = 1_000;
            }),
    )
    .await;
    let before = edge_health(stack.edge_addr).await["connections"]
        .as_u64()
        .expect("connections");
    let mut tcp = reader_that_stops(&stack, "bob").await;
    let Observed { frames, bytes, .. } = watch_until_connections_are(&stack, before).await;
    assert!(
        frames <= FRAMES,
        "{frames} frames queued, the bound is {FRAMES}"
    );
    // One frame in the socket's hands counts until written: at most one chunk over the bound.
    assert!(
        bytes <= BYTES + 4_300,
        "{bytes} bytes queued, the bound is {BYTES}"
    );
    assert_eq!(edge_health(stack.edge_addr).await["queuedBytes"], 0);
    read_until_closed(&mut tcp).await;
    core_admits_again(&stack, "bob").await;
}

/// `{"k":{"k":...{}}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    (1..levels).fold(json!({}), |inner, _| json!({ "k": inner }))
}

#[tokio::test]
async fn a_context_fifty_levels_deep_is_refused_at_the_edge_and_the_connection_stays_open() {
    let stack = spawn_stack(StackOptions::default()).await;
    let (mut ws, _) = stack.connect("carol").await;
    let deep = json!({"type": "message", "messageId": "deep-1",
                      "data": {"content": "hi", "context": nested(50)}});
    assert!(deep.to_string().len() < 8192, "fits the context size limit");
    ws.send(deep).await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 400, "{error}");
    assert_eq!(error["data"]["field"], "data.context", "{error}");
    assert_eq!(error["data"]["messageId"], "deep-1", "{error}");
    assert_eq!(error["data"]["retryable"], false, "{error}");

    // Still open, and still bridged to the core.
    ws.send(json!({"type": "ping", "data": {"timestamp": 7}}))
        .await;
    assert_eq!(ws.recv_type("pong").await["data"]["timestamp"], 7);
    // The deepest context the edge lets through (the frame at 32 levels) reaches the core and
    // is stored: the edge's limit sits below the core's decoder's.
    let at_limit = json!({"type": "message", "messageId": "deep-2",
                          "data": {"content": "hi", "context": nested(30)}});
    ws.send(at_limit).await;
    let ack = ws.recv_type("ack").await;
    assert_eq!(ack["data"]["messageId"], "deep-2", "{ack}");
}
