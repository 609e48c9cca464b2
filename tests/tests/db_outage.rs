//! The database goes away under a running stack: a `message` gets error 503 (retryable) and no
//! ack, readiness (the core's gRPC health, watched as a stream) turns NOT_SERVING, and when the
//! database is back readiness returns and the client's resend is stored exactly once. SQLite:
//! another process holds the file's write lock. PostgreSQL: the test's own cluster is stopped
//! and started again (`pg_ctl stop` / `start`).

use chat_core::storage;
use chat_tests::pg_cluster::PgCluster;
use std::time::Duration;

use chat_tests::fake_llm::FakeScript;
use chat_tests::{Llm, Stack, StackOptions, WAIT, Ws, spawn_stack};
use diesel::Connection;
use diesel::connection::SimpleConnection;
use futures::StreamExt;
use tonic_health::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response};

/// Short waits, so each outage is noticed in well under a second.
fn quick(c: &mut chat_core::Settings, url: String) {
    c.database.url = url;
    c.database.busy_timeout_ms = 300;
    c.database.acquire_timeout_ms = 1000;
    c.database.check_interval_ms = 100;
}

/// Another process's write lock on a SQLite file (`BEGIN EXCLUSIVE` on its own connection, in
/// its own thread), held until [`WriteLock::release`].
struct WriteLock {
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl WriteLock {
    /// Returns once the lock is held.
    async fn take(path: std::path::PathBuf) -> Self {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let holder = std::thread::spawn(move || {
            let mut conn =
                diesel::SqliteConnection::establish(&path.display().to_string()).expect("open");
            conn.batch_execute("BEGIN EXCLUSIVE").expect("lock");
            let _ = locked_tx.send(());
            let _ = released.recv();
            conn.batch_execute("ROLLBACK").expect("unlock");
        });
        locked.await.expect("locked");
        Self { release, holder }
    }

    fn release(self) {
        self.release.send(()).expect("holder waiting");
        self.holder.join().expect("holder");
    }
}

/// The core's readiness as a stream of changes.
struct Readiness(tonic::Streaming<tonic_health::pb::HealthCheckResponse>);

impl Readiness {
    async fn watch(stack: &Stack) -> Self {
        let mut client = HealthClient::new(stack.grpc().await);
        let stream = client
            .watch(HealthCheckRequest {
                service: "chat.v1.ChatService".into(),
            })
            .await
            .expect("health watch")
            .into_inner();
        let mut readiness = Self(stream);
        readiness.expect(ServingStatus::Serving).await;
        readiness
    }

    async fn expect(&mut self, want: ServingStatus) {
        let want = match want {
            ServingStatus::Serving => health_check_response::ServingStatus::Serving,
            _ => health_check_response::ServingStatus::NotServing,
        };
        let got = tokio::time::timeout(WAIT, self.0.next())
            .await
            .expect("a readiness change in time")
            .expect("health stream open")
            .expect("health status");
        assert_eq!(got.status(), want);
    }
}

/// A message while the database is away: 503, retryable, for this message, and no ack.
async fn refused(ws: &mut Ws, id: &str) {
    ws.send_message(None, "is anyone there?", id).await;
    let (error, before) = ws.recv_type_collect("error").await;
    let e = &error["data"];
    assert_eq!(
        (e["code"].as_u64(), e["retryable"].as_bool()),
        (Some(503), Some(true)),
        "{error}"
    );
    assert_eq!(e["messageId"], id);
    assert!(
        before.iter().all(|f| f["type"] != "ack"),
        "no ack: {before:?}"
    );
}

/// The resend once the database is back: acked as new, answered, stored once.
async fn accepted_once(stack: &Stack, ws: &mut Ws, id: &str) {
    ws.send_message(None, "is anyone there?", id).await;
    let ack = ws.recv_type("ack").await;
    assert_eq!(ack["data"]["duplicate"], false);
    ws.recv_reply().await;
    let stored = storage::find_by_client_id(&stack.db, "opal", id)
        .await
        .expect("query");
    let chat = stored.expect("stored").chat_id;
    let (rows, _) = storage::history(&stack.db, &chat, None, 100)
        .await
        .expect("history");
    let mine: Vec<_> = rows.iter().filter(|r| r.role == "user").collect();
    assert_eq!(mine.len(), 1, "exactly once: {rows:?}");
}

#[tokio::test]
async fn sqlite_locked_by_another_writer_refuses_messages_with_503_until_it_is_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chat.db");
    let url = format!("sqlite://{}", path.display());
    let stack = spawn_stack(StackOptions::default().core(move |c| quick(c, url))).await;
    let mut readiness = Readiness::watch(&stack).await;
    let (mut ws, _) = stack.connect("opal").await;

    // Another process takes the write lock and holds it until told to let go.
    let lock = WriteLock::take(path).await;

    refused(&mut ws, "outage-1").await;
    readiness.expect(ServingStatus::NotServing).await;

    lock.release();
    readiness.expect(ServingStatus::Serving).await;
    accepted_once(&stack, &mut ws, "outage-1").await;
    stack.stop().await;
}

#[tokio::test]
async fn postgres_stopped_refuses_messages_with_503_and_a_resend_after_its_restart_is_stored_once()
{
    let cluster = PgCluster::start();
    let url = cluster.url.clone();
    let stack = spawn_stack(StackOptions::default().core(move |c| quick(c, url))).await;
    let mut readiness = Readiness::watch(&stack).await;
    let (mut ws, _) = stack.connect("opal").await;

    cluster.pause();
    refused(&mut ws, "outage-2").await;
    readiness.expect(ServingStatus::NotServing).await;

    cluster.resume();
    readiness.expect(ServingStatus::Serving).await;
    accepted_once(&stack, &mut ws, "outage-2").await;
    // The stack keeps working after the outage.
    ws.send(serde_json::json!({"type": "ping", "data": {"timestamp": 1}}))
        .await;
    ws.recv_type("pong").await;
    stack.stop().await;
}

/// A pool's idle PostgreSQL connections that a restart closed are replaced before use, without
/// a `SELECT 1` per checkout: every call after the restart succeeds at its first try.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_an_idle_pool_hands_out_no_dead_connection() {
    use diesel_async::RunQueryDsl;
    const CONNECTIONS: usize = 4;
    let cluster = PgCluster::start();
    let db = storage::Db::connect(&cluster.url, CONNECTIONS as u32)
        .await
        .expect("connect");
    let storage::Pools::Pg(pool) = db.pools() else {
        panic!("a postgres:// URL gives a PostgreSQL pool")
    };
    let query = |pool: diesel_async::pooled_connection::bb8::Pool<
        diesel_async::AsyncPgConnection,
    >| async move {
        let mut conn = pool.get().await.map_err(|err| err.to_string())?;
        diesel::sql_query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(|err| err.to_string())
    };
    // Every connection of the pool opened and back in it, idle.
    {
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            held.push(pool.get().await.expect("a connection"));
        }
    }
    assert_eq!(pool.state().idle_connections, CONNECTIONS as u32);

    cluster.pause();
    cluster.resume();

    let calls: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(query(pool.clone())))
        .collect();
    for call in calls {
        let outcome = call.await.expect("query task");
        assert_eq!(outcome, Ok(1), "a call right after the restart");
    }
}

#[tokio::test]
async fn a_reply_that_ends_while_sqlite_is_locked_is_stored_and_delivered_once_it_is_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chat.db");
    let url = format!("sqlite://{}", path.display());
    let script = FakeScript::reply(&["one ", "two ", "three ", "four"])
        .with_delay(Duration::from_millis(100));
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(script))
            .core(move |c| quick(c, url)),
    )
    .await;
    let (mut ws, _) = stack.connect("opal").await;
    ws.send_message(None, "count to four", "late-1").await;
    ws.recv_type("ack").await;
    let first = ws.recv_type("message_chunk").await;
    let reply_id = first["data"]["messageId"].as_str().expect("id").to_string();

    // The lock is taken mid-reply; the model finishes while it is held.
    let lock = WriteLock::take(path).await;
    let mut last = first;
    while last["data"]["index"] != 3 {
        last = ws.recv_type("message_chunk").await;
    }
    // Held on for five times the busy timeout after the last token, so the core's first
    // attempts to store the reply meet the lock (a longer hold proves nothing more).
    // Until then the core keeps the reply (no error, no final message).
    ws.expect_silence(Duration::from_millis(1500)).await;
    lock.release();

    let (fin, _) = ws
        .recv_until(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .await;
    let message = &fin["data"]["message"];
    assert_eq!(message["id"], reply_id.as_str(), "{fin}");
    assert_eq!(message["status"], "complete");
    assert_eq!(message["content"], "one two three four");
    stack.stop().await;
}
