//! Scenario 5, growth: does reading a chat cost more as the chat grows? Ours only (the Node
//! relay stores nothing), on SQLite. Two owners, each on its own socket, create an empty chat
//! each through the protocol;
//! then one SQL statement each, run by the `sqlite3` command-line tool against the running
//! core's database (WAL lets a second process write), fills one with `long` messages and the
//! other with `short` (100), numbered on from the chat's `next_seq` as the core numbers them,
//! and moves the chat's `next_seq` and `message_count` past them. Then, `ROUNDS` times for each
//! chat in turn: the latest history page (`history`, 50 messages), the page before it (the
//! `cursor` it returned as `before`), and a resume of the last 10 messages (`resume` with
//! `lastSeq` 10 behind, then a `ping`: the `pong` comes once the replay has arrived). Each is
//! timed from writing the frame to its answer.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::client::{self, Socket};
use crate::stats::Samples;
use crate::systems::{self, System};

/// Timed requests of each kind per chat.
const ROUNDS: usize = 20;
/// Messages in the short chat.
pub const SHORT: usize = 100;

/// The timings of one chat.
#[derive(Debug, Default)]
pub struct ChatTimes {
    pub messages: usize,
    pub latest_page: Samples,
    pub previous_page: Samples,
    pub resume: Samples,
    /// Messages in the last latest page, and replayed by the last resume (50 and 10 expected).
    pub page_len: usize,
    pub replayed: usize,
}

#[derive(Debug, Default)]
pub struct GrowthResult {
    /// How long the one statement that filled the long chat took.
    pub fill_time: Duration,
    pub short: ChatTimes,
    pub long: ChatTimes,
}

/// Runs the scenario against ours, whose SQLite database is `database`.
///
/// # Errors
/// When the chats cannot be made or filled, or a request is refused.
pub async fn run(system: &System, database: &Path, long: usize) -> anyhow::Result<GrowthResult> {
    let prefix = format!("g-{}", uuid::Uuid::new_v4().simple());
    // One socket per chat: each reads only its own chat's frames.
    let mut sockets = crate::load::open_sockets(system, &prefix, 0..2).await?;
    let mut long_socket = sockets.pop().context("no socket")?;
    let mut short_socket = sockets.pop().context("no socket")?;
    let short_chat = client::ours_create_chat(&mut short_socket, systems::SHORT_MODEL).await?;
    let long_chat = client::ours_create_chat(&mut long_socket, systems::SHORT_MODEL).await?;
    // The owners' ids do not matter to the reads: the messages' sender is any member name.
    fill(database, &short_chat, &format!("{prefix}-0"), SHORT)?;
    let started = Instant::now();
    fill(database, &long_chat, &format!("{prefix}-1"), long)?;
    let mut result = GrowthResult {
        fill_time: started.elapsed(),
        short: ChatTimes {
            messages: SHORT,
            ..ChatTimes::default()
        },
        long: ChatTimes {
            messages: long,
            ..ChatTimes::default()
        },
    };
    for _ in 0..ROUNDS {
        time_chat(&mut short_socket, &short_chat, &mut result.short).await?;
        time_chat(&mut long_socket, &long_chat, &mut result.long).await?;
    }
    Ok(result)
}

/// Puts `count` messages into `chat` with one statement (a recursive count), as the core would
/// have stored them: seq from the chat's `next_seq` on, user and assistant in turn.
fn fill(database: &Path, chat: &str, owner: &str, count: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        chat.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "unexpected characters in the chat id {chat:?}"
    );
    let sql = format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {count})
         INSERT INTO messages (id, chat_id, seq, sender_id, role, agent_id, content, status, created_at, ordinal)
         SELECT '{chat}-m' || i, c.id, c.next_seq + i,
                CASE WHEN i % 2 = 0 THEN '{owner}' ELSE 'assistant' END,
                CASE WHEN i % 2 = 0 THEN 'user' ELSE 'assistant' END,
                c.agent_id, 'Message number ' || i || ' of a long conversation.', 'complete',
                strftime('%Y-%m-%d %H:%M:%f', 'now'), c.message_count + i + 1
         FROM n, chats AS c WHERE c.id = '{chat}';
         UPDATE chats SET next_seq = next_seq + {count}, message_count = message_count + {count}
         WHERE id = '{chat}';
         COMMIT;"
    );
    let output = std::process::Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 60000")
        .arg(database)
        .arg(sql)
        .output()
        .context("running sqlite3 (apt-get install sqlite3)")?;
    if !output.status.success() {
        bail!(
            "sqlite3 failed filling {chat}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// One round of the three timed requests against `chat`.
async fn time_chat(socket: &mut Socket, chat: &str, times: &mut ChatTimes) -> anyhow::Result<()> {
    let started = Instant::now();
    let page = request(
        socket,
        &json!({"type": "history", "data": {"chatId": chat}}),
    )
    .await?;
    times.latest_page.push(started.elapsed());
    let cursor = page["data"]["cursor"].as_str().unwrap_or("").to_owned();
    let last_seq = page["data"]["lastSeq"].as_i64().unwrap_or(0);
    times.page_len = page["data"]["messages"].as_array().map_or(0, Vec::len);

    let started = Instant::now();
    request(
        socket,
        &json!({"type": "history", "data": {"chatId": chat, "before": cursor}}),
    )
    .await?;
    times.previous_page.push(started.elapsed());

    let started = Instant::now();
    client::send_json(
        socket,
        &json!({"type": "resume", "data": {"chats": [{"chatId": chat, "lastSeq": last_seq - 10}]}}),
    )
    .await?;
    client::send_json(socket, &json!({"type": "ping", "data": {"timestamp": 1}})).await?;
    let wait = async {
        let mut replayed = 0;
        loop {
            let answer = client::next_json(socket).await?;
            match answer["type"].as_str() {
                Some("message") => replayed += 1,
                Some("pong") => return Ok(replayed),
                Some("error") => bail!("resume refused: {}", answer["data"]),
                _ => {}
            }
        }
    };
    let replayed = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .context("no pong after the resume within a minute")??;
    times.resume.push(started.elapsed());
    times.replayed = replayed;
    Ok(())
}

/// Writes `frame` and returns the first `history`, `pong` or `error` frame (an error fails).
async fn request(
    socket: &mut Socket,
    frame: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    client::send_json(socket, frame).await?;
    let wait = async {
        loop {
            let answer = client::next_json(socket).await?;
            match answer["type"].as_str() {
                Some("history" | "pong") => return Ok(answer),
                Some("error") => bail!("error frame: {}", answer["data"]),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .context("no answer within a minute")?
}
