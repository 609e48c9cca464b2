//! The history checker: twenty clients (ten users, two tabs each) chat in five shared rooms
//! through two real `chat-edge` processes in front of a real `chat-core` process, while the
//! test drops their sockets at random points, kills and stops each edge, stops and kills the
//! core, and pauses the database twice. Each client builds its transcript from the frames it
//! receives by the protocol's rules alone: apply a durable event when its `seq` is the last
//! one plus one, resume with the last applied `seq` and chunk index, resend every message not
//! yet acked (same `messageId`). At the end every transcript is compared with the database:
//! the counts of lost, duplicated, reordered and phantom events, and of acked messages without
//! exactly one reply, are printed and must all be zero.
//!
//! Seeded and reproducible in its choices (`HISTORY_SEED`, printed); the faults come at fixed
//! points of a 30-second run, then the clients drain and the comparison runs. Once on SQLite
//! (the pause is another process holding the file's write lock), once on PostgreSQL (the
//! test's own cluster is stopped and started).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_tests::core_process::CoreProcess;
use chat_tests::edge_process::EdgeProcess;
use chat_tests::pg_cluster::PgCluster;
use chat_tests::{Ws, token};
use diesel::sql_types::{BigInt, Nullable, Text};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const USERS: usize = 10;
const TABS: usize = 2;
const ROOMS: usize = 5;
/// How long clients send new messages; the faults fall inside it.
const CHATTING: Duration = Duration::from_secs(30);
/// Bound on the drain (every message acked and answered, every client caught up).
const DRAIN: Duration = Duration::from_secs(90);
/// How long a client keeps trying to reconnect before the test fails.
const RECONNECT_FOR: Duration = Duration::from_secs(45);

/// The demo model at 10 ms a word (a reply takes about a quarter of a second), generous rate
/// limits (the clients reconnect and resend often), quick outage detection.
const CONFIG: &str = r#"
[llm.providers.demo]
kind = "demo"
word_delay_ms = 10

[chat]
user_messages_per_minute = 600
resumes_per_minute = 600
joins_per_minute = 600
read_receipts_per_minute = 600
max_connections_per_user = 50

[database]
busy_timeout_ms = 300
acquire_timeout_ms = 1000
check_interval_ms = 200
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_checker_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chat.db");
    let url = format!("sqlite://{}", path.display());
    let outage = Outage::SqliteLock(path.clone());
    let report = run(dir.path(), &url, outage).await;
    report.assert_clean("sqlite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_checker_on_postgres() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Arc::new(PgCluster::start());
    let url = cluster.url.clone();
    let report = run(dir.path(), &url, Outage::PgStop(cluster.clone())).await;
    report.assert_clean("postgres");
}

/// How the database is made to stop answering.
#[derive(Clone)]
enum Outage {
    SqliteLock(std::path::PathBuf),
    PgStop(Arc<PgCluster>),
}

impl Outage {
    /// Makes the database unavailable for `hold`, then brings it back.
    async fn pause(&self, hold: Duration) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || match this {
            Outage::SqliteLock(path) => {
                use diesel::Connection;
                use diesel::connection::SimpleConnection;
                let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())
                    .expect("open the database file");
                // The core writes all the time: wait for a turn at the lock.
                conn.batch_execute("PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE")
                    .expect("lock");
                std::thread::sleep(hold);
                conn.batch_execute("ROLLBACK").expect("unlock");
            }
            Outage::PgStop(cluster) => {
                cluster.pause();
                std::thread::sleep(hold);
                cluster.resume();
            }
        })
        .await
        .expect("outage task");
    }
}

/// A small deterministic generator (splitmix64): the same seed makes the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0009)
}

/// One durable event as a client saw it or the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    kind: String,
    /// For messages: id, role, content, status.
    message: Option<(String, String, String, String)>,
}

/// What every client shares with the test: where the edges are, and what phase the run is in.
struct Shared {
    edges: Mutex<Vec<String>>,
    phase: watch::Receiver<Phase>,
    /// Per room, the server ids of every user message some client got an ack for.
    acked: Mutex<HashMap<String, HashSet<String>>>,
    /// Per client, how many of its messages wait for an ack (`usize::MAX` before it first
    /// connects).
    outstanding: watch::Sender<Vec<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Chatting,
    /// No new messages: resend until acked, then catch up.
    Draining,
    /// Everything sent is acked: catch up to `targets`, then report.
    Settling,
}

/// A client's view of one chat.
#[derive(Default)]
struct ChatView {
    last_seq: i64,
    events: BTreeMap<i64, Event>,
    /// The reply streaming, as last seen: its id and last chunk index.
    streaming: Option<(String, i64)>,
    /// The text assembled from chunks, per reply id.
    chunks: HashMap<String, Assembly>,
    user_messages: usize,
    assistant_messages: usize,
}

/// A reply's text as its chunks arrived.
#[derive(Default)]
struct Assembly {
    text: String,
    /// The first chunk seen was index 0.
    from_start: bool,
    /// The socket broke while it streamed: chunks sent while no socket was open are not
    /// replayed once the reply has ended (its final message carries the text).
    interrupted: bool,
}

/// A message this client sent and has not had acked.
struct Unacked {
    client_id: String,
    chat: String,
    content: String,
    /// When to send it (again).
    due: Instant,
}

#[derive(Default, Debug, Clone)]
struct Counts {
    duplicated: usize,
    reordered: usize,
    chunk_duplicated: usize,
    chunk_lost: usize,
    chunk_mismatch: usize,
    resets: usize,
    reconnects: usize,
    drops: usize,
    refused: usize,
    resumes_refused: usize,
    sent: usize,
    receipts: usize,
}

/// What one client ends with.
struct Outcome {
    user: String,
    views: HashMap<String, ChatView>,
    counts: Counts,
    /// client id -> (server id, chat).
    acks: HashMap<String, (String, String)>,
    contents: Vec<String>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Client {
    index: usize,
    user: String,
    token: String,
    rooms: Vec<String>,
    rng: Rng,
    shared: Arc<Shared>,
    views: HashMap<String, ChatView>,
    unacked: Vec<Unacked>,
    acks: HashMap<String, (String, String)>,
    counts: Counts,
    next_message: usize,
    contents: Vec<String>,
    /// Resumes sent, and whether the last one is done: the `ping` sent after it is answered
    /// (a connection's frames are handled in order). Messages wait until then, since a message
    /// to a chat not yet resumed would join it where it stands, past what this client missed.
    resumes: usize,
    resumed: bool,
    /// The last resume was refused (the database was away): reconnect and try again.
    resume_failed: bool,
}

impl Client {
    /// Connects to a random edge and waits for `session`, trying again (another edge, a moment
    /// later) until [`RECONNECT_FOR`] runs out.
    async fn connect(&mut self) -> Socket {
        let deadline = Instant::now() + RECONNECT_FOR;
        loop {
            let url = {
                let edges = self.shared.edges.lock().unwrap_or_else(|p| p.into_inner());
                edges[self.rng.below(edges.len() as u64) as usize].clone()
            };
            let url = format!("{url}/ws?token={}", self.token);
            let attempt = async {
                let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.ok()?;
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        let frame: Value = serde_json::from_str(text.as_str()).ok()?;
                        return (frame["type"] == "session").then_some(socket);
                    }
                }
                None
            };
            if let Ok(Some(socket)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
                return socket;
            }
            assert!(
                Instant::now() < deadline,
                "client {} could not reconnect for {RECONNECT_FOR:?}",
                self.index
            );
            tokio::time::sleep(self.rng.millis(100, 400)).await;
        }
    }

    /// Resumes every room from what this client applied; the `pong` after it releases the
    /// messages not yet acked.
    async fn resume(&mut self, socket: &mut Socket) -> bool {
        let chats: Vec<Value> = self
            .rooms
            .iter()
            .map(|room| {
                let view = self.views.entry(room.clone()).or_default();
                let mut entry = json!({"chatId": room, "lastSeq": view.last_seq});
                if let Some((id, index)) = &view.streaming {
                    entry["streaming"] = json!({"messageId": id, "lastIndex": index});
                }
                entry
            })
            .collect();
        self.resumes += 1;
        self.resumed = false;
        let frame = json!({"type": "resume", "messageId": format!("resume-{}", self.resumes),
            "data": {"chats": chats}});
        let ping = json!({"type": "ping", "data": {"timestamp": self.resumes}});
        send(socket, frame).await.is_ok() && send(socket, ping).await.is_ok()
    }

    /// Sends whatever is due; returns false when the socket is gone.
    async fn send_due(&mut self, socket: &mut Socket) -> bool {
        let now = Instant::now();
        if !self.resumed {
            return true;
        }
        for message in self.unacked.iter_mut().filter(|m| m.due <= now) {
            // Not acked within five seconds on a live socket: sent again.
            message.due = now + Duration::from_secs(5);
            let frame = json!({"type": "message", "messageId": message.client_id,
                "data": {"chatId": message.chat, "content": message.content}});
            if send(socket, frame).await.is_err() {
                return false;
            }
        }
        true
    }

    fn next_due(&self) -> Option<Instant> {
        self.unacked
            .iter()
            .map(|m| m.due)
            .min()
            .filter(|_| self.resumed)
    }

    /// Tells the test how many messages wait for an ack.
    fn report_outstanding(&self) {
        let (index, n) = (self.index, self.unacked.len());
        self.shared.outstanding.send_modify(|all| all[index] = n);
    }

    /// Applies one frame by the protocol's rules.
    fn apply(&mut self, frame: &Value) {
        let data = &frame["data"];
        let chat = data["chatId"].as_str().unwrap_or_default().to_string();
        match frame["type"].as_str().unwrap_or_default() {
            "ack" => {
                let client_id = data["messageId"].as_str().unwrap_or_default();
                if let Some(at) = self.unacked.iter().position(|m| m.client_id == client_id) {
                    self.unacked.remove(at);
                    self.report_outstanding();
                }
                let id = data["id"].as_str().unwrap_or_default().to_string();
                self.acks
                    .insert(client_id.to_string(), (id.clone(), chat.clone()));
                self.shared
                    .acked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(chat)
                    .or_default()
                    .insert(id);
                return;
            }
            "error" => {
                let code = data["code"].as_u64().unwrap_or_default();
                let answers = data["messageId"].as_str().unwrap_or_default();
                if answers.starts_with("resume-") {
                    assert!(
                        data["retryable"] == true || code == 429,
                        "client {}: resume refused: {frame}",
                        self.index
                    );
                    self.counts.resumes_refused += 1;
                    self.resume_failed = true;
                } else if let Some(client_id) =
                    data["messageId"].as_str().filter(|id| id.starts_with('c'))
                {
                    assert!(
                        data["retryable"] == true || code == 429,
                        "client {}: a message refused for good: {frame}",
                        self.index
                    );
                    self.counts.refused += 1;
                    let wait = data["retryAfterMs"].as_u64().unwrap_or(300).max(100);
                    if let Some(m) = self.unacked.iter_mut().find(|m| m.client_id == client_id) {
                        m.due = Instant::now() + Duration::from_millis(wait);
                    }
                }
                return;
            }
            "pong" => {
                if data["timestamp"].as_u64() == Some(self.resumes as u64) && !self.resume_failed {
                    self.resumed = true;
                    let now = Instant::now();
                    for message in &mut self.unacked {
                        message.due = now;
                    }
                }
                return;
            }
            "history" if data["reset"] == true => {
                self.counts.resets += 1;
                return;
            }
            "message_chunk" => {
                let view = self.views.entry(chat).or_default();
                let id = data["messageId"].as_str().unwrap_or_default().to_string();
                let index = data["index"].as_i64().unwrap_or(-1);
                let delta = data["delta"].as_str().unwrap_or_default();
                let assembly = view.chunks.entry(id.clone()).or_insert_with(|| Assembly {
                    from_start: index == 0,
                    ..Assembly::default()
                });
                match &view.streaming {
                    Some((current, last)) if *current == id && index <= *last => {
                        self.counts.chunk_duplicated += 1;
                        return;
                    }
                    Some((current, last)) if *current == id && index > last + 1 => {
                        self.counts.chunk_lost += 1;
                        assembly.from_start = false;
                    }
                    _ => {}
                }
                assembly.text.push_str(delta);
                view.streaming = Some((id, index));
                return;
            }
            _ => {}
        }
        let Some(seq) = frame["seq"].as_i64() else {
            return;
        };
        let view = self.views.entry(chat).or_default();
        if seq <= view.last_seq {
            self.counts.duplicated += 1;
            return;
        }
        if seq != view.last_seq + 1 {
            self.counts.reordered += 1;
        }
        view.last_seq = seq;
        let kind = frame["type"].as_str().unwrap_or_default().to_string();
        let message = (kind == "message").then(|| {
            let m = &data["message"];
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (text("id"), text("role"), text("content"), text("status"))
        });
        if let Some((id, role, content, status)) = &message {
            match role.as_str() {
                "user" => view.user_messages += 1,
                "assistant" => {
                    view.assistant_messages += 1;
                    if view.streaming.as_ref().is_some_and(|(s, _)| s == id) {
                        view.streaming = None;
                    }
                    // Chunks from index 0 are the start of the final text; with no break in
                    // between, all of it.
                    if let Some(a) = view.chunks.remove(id)
                        && a.from_start
                        && status == "complete"
                    {
                        if !content.starts_with(&a.text) {
                            self.counts.chunk_mismatch += 1;
                        } else if !a.interrupted && a.text != *content {
                            self.counts.chunk_lost += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        view.events.insert(seq, Event { kind, message });
    }

    /// Whether this client has caught up: every room holds at least `targets[room]` user
    /// messages, as many replies, and nothing streams.
    fn settled(&self, targets: &HashMap<String, usize>) -> bool {
        self.unacked.is_empty()
            && self.rooms.iter().all(|room| {
                let view = self.views.get(room);
                let want = targets.get(room).copied().unwrap_or_default();
                view.is_some_and(|v| {
                    v.user_messages >= want
                        && v.assistant_messages >= v.user_messages
                        && v.streaming.is_none()
                })
            })
    }

    /// Chats until the run settles. `targets` is set once every client's messages are acked.
    async fn run(
        mut self,
        mut targets: watch::Receiver<Option<HashMap<String, usize>>>,
        done: tokio::sync::mpsc::Sender<()>,
    ) -> Outcome {
        let mut phase = self.shared.phase.clone();
        let mut reported = false;
        let mut next_action = Instant::now() + self.rng.millis(200, 1500);
        'connection: loop {
            let mut socket = self.connect().await;
            for view in self.views.values_mut() {
                for assembly in view.chunks.values_mut() {
                    assembly.interrupted = true;
                }
            }
            self.report_outstanding();
            if !self.resume(&mut socket).await {
                self.counts.reconnects += 1;
                continue;
            }
            loop {
                if !self.send_due(&mut socket).await {
                    self.counts.reconnects += 1;
                    continue 'connection;
                }
                let settled = targets.borrow().as_ref().is_some_and(|t| self.settled(t));
                if !reported && settled {
                    reported = true;
                    let _ = done.send(()).await;
                }
                let chatting = *phase.borrow() == Phase::Chatting;
                let wake = match (chatting, self.next_due()) {
                    (true, Some(due)) => due.min(next_action),
                    (true, None) => next_action,
                    (false, Some(due)) => due,
                    (false, None) => Instant::now() + Duration::from_secs(3600),
                };
                tokio::select! {
                    frame = socket.next() => {
                        let Some(Ok(message)) = frame else {
                            self.counts.reconnects += 1;
                            continue 'connection;
                        };
                        match message {
                            Message::Text(text) => {
                                let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                                    panic!("client {}: not JSON: {text}", self.index);
                                };
                                self.apply(&frame);
                                if self.resume_failed {
                                    self.resume_failed = false;
                                    self.counts.reconnects += 1;
                                    drop(socket);
                                    tokio::time::sleep(self.rng.millis(200, 500)).await;
                                    continue 'connection;
                                }
                                // A drop mid-reply, now and then, while chatting.
                                if chatting && frame["type"] == "message_chunk" && self.rng.below(1000) < 2 {
                                    self.counts.drops += 1;
                                    self.counts.reconnects += 1;
                                    drop(socket);
                                    continue 'connection;
                                }
                            }
                            Message::Close(_) => {
                                self.counts.reconnects += 1;
                                continue 'connection;
                            }
                            _ => {}
                        }
                    }
                    () = tokio::time::sleep_until(wake) => {
                        if chatting && Instant::now() >= next_action {
                            next_action = Instant::now() + self.rng.millis(1500, 4500);
                            if self.rng.chance(12) {
                                self.counts.drops += 1;
                                self.counts.reconnects += 1;
                                drop(socket);
                                tokio::time::sleep(self.rng.millis(20, 300)).await;
                                continue 'connection;
                            }
                            if self.resumed && !self.act(&mut socket).await {
                                self.counts.reconnects += 1;
                                continue 'connection;
                            }
                        }
                    }
                    _ = phase.changed() => {}
                    _ = targets.changed() => {}
                }
                if *phase.borrow() == Phase::Settling && targets.borrow().is_none() {
                    break 'connection;
                }
            }
        }
        Outcome {
            user: self.user,
            views: self.views,
            counts: self.counts,
            acks: self.acks,
            contents: self.contents,
        }
    }

    /// One move while chatting: a new message to one of the rooms, or now and then a read
    /// receipt for the newest message seen there.
    async fn act(&mut self, socket: &mut Socket) -> bool {
        let room = self.rooms[self.rng.below(self.rooms.len() as u64) as usize].clone();
        if self.rng.chance(15) {
            let newest = self.views.get(&room).and_then(|v| {
                v.events
                    .values()
                    .rev()
                    .find_map(|e| e.message.as_ref().map(|m| m.0.clone()))
            });
            if let Some(id) = newest {
                self.counts.receipts += 1;
                let frame = json!({"type": "read_receipt", "messageId": format!("rr-{}", self.counts.receipts),
                    "data": {"chatId": room, "messageIds": [id]}});
                return send(socket, frame).await.is_ok();
            }
        }
        self.next_message += 1;
        let content = format!(
            "note-c{:02}-m{:02} to room {}",
            self.index,
            self.next_message,
            self.rooms
                .iter()
                .position(|r| *r == room)
                .unwrap_or_default()
        );
        self.contents.push(content.clone());
        self.counts.sent += 1;
        self.unacked.push(Unacked {
            client_id: format!("c{}-m{}", self.index, self.next_message),
            chat: room,
            content,
            due: Instant::now(),
        });
        self.report_outstanding();
        self.send_due(socket).await
    }
}

async fn send(socket: &mut Socket, frame: Value) -> Result<(), ()> {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|_| ())
}

/// The rooms: user `u` is a member of rooms `u % ROOMS` and `(u + 1) % ROOMS`. Made through
/// the protocol on one edge before the clients start; each owner adds its members.
async fn make_rooms(edge: &str) -> Vec<(String, Vec<String>)> {
    let users: Vec<String> = (0..USERS).map(|u| format!("hist-u{u}")).collect();
    // Every user connects once, so each is known to the core.
    for user in &users {
        let mut ws = Ws::open(&format!("{edge}/ws?token={}", token(user))).await;
        ws.recv_type("session").await;
    }
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let members: Vec<String> = (0..USERS)
            .filter(|u| u % ROOMS == r || (u + 1) % ROOMS == r)
            .map(|u| users[u].clone())
            .collect();
        let owner = &members[0];
        let mut ws = Ws::open(&format!("{edge}/ws?token={}", token(owner))).await;
        ws.recv_type("session").await;
        ws.send(json!({"type": "chat_update", "data": {"action": "create", "title": format!("Room {r}")}}))
            .await;
        let created = ws.recv_type("chat_update").await;
        let chat = created["data"]["chatId"]
            .as_str()
            .expect("chat id")
            .to_string();
        for member in &members[1..] {
            ws.send(json!({"type": "chat_update", "data": {"action": "add_member", "chatId": chat, "userId": member}}))
                .await;
            // Success is silent: a ping after it shows nothing went wrong.
            ws.send(json!({"type": "ping", "data": {"timestamp": 1}}))
                .await;
            let (_, before) = ws.recv_until(|f| f["type"] == "pong").await;
            assert!(
                before.iter().all(|f| f["type"] != "error"),
                "add_member: {before:?}"
            );
        }
        rooms.push((chat, members));
    }
    rooms
}

/// The faults, at fixed points of the chatting phase.
async fn faults(
    core: &mut CoreProcess,
    edges: &mut [EdgeProcess; 2],
    shared: &Shared,
    outage: &Outage,
    log: &mut Vec<String>,
) {
    let start = Instant::now();
    let at = |secs: u64| tokio::time::sleep_until(start + Duration::from_secs(secs));
    let restart_edge =
        |edges: &mut [EdgeProcess; 2], which: usize, signal: &str, core: &CoreProcess| {
            edges[which].stop(signal);
            edges[which] = EdgeProcess::start(core.addr);
            let urls: Vec<String> = edges.iter().map(|e| format!("ws://{}", e.addr)).collect();
            *shared.edges.lock().unwrap_or_else(|p| p.into_inner()) = urls;
        };
    at(4).await;
    restart_edge(edges, 0, "KILL", core);
    log.push("edge 0 killed and restarted".into());
    at(8).await;
    outage.pause(Duration::from_millis(1500)).await;
    log.push("database paused 1.5 s".into());
    at(12).await;
    core.stop("TERM");
    core.restart();
    log.push("core stopped (SIGTERM) and restarted".into());
    at(16).await;
    restart_edge(edges, 1, "TERM", core);
    log.push("edge 1 stopped (SIGTERM) and restarted".into());
    at(20).await;
    core.stop("KILL");
    core.restart();
    log.push("core killed (SIGKILL) and restarted".into());
    at(24).await;
    outage.pause(Duration::from_millis(1500)).await;
    log.push("database paused 1.5 s".into());
}

/// The database's durable stream per chat, and the replies still owed.
#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    chat_id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    role: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    content: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

const STREAM_SQL: &str = "SELECT chat_id, seq, 'message' AS kind, id, role, content, status \
     FROM messages UNION ALL SELECT chat_id, seq, kind, CAST(NULL AS TEXT), CAST(NULL AS TEXT), \
     CAST(NULL AS TEXT), CAST(NULL AS TEXT) FROM chat_events ORDER BY chat_id, seq";
const PENDING_SQL: &str = "SELECT COUNT(*) AS n FROM pending_replies";

async fn read_database(url: &str) -> (Vec<Row>, i64) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = diesel::SqliteConnection::establish(path).expect("open the database");
        let rows = diesel::sql_query(STREAM_SQL)
            .load::<Row>(&mut conn)
            .expect("stream");
        let pending = diesel::sql_query(PENDING_SQL)
            .get_result::<Count>(&mut conn)
            .expect("pending");
        (rows, pending.n)
    } else {
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
        let rows = diesel::sql_query(STREAM_SQL)
            .load::<Row>(&mut conn)
            .await
            .expect("stream");
        let pending = diesel::sql_query(PENDING_SQL)
            .get_result::<Count>(&mut conn)
            .await
            .expect("pending");
        (rows, pending.n)
    }
}

#[derive(Default, Debug)]
struct Report {
    seed: u64,
    lost: usize,
    duplicated: usize,
    reordered: usize,
    phantom: usize,
    chunk_duplicated: usize,
    chunk_lost: usize,
    chunk_mismatch: usize,
    resets: usize,
    unanswered: usize,
    doubly_answered: usize,
    misanswered: usize,
    unacked_stored: usize,
    acked_missing: usize,
    pending_left: i64,
    secrets_logged: usize,
    /// Messages never acked, clients that never caught up, within [`DRAIN`].
    unacked_left: usize,
    unsettled: usize,
    panics: Vec<String>,
    // Figures of the run.
    events: usize,
    messages_sent: usize,
    receipts_sent: usize,
    refused: usize,
    resumes_refused: usize,
    drops: usize,
    reconnects: usize,
    failed_replies: usize,
    faults: Vec<String>,
    examples: Vec<String>,
}

impl Report {
    fn assert_clean(&self, backend: &str) {
        eprintln!(
            "history checker ({backend}, seed {}): lost {}, duplicated {}, reordered {}, phantom {}; \
             chunks duplicated {}, lost {}, mismatched {}; resets {}; acked messages unanswered {}, \
             answered twice {}, answered out of turn {}; stored but never acked {}, acked but not \
             stored {}; replies still owed {}; secrets in the core's log {}; never acked {}, \
             clients not caught up {}",
            self.seed,
            self.lost,
            self.duplicated,
            self.reordered,
            self.phantom,
            self.chunk_duplicated,
            self.chunk_lost,
            self.chunk_mismatch,
            self.resets,
            self.unanswered,
            self.doubly_answered,
            self.misanswered,
            self.unacked_stored,
            self.acked_missing,
            self.pending_left,
            self.secrets_logged,
            self.unacked_left,
            self.unsettled,
        );
        eprintln!(
            "history checker ({backend}): {} durable events, {} messages and {} receipts sent, \
             {} refused and resent, {} resumes refused, {} sockets dropped, {} reconnects, {} replies failed by \
             faults; faults: {}",
            self.events,
            self.messages_sent,
            self.receipts_sent,
            self.refused,
            self.resumes_refused,
            self.drops,
            self.reconnects,
            self.failed_replies,
            self.faults.join("; "),
        );
        let clean = self.lost
            + self.duplicated
            + self.reordered
            + self.phantom
            + self.chunk_duplicated
            + self.chunk_lost
            + self.chunk_mismatch
            + self.resets
            + self.unanswered
            + self.doubly_answered
            + self.misanswered
            + self.unacked_stored
            + self.acked_missing
            + self.secrets_logged
            + self.unacked_left
            + self.unsettled
            == 0
            && self.pending_left == 0
            && self.panics.is_empty();
        assert!(
            clean,
            "the history checker found faults ({backend}, HISTORY_SEED={}): {:?}",
            self.seed, self
        );
        // The run did what it claims: enough traffic, every kind of fault met by clients.
        assert!(self.messages_sent >= 100, "{self:?}");
        assert!(self.refused > 0, "no message met an outage: {self:?}");
        assert!(self.drops > 0 && self.reconnects > self.drops, "{self:?}");
    }
}

async fn run(dir: &Path, url: &str, outage: Outage) -> Report {
    // The binaries run beside this test's build.
    chat_tests::chatctl_path();
    let seed = seed();
    let mut rng = Rng(seed);
    let mut core = CoreProcess::start(dir, CONFIG, url);
    let mut edges = [EdgeProcess::start(core.addr), EdgeProcess::start(core.addr)];
    let urls: Vec<String> = edges.iter().map(|e| format!("ws://{}", e.addr)).collect();
    let rooms = make_rooms(&urls[0]).await;

    let (phase_tx, phase) = watch::channel(Phase::Chatting);
    let (targets_tx, targets) = watch::channel(None::<HashMap<String, usize>>);
    let shared = Arc::new(Shared {
        edges: Mutex::new(urls),
        phase,
        acked: Mutex::new(HashMap::new()),
        outstanding: watch::Sender::new(vec![usize::MAX; USERS * TABS]),
    });
    let (done_tx, mut done) = tokio::sync::mpsc::channel(USERS * TABS);
    let mut outstanding = shared.outstanding.subscribe();
    let mut clients = Vec::new();
    for index in 0..USERS * TABS {
        let user = format!("hist-u{}", index / TABS);
        let client = Client {
            index,
            token: token(&user),
            rooms: rooms
                .iter()
                .filter(|(_, members)| members.contains(&user))
                .map(|(chat, _)| chat.clone())
                .collect(),
            user,
            rng: Rng(rng.next()),
            shared: shared.clone(),
            views: HashMap::new(),
            unacked: Vec::new(),
            acks: HashMap::new(),
            counts: Counts::default(),
            next_message: 0,
            contents: Vec::new(),
            resumes: 0,
            resumed: false,
            resume_failed: false,
        };
        clients.push(tokio::spawn(client.run(targets.clone(), done_tx.clone())));
    }
    drop(done_tx);

    let mut fault_log = Vec::new();
    let chatting_until = Instant::now() + CHATTING;
    faults(&mut core, &mut edges, &shared, &outage, &mut fault_log).await;
    tokio::time::sleep_until(chatting_until).await;
    let _ = phase_tx.send(Phase::Draining);

    // Drain: clients send nothing new and resend until every message is acked. The acked
    // messages are then all there will be: each client catches up to them (and their
    // replies) and says so.
    let drain_deadline = Instant::now() + DRAIN;
    let drained = tokio::time::timeout_at(
        drain_deadline,
        outstanding.wait_for(|all| all.iter().all(|n| *n == 0)),
    )
    .await
    .map(|all| all.is_ok());
    let unacked_left: usize = match drained {
        Ok(true) => 0,
        _ => shared
            .outstanding
            .borrow()
            .iter()
            .filter(|n| **n != usize::MAX)
            .sum(),
    };
    let targets_now: HashMap<String, usize> = shared
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(chat, ids)| (chat.clone(), ids.len()))
        .collect();
    let _ = targets_tx.send(Some(targets_now));
    let _ = phase_tx.send(Phase::Settling);
    // Caught up within the drain's bound, or counted as not.
    let mut settled = 0;
    while settled < USERS * TABS {
        match tokio::time::timeout_at(drain_deadline, done.recv()).await {
            Ok(Some(())) => settled += 1,
            _ => break,
        }
    }
    let _ = targets_tx.send(None);
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.expect("client task"));
    }
    let mut report = compare(url, &outcomes).await;
    report.seed = seed;
    report.unacked_left = unacked_left;
    report.unsettled = USERS * TABS - settled;
    report.faults = fault_log;
    report.panics = core.panics();
    let log = std::fs::read_to_string(&core.log).unwrap_or_default();
    report.secrets_logged = outcomes
        .iter()
        .flat_map(|o| o.contents.iter())
        .filter(|content| log.contains(content.as_str()))
        .count();
    report
}

async fn compare(url: &str, outcomes: &[Outcome]) -> Report {
    let (rows, pending) = read_database(url).await;
    let mut report = Report {
        pending_left: pending,
        events: rows.len(),
        ..Default::default()
    };
    let mut stream: HashMap<&str, BTreeMap<i64, Event>> = HashMap::new();
    for row in &rows {
        let message = row.id.as_ref().map(|id| {
            (
                id.clone(),
                row.role.clone().unwrap_or_default(),
                row.content.clone().unwrap_or_default(),
                row.status.clone().unwrap_or_default(),
            )
        });
        stream.entry(row.chat_id.as_str()).or_default().insert(
            row.seq,
            Event {
                kind: row.kind.clone(),
                message,
            },
        );
    }

    // Each client's transcript against the database, chat by chat, from seq 1.
    for outcome in outcomes {
        let c = &outcome.counts;
        report.duplicated += c.duplicated;
        report.reordered += c.reordered;
        report.chunk_duplicated += c.chunk_duplicated;
        report.chunk_lost += c.chunk_lost;
        report.chunk_mismatch += c.chunk_mismatch;
        report.resets += c.resets;
        report.messages_sent += c.sent;
        report.receipts_sent += c.receipts;
        report.refused += c.refused;
        report.resumes_refused += c.resumes_refused;
        report.drops += c.drops;
        report.reconnects += c.reconnects;
        for (chat, view) in &outcome.views {
            let empty = BTreeMap::new();
            let truth = stream.get(chat.as_str()).unwrap_or(&empty);
            for (seq, event) in truth {
                match view.events.get(seq) {
                    None => {
                        report.lost += 1;
                        if report.examples.len() < 5 {
                            report
                                .examples
                                .push(format!("{} lost {chat}#{seq}: {event:?}", outcome.user));
                        }
                    }
                    Some(seen) if seen != event => {
                        report.phantom += 1;
                        if report.examples.len() < 5 {
                            report.examples.push(format!(
                                "{} saw {seen:?} as {chat}#{seq}, stored {event:?}",
                                outcome.user
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
            report.phantom += view
                .events
                .keys()
                .filter(|seq| !truth.contains_key(seq))
                .count();
        }
    }

    // Every stored user message was acked to its sender; every ack names a stored message;
    // each gets exactly one reply, in turn (replies run one at a time per chat, in order), and
    // a complete reply quotes the message it answers (the demo model does).
    let acked: HashMap<&str, &str> = outcomes
        .iter()
        .flat_map(|o| {
            o.acks
                .values()
                .map(|(id, chat)| (id.as_str(), chat.as_str()))
        })
        .collect();
    let stored_ids: HashSet<&str> = rows.iter().filter_map(|r| r.id.as_deref()).collect();
    report.acked_missing = acked.keys().filter(|id| !stored_ids.contains(*id)).count();
    for truth in stream.values() {
        let mut owed: std::collections::VecDeque<&str> = Default::default();
        for event in truth.values() {
            let Some((id, role, content, status)) = &event.message else {
                continue;
            };
            match role.as_str() {
                "user" => {
                    if !acked.contains_key(id.as_str()) {
                        report.unacked_stored += 1;
                    }
                    owed.push_back(content.as_str());
                }
                "assistant" => match owed.pop_front() {
                    None => report.doubly_answered += 1,
                    Some(question) => {
                        // The prompt joins consecutive user messages into one turn, so the
                        // quote ends with the message answered.
                        if status == "complete" && !content.contains(&format!("{question}\". ")) {
                            report.misanswered += 1;
                            if report.examples.len() < 8 {
                                report
                                    .examples
                                    .push(format!("{question:?} answered by {content:?}"));
                            }
                        }
                        if status != "complete" {
                            report.failed_replies += 1;
                        }
                    }
                },
                _ => {}
            }
        }
        report.unanswered += owed.len();
    }
    report
}
