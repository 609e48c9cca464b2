//! The core's own limits, driven through a direct tonic client as an internal service (or a
//! hostile one) reaches it without an edge: per-user rates for new chats, joins, history,
//! resume and read receipts; a frame the core cannot decode is an error for that frame; a
//! message over the gRPC size limit gets 413 and ends the stream; streams per connection are
//! capped.

use chat_proto::pb::chat::{
    self as pb, chat_service_client::ChatServiceClient, client_event::Event as In,
    server_event::Event as Out,
};
use chat_tests::{Stack, StackOptions, WAIT, authorized, spawn_stack};
use prost_types::{Struct, Value as PValue, value::Kind};
use std::future::Future as _;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// One `Connect` stream: frames go out through `tx`, events come in on `rx`.
struct Conn {
    tx: mpsc::Sender<pb::ClientEvent>,
    rx: Streaming<pb::ServerEvent>,
}

impl Conn {
    /// Opens a stream on `client`'s channel and reads the `session` event.
    async fn open(client: &mut ChatServiceClient<tonic::transport::Channel>, token: &str) -> Self {
        let (tx, frames) = mpsc::channel(16);
        let rx = client
            .connect(authorized(ReceiverStream::new(frames), token))
            .await
            .expect("connect")
            .into_inner();
        let mut conn = Self { tx, rx };
        match conn.next().await {
            Some(Out::Session(_)) => conn,
            other => panic!("expected session, got {other:?}"),
        }
    }

    async fn send(&self, id: &str, event: In) {
        let frame = pb::ClientEvent {
            message_id: id.to_string(),
            event: Some(event),
            ..Default::default()
        };
        self.tx.send(frame).await.expect("stream open");
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Out> {
        match tokio::time::timeout(WAIT, self.rx.next()).await {
            Ok(Some(Ok(event))) => event.event,
            Ok(Some(Err(status))) => panic!("stream failed: {status}"),
            Ok(None) => None,
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    /// The next event that answers a request (skipping presence, typing and the like).
    async fn answer(&mut self) -> Out {
        loop {
            match self.next().await {
                Some(Out::Presence(_) | Out::Typing(_)) => continue,
                Some(event) => return event,
                None => panic!("stream ended"),
            }
        }
    }

    /// Sends a ping and returns its pong: everything the core queued before is read.
    async fn round_trip(&mut self, timestamp: i64) {
        self.send("ping", In::Ping(pb::Ping { timestamp })).await;
        loop {
            match self.next().await {
                Some(Out::Pong(p)) if p.timestamp == timestamp => return,
                Some(_) => continue,
                None => panic!("stream ended before the pong"),
            }
        }
    }
}

fn expect_error(event: Out, code: u32) -> pb::Error {
    match event {
        Out::Error(err) if err.code == code => err,
        other => panic!("expected error {code}, got {other:?}"),
    }
}

fn create(chat_title: &str) -> In {
    In::ChatUpdate(pb::ChatUpdate {
        action: pb::ChatAction::Create as i32,
        title: Some(chat_title.to_string()),
        ..Default::default()
    })
}

/// A chat created on `conn`: its id.
async fn created(conn: &mut Conn, title: &str) -> String {
    conn.send(title, create(title)).await;
    match conn.answer().await {
        Out::ChatUpdate(update) => update.chat_id,
        other => panic!("expected chat_update, got {other:?}"),
    }
}

async fn tight_stack() -> Stack {
    spawn_stack(StackOptions::default().core(|c| {
        c.chat.chats_per_minute = 3;
        c.chat.joins_per_minute = 2;
        c.chat.history_per_minute = 2;
        c.chat.resumes_per_minute = 2;
        c.chat.read_receipts_per_minute = 2;
        // No `ended` updates between the answers this test reads.
        c.chat.single_active_session = false;
    }))
    .await
}

#[tokio::test]
async fn new_chats_joins_history_resume_and_receipts_are_rate_limited_per_user() {
    let stack = tight_stack().await;
    let mut client = ChatServiceClient::new(stack.grpc().await);
    let token = stack.token("ivan", &[]);
    let mut conn = Conn::open(&mut client, &token).await;

    // New chats: 3 a minute; the 4th is refused and creates nothing.
    let first = created(&mut conn, "one").await;
    let second = created(&mut conn, "two").await;
    let _third = created(&mut conn, "three").await;
    conn.send("four", create("four")).await;
    let err = expect_error(conn.answer().await, 429);
    assert!(err.retry_after_ms.is_some_and(|ms| ms > 0), "{err:?}");
    assert_eq!(err.message_id.as_deref(), Some("four"));
    let listed = client
        .list_sessions(authorized(pb::ListSessionsRequest::default(), &token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sessions.len(), 3, "the refused chat was not created");

    // Joins: 2 a minute.
    for chat in [&first, &second] {
        conn.send("join", In::ChatUpdate(join(chat))).await;
        assert!(matches!(conn.answer().await, Out::History(_)));
    }
    conn.send("join-3", In::ChatUpdate(join(&first))).await;
    expect_error(conn.answer().await, 429);

    // History: 2 a minute, shared by the stream's frames and the unary call.
    conn.send("h1", history(&first)).await;
    assert!(matches!(conn.answer().await, Out::History(_)));
    let page = client
        .get_history(authorized(history_request(&first), &token))
        .await;
    assert!(page.is_ok(), "second page allowed: {page:?}");
    let refused = client
        .get_history(authorized(history_request(&first), &token))
        .await
        .expect_err("third page refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    conn.send("h4", history(&first)).await;
    expect_error(conn.answer().await, 429);

    // Resume: each chat counts; a resume of 3 chats with 2 left is refused whole.
    conn.send("r1", resume(&[&first, &second, &first])).await;
    expect_error(conn.answer().await, 429);
    conn.send("r2", resume(&[&first, &second])).await;
    conn.round_trip(1).await;
    conn.send("r3", resume(&[&first])).await;
    expect_error(conn.answer().await, 429);

    // Read receipts: 2 a minute (each stores a durable event).
    conn.send(
        "m1",
        In::Message(pb::SendMessage {
            chat_id: first.clone(),
            content: "hello".into(),
            message_id: "m1".into(),
            ..Default::default()
        }),
    )
    .await;
    let message_id = loop {
        match conn.answer().await {
            Out::Ack(ack) => break ack.id,
            _ => continue,
        }
    };
    let receipt = || {
        In::ReadReceipt(pb::ReadReceipt {
            chat_id: first.clone(),
            message_ids: vec![message_id.clone()],
        })
    };
    for n in 0..2 {
        conn.send("read", receipt()).await;
        conn.round_trip(10 + n).await;
    }
    conn.send("read-3", receipt()).await;
    let err = loop {
        match conn.answer().await {
            Out::Error(err) => break err,
            _ => continue,
        }
    };
    assert_eq!((err.code, err.message_id.as_deref()), (429, Some("read-3")));

    // Limits are per user: another user is untouched.
    let mut other = Conn::open(&mut client, &stack.token("judy", &[])).await;
    created(&mut other, "judy's").await;
    stack.stop().await;
}

fn join(chat: &str) -> pb::ChatUpdate {
    pb::ChatUpdate {
        action: pb::ChatAction::Join as i32,
        chat_id: chat.to_string(),
        ..Default::default()
    }
}

fn history_request(chat: &str) -> pb::GetHistoryRequest {
    pb::GetHistoryRequest {
        chat_id: chat.to_string(),
        ..Default::default()
    }
}

fn history(chat: &str) -> In {
    In::History(pb::HistoryRequest {
        chat_id: chat.to_string(),
        ..Default::default()
    })
}

fn resume(chats: &[&str]) -> In {
    In::Resume(pb::Resume {
        chats: chats
            .iter()
            .map(|c| pb::ResumeChat {
                chat_id: c.to_string(),
                last_seq: 0,
                streaming: None,
            })
            .collect(),
    })
}

/// A `context` Struct nested `levels` objects deep: `{"a": {"a": ... {}}}`.
fn nested(levels: usize) -> Struct {
    let mut inner = Struct::default();
    for _ in 0..levels {
        let mut outer = Struct::default();
        outer.fields.insert(
            "a".into(),
            PValue {
                kind: Some(Kind::StructValue(inner)),
            },
        );
        inner = outer;
    }
    inner
}

#[tokio::test]
async fn a_frame_nested_past_the_decoders_limit_is_an_error_and_the_stream_goes_on() {
    let stack = spawn_stack(StackOptions::default()).await;
    let mut client = ChatServiceClient::new(stack.grpc().await);
    let mut conn = Conn::open(&mut client, &stack.token("kim", &[])).await;
    // 50 levels of JSON objects are 150 levels of protobuf messages: past prost's 100.
    conn.send(
        "deep",
        In::Message(pb::SendMessage {
            content: "hi".into(),
            message_id: "deep".into(),
            context: Some(nested(50)),
            ..Default::default()
        }),
    )
    .await;
    let err = expect_error(conn.answer().await, 400);
    assert!(err.message.contains("could not be decoded"), "{err:?}");
    assert_eq!(err.message_id, None, "an undecodable frame's id is unknown");
    // The stream is intact: a ping is answered, and a message still makes a turn.
    conn.round_trip(7).await;
    conn.send(
        "ok",
        In::Message(pb::SendMessage {
            content: "hi".into(),
            message_id: "ok".into(),
            context: Some(nested(20)),
            ..Default::default()
        }),
    )
    .await;
    assert!(matches!(conn.answer().await, Out::Ack(_)));
    let listed = client
        .list_sessions(authorized(
            pb::ListSessionsRequest::default(),
            &stack.token("kim", &[]),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sessions.len(), 1, "the deep frame stored nothing");
    stack.stop().await;
}

#[tokio::test]
async fn a_message_over_the_grpc_size_limit_gets_413_and_ends_the_stream() {
    let stack =
        spawn_stack(StackOptions::default().core(|c| c.grpc.max_message_bytes = 65_536)).await;
    let mut client = ChatServiceClient::new(stack.grpc().await);
    let mut conn = Conn::open(&mut client, &stack.token("lee", &[])).await;
    conn.send(
        "huge",
        In::Message(pb::SendMessage {
            content: "x".repeat(100_000),
            message_id: "huge".into(),
            ..Default::default()
        }),
    )
    .await;
    let err = expect_error(conn.answer().await, 413);
    assert!(err.message.contains("65536"), "names the limit: {err:?}");
    assert!(conn.next().await.is_none(), "the stream ends after it");
    // A unary call over the limit is refused the same way.
    let refused = client
        .post_message(authorized(
            pb::SendMessage {
                content: "x".repeat(100_000),
                message_id: "huge-2".into(),
                ..Default::default()
            },
            &stack.token("lee", &[]),
        ))
        .await
        .expect_err("too large");
    assert_eq!(refused.code(), tonic::Code::OutOfRange);
    stack.stop().await;
}

#[tokio::test]
async fn streams_per_connection_are_capped_and_a_freed_slot_is_reused() {
    let stack =
        spawn_stack(StackOptions::default().core(|c| c.grpc.max_concurrent_streams = 2)).await;
    let channel = stack.grpc().await;
    let mut client = ChatServiceClient::new(channel.clone());
    let token = stack.token("mia", &[]);
    let first = Conn::open(&mut client, &token).await;
    let mut second = Conn::open(&mut client, &token).await;

    let third = tokio::spawn({
        let mut client = ChatServiceClient::new(channel);
        let token = token.clone();
        async move { Conn::open(&mut client, &token).await }
    });
    // The core has answered everything sent before on this connection; the third stream is
    // still waiting for a slot (weak on its own, as it could pass by timing: the SETTINGS
    // check below is the one that fails without the limit).
    second.round_trip(3).await;
    assert!(
        !third.is_finished(),
        "a third stream waits while two are open"
    );
    assert_eq!(
        advertised_streams(stack.core_addr).await,
        2,
        "the core tells every HTTP/2 peer its stream limit"
    );

    drop(first);
    let mut third = tokio::time::timeout(WAIT, third)
        .await
        .expect("the third stream opens once a slot is free")
        .expect("task");
    third.round_trip(4).await;
    stack.stop().await;
}

/// The `MAX_CONCURRENT_STREAMS` the core advertises in its HTTP/2 SETTINGS, read by a raw
/// h2 client: the limit every peer's HTTP/2 stack enforces on itself (`usize::MAX`: none).
async fn advertised_streams(core: std::net::SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(core).await.expect("connect");
    let (_send, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    // A server sends its SETTINGS first, so once a ping is answered they have been read.
    let mut ping = connection.ping_pong().expect("ping handle");
    let mut pong = std::pin::pin!(ping.ping(h2::Ping::opaque()));
    let answered = std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut connection).poll(cx);
        pong.as_mut().poll(cx)
    });
    tokio::time::timeout(WAIT, answered)
        .await
        .expect("a pong in time")
        .expect("pong");
    connection.max_concurrent_send_streams()
}
