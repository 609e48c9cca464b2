//! Helpers for the domain's unit tests: an engine on a fresh SQLite file with the demo model,
//! principals, and connections with their outboxes.

use std::sync::Arc;

use chat_auth::{Principal, Verifier};
use tokio::sync::mpsc;

use super::engine::{Engine, new_id};
use super::event::Outgoing;
use super::rooms::Conn;
use crate::config::ChatSettings;
use crate::llm::{Llm, LlmSettings};
use crate::storage::Db;

/// An engine on `dir/chat.db` (migrated; reopening the same `dir` finds the same data), with
/// the demo model pausing `word_delay_ms` between words.
pub async fn engine(dir: &tempfile::TempDir, settings: ChatSettings, word_delay_ms: u64) -> Engine {
    let url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let db = Db::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("db: {e}"));
    db.migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    let mut llm = LlmSettings::default();
    if let Some(demo) = llm.providers.get_mut("demo") {
        demo.word_delay_ms = Some(word_delay_ms);
    }
    let llm = Llm::new(&llm).unwrap_or_else(|e| panic!("llm: {e}"));
    let verifier = Verifier::new(&chat_auth::AuthSettings::hs256(
        "a-test-secret-of-32-bytes-or-more!!",
    ))
    .unwrap_or_else(|e| panic!("verifier: {e}"));
    Engine::new(db, llm, settings, verifier)
}

pub fn user(id: &str) -> Principal {
    Principal {
        user_id: id.into(),
        name: format!("{id} name"),
        roles: Vec::new(),
        expires_at: u64::MAX,
    }
}

/// The outbox of a test connection, as `chat.outbound_buffer`'s default.
pub const OUTBOX: usize = 256;

/// A connection of `user_id` that is not registered yet, and its outbox.
pub fn conn(engine: &Engine, user_id: &str) -> (Conn, mpsc::Receiver<Arc<Outgoing>>) {
    conn_with_outbox(engine, user_id, OUTBOX)
}

/// [`conn`] with an outbox of `capacity` events.
pub fn conn_with_outbox(
    engine: &Engine,
    user_id: &str,
    capacity: usize,
) -> (Conn, mpsc::Receiver<Arc<Outgoing>>) {
    let (tx, rx) = mpsc::channel(capacity);
    let conn = Conn {
        id: new_id().into(),
        user_id: user_id.into(),
        tx,
        kill: engine.shutdown.child_token(),
    };
    (conn, rx)
}

/// A registered connection of `who` (registered while the first value lives), its outbox,
/// and the `session` event already read from it.
pub async fn connect(
    engine: &Arc<Engine>,
    who: &Principal,
) -> (impl Sized + use<>, Conn, mpsc::Receiver<Arc<Outgoing>>) {
    connect_with_outbox(engine, who, OUTBOX).await
}

/// [`connect`] with an outbox of `capacity` events.
pub async fn connect_with_outbox(
    engine: &Arc<Engine>,
    who: &Principal,
    capacity: usize,
) -> (impl Sized + use<>, Conn, mpsc::Receiver<Arc<Outgoing>>) {
    let (conn, rx) = conn_with_outbox(engine, &who.user_id, capacity);
    let (registration, _session) = engine
        .open(who, &conn)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    (registration, conn, rx)
}
