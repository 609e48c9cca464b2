//! The `seq` rules as properties: over random interleavings (seeded, so a failure names the
//! seed that reproduces it) of several connections of two users sending, marking as read,
//! joining and reconnecting with `resume` in two shared chats while the replies stream beside
//! them, every client sees each chat's durable events without a gap, without a duplicate and in
//! order, from the point it joined to the chat's last `seq` in the database.
//!
//! One client is slow (its outbox is small and it reads it lazily), so now and then the core
//! drops it for a full outbox; like a real client it reconnects and resumes, and its view must
//! still be whole: what reached it before the drop, then the replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::command::{ChatAction, ResumeChat, SendMessage};
use super::engine::Engine;
use super::event::{Event, Outgoing};
use super::rooms::Conn;
use super::testing::{self, user};
use crate::config::ChatSettings;
use crate::storage;

/// xorshift64*: small and seedable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One client: what it saw of each chat as (seq) in arrival order, across its reconnects, and
/// the seq it had seen last per chat (what it resumes from).
#[derive(Default)]
struct View {
    seen: HashMap<String, Vec<i64>>,
    /// Per chat, the first seq it must see next after joining (history's lastSeq + 1).
    joined_at: HashMap<String, i64>,
}

/// The durable chat event an outgoing event carries, as (chat, seq).
fn durable(out: &Outgoing) -> Option<(String, i64)> {
    let seq = out.seq?;
    let chat = match &out.event {
        Event::Message(m) => &m.chat_id,
        Event::ReadReceipt(r) => &r.chat_id,
        Event::ChatUpdate(u) => &u.chat_id,
        Event::OperatorJoined(o) | Event::OperatorLeft(o) => &o.chat_id,
        _ => return None,
    };
    Some((chat.clone(), seq))
}

/// A live connection whose outbox is drained into `view` as events arrive: all of it, until
/// the core lets go of the connection, as the gRPC stream forwards it.
struct Client {
    conn: Conn,
    _registration: Box<dyn Send>,
    drain: tokio::task::JoinHandle<()>,
    view: Arc<Mutex<View>>,
    slow: bool,
}

/// The slow client's outbox: the smallest the configuration allows.
const SLOW_OUTBOX: usize = 8;
/// Times the slow client's reader yields before it takes each event.
const SLOW_READS: usize = 40;

impl Client {
    async fn open(
        engine: &Arc<Engine>,
        who: &chat_auth::Principal,
        view: Arc<Mutex<View>>,
        slow: bool,
    ) -> Self {
        let outbox = if slow { SLOW_OUTBOX } else { testing::OUTBOX };
        let (registration, conn, rx) = testing::connect_with_outbox(engine, who, outbox).await;
        let drain = tokio::spawn(drain(rx, view.clone(), if slow { SLOW_READS } else { 0 }));
        Self {
            conn,
            _registration: Box::new(registration),
            drain,
            view,
            slow,
        }
    }

    /// Closes the connection and opens a new one that resumes every chat from what this one
    /// received (all it received before the break: its reader has taken everything).
    async fn reconnect(
        self,
        engine: &Arc<Engine>,
        who: &chat_auth::Principal,
        chats: &[String],
        seed: u64,
    ) -> Self {
        let Self {
            conn,
            _registration: registration,
            drain: reader,
            view,
            slow,
        } = self;
        conn.kill.cancel();
        drop(registration);
        drop(conn);
        let _ = reader.await;
        let wants: Vec<ResumeChat> = chats
            .iter()
            .map(|c| ResumeChat {
                chat_id: c.clone(),
                last_seq: last_seen(&view, c),
                streaming: None,
            })
            .collect();
        let fresh = Client::open(engine, who, view, slow).await;
        engine
            .resume(who, &wants, &fresh.conn)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: resume: {e}"));
        fresh
    }
}

/// The last seq `view` holds of `chat` (the one before its join when it saw none since).
fn last_seen(view: &Mutex<View>, chat: &str) -> i64 {
    let view = view.lock().unwrap_or_else(|p| p.into_inner());
    view.seen
        .get(chat)
        .and_then(|s| s.last().copied())
        .or_else(|| view.joined_at.get(chat).map(|next| next - 1))
        .unwrap_or(0)
}

async fn drain(mut rx: mpsc::Receiver<Arc<Outgoing>>, view: Arc<Mutex<View>>, yields: usize) {
    loop {
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        let Some(out) = rx.recv().await else { break };
        let mut view = view.lock().unwrap_or_else(|p| p.into_inner());
        if let Event::History(h) = &out.event {
            view.joined_at
                .entry(h.chat_id.clone())
                .or_insert(h.last_seq + 1);
        }
        if let Some((chat, seq)) = durable(&out) {
            view.seen.entry(chat).or_default().push(seq);
        }
    }
}

async fn run(seed: u64, drops: &mut usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let settings = ChatSettings {
        single_active_session: false,
        user_messages_per_minute: 10_000,
        read_receipts_per_minute: 10_000,
        joins_per_minute: 10_000,
        resumes_per_minute: 10_000,
        ..ChatSettings::default()
    };
    let engine = Arc::new(testing::engine(&dir, settings, 0).await);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (ann, ben) = (user("ann"), user("ben"));

    // Four clients, two each (connecting makes both users known).
    let who = [&ann, &ann, &ben, &ben];
    // ben's second client is the slow one.
    let mut clients = Vec::new();
    for (n, person) in who.iter().enumerate() {
        clients.push(Client::open(&engine, person, Arc::default(), n == 3).await);
    }

    // Two chats of ann's, ben a member of both.
    let (_owner, owner_conn, mut owner_rx) = testing::connect(&engine, &ann).await;
    let mut chats = Vec::new();
    for title in ["one", "two"] {
        let create = ChatAction::Create {
            title: Some(title.into()),
            agent_id: None,
            model: None,
            spoken_replies: None,
        };
        engine
            .chat_action(&ann, create, &owner_conn)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
        let chat = loop {
            let out = owner_rx.recv().await.unwrap_or_else(|| panic!("outbox"));
            if let Event::ChatUpdate(u) = &out.event {
                break u.chat_id.clone();
            }
        };
        let add = ChatAction::AddMember {
            chat_id: chat.clone(),
            user_id: "ben".into(),
        };
        engine
            .chat_action(&ann, add, &owner_conn)
            .await
            .unwrap_or_else(|e| panic!("add member: {e}"));
        chats.push(chat);
    }

    // Every client joins both chats.
    for (person, client) in who.iter().zip(&clients) {
        for chat in &chats {
            let join = ChatAction::Join {
                chat_id: chat.clone(),
            };
            engine
                .chat_action(person, join, &client.conn)
                .await
                .unwrap_or_else(|e| panic!("join: {e}"));
        }
    }

    let mut sent = 0;
    for _ in 0..40 {
        let i = rng.below(4) as usize;
        let chat = chats[rng.below(2) as usize].clone();
        match rng.below(10) {
            0..=4 => {
                sent += 1;
                let message = SendMessage {
                    chat_id: Some(chat),
                    content: format!("message {sent}"),
                    client_message_id: format!("s{seed}-{sent}"),
                    ..SendMessage::default()
                };
                engine
                    .send_message(who[i], message, Some(&clients[i].conn))
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: send: {e}"));
            }
            5..=6 => {
                let (rows, _) = storage::history(engine.db(), &chat, None, 1)
                    .await
                    .unwrap_or_else(|e| panic!("history: {e}"));
                if let Some(row) = rows.last() {
                    // Receipts of messages already read are no-ops (404): both are fine here.
                    let _ = engine
                        .read_receipt(who[i], &chat, std::slice::from_ref(&row.id))
                        .await;
                }
            }
            _ => {
                // Reconnect: a new connection resumes both chats from what the old one saw.
                let old = clients.remove(i);
                clients.insert(i, old.reconnect(&engine, who[i], &chats, seed).await);
            }
        }
        // Now and then the replies catch up before the next step, so steps interleave with
        // replies both running and finished.
        if rng.below(4) == 0 {
            tokio::task::yield_now().await;
        }
        *drops += reconnect_dropped(&engine, &mut clients, &who, &chats, seed).await;
    }
    assert!(
        engine.finish_replies(Duration::from_secs(20)).await,
        "seed {seed}: replies done"
    );
    // The last replies may have dropped someone too; nothing streams now, so one round heals.
    *drops += reconnect_dropped(&engine, &mut clients, &who, &chats, seed).await;

    for (n, client) in clients.into_iter().enumerate() {
        client.conn.kill.cancel();
        drop(client._registration);
        drop(client.conn);
        let _ = client.drain.await;
        for chat in &chats {
            let last = storage::last_seq(engine.db(), chat)
                .await
                .unwrap_or_else(|e| panic!("last seq: {e}"));
            let (from, seen) = {
                let view = client.view.lock().unwrap_or_else(|p| p.into_inner());
                let from = view.joined_at.get(chat).copied().unwrap_or(1);
                (from, view.seen.get(chat).cloned().unwrap_or_default())
            };
            let expected: Vec<i64> = (from..=last).collect();
            assert_eq!(
                seen, expected,
                "seed {seed}, client {n}, chat {chat}: every durable event from its join to \
                 the last, once, in order"
            );
        }
    }
}

/// Reconnects, as their clients would, the connections the core dropped for a full outbox.
/// Returns how many.
async fn reconnect_dropped(
    engine: &Arc<Engine>,
    clients: &mut Vec<Client>,
    who: &[&chat_auth::Principal],
    chats: &[String],
    seed: u64,
) -> usize {
    let mut dropped = 0;
    for i in 0..clients.len() {
        if clients[i].conn.kill.is_cancelled() {
            dropped += 1;
            let old = clients.remove(i);
            clients.insert(i, old.reconnect(engine, who[i], chats, seed).await);
        }
    }
    dropped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_sees_each_chats_events_without_gap_duplicate_or_reorder() {
    let mut drops = 0;
    for seed in 1..=12 {
        run(seed, &mut drops).await;
    }
    // About 120 here: the slow client's path must have been taken, or it proved nothing.
    assert!(
        drops > 0,
        "the slow client was never dropped for a full outbox"
    );
    eprintln!("{drops} connections dropped for a full outbox and resumed");
}
