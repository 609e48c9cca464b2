//! Storage tests. Every scenario is one `async fn(&Db)` run twice by [`both!`]: on SQLite (a
//! fresh temp file in WAL mode) and on PostgreSQL (a fresh `t_<uuid>` database on the server
//! `TEST_DATABASE_URL` names). Without `TEST_DATABASE_URL` the PostgreSQL half fails rather
//! than skips: `scripts/test.sh` starts a throwaway server and sets it.

use chrono::{DateTime, NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::chats::{self, NewChat};
use super::events::{self, Durable};
use super::messages::{self, Inserted, NewMessage};
use super::schema::read_receipts;
use super::usage::{self, NewUsage};
use super::users;
use super::{Db, Result, StorageError};

/// Generates `mod $name { sqlite, postgres }`, two tests running the scenario `$name`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() -> super::Result<()> {
                let test_db = super::sqlite_db().await?;
                super::$name(&test_db.db).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() -> super::Result<()> {
                let test_db = super::postgres_db().await?;
                super::$name(&test_db.db).await
            }
        }
    )*};
}

both!(
    migrations_run_twice_idempotently,
    a_user_context_is_replaced_whole_and_read_back,
    create_chat_makes_the_owner_a_member,
    insert_message_assigns_seq_1_2_3_and_bumps_counters,
    duplicate_client_message_id_returns_the_original_row_and_writes_nothing,
    same_client_id_from_two_different_senders_is_not_a_duplicate,
    twenty_concurrent_inserts_on_one_chat_get_seqs_1_to_20_without_gaps,
    concurrent_sends_with_one_client_id_store_exactly_one_message,
    append_event_shares_the_seq_counter_and_events_after_merges_both_in_order,
    history_pages_backwards_oldest_first_with_has_more,
    list_user_chats_orders_by_last_activity_then_id,
    record_receipts_ignores_ids_from_another_chat,
    usage_round_trips_and_a_second_insert_keeps_the_first,
    a_message_stored_along_with_its_sender_and_usage_writes_them_in_its_transaction,
    get_chat_as_says_whether_the_user_is_a_member,
    upsert_user_updates_name_and_set_online_needs_a_known_user,
    the_help_flag_changes_once_and_a_missing_chat_is_not_found,
    the_operator_lease_is_exclusive_renewable_and_expires,
    a_reply_is_owed_from_its_message_until_it_is_stored,
    deleting_a_chat_deletes_the_files_only_it_held,
    spoken_replies_default_off_and_follow_the_last_setting,
    sealed_columns_hold_no_plaintext_and_reencryption_moves_them_to_the_current_key,
);

async fn file(db: &Db, id: &str, secs: i64) -> Result<()> {
    super::files::insert_file(
        db,
        super::files::NewFile {
            id,
            owner_id: "alice",
            name: "a.png",
            mime: "image/png",
            size: 1,
            now: at(secs),
        },
    )
    .await
    .map(|_| ())
}

async fn deleting_a_chat_deletes_the_files_only_it_held(db: &Db) -> Result<()> {
    use super::deletion;
    new_chat(db, "c1", "alice", 0).await?;
    new_chat(db, "c2", "alice", 0).await?;
    for (id, secs) in [
        ("shared", 0),
        ("only-c1", 0),
        ("loose-old", 0),
        ("loose-new", 10),
    ] {
        file(db, id, secs).await?;
    }
    let c1_files = ["shared".to_string(), "only-c1".to_string()];
    let c2_files = ["shared".to_string()];
    messages::insert_message(
        db,
        NewMessage {
            file_ids: &c1_files,
            ..message("m1", "c1", "alice", 1)
        },
    )
    .await?;
    messages::insert_message(
        db,
        NewMessage {
            file_ids: &c2_files,
            ..message("m2", "c2", "alice", 5)
        },
    )
    .await?;
    // The last activity decides: c1's was at 1, c2's at 5.
    assert_eq!(
        deletion::chats_inactive_since(db, at(3), 10).await?,
        vec!["c1".to_string()]
    );
    assert_eq!(
        deletion::delete_chat(db, "c1").await?,
        vec!["only-c1".to_string()]
    );
    assert_eq!(chats::get_chat(db, "c1").await?, None);
    assert!(matches!(
        deletion::delete_chat(db, "c1").await,
        Err(StorageError::NotFound)
    ));
    let left = super::files::get_files(db, &["shared".into(), "only-c1".into()]).await?;
    assert_eq!(
        left.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec!["shared"]
    );
    // Uploads no chat holds go once they are older than the cut; attached ones stay.
    assert_eq!(
        deletion::delete_unattached_files(db, at(5), 10).await?,
        vec!["loose-old".to_string()]
    );
    assert!(deletion::delete_file(db, "shared").await?.is_some());
    assert!(deletion::delete_file(db, "shared").await?.is_none());
    // The message keeps its attachment list; the record is what downloads need.
    assert_eq!(chat(db, "c2").await?.message_count, 1);
    Ok(())
}

async fn spoken_replies_default_off_and_follow_the_last_setting(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    assert!(!chats::spoken_replies(db, "c1").await?);
    chats::set_spoken_replies(db, "c1", true).await?;
    assert!(chats::spoken_replies(db, "c1").await?);
    chats::set_spoken_replies(db, "c1", false).await?;
    assert!(!chats::spoken_replies(db, "c1").await?);
    Ok(())
}

/// A migrated database; holds the temp dir (SQLite) for as long as the test runs.
struct TestDb {
    db: Db,
    _dir: Option<tempfile::TempDir>,
}

const POOL_SIZE: u32 = 8;

async fn sqlite_db() -> Result<TestDb> {
    let dir = tempfile::tempdir()
        .unwrap_or_else(|err| panic!("cannot create a temp dir for the SQLite test db: {err}"));
    let url = format!("sqlite://{}", dir.path().join("nested/chat.db").display());
    let db = Db::connect(&url, POOL_SIZE).await?;
    db.migrate().await?;
    Ok(TestDb {
        db,
        _dir: Some(dir),
    })
}

/// Frames in the SQLite file's WAL now (`log` of `PRAGMA wal_checkpoint`, run on a connection
/// of the test's own: it copies what it can, which changes nothing the test looks at).
fn wal_frames(path: &std::path::Path) -> i64 {
    use diesel::connection::Connection as _;
    #[derive(QueryableByName)]
    struct Checkpoint {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        log: i64,
    }
    let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())
        .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    let rows: Vec<Checkpoint> = diesel::RunQueryDsl::load(
        diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)"),
        &mut conn,
    )
    .unwrap_or_else(|err| panic!("wal_checkpoint: {err}"));
    rows.into_iter().next().map_or(0, |row| row.log)
}

/// The bundled SQLite is built as `.cargo/config.toml` says: with the query planner stability
/// guarantee (without it every statement with a bound LIMIT, diesel's `.limit()` and
/// `.first()`, is compiled again on each run), in multi-thread mode and without memory
/// accounting (no mutex around each call and each allocation).
#[test]
fn sqlite_plans_each_statement_once() {
    use diesel::connection::Connection as _;
    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = diesel::sql_types::Text)]
        compile_options: String,
    }
    let mut conn = diesel::SqliteConnection::establish(":memory:")
        .unwrap_or_else(|err| panic!("open an in-memory database: {err}"));
    let options: Vec<CompileOption> =
        diesel::RunQueryDsl::load(diesel::sql_query("PRAGMA compile_options"), &mut conn)
            .unwrap_or_else(|err| panic!("compile_options: {err}"));
    let options: Vec<String> = options.into_iter().map(|o| o.compile_options).collect();
    assert!(
        options.iter().any(|o| o == "ENABLE_QPSG"),
        "SQLite built without SQLITE_ENABLE_QPSG (LIBSQLITE3_FLAGS in .cargo/config.toml): {options:?}"
    );
    for wanted in ["THREADSAFE=2", "DEFAULT_MEMSTATUS=0"] {
        assert!(
            options.iter().any(|o| o == wanted),
            "SQLite built without SQLITE_{wanted} (LIBSQLITE3_FLAGS in .cargo/config.toml): {options:?}"
        );
    }
}

/// A message's transaction (user row, owed reply and reply usage included) and a reply's
/// checkpoint run only statements the connection keeps prepared after their first run (diesel compiles every `diesel::update` and
/// upsert afresh: `storage::prepared` has the hand-written ones). Seen through diesel's
/// instrumentation on a pool of one connection.
#[tokio::test]
async fn a_message_transaction_runs_only_prepared_statements() -> Result<()> {
    use diesel::connection::InstrumentationEvent;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir()
        .unwrap_or_else(|err| panic!("cannot create a temp dir for the SQLite test db: {err}"));
    let db = Db::connect(
        &format!("sqlite://{}", dir.path().join("chat.db").display()),
        1,
    )
    .await?;
    db.migrate().await?;
    new_chat(&db, "c1", "alice", 0).await?;
    // (started, cached) statement texts, without their binds.
    let seen: Arc<Mutex<(Vec<String>, BTreeSet<String>)>> = Arc::default();
    {
        let super::Pools::Sqlite(pool) = db.pools() else {
            panic!("a sqlite:// URL gives a SQLite pool")
        };
        let mut conn = pool
            .get()
            .await
            .unwrap_or_else(|err| panic!("the pool's one connection: {err}"));
        let seen = seen.clone();
        AsyncConnection::set_instrumentation(&mut *conn, move |event: InstrumentationEvent<'_>| {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                InstrumentationEvent::StartQuery { query, .. } => {
                    let sql = query.to_string();
                    let sql = sql.split(" -- binds").next().unwrap_or_default().to_owned();
                    seen.0.push(sql);
                }
                InstrumentationEvent::CacheQuery { sql, .. } => {
                    seen.1.insert(sql.to_owned());
                }
                _ => {}
            }
        });
    }
    // Message n answers message n - 1 when it is the assistant's.
    let send = async |n: usize, role| {
        let id = format!("m{n}");
        let trigger = format!("m{}", n.saturating_sub(1));
        let along = messages::Along {
            sender_name: Some("Alice"),
            usage: (role == crate::types::Role::Assistant).then(|| usage_of(&id)),
        };
        let reply = if role == crate::types::Role::User {
            messages::ReplyLink::Owed { requester: "alice" }
        } else {
            messages::ReplyLink::Answers {
                trigger_id: &trigger,
            }
        };
        let new = NewMessage {
            role,
            reply,
            ..message(&id, "c1", "alice", n as i64)
        };
        messages::insert_message_with(&db, new, along)
            .await
            .map(|_| ())
    };
    for n in 0..2 {
        let trigger = format!("m{}", 2 * n);
        send(2 * n, crate::types::Role::User).await?;
        for chunks in [1, 2] {
            let saved =
                super::pending::checkpoint_reply(&db, &trigger, "r", "m-1", "Half", chunks, at(1))
                    .await?;
            assert_eq!(saved, super::pending::Checkpointed::Written);
        }
        send(2 * n + 1, crate::types::Role::Assistant).await?;
    }
    let (started, cached) = &*seen.lock().unwrap_or_else(|p| p.into_inner());
    let compiled_each_time: BTreeSet<&String> = started
        .iter()
        .filter(|sql| {
            !cached.contains(*sql) && !matches!(sql.as_str(), "BEGIN IMMEDIATE" | "COMMIT")
        })
        .collect();
    assert!(
        started.len() > 8,
        "the instrumentation saw the statements: {started:?}"
    );
    assert!(
        compiled_each_time.is_empty(),
        "statements compiled on every run: {compiled_each_time:#?}"
    );
    Ok(())
}

/// A WAL copied to its end by [`Db::checkpoint`] is started over by the next write, even while
/// a writer keeps committing (copied beside the writes it never was, and grew without end).
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_under_steady_writes_lets_the_wal_start_over() -> Result<()> {
    let test_db = sqlite_db().await?;
    let db = test_db.db.clone();
    let path = test_db
        ._dir
        .as_ref()
        .map(|dir| dir.path().join("nested/chat.db"))
        .unwrap_or_else(|| panic!("a SQLite test db has a folder"));
    new_chat(&db, "c1", "alice", 0).await?;
    // The writer commits one message after another until told to stop; `done` counts them.
    let (done_tx, mut done) = tokio::sync::watch::channel(0_usize);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let writer_db = db.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0;
        while !*stop.borrow() {
            let id = format!("m{n}");
            messages::insert_message(&writer_db, message(&id, "c1", "alice", 1)).await?;
            n += 1;
            done_tx.send_replace(n);
        }
        Result::Ok(())
    });
    let wait_for = |done: &mut tokio::sync::watch::Receiver<usize>, at_least: usize| {
        let mut done = done.clone();
        async move {
            done.wait_for(|&n| n >= at_least)
                .await
                .map(|n| *n)
                .unwrap_or_else(|_| panic!("the writer stopped"))
        }
    };
    wait_for(&mut done, 200).await;
    let grown = wal_frames(&path);
    db.checkpoint().await;
    let after = *done.borrow();
    wait_for(&mut done, after + 5).await;
    stop_tx.send_replace(true);
    writer
        .await
        .unwrap_or_else(|err| panic!("writer task: {err}"))?;
    let written = *done.borrow() - after;
    let now = wal_frames(&path);
    assert!(
        now < grown / 2,
        "the WAL started over: {now} frames after {written} more writes ({grown} before)"
    );
    Ok(())
}

async fn postgres_db() -> Result<TestDb> {
    let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
        panic!(
            "TEST_DATABASE_URL is not set: run scripts/test.sh (it starts a throwaway \
             PostgreSQL) or set TEST_DATABASE_URL to a PostgreSQL server URL, e.g. \
             eval \"$(scripts/pg-throwaway.sh start)\""
        );
    };
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut admin = AsyncPgConnection::establish(&server)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to TEST_DATABASE_URL={server}: {err}"));
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let db = Db::connect(&with_database(&server, &name), POOL_SIZE).await?;
    db.migrate().await?;
    Ok(TestDb { db, _dir: None })
}

/// `server` with its database path replaced by `/name` (query parameters kept).
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A fixed instant plus `secs`; whole seconds round-trip exactly on both backends.
fn at(secs: i64) -> NaiveDateTime {
    DateTime::UNIX_EPOCH.naive_utc() + TimeDelta::seconds(1_800_000_000 + secs)
}

async fn new_chat(db: &Db, id: &str, owner: &str, secs: i64) -> Result<super::ChatRow> {
    chats::create_chat(
        db,
        NewChat {
            client_key: None,
            id,
            owner_id: owner,
            title: "A chat",
            agent_id: "agent",
            model: "m-1",
            now: at(secs),
        },
    )
    .await
}

fn message<'a>(id: &'a str, chat_id: &'a str, sender_id: &'a str, secs: i64) -> NewMessage<'a> {
    NewMessage {
        id,
        chat_id,
        sender_id,
        role: crate::types::Role::User,
        agent_id: "agent",
        content: "hello",
        status: crate::types::MessageStatus::Complete,
        client_message_id: None,
        attachments_json: "[]",
        file_ids: &[],
        metadata_json: "{}",
        now: at(secs),
        reply: messages::ReplyLink::None,
    }
}

fn expect_new(inserted: Inserted) -> super::MessageRow {
    match inserted {
        Inserted::New(row) => row,
        Inserted::Duplicate(row) => panic!("expected a new message, got a duplicate of {row:?}"),
    }
}

async fn chat(db: &Db, id: &str) -> Result<super::ChatRow> {
    chats::get_chat(db, id).await?.ok_or(StorageError::NotFound)
}

async fn migrations_run_twice_idempotently(db: &Db) -> Result<()> {
    // The fixture already migrated once.
    db.migrate().await?;
    db.migrate().await?;
    db.ping().await?;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let applied: Vec<Count> = with_conn!(db, |conn| {
        diesel::sql_query("SELECT COUNT(*) AS n FROM __diesel_schema_migrations")
            .load(conn)
            .await?
    });
    // Each migration is recorded once (init, operators, pending_replies, user_contexts,
    // provider_conversations, seed_clients, files, chat_settings_files, pending_owner),
    // however often `migrate` runs.
    assert_eq!(applied.iter().map(|c| c.n).collect::<Vec<_>>(), vec![9]);
    new_chat(db, "c1", "alice", 0).await?;
    Ok(())
}

async fn create_chat_makes_the_owner_a_member(db: &Db) -> Result<()> {
    let created = new_chat(db, "c1", "alice", 0).await?;
    assert_eq!(created.status, "active");
    assert_eq!((created.next_seq, created.message_count), (1, 0));
    assert_eq!(
        (created.started_at, created.last_activity_at),
        (at(0), at(0))
    );
    assert_eq!(chats::get_chat(db, "c1").await?, Some(created));
    assert!(chats::is_member(db, "c1", "alice").await?);
    assert!(!chats::is_member(db, "c1", "bob").await?);

    assert!(chats::add_member(db, "c1", "bob", at(1)).await?);
    assert!(
        !chats::add_member(db, "c1", "bob", at(2)).await?,
        "second add is a no-op"
    );
    assert_eq!(chats::member_ids(db, "c1").await?, vec!["alice", "bob"]);
    assert!(chats::remove_member(db, "c1", "bob").await?);
    assert!(!chats::remove_member(db, "c1", "bob").await?);
    assert_eq!(chats::member_ids(db, "c1").await?, vec!["alice"]);
    assert!(matches!(
        chats::add_member(db, "nope", "bob", at(3)).await,
        Err(StorageError::NotFound)
    ));

    chats::set_title(db, "c1", "Renamed").await?;
    chats::set_model(db, "c1", "m-2").await?;
    chats::end_chat(db, "c1", at(5)).await?;
    chats::end_chat(db, "c1", at(9)).await?;
    let ended = chat(db, "c1").await?;
    assert_eq!(
        (ended.title.as_str(), ended.model.as_str()),
        ("Renamed", "m-2")
    );
    assert_eq!(
        (ended.status.as_str(), ended.ended_at),
        ("ended", Some(at(5)))
    );
    assert!(matches!(
        chats::set_title(db, "nope", "x").await,
        Err(StorageError::NotFound)
    ));
    assert!(
        new_chat(db, "c1", "alice", 0).await.is_err(),
        "chat ids are unique"
    );
    Ok(())
}

async fn insert_message_assigns_seq_1_2_3_and_bumps_counters(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    assert_eq!(messages::last_seq(db, "c1").await?, 0);
    for (n, id) in ["m1", "m2", "m3"].into_iter().enumerate() {
        let secs = 10 + n as i64;
        let row = expect_new(messages::insert_message(db, message(id, "c1", "alice", secs)).await?);
        assert_eq!(row.seq, n as i64 + 1);
        assert_eq!(row.created_at, at(secs));
        assert_eq!(messages::get_message(db, id).await?, Some(row));
    }
    let after = chat(db, "c1").await?;
    assert_eq!((after.next_seq, after.message_count), (4, 3));
    assert_eq!(after.last_activity_at, at(12));
    assert_eq!(messages::last_seq(db, "c1").await?, 3);

    assert!(matches!(
        messages::insert_message(db, message("m9", "nope", "alice", 20)).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        messages::last_seq(db, "nope").await,
        Err(StorageError::NotFound)
    ));
    Ok(())
}

async fn duplicate_client_message_id_returns_the_original_row_and_writes_nothing(
    db: &Db,
) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let first = NewMessage {
        client_message_id: Some("client-1"),
        ..message("m1", "c1", "alice", 1)
    };
    let original = expect_new(messages::insert_message(db, first).await?);
    assert_eq!(original.client_message_id.as_deref(), Some("client-1"));

    let retry = NewMessage {
        client_message_id: Some("client-1"),
        content: "edited on retry",
        ..message("m2", "c1", "alice", 5)
    };
    match messages::insert_message(db, retry).await? {
        Inserted::Duplicate(row) => assert_eq!(row, original),
        Inserted::New(row) => panic!("a retry must not store a second message: {row:?}"),
    }
    assert_eq!(messages::get_message(db, "m2").await?, None);
    let after = chat(db, "c1").await?;
    assert_eq!((after.next_seq, after.message_count), (2, 1));
    assert_eq!(after.last_activity_at, at(1));
    Ok(())
}

async fn same_client_id_from_two_different_senders_is_not_a_duplicate(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let from_alice = NewMessage {
        client_message_id: Some("same"),
        ..message("m1", "c1", "alice", 1)
    };
    let from_bob = NewMessage {
        client_message_id: Some("same"),
        ..message("m2", "c1", "bob", 2)
    };
    assert_eq!(
        expect_new(messages::insert_message(db, from_alice).await?).seq,
        1
    );
    assert_eq!(
        expect_new(messages::insert_message(db, from_bob).await?).seq,
        2
    );
    // Messages without a client id never collide either (NULLs are distinct).
    assert_eq!(
        expect_new(messages::insert_message(db, message("m3", "c1", "bob", 3)).await?).seq,
        3
    );
    assert_eq!(
        expect_new(messages::insert_message(db, message("m4", "c1", "bob", 4)).await?).seq,
        4
    );
    Ok(())
}

async fn twenty_concurrent_inserts_on_one_chat_get_seqs_1_to_20_without_gaps(
    db: &Db,
) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = format!("m{n}");
                let client_id = format!("client-{n}");
                let new = NewMessage {
                    // Half with a client id, to exercise the pre-check under load too.
                    client_message_id: (n % 2 == 0).then_some(client_id.as_str()),
                    ..message(&id, "c1", "alice", n)
                };
                messages::insert_message(&db, new).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let inserted = task
            .await
            .unwrap_or_else(|err| panic!("insert task panicked: {err}"))?;
        seqs.push(expect_new(inserted).seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<i64>>());
    let after = chat(db, "c1").await?;
    assert_eq!((after.next_seq, after.message_count), (21, 20));
    let (page, has_more) = messages::history(db, "c1", None, 100).await?;
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<i64>>()
    );
    assert!(!has_more);
    Ok(())
}

async fn concurrent_sends_with_one_client_id_store_exactly_one_message(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = format!("m{n}");
                let new = NewMessage {
                    client_message_id: Some("client-1"),
                    ..message(&id, "c1", "alice", n)
                };
                messages::insert_message(&db, new).await
            })
        })
        .collect();
    let mut stored = Vec::new();
    let mut answered = Vec::new();
    for task in tasks {
        let inserted = task
            .await
            .unwrap_or_else(|err| panic!("insert task panicked: {err}"))?;
        if let Inserted::New(row) = &inserted {
            stored.push(row.clone());
        }
        answered.push(inserted.into_row());
    }
    assert_eq!(stored.len(), 1, "exactly one send stores the message");
    assert!(
        answered.iter().all(|row| *row == stored[0]),
        "every send answers with that row"
    );
    let after = chat(db, "c1").await?;
    assert_eq!(
        (after.next_seq, after.message_count),
        (2, 1),
        "losers give their seq back"
    );
    Ok(())
}

async fn append_event_shares_the_seq_counter_and_events_after_merges_both_in_order(
    db: &Db,
) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let payload: &[u8] = &[0, 1, 0xfe, 0xff];
    assert_eq!(
        expect_new(messages::insert_message(db, message("m1", "c1", "alice", 1)).await?).seq,
        1
    );
    assert_eq!(
        events::append_event(db, "c1", "receipt", payload, at(2)).await?,
        2
    );
    assert_eq!(
        expect_new(messages::insert_message(db, message("m3", "c1", "alice", 3)).await?).seq,
        3
    );
    assert_eq!(
        events::append_event(db, "c1", "chat_updated", b"{}", at(4)).await?,
        4
    );

    let after = chat(db, "c1").await?;
    assert_eq!(
        (after.next_seq, after.message_count),
        (5, 2),
        "events do not count as messages"
    );
    assert_eq!(after.last_activity_at, at(4));
    assert_eq!(messages::last_seq(db, "c1").await?, 4);

    let all = events::events_after(db, "c1", 0, 100).await?;
    assert_eq!(
        all.iter().map(Durable::seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(matches!(&all[0], Durable::Message(m) if m.id == "m1"));
    match &all[1] {
        Durable::Event(e) => {
            assert_eq!(
                (e.kind.as_str(), e.payload.as_slice(), e.created_at),
                ("receipt", payload, at(2))
            );
        }
        other => panic!("expected the receipt event, got {other:?}"),
    }
    assert!(matches!(&all[2], Durable::Message(m) if m.id == "m3"));
    assert!(matches!(&all[3], Durable::Event(e) if e.kind == "chat_updated"));

    let window = events::events_after(db, "c1", 1, 2).await?;
    assert_eq!(
        window.iter().map(Durable::seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(events::events_after(db, "c1", 4, 10).await?.is_empty());
    assert!(matches!(
        events::append_event(db, "nope", "receipt", payload, at(5)).await,
        Err(StorageError::NotFound)
    ));
    Ok(())
}

async fn history_pages_backwards_oldest_first_with_has_more(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    new_chat(db, "other", "alice", 0).await?;
    messages::insert_message(db, message("x1", "other", "alice", 1)).await?;
    for n in 1..=7 {
        let id = format!("m{n}");
        messages::insert_message(db, message(&id, "c1", "alice", n)).await?;
    }
    let seqs = |rows: &[super::MessageRow]| rows.iter().map(|m| m.seq).collect::<Vec<_>>();

    let (page, has_more) = messages::history(db, "c1", None, 3).await?;
    assert_eq!((seqs(&page), has_more), (vec![5, 6, 7], true));
    assert_eq!(page[0].id, "m5");
    let (page, has_more) = messages::history(db, "c1", Some(5), 3).await?;
    assert_eq!((seqs(&page), has_more), (vec![2, 3, 4], true));
    let (page, has_more) = messages::history(db, "c1", Some(2), 3).await?;
    assert_eq!((seqs(&page), has_more), (vec![1], false));
    let (page, has_more) = messages::history(db, "c1", Some(4), 3).await?;
    assert_eq!(
        (seqs(&page), has_more),
        (vec![1, 2, 3], false),
        "exactly a page left"
    );
    let (page, has_more) = messages::history(db, "c1", Some(1), 3).await?;
    assert_eq!((seqs(&page), has_more), (vec![], false));
    let (page, has_more) = messages::history(db, "empty-chat", None, 3).await?;
    assert_eq!((seqs(&page), has_more), (vec![], false));
    Ok(())
}

async fn list_user_chats_orders_by_last_activity_then_id(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 1).await?;
    new_chat(db, "c2", "alice", 2).await?;
    new_chat(db, "c3", "alice", 2).await?; // ties with c2: the larger id comes first
    new_chat(db, "c4", "bob", 3).await?;
    chats::add_member(db, "c4", "alice", at(3)).await?;
    new_chat(db, "c5", "bob", 4).await?; // not alice's
    messages::insert_message(db, message("m1", "c1", "alice", 10)).await?;

    let ids = |rows: Vec<super::ChatRow>| rows.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(chats::list_user_chats(db, "alice", 10).await?),
        vec!["c1", "c4", "c3", "c2"]
    );
    assert_eq!(
        ids(chats::list_user_chats(db, "alice", 2).await?),
        vec!["c1", "c4"]
    );
    assert_eq!(
        ids(chats::list_user_chats(db, "carol", 10).await?),
        Vec::<String>::new()
    );

    // Only chats alice owns count as hers to resume, and only active ones.
    assert_eq!(
        chats::latest_active_chat(db, "alice").await?.as_deref(),
        Some("c1")
    );
    chats::end_chat(db, "c1", at(11)).await?;
    assert_eq!(
        chats::latest_active_chat(db, "alice").await?.as_deref(),
        Some("c3")
    );
    assert_eq!(chats::latest_active_chat(db, "carol").await?, None);
    Ok(())
}

async fn record_receipts_ignores_ids_from_another_chat(db: &Db) -> Result<()> {
    new_chat(db, "a", "alice", 0).await?;
    new_chat(db, "b", "alice", 0).await?;
    messages::insert_message(db, message("m1", "a", "alice", 1)).await?;
    messages::insert_message(db, message("m2", "a", "alice", 2)).await?;
    messages::insert_message(db, message("m3", "b", "alice", 3)).await?;

    let asked: Vec<String> = ["m2", "m3", "missing", "m1", "m2"]
        .map(String::from)
        .to_vec();
    let recorded = events::record_receipts(db, "a", "bob", &asked, at(5)).await?;
    assert_eq!(recorded, vec!["m2", "m1"]);
    // Again: existing receipts are ignored, not an error.
    let again = events::record_receipts(db, "a", "bob", &["m1".to_owned()], at(6)).await?;
    assert_eq!(again, vec!["m1"]);
    assert!(
        events::record_receipts(db, "a", "bob", &[], at(7))
            .await?
            .is_empty()
    );

    let stored: Vec<(String, String, NaiveDateTime)> = with_conn!(db, |conn| {
        read_receipts::table
            .filter(read_receipts::user_id.eq("bob"))
            .order(read_receipts::message_id.asc())
            .select((
                read_receipts::chat_id,
                read_receipts::message_id,
                read_receipts::read_at,
            ))
            .load(conn)
            .await?
    });
    assert_eq!(
        stored,
        vec![
            ("a".into(), "m1".into(), at(5)),
            ("a".into(), "m2".into(), at(5))
        ],
        "first read wins"
    );
    Ok(())
}

/// The usage of the reply `message_id` in chat `c1`, asked by alice.
fn usage_of(message_id: &str) -> NewUsage<'_> {
    NewUsage {
        message_id,
        chat_id: "c1",
        user_id: "alice",
        model: "m-1",
        prompt_tokens: 120,
        completion_tokens: 45,
        estimated: true,
        ttft_ms: Some(350),
        total_ms: 2100,
        now: at(3),
    }
}

async fn usage_round_trips_and_a_second_insert_keeps_the_first(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let new = usage_of("m1");
    usage::insert_usage(db, new).await?;
    let again = NewUsage {
        prompt_tokens: 1,
        ttft_ms: None,
        ..new
    };
    usage::insert_usage(db, again).await?;

    let row = usage::usage_for_message(db, "m1")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(
        (
            row.message_id.as_str(),
            row.chat_id.as_str(),
            row.user_id.as_str(),
            row.model.as_str()
        ),
        ("m1", "c1", "alice", "m-1")
    );
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens, row.estimated),
        (120, 45, true)
    );
    assert_eq!(
        (row.ttft_ms, row.total_ms, row.created_at),
        (Some(350), 2100, at(3))
    );
    assert_eq!(usage::usage_for_message(db, "m2").await?, None);
    Ok(())
}

/// A user's display name and last activity as stored.
async fn name_and_activity(db: &Db, id: &str) -> Result<(String, NaiveDateTime)> {
    let user = users::get_user(db, id)
        .await?
        .ok_or(StorageError::NotFound)?;
    Ok((user.display_name, user.last_active_at))
}

async fn a_message_stored_along_with_its_sender_and_usage_writes_them_in_its_transaction(
    db: &Db,
) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let usage = NewUsage {
        prompt_tokens: 12,
        ttft_ms: Some(30),
        ..usage_of("m1")
    };
    let along = messages::Along {
        sender_name: Some("Alice"),
        usage: Some(usage),
    };
    let first = NewMessage {
        client_message_id: Some("k1"),
        ..message("m1", "c1", "alice", 2)
    };
    assert!(matches!(
        messages::insert_message_with(db, first, along).await?,
        Inserted::New(_)
    ));
    assert_eq!(
        name_and_activity(db, "alice").await?,
        ("Alice".into(), at(2))
    );
    let row = usage::usage_for_message(db, "m1")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!((row.prompt_tokens, row.ttft_ms), (12, Some(30)));

    // The same client id again (another message id): found by the unique index, and nothing
    // written along with it.
    let again = NewMessage {
        client_message_id: Some("k1"),
        ..message("m2", "c1", "alice", 5)
    };
    let renamed = messages::Along {
        sender_name: Some("Alice L."),
        usage: Some(usage_of("m2")),
    };
    match messages::insert_message_with(db, again, renamed).await? {
        Inserted::Duplicate(row) => assert_eq!(row.id, "m1"),
        other => panic!("expected the first message back, got {other:?}"),
    }
    assert_eq!(
        name_and_activity(db, "alice").await?,
        ("Alice".into(), at(2))
    );
    assert_eq!(usage::usage_for_message(db, "m2").await?, None);
    Ok(())
}

async fn get_chat_as_says_whether_the_user_is_a_member(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    let (chat, member) = chats::get_chat_as(db, "c1", "alice")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(
        (chat.id.as_str(), chat.title.as_str(), member),
        ("c1", "A chat", true)
    );
    let (_, member) = chats::get_chat_as(db, "c1", "bob")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert!(!member);
    assert!(chats::get_chat_as(db, "nope", "alice").await?.is_none());
    Ok(())
}

async fn upsert_user_updates_name_and_set_online_needs_a_known_user(db: &Db) -> Result<()> {
    users::upsert_user(db, "alice", "Alice", at(0)).await?;
    users::set_online(db, "alice", true, at(1)).await?;
    users::upsert_user(db, "alice", "Alice L.", at(2)).await?;
    let user = users::get_user(db, "alice")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(user.display_name, "Alice L.");
    assert_eq!(
        (user.created_at, user.last_active_at, user.online),
        (at(0), at(2), true)
    );
    assert!(matches!(
        users::set_online(db, "nobody", true, at(3)).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(users::get_user(db, "nobody").await?, None);
    Ok(())
}

async fn a_user_context_is_replaced_whole_and_read_back(db: &Db) -> Result<()> {
    assert_eq!(users::get_user_context(db, "ada").await?, None);
    users::set_user_context(db, "ada", r#"{"tasks":["a"]}"#, "svc", at(1)).await?;
    users::set_user_context(db, "ada", r#"{"groups":["g"]}"#, "admin-1", at(2)).await?;
    let row = users::get_user_context(db, "ada")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(
        (
            row.document.as_str(),
            row.updated_by.as_str(),
            row.updated_at
        ),
        (r#"{"groups":["g"]}"#, "admin-1", at(2))
    );
    assert_eq!(users::get_user_context(db, "bob").await?, None);
    Ok(())
}

/// Not per backend: the URL is refused before any backend is chosen.
#[tokio::test(flavor = "multi_thread")]
async fn connect_rejects_an_unknown_url_scheme_with_a_clear_error() {
    match Db::connect("mysql://root@localhost/chat", 2).await {
        Err(StorageError::InvalidUrl(msg)) => {
            assert!(msg.contains("\"mysql\""), "names the scheme: {msg}");
            assert!(
                msg.contains("postgres://") && msg.contains("sqlite://"),
                "says what works: {msg}"
            );
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
    match Db::connect("sqlite::memory:", 2).await {
        Err(StorageError::InvalidUrl(msg)) => assert!(msg.contains("in-memory"), "{msg}"),
        other => panic!("expected InvalidUrl for in-memory SQLite, got {other:?}"),
    }
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1"),
        "postgres://postgres@127.0.0.1:5432/t_1"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "t_2"),
        "postgresql://u:p@h/t_2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "t_3"), "postgres://h:1/t_3");
}

async fn the_help_flag_changes_once_and_a_missing_chat_is_not_found(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    assert!(chats::set_needs_help(db, "c1", true).await?);
    assert!(
        !chats::set_needs_help(db, "c1", true).await?,
        "already flagged"
    );
    assert!(
        chats::get_chat(db, "c1")
            .await?
            .is_some_and(|c| c.needs_help)
    );
    assert!(chats::set_needs_help(db, "c1", false).await?);
    assert!(matches!(
        chats::set_needs_help(db, "nope", true).await,
        Err(StorageError::NotFound)
    ));
    Ok(())
}

async fn the_operator_lease_is_exclusive_renewable_and_expires(db: &Db) -> Result<()> {
    new_chat(db, "c1", "alice", 0).await?;
    // op1 takes it until t=30; op2 cannot while the lease lives; op1 may take it again.
    assert!(chats::acquire_operator(db, "c1", "op1", "One", at(30), at(0)).await?);
    assert!(!chats::acquire_operator(db, "c1", "op2", "Two", at(40), at(10)).await?);
    assert!(chats::acquire_operator(db, "c1", "op1", "One", at(35), at(10)).await?);
    let chat = chats::get_chat(db, "c1")
        .await?
        .unwrap_or_else(|| panic!("chat"));
    assert_eq!(
        (chat.operator_id.as_deref(), chat.admin_assisted),
        (Some("op1"), true)
    );

    // Renewing is for the holder only; an expired lease is listed and released once.
    assert!(chats::renew_operator(db, "c1", "op1", at(50)).await?);
    assert!(!chats::renew_operator(db, "c1", "op2", at(90)).await?);
    assert!(chats::expired_operator_leases(db, at(49)).await?.is_empty());
    let expired = chats::expired_operator_leases(db, at(51)).await?;
    assert_eq!(
        expired.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["c1"]
    );
    assert!(
        !chats::release_operator(db, "c1", "op1", Some(at(49))).await?,
        "a live lease is kept"
    );
    assert!(chats::release_operator(db, "c1", "op1", Some(at(51))).await?);
    assert!(
        !chats::release_operator(db, "c1", "op1", None).await?,
        "released once"
    );

    // After expiry another operator may take over; a plain release needs the holder.
    assert!(chats::acquire_operator(db, "c1", "op2", "Two", at(100), at(60)).await?);
    assert!(!chats::release_operator(db, "c1", "op1", None).await?);
    assert!(chats::release_operator(db, "c1", "op2", None).await?);
    let chat = chats::get_chat(db, "c1")
        .await?
        .unwrap_or_else(|| panic!("chat"));
    assert_eq!(
        (
            chat.operator_id,
            chat.operator_name,
            chat.operator_lease_until
        ),
        (None, None, None)
    );
    assert!(chat.admin_assisted, "admin-assisted stays");
    assert!(!chats::acquire_operator(db, "nope", "op1", "One", at(10), at(0)).await?);
    Ok(())
}

async fn a_reply_is_owed_from_its_message_until_it_is_stored(db: &Db) -> Result<()> {
    use super::pending;
    new_chat(db, "c1", "alice", 0).await?;
    let asked = NewMessage {
        reply: messages::ReplyLink::Owed { requester: "alice" },
        ..message("m1", "c1", "alice", 1)
    };
    expect_new(messages::insert_message(db, asked).await?);
    let owed = pending::pending_replies(db).await?;
    assert_eq!(owed.len(), 1);
    assert_eq!(
        (owed[0].trigger_id.as_str(), owed[0].requester_id.as_str()),
        ("m1", "alice")
    );
    assert_eq!(
        (owed[0].reply_id.as_deref(), owed[0].partial.as_str()),
        (None, "")
    );

    assert_eq!(
        pending::checkpoint_reply(db, "m1", "r1", "demo", "Half a repl", 3, at(2)).await?,
        pending::Checkpointed::Written
    );
    let owed = pending::pending_replies(db).await?;
    assert_eq!(owed[0].reply_id.as_deref(), Some("r1"));
    assert_eq!(owed[0].model.as_deref(), Some("demo"));
    assert_eq!(
        (owed[0].partial.as_str(), owed[0].chunks, owed[0].updated_at),
        ("Half a repl", 3, at(2))
    );

    // Several cores: the row names its core; another core claims it once, from that owner
    // only, and the first core's checkpoints stop landing.
    assert_eq!(owed[0].owner, "", "outside a cluster");
    assert!(pending::pending_replies_of_dead(db, &[]).await?.is_empty());
    let other = db.clone().owned_by("core-b");
    assert_eq!(
        pending::pending_replies_of_dead(&other, &[]).await?.len(),
        1
    );
    assert!(
        pending::pending_replies_of_dead(&other, &["core-x", ""])
            .await?
            .is_empty(),
        "its owner is alive"
    );
    assert!(
        !pending::claim_pending_reply(&other, "m1", "core-x").await?,
        "not x's"
    );
    assert!(pending::claim_pending_reply(&other, "m1", "").await?);
    assert!(
        !pending::claim_pending_reply(&other, "m1", "").await?,
        "claimed once"
    );
    assert!(
        pending::pending_replies_of_dead(&other, &[])
            .await?
            .is_empty()
    );
    assert_eq!(
        pending::checkpoint_reply(db, "m1", "r1", "demo", "Half a reply", 4, at(2)).await?,
        pending::Checkpointed::Claimed,
        "the old owner's checkpoint is refused"
    );
    assert_eq!(
        pending::checkpoint_reply(&other, "m1", "r1", "demo", "Half a reply", 4, at(2)).await?,
        pending::Checkpointed::Written
    );
    assert_eq!(pending::pending_replies(db).await?[0].owner, "core-b");
    assert!(
        pending::claim_pending_reply(db, "m1", "core-b").await?,
        "and back"
    );

    let reply = NewMessage {
        role: crate::types::Role::Assistant,
        reply: messages::ReplyLink::Answers { trigger_id: "m1" },
        ..message("r1", "c1", "assistant", 3)
    };
    expect_new(messages::insert_message(db, reply).await?);
    assert!(
        pending::pending_replies(db).await?.is_empty(),
        "stored with its reply"
    );
    // A checkpoint arriving after the reply was stored changes nothing.
    assert_eq!(
        pending::checkpoint_reply(db, "m1", "r1", "demo", "late", 9, at(4)).await?,
        pending::Checkpointed::Gone
    );
    assert!(pending::pending_replies(db).await?.is_empty());

    let asked = NewMessage {
        reply: messages::ReplyLink::Owed { requester: "alice" },
        ..message("m2", "c1", "alice", 5)
    };
    expect_new(messages::insert_message(db, asked).await?);
    pending::forget_pending_reply(db, "m2").await?;
    assert!(pending::pending_replies(db).await?.is_empty());
    Ok(())
}

const KEY_1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn keyed(db: &Db, spec: &str) -> Db {
    let keyring = crate::crypto::Keyring::parse(spec).unwrap_or_else(|e| panic!("test keys: {e}"));
    db.clone().with_keyring(std::sync::Arc::new(keyring))
}

/// Every sealed column as stored, joined: what a reader of the raw database sees.
async fn raw_sealed_columns(db: &Db) -> Result<String> {
    use super::schema::{
        chat_events, chats, help_requests, messages, pending_replies, user_contexts,
    };
    let mut all = Vec::new();
    with_conn!(db, |conn| {
        all.extend(
            chats::table
                .select(chats::title)
                .load::<String>(conn)
                .await?,
        );
        all.extend(
            chat_events::table
                .select(chat_events::payload)
                .load::<Vec<u8>>(conn)
                .await?
                .into_iter()
                .map(|p| String::from_utf8_lossy(&p).into_owned()),
        );
        all.extend(
            messages::table
                .select(messages::content)
                .load::<String>(conn)
                .await?,
        );
        all.extend(
            pending_replies::table
                .select(pending_replies::partial)
                .load::<String>(conn)
                .await?,
        );
        all.extend(
            user_contexts::table
                .select(user_contexts::document)
                .load::<String>(conn)
                .await?,
        );
        all.extend(
            help_requests::table
                .select(help_requests::reason)
                .load::<Option<String>>(conn)
                .await?
                .into_iter()
                .flatten(),
        );
    });
    Ok(all.join("\n"))
}

async fn sealed_columns_hold_no_plaintext_and_reencryption_moves_them_to_the_current_key(
    plain: &Db,
) -> Result<()> {
    use super::{help, pending};
    // Written before a key was configured: stays readable.
    new_chat(plain, "c1", "alice", 0).await?;
    messages::insert_message(
        plain,
        NewMessage {
            content: "an old plaintext message",
            ..message("m0", "c1", "alice", 1)
        },
    )
    .await?;

    let k1 = keyed(plain, &format!("k1:{KEY_1}"));
    let asked = NewMessage {
        content: "my secret question",
        reply: messages::ReplyLink::Owed { requester: "alice" },
        ..message("m1", "c1", "alice", 2)
    };
    let row = expect_new(messages::insert_message(&k1, asked).await?);
    assert_eq!(
        row.content, "my secret question",
        "the caller gets plaintext"
    );
    pending::checkpoint_reply(&k1, "m1", "r1", "demo", "a partial secret reply", 4, at(3)).await?;
    users::set_user_context(&k1, "alice", r#"{"tasks":["secret task"]}"#, "svc", at(3)).await?;
    help::insert_help_request(
        &k1,
        help::NewHelpRequest {
            id: "h1",
            chat_id: "c1",
            user_id: "alice",
            reason: Some("a secret reason"),
            now: at(4),
        },
    )
    .await?;

    chats::create_chat(
        &k1,
        NewChat {
            client_key: None,
            id: "c2",
            owner_id: "alice",
            title: "a secret title",
            agent_id: "agent",
            model: "m-1",
            now: at(5),
        },
    )
    .await?;
    chats::set_title(&k1, "c1", "another secret title").await?;
    let seq =
        events::append_event(&k1, "c1", "chat_update", br#"{"secret event":1}"#, at(6)).await?;

    let raw = raw_sealed_columns(plain).await?;
    for secret in [
        "secret question",
        "partial secret",
        "secret task",
        "secret reason",
        "secret title",
        "secret event",
    ] {
        assert!(!raw.contains(secret), "{secret:?} in {raw}");
    }
    assert!(raw.contains("an old plaintext message"), "{raw}");
    assert!(raw.contains("enc:v1:k1:"), "{raw}");

    // Every read path opens what it returns.
    let (page, _) = messages::history(&k1, "c1", None, 10).await?;
    let texts: Vec<&str> = page.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["an old plaintext message", "my secret question"]);
    let replayed = events::events_after(&k1, "c1", 0, 10).await?;
    assert!(matches!(&replayed[1], Durable::Message(m) if m.content == "my secret question"));
    assert!(
        matches!(&replayed[2], Durable::Event(e) if e.seq == seq && e.payload == br#"{"secret event":1}"#),
        "{replayed:?}"
    );
    assert_eq!(chat(&k1, "c1").await?.title, "another secret title");
    let listed = chats::list_user_chats(&k1, "alice", 10).await?;
    assert!(
        listed.iter().any(|c| c.title == "a secret title"),
        "{listed:?}"
    );
    let (session, _) = super::session_of(&k1, "c2")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(session.title, "a secret title");
    let by_id = messages::get_message(&k1, "m1")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(by_id.content, "my secret question");
    assert_eq!(
        pending::pending_replies(&k1).await?[0].partial,
        "a partial secret reply"
    );
    let doc = users::get_user_context(&k1, "alice")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(doc.document, r#"{"tasks":["secret task"]}"#);
    let help_row = help::get_help_request(&k1, "h1")
        .await?
        .ok_or(StorageError::NotFound)?;
    assert_eq!(help_row.reason.as_deref(), Some("a secret reason"));

    // Without the key the sealed rows are a clear error, not garbage; plaintext still reads.
    assert!(matches!(
        messages::get_message(plain, "m1").await,
        Err(StorageError::Crypto(
            crate::crypto::CryptoError::UnknownKey(_)
        ))
    ));
    assert_eq!(
        messages::get_message(plain, "m0").await?.map(|m| m.content),
        Some("an old plaintext message".into())
    );

    // Rotation: k2 current, k1 still read; re-encryption rewrites everything not under k2.
    let k2 = keyed(plain, &format!("k2:{KEY_2},k1:{KEY_1}"));
    assert_eq!(
        messages::get_message(&k2, "m1").await?.map(|m| m.content),
        Some("my secret question".into())
    );
    let counts = super::reencrypt_columns(&k2, 1).await?;
    let rewritten: Vec<(&str, u64, u64)> = counts
        .iter()
        .map(|c| (c.column, c.rewritten, c.failed))
        .collect();
    assert_eq!(
        rewritten,
        [
            ("messages.content", 2, 0),
            ("pending_replies.partial", 1, 0),
            ("user_contexts.document", 1, 0),
            ("help_requests.reason", 1, 0),
            ("chats.title", 2, 0),
            ("chat_events.payload", 1, 0),
        ]
    );
    let raw = raw_sealed_columns(plain).await?;
    assert!(
        !raw.contains("enc:v1:k1:") && !raw.contains("an old plaintext"),
        "{raw}"
    );
    // A second run finds nothing to do.
    let again = super::reencrypt_columns(&k2, 100).await?;
    assert!(
        again.iter().all(|c| c.rewritten == 0 && c.scanned > 0),
        "{again:?}"
    );

    // Only k2 now: everything reads.
    let only_k2 = keyed(plain, &format!("k2:{KEY_2}"));
    let (page, _) = messages::history(&only_k2, "c1", None, 10).await?;
    let texts: Vec<&str> = page.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["an old plaintext message", "my secret question"]);
    assert_eq!(
        users::get_user_context(&only_k2, "alice")
            .await?
            .map(|d| d.document),
        Some(r#"{"tasks":["secret task"]}"#.into())
    );
    assert_eq!(
        help::list_help_requests(&only_k2, true, 10).await?[0]
            .reason
            .as_deref(),
        Some("a secret reason")
    );
    assert_eq!(chat(&only_k2, "c2").await?.title, "a secret title");
    let replayed = events::events_after(&only_k2, "c1", 0, 10).await?;
    assert!(matches!(&replayed[2], Durable::Event(e) if e.payload == br#"{"secret event":1}"#));
    Ok(())
}
