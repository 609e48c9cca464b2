//! Encryption at rest, end to end: the real `chat-core` binary with a key from the
//! environment (`CHAT_ENCRYPTION__KEYS`) behind a real `chat-edge`. A chat turn, a context
//! document and an upload are stored; the raw database (every byte of the SQLite files, and
//! every encrypted column read past the core on both backends) and the file store hold none
//! of their text, while the API returns all of it intact, ranges included. Then the key
//! rotates: a restart with a new key first and the old one second reads the old data and
//! writes new data under the new key; `chatctl encryption reencrypt` rewrites the rest; a
//! restart with only the new key reads everything. The keys never reach the core's log.

use std::path::{Path, PathBuf};

use chat_auth::{AuthSettings, MintRequest, Minter};
use chat_core::storage::{Db, schema};
use chat_tests::core_process::CoreProcess;
use chat_tests::edge_process::EdgeProcess;
use chat_tests::{Backend, SECRET, Ws, chat_with_one_turn, chatctl_path, fresh_postgres_database};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

const KEY_1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
/// The user's message (one line, so it is also the chat's title; the demo quotes it back).
const MESSAGE: &str = "My locker code is tangerine-albatross-4471";
const SECOND: &str = "And the bike lock is periwinkle-harmonica-88";
const TASK: &str = "Renew the passport at window seven";
/// What no stored byte may contain.
const NEEDLES: &[&str] = &[
    "tangerine-albatross",
    "periwinkle-harmonica",
    "passport at window",
    "marmalade-zeppelin",
];

/// A text file of about 150 KiB: three 64 KiB segments, the last one partial.
fn upload_body() -> Vec<u8> {
    (0..5000)
        .map(|i| format!("line {i:05} of the marmalade-zeppelin notes\n"))
        .collect::<String>()
        .into_bytes()
}

fn mint(user: &str, roles: &[&str]) -> String {
    let token = Minter::new(&AuthSettings::hs256(SECRET))
        .expect("minter")
        .mint(&MintRequest {
            user_id: user.into(),
            name: Some(format!("{user} name")),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ttl_secs: 3600,
        })
        .expect("mint");
    chat_tests::log_capture::record("token", &token);
    token
}

/// A request to the edge, retried while the edge's channel to a restarted core comes back.
async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
    range: Option<&str>,
) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut request = reqwest::Client::new()
            .request(method.clone(), url)
            .bearer_auth(token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = request.send().await.expect("request");
        if response.status() != 503 || tokio::time::Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

struct Stored {
    chat: String,
    file_url: String,
}

/// Everything the API returns is intact.
async fn api_reads_everything(edge: &EdgeProcess, stored: &Stored, messages: &[&str]) {
    let base = format!("http://{}", edge.addr);
    let ada = mint("ada", &[]);
    let page: Value = call(
        reqwest::Method::GET,
        &format!("{base}/api/sessions/{}/messages", stored.chat),
        &ada,
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("history");
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(texts[0], MESSAGE, "{page}");
    assert!(texts[1].contains(MESSAGE), "the demo quotes it: {page}");
    let sessions: Value = call(
        reqwest::Method::GET,
        &format!("{base}/api/sessions"),
        &ada,
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("sessions");
    let titles: Vec<&str> = sessions["sessions"]
        .as_array()
        .or_else(|| sessions.as_array())
        .expect("sessions list")
        .iter()
        .filter_map(|s| s["title"].as_str())
        .collect();
    for message in messages {
        assert!(
            titles.contains(message),
            "{message:?} as a title: {sessions}"
        );
    }
    let context: Value = call(
        reqwest::Method::GET,
        &format!("{base}/api/users/ada/context"),
        &ada,
        None,
        None,
    )
    .await
    .json()
    .await
    .expect("context");
    assert_eq!(context["tasks"], json!([TASK]), "{context}");

    let body = upload_body();
    let whole = call(
        reqwest::Method::GET,
        &format!("{base}{}", stored.file_url),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.expect("file").as_ref(), body.as_slice());
    // Ranges inside one segment, across a boundary, and the file's end.
    let segment = 64 * 1024;
    for (start, end) in [
        (10, 20),
        (segment - 5, segment + 5),
        (body.len() - 7, body.len() - 1),
    ] {
        let ranged = call(
            reqwest::Method::GET,
            &format!("{base}{}", stored.file_url),
            &ada,
            None,
            Some(&format!("bytes={start}-{end}")),
        )
        .await;
        assert_eq!(ranged.status(), 206);
        assert_eq!(
            ranged.headers()["content-range"],
            format!("bytes {start}-{end}/{}", body.len()).as_str()
        );
        assert_eq!(
            ranged.bytes().await.expect("range").as_ref(),
            &body[start..=end]
        );
    }
}

/// Every stored value of the encrypted columns, read past the core (no keys).
async fn sealed_values(database_url: &str) -> Vec<String> {
    use schema::{chat_events, chats, help_requests, messages, pending_replies, user_contexts};
    let db = Db::connect(database_url, 1).await.expect("database");
    let mut values: Vec<String> = Vec::new();
    match db.pools() {
        chat_core::storage::Pools::Sqlite(pool) => {
            let mut conn = pool.get().await.expect("connection");
            let conn = &mut *conn;
            values.extend(
                messages::table
                    .select(messages::content)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                chats::table
                    .select(chats::title)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                user_contexts::table
                    .select(user_contexts::document)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                pending_replies::table
                    .select(pending_replies::partial)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                help_requests::table
                    .select(help_requests::reason)
                    .load::<Option<String>>(conn)
                    .await
                    .expect("read")
                    .into_iter()
                    .flatten(),
            );
            values.extend(
                chat_events::table
                    .select(chat_events::payload)
                    .load::<Vec<u8>>(conn)
                    .await
                    .expect("read")
                    .into_iter()
                    .map(|p| String::from_utf8_lossy(&p).into_owned()),
            );
        }
        chat_core::storage::Pools::Pg(pool) => {
            let mut conn = pool.get().await.expect("connection");
            let conn = &mut *conn;
            values.extend(
                messages::table
                    .select(messages::content)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                chats::table
                    .select(chats::title)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                user_contexts::table
                    .select(user_contexts::document)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                pending_replies::table
                    .select(pending_replies::partial)
                    .load::<String>(conn)
                    .await
                    .expect("read"),
            );
            values.extend(
                help_requests::table
                    .select(help_requests::reason)
                    .load::<Option<String>>(conn)
                    .await
                    .expect("read")
                    .into_iter()
                    .flatten(),
            );
            values.extend(
                chat_events::table
                    .select(chat_events::payload)
                    .load::<Vec<u8>>(conn)
                    .await
                    .expect("read")
                    .into_iter()
                    .map(|p| String::from_utf8_lossy(&p).into_owned()),
            );
        }
    }
    values
}

/// The key ids of the non-empty sealed values, sorted without repeats; `plain` for a value
/// that is not sealed.
async fn key_ids(database_url: &str) -> Vec<String> {
    let mut ids: Vec<String> = sealed_values(database_url)
        .await
        .iter()
        .filter(|v| !v.is_empty())
        .map(
            |v| match v.strip_prefix("enc:v1:").and_then(|r| r.split_once(':')) {
                Some((id, _)) => id.to_owned(),
                None => format!("plain: {v}"),
            },
        )
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// No byte of the database (SQLite: its files; both: the sealed columns) or of the file store
/// holds any of [`NEEDLES`]; the stored file starts with the encrypted header naming `key`.
async fn raw_storage_holds_no_plaintext(dir: &Path, database_url: &str, sqlite: bool, key: &str) {
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    if sqlite {
        let db_files: Vec<PathBuf> = files_under(dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("chat.db"))
            })
            .collect();
        assert!(!db_files.is_empty());
        for path in db_files {
            let bytes = std::fs::read(&path).expect("database file");
            for needle in NEEDLES {
                assert!(
                    !contains(&bytes, needle),
                    "{needle:?} in {}",
                    path.display()
                );
            }
        }
    }
    let values = sealed_values(database_url).await;
    assert!(
        values.iter().any(|v| v.starts_with("enc:v1:")),
        "{values:?}"
    );
    for value in &values {
        for needle in NEEDLES {
            assert!(!value.contains(needle), "{needle:?} stored as {value:?}");
        }
    }
    let stored = files_under(&dir.join("files"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    let bytes = std::fs::read(&stored[0]).expect("stored file");
    for needle in NEEDLES {
        assert!(!contains(&bytes, needle), "{needle:?} in the stored file");
    }
    assert!(bytes.starts_with(b"\0CHATENC\x01"), "the sealed header");
    assert_eq!(
        &bytes[10..10 + key.len()],
        key.as_bytes(),
        "under key {key}"
    );
}

async fn the_stored_data_is_sealed_rotates_and_is_reencrypted(backend: Backend) {
    let started = std::time::Instant::now();
    chatctl_path();
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, sqlite) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("chat.db").display()),
            true,
        ),
        Backend::Postgres => (fresh_postgres_database().await, false),
    };
    let config = format!(
        "[llm.providers.demo]\nkind = \"demo\"\nword_delay_ms = 0\n\n[files]\nlocal_dir = \"{}\"\n",
        dir.path().join("files").display()
    );
    for text in [MESSAGE, SECOND, TASK, KEY_1, KEY_2] {
        chat_tests::log_capture::record("secret", text);
    }
    let k1 = format!("k1:{KEY_1}");
    let mut core = CoreProcess::start_with_env(
        dir.path(),
        &config,
        &database_url,
        &[("CHAT_ENCRYPTION__KEYS", &k1)],
    );
    let edge = EdgeProcess::start(core.addr);
    let base = format!("http://{}", edge.addr);

    // A chat turn, a context document, an upload.
    let mut ws = Ws::open(&format!("ws://{}/ws?token={}", edge.addr, mint("ada", &[]))).await;
    ws.recv_type("session").await;
    let chat = chat_with_one_turn(&mut ws, MESSAGE).await;
    drop(ws);
    let put = call(
        reqwest::Method::PUT,
        &format!("{base}/api/users/ada/context"),
        &mint("tasks-service", &["service"]),
        Some(json!({"tasks": [TASK]})),
        None,
    )
    .await;
    assert_eq!(put.status(), 200);
    let part = reqwest::multipart::Part::bytes(upload_body())
        .file_name("notes.txt")
        .mime_str("text/plain")
        .expect("mime");
    let uploaded: Value = reqwest::Client::new()
        .post(format!("{base}/api/uploads"))
        .bearer_auth(mint("ada", &[]))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("upload answer");
    assert_eq!(uploaded["size"], upload_body().len(), "{uploaded}");
    let stored = Stored {
        chat,
        file_url: uploaded["url"].as_str().expect("url").to_owned(),
    };

    api_reads_everything(&edge, &stored, &[MESSAGE]).await;
    raw_storage_holds_no_plaintext(dir.path(), &database_url, sqlite, "k1").await;
    assert_eq!(key_ids(&database_url).await, ["k1"]);

    // Rotation: k2 current, k1 kept to read. Old data reads; new data goes under k2.
    core.stop("TERM");
    core.set_env("CHAT_ENCRYPTION__KEYS", &format!("k2:{KEY_2}, k1:{KEY_1}"));
    core.restart();
    api_reads_everything(&edge, &stored, &[MESSAGE]).await;
    let mut ws = Ws::open(&format!("ws://{}/ws?token={}", edge.addr, mint("ada", &[]))).await;
    ws.recv_type("session").await;
    chat_with_one_turn(&mut ws, SECOND).await;
    drop(ws);
    assert_eq!(key_ids(&database_url).await, ["k1", "k2"]);

    let run = chat_tests::run_chatctl(
        {
            let mut cmd = tokio::process::Command::new(chatctl_path());
            cmd.env("CHATCTL_CORE", format!("http://{}", core.addr))
                .env("CHATCTL_TOKEN", mint("ops", &["admin"]))
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            cmd
        },
        &["encryption", "reencrypt", "--batch-size", "2", "--json"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.json();
    assert_eq!(report["keyId"], "k2", "{report}");
    let part = |name: &str| {
        report["parts"]
            .as_array()
            .and_then(|parts| parts.iter().find(|p| p["part"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    // The first turn's two messages, its title and context, and the one file were under k1.
    assert_eq!(part("messages.content")["rewritten"], 2, "{report}");
    assert_eq!(part("user_contexts.document")["rewritten"], 1, "{report}");
    assert_eq!(part("files")["rewritten"], 1, "{report}");
    assert!(
        report["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .all(|p| p["failed"] == 0),
        "{report}"
    );
    assert_eq!(key_ids(&database_url).await, ["k2"]);
    raw_storage_holds_no_plaintext(dir.path(), &database_url, sqlite, "k2").await;

    // Only k2: everything still reads.
    core.stop("TERM");
    core.set_env("CHAT_ENCRYPTION__KEYS", &format!("k2:{KEY_2}"));
    core.restart();
    api_reads_everything(&edge, &stored, &[MESSAGE, SECOND]).await;

    let log = std::fs::read_to_string(&core.log).expect("core log");
    assert!(
        !log.contains(KEY_1) && !log.contains(KEY_2),
        "a key in the core's log"
    );
    assert!(log.contains("encryption at rest on"), "the start says so");
    assert!(core.panics().is_empty(), "{:?}", core.panics());
    eprintln!("encryption at rest on {backend:?}: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_stores_no_plaintext_and_survives_a_key_rotation() {
    the_stored_data_is_sealed_rotates_and_is_reencrypted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stores_no_plaintext_and_survives_a_key_rotation() {
    the_stored_data_is_sealed_rotates_and_is_reencrypted(Backend::Postgres).await;
}
