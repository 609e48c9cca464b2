//! The driver's clients, one per protocol, each timing one reply the same way: from the
//! moment the request leaves (the WebSocket frame is written, or the HTTP request is sent) to
//! the first delta (time to first token), then the gap between consecutive deltas
//! (per-token inter-arrival), counting deltas and checking their order.
//!
//! WebSockets are opened from several loopback source addresses (127.0.0.1 to 127.0.0.16) so
//! tens of thousands of sockets do not run out of ephemeral ports, with small buffers so the
//! driver's own memory stays modest.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// One open WebSocket of the driver.
pub type Socket = WebSocketStream<TcpStream>;

/// Source addresses the driver's sockets are spread over.
const SOURCE_ADDRS: u32 = 16;
/// Longest wait for one reply (or one handshake) before it counts as an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// One reply as the driver saw it.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub ttft: Option<Duration>,
    /// Time between consecutive deltas.
    pub gaps: Vec<Duration>,
    pub chunks: usize,
    /// Whether the deltas came with the indices 0, 1, 2, ... (always true for direct reads).
    pub in_order: bool,
    /// From the request to the end of the reply.
    pub total: Duration,
}

/// Times deltas as they arrive.
struct Timer {
    sent: Instant,
    last: Option<Instant>,
    reply: Reply,
}

impl Timer {
    fn start() -> Self {
        Timer {
            sent: Instant::now(),
            last: None,
            reply: Reply {
                in_order: true,
                ..Reply::default()
            },
        }
    }

    fn delta(&mut self, index: Option<u64>) {
        let now = Instant::now();
        match self.last {
            None => self.reply.ttft = Some(now - self.sent),
            Some(last) => self.reply.gaps.push(now - last),
        }
        if let Some(index) = index
            && index != self.reply.chunks as u64
        {
            self.reply.in_order = false;
        }
        self.last = Some(now);
        self.reply.chunks += 1;
    }

    fn finish(mut self) -> Reply {
        self.reply.total = self.sent.elapsed();
        self.reply
    }
}

/// Opens a WebSocket to `url` (a `ws://127.0.0.1:port/...` address) from the next source
/// address in turn.
///
/// # Errors
/// When the connection or the handshake fails or takes longer than two minutes.
pub async fn open(addr: SocketAddr, url: &str) -> anyhow::Result<Socket> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let source = Ipv4Addr::from(
        u32::from(Ipv4Addr::LOCALHOST) + NEXT.fetch_add(1, Ordering::Relaxed) % SOURCE_ADDRS,
    );
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("binding a client socket on {source}"))?;
    let connect = async {
        let stream = socket.connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("WebSocket handshake")?;
        anyhow::Ok(socket)
    };
    tokio::time::timeout(REPLY_TIMEOUT, connect)
        .await
        .context("the handshake timed out")?
}

/// The next text frame as JSON (pings are answered by tungstenite as frames are read).
pub(crate) async fn next_json(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).context("a frame that is not JSON");
            }
            Some(Ok(Message::Close(frame))) => bail!("the server closed the socket: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err).context("reading the socket"),
            None => bail!("the socket ended"),
        }
    }
}

pub(crate) async fn send_json(socket: &mut Socket, frame: &Value) -> anyhow::Result<()> {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .context("writing the socket")
}

/// Ours: waits for the `session` frame that opens every authenticated connection.
///
/// # Errors
/// When something else comes first, or nothing within two minutes.
pub async fn ours_session(socket: &mut Socket) -> anyhow::Result<()> {
    let frame = tokio::time::timeout(REPLY_TIMEOUT, next_json(socket))
        .await
        .context("no session frame")??;
    match frame["type"].as_str() {
        Some("session") => Ok(()),
        _ => bail!("expected a session frame, got {frame}"),
    }
}

/// Reads (and drops) frames until the socket ends; tungstenite answers pings meanwhile. For
/// a client between requests, under a timeout.
pub async fn drain(socket: &mut Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}

/// Ours: creates an empty chat on `model`; its id.
///
/// # Errors
/// When the core refuses or does not answer.
pub async fn ours_create_chat(socket: &mut Socket, model: &str) -> anyhow::Result<String> {
    send_json(
        socket,
        &json!({"type": "chat_update", "data": {"action": "create", "model": model}}),
    )
    .await?;
    let wait = async {
        loop {
            let frame = next_json(socket).await?;
            match frame["type"].as_str() {
                Some("chat_update") => {
                    if let Some(id) = frame["data"]["chatId"].as_str() {
                        return Ok(id.to_owned());
                    }
                }
                Some("error") => bail!("creating a chat: {}", frame["data"]),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .context("no answer to create")?
}

/// Ours: the owner of `chat` adds each of `users` as a member, the frames written back to
/// back (the core performs one connection's frames in order and answers an add only when it
/// fails), then a `ping` whose `pong` says every add before it is done; the adds refused.
///
/// # Errors
/// When the socket breaks or the `pong` does not come within two minutes.
pub async fn ours_add_members(
    socket: &mut Socket,
    chat: &str,
    users: &[String],
) -> anyhow::Result<usize> {
    for user in users {
        socket
            .feed(Message::text(
                json!({"type": "chat_update", "data": {"action": "add_member", "chatId": chat, "userId": user}})
                    .to_string(),
            ))
            .await
            .context("writing the socket")?;
    }
    send_json(socket, &json!({"type": "ping", "data": {"timestamp": 1}})).await?;
    let wait = async {
        let mut refused = 0;
        loop {
            let frame = next_json(socket).await?;
            match frame["type"].as_str() {
                Some("pong") => return Ok(refused),
                Some("error") => refused += 1,
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .context("no pong after the adds")?
}

/// Ours: joins `chat` and waits for the `history` that answers the join.
///
/// # Errors
/// On an `error` frame, or no answer within two minutes.
pub async fn ours_join(socket: &mut Socket, chat: &str) -> anyhow::Result<()> {
    send_json(
        socket,
        &json!({"type": "chat_update", "data": {"action": "join", "chatId": chat}}),
    )
    .await?;
    let wait = async {
        loop {
            let frame = next_json(socket).await?;
            match frame["type"].as_str() {
                Some("history") => return Ok(()),
                Some("error") => bail!("joining: {}", frame["data"]),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .context("no answer to join")?
}

/// The Node relay: joins `room` and waits for `joined`.
///
/// # Errors
/// On anything else first, or no answer within two minutes.
pub async fn node_join(socket: &mut Socket, room: &str) -> anyhow::Result<()> {
    send_json(socket, &json!({"type": "join", "room": room})).await?;
    let frame = tokio::time::timeout(REPLY_TIMEOUT, next_json(socket))
        .await
        .context("no answer to join")??;
    match frame["type"].as_str() {
        Some("joined") => Ok(()),
        _ => bail!("expected joined, got {frame}"),
    }
}

/// Ours: sends one message (into `chat`, or a new chat) and reads until the reply's final
/// `message`; the reply and the chat's id.
///
/// # Errors
/// On an `error` frame, a reply not stored as complete, or no end within two minutes.
pub async fn ours_turn(
    socket: &mut Socket,
    chat: Option<&str>,
    content: &str,
) -> anyhow::Result<(Reply, String)> {
    static IDS: AtomicUsize = AtomicUsize::new(0);
    let message_id = format!("b-{}", IDS.fetch_add(1, Ordering::Relaxed));
    let mut data = json!({"content": content});
    if let Some(chat) = chat {
        data["chatId"] = json!(chat);
    }
    let mut timer = Timer::start();
    send_json(
        socket,
        &json!({"type": "message", "messageId": message_id, "data": data}),
    )
    .await?;
    let mut chat_id = chat.map(str::to_owned);
    let wait = async {
        loop {
            let frame = next_json(socket).await?;
            let data = &frame["data"];
            match frame["type"].as_str() {
                Some("ack") => chat_id = data["chatId"].as_str().map(str::to_owned),
                Some("message_chunk") => timer.delta(data["index"].as_u64()),
                Some("message") if data["message"]["role"] == "assistant" => {
                    let status = data["message"]["status"].as_str().unwrap_or("");
                    if status != "complete" {
                        bail!("the reply ended as {status:?}");
                    }
                    return Ok(());
                }
                Some("error") => bail!("error frame: {data}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .context("the reply did not end")??;
    let chat_id = chat_id.context("no ack before the reply")?;
    Ok((timer.finish(), chat_id))
}

/// The Node relay: sends one message asking for the `reply` script ("stream" or "short") and
/// reads until `done`.
///
/// # Errors
/// On an `error` frame or no `done` within two minutes.
pub async fn node_turn(socket: &mut Socket, reply: &str, content: &str) -> anyhow::Result<Reply> {
    let mut timer = Timer::start();
    send_json(
        socket,
        &json!({"type": "message", "content": content, "reply": reply}),
    )
    .await?;
    let wait = async {
        loop {
            let frame = next_json(socket).await?;
            match frame["type"].as_str() {
                Some("chunk") => timer.delta(frame["index"].as_u64()),
                Some("done") => return Ok(()),
                Some("error") => bail!("relay error: {frame}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .context("the relay's reply did not end")??;
    Ok(timer.finish())
}

/// The baseline: one streamed request to the fake upstream (`base` is `http://addr/v1`),
/// read as the core's provider reads it (SSE `data:` events, deltas in
/// `choices[0].delta.content`).
///
/// # Errors
/// On a failed request or a stream that breaks.
pub async fn direct_turn(
    client: &reqwest::Client,
    base: &str,
    content: &str,
) -> anyhow::Result<Reply> {
    let body = json!({
        "model": "fake-model",
        "stream": true,
        "messages": [{"role": "user", "content": content}],
    });
    let mut timer = Timer::start();
    let read = async {
        let response = client
            .post(format!("{base}/chat/completions"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let mut stream = response.bytes_stream();
        let mut buffered: Vec<u8> = Vec::new();
        while let Some(bytes) = stream.next().await {
            buffered.extend_from_slice(&bytes?);
            while let Some(end) = buffered.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buffered.drain(..end + 2).collect();
                for line in event.split(|&b| b == b'\n') {
                    let Some(data) = line.strip_prefix(b"data: ") else {
                        continue;
                    };
                    if data == b"[DONE]" {
                        continue;
                    }
                    let chunk: Value = serde_json::from_slice(data)?;
                    let delta = chunk["choices"][0]["delta"]["content"].as_str();
                    if delta.is_some_and(|d| !d.is_empty()) {
                        timer.delta(None);
                    }
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(REPLY_TIMEOUT, read)
        .await
        .context("the upstream's reply did not end")??;
    Ok(timer.finish())
}
