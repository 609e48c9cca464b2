//! Durable storage: users, chats and their members, messages, durable chat events, read
//! receipts and token usage, on SQLite (single node, development) or PostgreSQL (production).
//!
//! [`Db`] owns one bb8 pool for whichever backend the URL names. Every query is written once,
//! inside `with_conn!` or `with_tx!`, which expand the body for each backend's connection
//! type, so both get type-checked against the one hand-written [`schema`]. Storage is plain
//! async functions grouped by table ([`users`], [`chats`], [`messages`], [`events`],
//! [`usage`]); the chat engine owns the decisions, this module only keeps the invariants that
//! need a transaction (per-chat sequence numbers, idempotent sends, chat + owner creation).
//!
//! Migrations are embedded per backend (`migrations/sqlite`, `migrations/postgres`) and run by
//! [`Db::migrate`].

// The dispatch macros come first: `macro_rules!` is textually scoped, so the table modules
// declared below can use them.

/// Runs `$body` with `$c` bound to a pooled connection of the backend `$db` points at.
///
/// The body is expanded once per backend, so it must type-check against both
/// `AsyncPgConnection` and `SqliteConn`. A pool error returns early through `?`, so the
/// enclosing function must return [`Result`].
macro_rules! with_conn {
    ($db:expr, |$c:ident| $body:expr) => {
        pooled!($db, |$c| $body, sqlite_first: {})
    };
}

/// [`with_conn!`] for a body that writes: on SQLite it first waits its turn at the write gate
/// ([`Db`]), so our own writers never wait on SQLite's lock (statements run inline: see
/// [`Inline`]). On PostgreSQL it is [`with_conn!`].
macro_rules! with_write {
    ($db:expr, |$c:ident| $body:expr) => {
        pooled!($db, |$c| $body, sqlite_first: {
            let _gate = $db.write_gate.lock().await;
            $db.writes.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
        })
    };
}

/// What [`with_conn!`] and [`with_write!`] expand to: `$first` runs on SQLite before the
/// connection is taken from the pool (and lives as long as it).
macro_rules! pooled {
    ($db:expr, |$c:ident| $body:expr, sqlite_first: { $($first:tt)* }) => {
        match &$db.pools {
            $crate::storage::Pools::Pg(pool) => {
                let mut guard = pool.get().await?;
                let $c: &mut ::diesel_async::AsyncPgConnection = &mut guard;
                $body
            }
            $crate::storage::Pools::Sqlite(pool) => {
                $($first)*
                let mut guard = pool.get().await?;
                let $c: &mut $crate::storage::SqliteConn = &mut guard;
                $body
            }
        }
    };
}

/// Runs `$body` inside a write transaction, with `$c` bound to the transaction's connection;
/// evaluates to `std::result::Result<_, $err>`. The body returning `Err` rolls back.
///
/// On SQLite the transaction waits its turn at the write gate, then starts with
/// `BEGIN IMMEDIATE`: it takes the write lock up front (only another process can hold it; then
/// it waits up to `busy_timeout`), so a transaction that reads before it writes can never hit
/// `SQLITE_BUSY_SNAPSHOT`, which a deferred transaction gets immediately, without waiting,
/// when another writer committed after its first read. On PostgreSQL it is a plain
/// READ COMMITTED transaction; bodies lock what they need (`UPDATE ... RETURNING` on the chat
/// row serialises writers of one chat).
macro_rules! with_tx {
    ($db:expr, $err:ty, |$c:ident| $body:expr) => {
        match &$db.pools {
            $crate::storage::Pools::Pg(pool) => {
                let mut guard = pool.get().await?;
                let conn: &mut ::diesel_async::AsyncPgConnection = &mut guard;
                ::diesel_async::AsyncConnection::transaction::<_, $err, _>(
                    conn,
                    async |$c: &mut ::diesel_async::AsyncPgConnection| $body,
                )
                .await
            }
            $crate::storage::Pools::Sqlite(pool) => {
                let _gate = $db.write_gate.lock().await;
                $db.writes
                    .fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
                let mut guard = pool.get().await?;
                let conn: &mut $crate::storage::SqliteConn = &mut guard;
                match $crate::storage::sqlite_begin(conn).await {
                    Err(err) => Err(<$err>::from(err)),
                    Ok(()) => {
                        let outcome: ::std::result::Result<_, $err> = async {
                            let $c: &mut $crate::storage::SqliteConn = &mut *conn;
                            $body
                        }
                        .await;
                        let end = $crate::storage::sqlite_end(conn, outcome.is_ok()).await;
                        match (outcome, end) {
                            (Ok(value), Ok(())) => Ok(value),
                            (Ok(_), Err(err)) => Err(<$err>::from(err)),
                            (Err(err), _) => Err(err),
                        }
                    }
                }
            }
        }
    };
}

/// Why a transaction that takes the chat's next `seq` rolled back: the chat is missing, or a
/// query failed (shared by [`messages::insert_message`] and [`events::append_event`]).
enum TxError {
    ChatMissing,
    Query(diesel::result::Error),
    Crypto(crate::crypto::CryptoError),
}

impl From<diesel::result::Error> for TxError {
    fn from(err: diesel::result::Error) -> Self {
        TxError::Query(err)
    }
}

// Statement macros first, for the transactions of the modules after them.
#[macro_use]
pub mod usage;

pub mod admin;
pub mod audit;
pub mod chats;
pub mod deletion;
pub mod events;
pub mod files;
pub mod help;
pub mod messages;
pub mod models;
pub mod pending;
mod prepared;
pub mod reencrypt;
pub mod schema;
pub mod users;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt as _;

use crate::crypto::{CryptoError, Keyring};

// The flat API callers use (`storage::insert_message`); the modules group it by table.
pub use admin::{
    SessionCursor, SessionFilter, SessionSort, UsageGroup, UsageTotals, list_sessions, session_of,
    usage_report, user_names,
};
pub use audit::{audit_of_chat, record_audit};
pub use chats::{
    NewChat, acquire_operator, add_member, conversations_of, create_chat, end_chat,
    expired_operator_leases, find_keyed_chat, get_chat, get_chat_as, idle_chats, is_member,
    latest_active_chat, list_user_chats, member_ids, other_active_chats, release_operator,
    remove_member, renew_operator, reopen_chat, set_conversation, set_model, set_needs_help,
    set_spoken_replies, set_title, spoken_replies,
};
pub use deletion::{chats_inactive_since, delete_chat, delete_file, delete_unattached_files};
pub use events::{Durable, append_event, events_after, record_receipts};
pub use files::{NewFile, files_after, get_file, get_files, insert_file};
pub use help::{
    NewHelpRequest, get_help_request, help_requests_of_chat, insert_help_request,
    list_help_requests, resolve_help_request, resolve_open_help_requests,
};
pub use messages::{
    Along, Inserted, NewMessage, ReplyLink, find_by_client_id, get_message, history,
    insert_message, insert_message_with, last_seq,
};
pub use models::{
    AuditRow, ChatRow, EventRow, FileRow, HelpRequestRow, MessageRow, PendingReplyRow,
    SessionMetricsRow, UsageRow, UserRow,
};
pub use pending::{
    Checkpointed, checkpoint_reply, claim_pending_reply, forget_pending_reply, pending_replies,
    pending_replies_of_dead,
};
pub use reencrypt::{ColumnCounts, reencrypt_columns};
pub use usage::{NewUsage, insert_usage, usage_for_message};
pub use users::{
    UserContextRow, get_user, get_user_context, set_online, set_user_context, upsert_user,
};

/// The encrypted columns, by the name their associated data carries (with the row's id, so
/// a ciphertext copied to another row or column does not open). Everything else is clear:
/// ids, names, titles, timestamps, counts, file names and types, metadata.
pub(crate) mod sealed {
    pub const MESSAGE_CONTENT: &str = "messages.content";
    pub const PENDING_PARTIAL: &str = "pending_replies.partial";
    pub const CONTEXT_DOCUMENT: &str = "user_contexts.document";
    pub const HELP_REASON: &str = "help_requests.reason";
    /// Titles are made from the first message's first line unless a client names the chat.
    pub const CHAT_TITLE: &str = "chats.title";
    /// Durable events carry titles (and may carry text): the whole JSON payload is sealed,
    /// its associated data naming the chat and the seq.
    pub const EVENT_PAYLOAD: &str = "chat_events.payload";
}

impl Db {
    /// The stored form of `plain` in `column` of the row `id` (sealed when keys are set).
    pub(crate) fn seal(&self, column: &str, id: &str, plain: &str) -> Result<String> {
        Ok(self.keyring.seal_text(&format!("{column}:{id}"), plain)?)
    }

    /// The plaintext of a stored value of `column` in the row `id`.
    pub(crate) fn open(&self, column: &str, id: &str, stored: &str) -> Result<String> {
        Ok(self.keyring.open_text(&format!("{column}:{id}"), stored)?)
    }

    pub(crate) fn open_message(&self, mut row: MessageRow) -> Result<MessageRow> {
        row.content = self.open(sealed::MESSAGE_CONTENT, &row.id, &row.content)?;
        Ok(row)
    }

    pub(crate) fn open_chat(&self, mut row: ChatRow) -> Result<ChatRow> {
        row.title = self.open(sealed::CHAT_TITLE, &row.id, &row.title)?;
        Ok(row)
    }

    pub(crate) fn open_chat_opt(&self, row: Option<ChatRow>) -> Result<Option<ChatRow>> {
        row.map(|row| self.open_chat(row)).transpose()
    }

    pub(crate) fn open_chats(&self, rows: Vec<ChatRow>) -> Result<Vec<ChatRow>> {
        rows.into_iter().map(|row| self.open_chat(row)).collect()
    }

    /// The associated data of a stored event's payload.
    pub(crate) fn event_aad(chat_id: &str, seq: i64) -> String {
        format!("{}:{chat_id}:{seq}", sealed::EVENT_PAYLOAD)
    }

    pub(crate) fn open_help(&self, mut row: HelpRequestRow) -> Result<HelpRequestRow> {
        if let Some(reason) = &row.reason {
            row.reason = Some(self.open(sealed::HELP_REASON, &row.id, reason)?);
        }
        Ok(row)
    }
}

/// Milliseconds from `from` to `to`, never negative (clocks may step back).
pub(crate) fn duration_ms(from: chrono::NaiveDateTime, to: chrono::NaiveDateTime) -> i64 {
    (to - from).num_milliseconds().max(0)
}

/// SQLite has no async driver: diesel-async's wrapper runs the sync connection, here on the
/// calling thread ([`Inline`]).
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// Runs each SQLite statement on the thread that awaits it, instead of handing it to tokio's
/// blocking pool (diesel-async's default).
///
/// A statement on a local SQLite file takes microseconds; the hand-off to a blocking thread
/// and back cost about ten times that in wake-ups (two cross-thread wake-ups and four context
/// switches per statement; a turn runs about 25 statements, and removing the hand-off took a
/// turn from 8.7 to 3.5 ms of CPU on this project's two-core VM). What makes inline safe: no
/// statement of ours waits on another of our connections (writers queue on [`Db`]'s async
/// write gate, readers never wait in WAL mode), WAL commits do not `fsync`
/// (`synchronous = NORMAL`), and the checkpoint that does runs on a blocking thread of its own
/// ([`spawn_checkpointer`]). What can still block a runtime thread: another *process* holding
/// the write lock (the writer holding the gate then waits in SQLite's busy handler, up to
/// `busy_timeout`, on its thread; the other writers wait on the gate) and a slow query (the few
/// that scan run on the blocking pool: [`Db::off_runtime`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

/// `BEGIN IMMEDIATE` on a SQLite connection (diesel-async offers its `immediate_transaction`
/// only with its default spawner).
pub(crate) async fn sqlite_begin(conn: &mut SqliteConn) -> diesel::QueryResult<()> {
    use diesel::connection::AnsiTransactionManager;
    conn.spawn_blocking(|c| AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"))
        .await
}

/// Commits (`commit`) or rolls back the transaction [`sqlite_begin`] opened.
pub(crate) async fn sqlite_end(conn: &mut SqliteConn, commit: bool) -> diesel::QueryResult<()> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    conn.spawn_blocking(move |c| {
        if commit {
            AnsiTransactionManager::commit_transaction(c)
        } else {
            AnsiTransactionManager::rollback_transaction(c)
        }
    })
    .await
}

impl diesel_async::sync_connection_wrapper::SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures::future::BoxFuture<
        'a,
        std::result::Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>,
    >
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// The check of a pooled PostgreSQL connection before each use: no round trip. A connection
/// the server closed (a restart, `idle_session_timeout`, a killed backend) is known closed by
/// its background task as soon as the socket reports it, and is replaced; any other is used as
/// is. diesel-async's default (`Verified`) ran a `SELECT 1` before every storage call, half the
/// round trips of a turn. What this gives up: a connection whose server vanished without a word
/// (a cut network) fails its next real query instead of the ping, once.
fn pg_still_open(
    conn: &mut AsyncPgConnection,
) -> futures::future::BoxFuture<'_, diesel::QueryResult<()>> {
    // `PoolableConnection` is diesel-async's own pool trait (hidden from its docs, public):
    // `is_broken` is the pool's non-blocking check, here the socket's closed flag.
    use diesel_async::pooled_connection::PoolableConnection as _;
    let closed = conn.is_broken();
    async move {
        if closed {
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection,
                Box::new("the server closed this pooled connection".to_owned()),
            ))
        } else {
            Ok(())
        }
    }
    .boxed()
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// Per-connection SQLite settings. `busy_timeout` comes first so that switching to WAL (which
/// needs a lock the first time) already waits instead of failing. WAL and `synchronous=NORMAL`
/// let readers run beside the single writer and keep commits cheap; `foreign_keys` is off by
/// default in SQLite and the schema relies on `ON DELETE CASCADE`.
///
/// `journal_size_limit` (64 MiB): the WAL file, once started over, is cut back to this.
/// `wal_autocheckpoint = 0`: no commit copies the WAL back into the database file (the one
/// write that `fsync`s); [`spawn_checkpointer`] does, on a blocking thread.
fn sqlite_pragmas(busy_timeout: Duration) -> String {
    format!(
        "PRAGMA busy_timeout = {}; \
         PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; \
         PRAGMA wal_autocheckpoint = 0; \
         PRAGMA journal_size_limit = 67108864; \
         PRAGMA foreign_keys = ON;",
        busy_timeout.as_millis()
    )
}

/// How often [`spawn_checkpointer`] looks for writes to copy into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The WAL's checkpoints: a connection of their own, used on a blocking thread.
struct Checkpointer {
    path: String,
    conn: tokio::sync::Mutex<Option<SqliteConnection>>,
}

impl Checkpointer {
    /// One `PRAGMA wal_checkpoint(PASSIVE)`: copies what no reader still needs, waits for
    /// nobody.
    async fn passive(&self) {
        let mut held = self.conn.lock().await;
        let (path, conn) = (self.path.clone(), held.take());
        *held = tokio::task::spawn_blocking(move || {
            use diesel::Connection as _;
            use diesel::connection::SimpleConnection as _;
            let mut conn = match conn {
                Some(conn) => conn,
                None => SqliteConnection::establish(&path)
                    .map_err(|err| tracing::warn!(error = %err, "checkpoint connection failed"))
                    .ok()?,
            };
            match conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
                Ok(()) => Some(conn),
                Err(err) => {
                    tracing::warn!(error = %err, "WAL checkpoint failed");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten();
    }

    /// Copies the WAL into the database file: once beside the writers, then again holding the
    /// write gate, for what they committed meanwhile. Only a WAL copied to its last frame is
    /// started over by the next write (from its beginning, the file kept at
    /// `journal_size_limit`); copied beside a steady stream of commits it never is, and grows
    /// without end (the first soak found 1.3 GB after 22 minutes). The second pass holds the
    /// writers only for the commits of the first pass's few milliseconds.
    async fn checkpoint(&self, gate: &tokio::sync::Mutex<()>) {
        self.passive().await;
        let _gate = gate.lock().await;
        self.passive().await;
    }
}

/// Checkpoints the SQLite file's WAL ([`Checkpointer::checkpoint`]) every [`CHECKPOINT_EVERY`]
/// that saw a write, on a blocking thread, so the `fsync` it does never stalls a runtime thread
/// ([`Inline`]). Ends when the last clone of `db` is dropped. (SQLite also checkpoints when the
/// last connection closes.)
fn spawn_checkpointer(db: &Db) {
    let Some(checkpointer) = &db.checkpointer else {
        return;
    };
    let (checkpointer, gate, writes) = (
        Arc::downgrade(checkpointer),
        Arc::downgrade(&db.write_gate),
        Arc::downgrade(&db.writes),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = 0;
        loop {
            tick.tick().await;
            let (Some(checkpointer), Some(gate), Some(writes)) =
                (checkpointer.upgrade(), gate.upgrade(), writes.upgrade())
            else {
                return;
            };
            let now =
                std::sync::atomic::AtomicU64::load(&writes, std::sync::atomic::Ordering::Relaxed);
            if now == seen {
                continue;
            }
            seen = now;
            checkpointer.checkpoint(&gate).await;
        }
    });
}

/// How the pool waits and how big it grows ([`Db::connect_with`]).
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection (one that works: a dead server is
    /// retried until then) before getting [`StorageError::Pool`].
    pub acquire_timeout: Duration,
    /// SQLite: how long a write waits for another writer's lock before "database is locked".
    pub busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything storage can fail with. Callers map these to protocol errors; only
/// [`StorageError::NotFound`] is meant to reach a client as such, the rest are internal.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database URL is malformed, names an unsupported scheme, or asks for an in-memory
    /// SQLite database (each pooled connection would get its own empty database).
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The directory for a SQLite file could not be created.
    #[error("cannot create database directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    /// Opening a connection failed (bad credentials, server down, unreadable file).
    #[error("database connection failed: {0}")]
    Connect(#[from] PoolError),
    /// No pooled connection became available in time, or making one failed.
    #[error("database pool: {0}")]
    Pool(#[from] bb8::RunError<PoolError>),
    /// A statement failed (constraint violation, lost connection, ...).
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migration(Box<dyn std::error::Error + Send + Sync>),
    /// The row the operation needs (a chat, a user) does not exist.
    #[error("not found")]
    NotFound,
    /// Work handed to the blocking pool ([`Db::off_runtime`]) did not finish: the runtime
    /// is shutting down.
    #[error("database work interrupted: {0}")]
    Interrupted(String),
    /// An encrypted column could not be sealed or opened (a key missing from the keyring, a
    /// row that does not authenticate).
    #[error("encrypted column: {0}")]
    Crypto(#[from] CryptoError),
}

impl StorageError {
    /// The database cannot be reached or used right now (server down, connection lost, the
    /// pool's wait ran out, SQLite locked by another writer): worth retrying, unlike a bad
    /// query or a missing row.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            Self::Connect(_) | Self::Pool(_) => true,
            Self::Query(Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )) => true,
            Self::Query(Error::DatabaseError(_, info)) => {
                let message = info.message();
                [
                    "database is locked",
                    "database table is locked",
                    "terminating connection",
                    "the database system is",
                    "server closed the connection",
                    "connection closed",
                ]
                .iter()
                .any(|m| message.contains(m))
            }
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A pool of connections to the configured backend, and the keyring that seals the text
/// columns holding what users wrote ([`crate::crypto`]; off unless keys are configured).
/// Cheap to clone (the pools and the keyring are shared).
#[derive(Clone)]
pub struct Db {
    pools: Pools,
    /// SQLite's writers take turns here, asynchronously, before they touch SQLite's lock
    /// ([`with_write!`], [`with_tx!`]); unused on PostgreSQL.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// Writes through the gate so far: the checkpointer skips a quiet file.
    writes: Arc<std::sync::atomic::AtomicU64>,
    /// SQLite's WAL checkpoints ([`spawn_checkpointer`]); `None` on PostgreSQL.
    checkpointer: Option<Arc<Checkpointer>>,
    keyring: Arc<Keyring>,
    /// The id this core writes as the owner of the replies it owes (`pending_replies.owner`).
    owner: Arc<str>,
}

/// The pool of whichever backend the URL named.
#[derive(Clone)]
pub enum Pools {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.pools {
            Pools::Pg(pool) => pool.state(),
            Pools::Sqlite(pool) => pool.state(),
        };
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .field("keyring", &self.keyring)
            .finish()
    }
}

/// What a database URL asks for, before anything is opened.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Postgres(String),
    SqliteFile(String),
}

fn parse_url(url: &str) -> Result<Target> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_owned()));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains(':') {
        // Anything else with a scheme (`mysql://`, `file:`, `postgress://`): refuse rather than
        // guess, so a typo never silently creates a SQLite file named after a URL.
        let scheme = url.split(':').next().unwrap_or_default();
        return Err(StorageError::InvalidUrl(format!(
            "unsupported scheme {scheme:?}; use sqlite://path/to/file.db, a bare file path, \
             postgres://... or postgresql://..."
        )));
    } else {
        url
    };
    let memory = path.is_empty()
        || path.starts_with(':')
        || path.contains("mode=memory")
        || path.eq_ignore_ascii_case("memory");
    if memory {
        return Err(StorageError::InvalidUrl(format!(
            "{url:?} is not a SQLite file: in-memory databases are not supported because every \
             pooled connection would open its own empty database; use a file such as \
             sqlite://data/chat.db (a temporary file in tests)"
        )));
    }
    if path.contains('?') {
        return Err(StorageError::InvalidUrl(format!(
            "{url:?}: SQLite URL parameters are not supported; the pool sets its own pragmas"
        )));
    }
    Ok(Target::SqliteFile(path.to_owned()))
}

impl Db {
    fn new(pools: Pools) -> Self {
        Self {
            pools,
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
            writes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            checkpointer: None,
            keyring: Arc::new(Keyring::off()),
            owner: Arc::from(""),
        }
    }

    /// The same pools, writing `core_id` as the owner of the replies this core owes.
    pub fn owned_by(self, core_id: &str) -> Self {
        Self {
            owner: Arc::from(core_id),
            ..self
        }
    }

    /// The id written as the owner of the replies this core owes (`''` outside a cluster).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The same pools with `keyring` sealing and opening the encrypted columns.
    pub fn with_keyring(self, keyring: Arc<Keyring>) -> Self {
        Self { keyring, ..self }
    }

    /// The keyring of the encrypted columns.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The backend's pool (tests reach past the query functions with it).
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Opens a pool of up to `max_connections` connections and checks that one connection
    /// works.
    ///
    /// Accepts `sqlite://path/to/file.db` (`sqlite:///abs/path.db` for an absolute path), a
    /// bare file path, `postgres://...` or `postgresql://...`. The parent directory of a
    /// SQLite file is created if missing. Fails with [`StorageError::InvalidUrl`] for any other
    /// scheme and for in-memory SQLite (`sqlite::memory:` and friends), and with
    /// [`StorageError::Connect`] if the first connection cannot be opened.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        let options = PoolOptions {
            max_connections,
            ..PoolOptions::default()
        };
        Self::connect_with(url, options).await
    }

    /// [`Db::connect`] with every pool option given.
    pub async fn connect_with(url: &str, options: PoolOptions) -> Result<Db> {
        let max_connections = options.max_connections.max(1);
        match parse_url(url)? {
            Target::Postgres(url) => {
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.recycling_method = RecyclingMethod::CustomFunction(Box::new(pg_still_open));
                let manager = AsyncDieselConnectionManager::new_with_config(url, config);
                let pool = Pool::builder()
                    .max_size(max_connections)
                    .connection_timeout(options.acquire_timeout)
                    .build(manager)
                    .await?;
                // Open one connection outside the pool to surface the real error (bb8's `get`
                // would only report a timeout), then hand it to the pool.
                let conn = pool.dedicated_connection().await?;
                let _ = pool.add(conn);
                Ok(Db::new(Pools::Pg(pool)))
            }
            Target::SqliteFile(path) => {
                if let Some(parent) = Path::new(&path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|source| StorageError::CreateDir {
                        path: parent.display().to_string(),
                        source,
                    })?;
                }
                let mut config = ManagerConfig::<SqliteConn>::default();
                // A local file does not go away under an open connection: no `SELECT 1` on
                // every checkout (diesel-async's default, `Verified`, runs one per storage call).
                config.recycling_method = RecyclingMethod::Fast;
                let pragmas = sqlite_pragmas(options.busy_timeout);
                config.custom_setup = Box::new(move |path: &str| {
                    let path = path.to_owned();
                    let pragmas = pragmas.clone();
                    async move {
                        let mut conn = SqliteConn::establish(&path).await?;
                        conn.batch_execute(&pragmas)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::new_with_config(path.clone(), config);
                let pool = Pool::builder()
                    .max_size(max_connections)
                    .connection_timeout(options.acquire_timeout)
                    .build(manager)
                    .await?;
                // The first connection creates the file and switches it to WAL (persistent),
                // before concurrent callers open more.
                let conn = pool.dedicated_connection().await?;
                let _ = pool.add(conn);
                let db = Db {
                    checkpointer: Some(Arc::new(Checkpointer {
                        path,
                        conn: tokio::sync::Mutex::new(None),
                    })),
                    ..Db::new(Pools::Sqlite(pool))
                };
                spawn_checkpointer(&db);
                Ok(db)
            }
        }
    }

    /// Applies the embedded migrations for this backend that have not run yet; running it
    /// again is a no-op. Fails with [`StorageError::Migration`].
    ///
    /// diesel's migration harness is synchronous, so it runs on a dedicated connection on the
    /// blocking pool (this works on both tokio runtime flavours, unlike
    /// `AsyncMigrationHarness`, which needs a multi-thread runtime).
    pub async fn migrate(&self) -> Result<()> {
        let outcome = match &self.pools {
            Pools::Pg(pool) => {
                let conn = pool.dedicated_connection().await?;
                tokio::task::spawn_blocking(move || {
                    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                    conn.run_pending_migrations(PG_MIGRATIONS).map(|_| ())
                })
                .await
            }
            Pools::Sqlite(pool) => {
                let conn = pool.dedicated_connection().await?;
                tokio::task::spawn_blocking(move || {
                    let mut conn = AsyncConnectionWrapper::<SqliteConn>::from(conn);
                    conn.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ())
                })
                .await
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(StorageError::Migration(err)),
            Err(join) => Err(StorageError::Migration(Box::new(join))),
        }
    }

    /// Runs `SELECT 1` on a pooled connection; for readiness checks.
    /// Whether the database answers, and takes writes: on SQLite a read succeeds beside
    /// another writer's lock (WAL), so the check takes the write lock and lets it go.
    pub async fn ping(&self) -> Result<()> {
        match &self.pools {
            Pools::Pg(_) => with_conn!(self, |conn| {
                diesel::sql_query("SELECT 1").execute(conn).await?;
                Ok(())
            }),
            Pools::Sqlite(_) => with_write!(self, |conn| {
                conn.batch_execute("BEGIN IMMEDIATE; ROLLBACK;").await?;
                Ok(())
            }),
        }
    }

    /// Runs `work` (storage calls on this database) where a long statement cannot stall
    /// the runtime: on SQLite, whose statements run on the calling thread ([`Inline`]), on
    /// a thread of the blocking pool; on PostgreSQL right here. For the few calls that may
    /// scan a large part of a table (deleting a chat, the usage report, re-encryption).
    pub(crate) async fn off_runtime<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        match &self.pools {
            Pools::Pg(_) => work.await,
            Pools::Sqlite(_) => {
                let runtime = tokio::runtime::Handle::current();
                match tokio::task::spawn_blocking(move || runtime.block_on(work)).await {
                    Ok(outcome) => outcome,
                    Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                    // Only when the runtime shuts down under it.
                    Err(join) => Err(StorageError::Interrupted(join.to_string())),
                }
            }
        }
    }

    /// Checkpoints SQLite's WAL now, as the background checkpointer does twice a second
    /// (tests call it to check what a checkpoint leaves); a no-op on PostgreSQL.
    pub async fn checkpoint(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.checkpoint(&self.write_gate).await;
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics labels.
    pub fn backend(&self) -> &'static str {
        match &self.pools {
            Pools::Pg(_) => "postgres",
            Pools::Sqlite(_) => "sqlite",
        }
    }
}

/// True if `err` is a unique-constraint violation (used to turn a lost race into a clean
/// "already exists" answer).
pub(crate) fn is_unique_violation(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod url_tests {
    use super::{Target, parse_url};

    #[test]
    fn sqlite_urls_and_bare_paths_name_files() {
        assert_eq!(
            parse_url("sqlite://data/chat.db").ok(),
            Some(Target::SqliteFile("data/chat.db".into()))
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/chat.db").ok(),
            Some(Target::SqliteFile("/var/lib/chat.db".into()))
        );
        assert_eq!(
            parse_url("chat.db").ok(),
            Some(Target::SqliteFile("chat.db".into()))
        );
    }

    #[test]
    fn in_memory_sqlite_is_rejected() {
        for url in [
            "sqlite::memory:",
            ":memory:",
            "sqlite://:memory:",
            "sqlite://",
            "",
        ] {
            assert!(parse_url(url).is_err(), "{url} should be rejected");
        }
    }

    #[test]
    fn postgres_urls_pass_through() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h:5433/db?sslmode=disable",
        ] {
            assert_eq!(parse_url(url).ok(), Some(Target::Postgres(url.into())));
        }
    }
}
