//! Scenario 4, fan-out: one room of `members` sockets, each its own user, and replies
//! streamed into it. The room is formed first: ours, the owner creates a chat on the fan-out
//! model and adds every member (`add_member` frames back to back), then each member joins
//! (256 joins in flight at once) and is answered with the chat's history; the Node relay, each
//! member joins a room by name. Then `replies` replies of the fan-out script (50 chunks 2 ms
//! apart by default) are streamed into the room one after another: the owner sends a message,
//! and the next only once every member has the whole reply (or has gone), so no member's
//! outbox carries more than one reply.
//!
//! Measured: the time to form the room and the sockets closed meanwhile (nobody may be
//! dropped), the chunks every member received against the chunks sent, deliveries per second
//! (chunk frames received by members, over the windows from a reply's first receipt by any
//! member to its last receipt by any), and delivery latency two ways: from the server's stamp
//! on the chunk to each member's receipt (ours: the `timestamp` the core puts on the chunk
//! event once, when it has parsed the upstream's delta, for every recipient; Node: the relay's
//! clock when it has parsed the delta, right before its synchronous loop over the room's
//! sockets, so time a delta waits unread in the relay is not in it; both in whole
//! milliseconds, so up to 1 ms high), and the
//! spread from the first member's receipt of a chunk to each member's receipt (the driver's
//! monotonic clock). CPU of the server per delivery. Beside the deliveries, the server's
//! intake: the chunks per second it stamped (from the stamps of each reply's first and last
//! chunk) times the members. The script offers some 330 chunks a second; a server that stamps
//! fewer was too busy to read the upstream faster.
//!
//! The driver reads chunk frames without building a JSON tree (a byte search for two numbers)
//! so that its own CPU, on the same cores, stays well below the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Socket};
use crate::load::{CpuMark, CpuUse};
use crate::procs::Process;
use crate::stats::Samples;
use crate::systems::{self, Kind, System};

/// Joins in flight at once while the room forms.
const JOIN_CONCURRENCY: usize = 256;
/// Longest wait for the room to form, and for every member to have one reply.
const WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub struct FanoutResult {
    pub members: usize,
    pub replies: usize,
    /// Chunks in each reply of the script, and the pause between them.
    pub deltas: usize,
    pub delay_ms: u64,
    /// From the first `add_member` (Node: the first join) to the last member's join answered.
    pub form_time: Duration,
    pub joined: usize,
    /// `add_member` or join refused.
    pub refused: usize,
    /// Member sockets closed while the room formed, and while the replies streamed.
    pub closed_forming: usize,
    pub closed_streaming: usize,
    /// Chunk frames received by members, and how many the replies sent to them.
    pub deliveries: usize,
    pub expected: usize,
    /// Replies every remaining member had in full before the next was asked for.
    pub replies_complete: usize,
    /// The sum over replies of first receipt to last receipt, by any member.
    pub stream_time: Duration,
    /// Chunks per second the server took in, from its stamps (first to last chunk of each
    /// reply, averaged over replies).
    pub pace: f64,
    pub latency: Samples,
    pub spread: Samples,
    pub cpu: CpuUse,
    pub first_error: Option<String>,
}

impl FanoutResult {
    pub fn per_second(&self) -> f64 {
        let secs = self.stream_time.as_secs_f64();
        if secs > 0.0 {
            self.deliveries as f64 / secs
        } else {
            0.0
        }
    }

    /// What the server took in for the room: members x the chunks it stamped per second.
    pub fn intake_per_second(&self) -> f64 {
        self.members as f64 * self.pace
    }
}

/// What the member tasks share with the controller.
#[derive(Default)]
struct Shared {
    joined: AtomicUsize,
    refused: AtomicUsize,
    closed: AtomicUsize,
    /// Members that have each reply in full, by reply.
    done: Vec<AtomicUsize>,
}

/// What one member saw.
#[derive(Default)]
struct MemberLog {
    latency: Samples,
    /// (reply, chunk index, receipt in microseconds since the scenario's origin, the server's
    /// stamp in milliseconds since the epoch).
    receipts: Vec<(u32, u32, u64, u64)>,
    error: Option<String>,
}

/// Runs the scenario against `system` (ours or the Node relay).
///
/// # Errors
/// When the sockets cannot be opened or the room cannot be set up; members that fail are
/// counted, not returned.
pub async fn run(
    system: &System,
    upstream: &Process,
    members: usize,
    replies: usize,
    deltas: usize,
    delay_ms: u64,
) -> anyhow::Result<FanoutResult> {
    let prefix = format!("f{members}-{}", uuid::Uuid::new_v4().simple());
    let mut owner = crate::load::open_sockets(system, &format!("{prefix}-owner"), 0..1)
        .await?
        .pop()
        .context("no owner socket")?;
    let sockets = crate::load::open_sockets(system, &prefix, 0..members).await?;
    let kind = system.kind;
    let mut result = FanoutResult {
        members,
        replies,
        deltas,
        delay_ms,
        expected: members * replies * deltas,
        ..FanoutResult::default()
    };

    let started = Instant::now();
    let room = if kind.is_ours() {
        let chat = client::ours_create_chat(&mut owner, systems::FANOUT_MODEL).await?;
        let users: Vec<String> = (0..members).map(|i| format!("{prefix}-{i}")).collect();
        result.refused += client::ours_add_members(&mut owner, &chat, &users).await?;
        chat
    } else {
        prefix.clone()
    };
    let shared = Arc::new(Shared {
        done: (0..replies).map(|_| AtomicUsize::new(0)).collect(),
        ..Shared::default()
    });
    let gate = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let (stop_tx, stop) = watch::channel(false);
    let origin = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            tokio::spawn(member(
                kind,
                socket,
                room.clone(),
                Arc::clone(&gate),
                Arc::clone(&shared),
                stop.clone(),
                replies,
                origin,
            ))
        })
        .collect();
    let formed = wait_until(WAIT, || {
        shared.joined.load(Ordering::Relaxed)
            + shared.refused.load(Ordering::Relaxed)
            + shared.closed.load(Ordering::Relaxed)
            >= members
    })
    .await;
    result.form_time = started.elapsed();
    if !formed {
        result.first_error = Some("the room did not form within two minutes".to_owned());
    }
    // Late presence and summaries settle; a member dropped by them counts as dropped forming.
    tokio::time::sleep(Duration::from_secs(1)).await;
    result.joined = shared.joined.load(Ordering::Relaxed);
    result.refused += shared.refused.load(Ordering::Relaxed);
    result.closed_forming = shared.closed.load(Ordering::Relaxed);

    // The owner only writes from here on; its reads are drained so its outbox never fills.
    let (mut owner_tx, mut owner_rx) = owner.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = owner_rx.next().await {} });
    let mark = CpuMark::take(Some(&system.process), upstream)?;
    for reply in 0..replies {
        let frame = if kind.is_ours() {
            json!({"type": "message", "messageId": format!("fo-{prefix}-{reply}"),
                   "data": {"chatId": room, "content": "Tell the room a story."}})
        } else {
            json!({"type": "message", "room": room, "reply": "fanout",
                   "content": "Tell the room a story."})
        };
        owner_tx
            .send(Message::text(frame.to_string()))
            .await
            .context("the owner's socket")?;
        let complete = wait_until(WAIT, || {
            shared.done[reply].load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed)
                >= result.joined
        })
        .await;
        if !complete {
            result.first_error.get_or_insert_with(|| {
                format!("reply {reply} did not reach every member within two minutes")
            });
            break;
        }
        result.replies_complete += 1;
    }
    result.cpu = mark.since(Some(&system.process), upstream)?;
    result.closed_streaming = shared
        .closed
        .load(Ordering::Relaxed)
        .saturating_sub(result.closed_forming);
    let _ = stop_tx.send(true);
    drain.abort();

    let mut logs = Vec::with_capacity(members);
    for task in tasks {
        logs.push(task.await?);
    }
    collect(&mut result, logs);
    Ok(result)
}

/// Polls `done` every 10 ms until it holds or `within` has passed; whether it held.
async fn wait_until(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// One member: joins (at most [`JOIN_CONCURRENCY`] at once), then reads every frame until it
/// has `replies` whole replies, its socket ends, or the controller stops it.
#[allow(clippy::too_many_arguments)]
async fn member(
    kind: Kind,
    mut socket: Socket,
    room: String,
    gate: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    replies: usize,
    origin: Instant,
) -> MemberLog {
    let mut log = MemberLog::default();
    let joined = {
        let _permit = gate.acquire().await;
        if kind.is_ours() {
            client::ours_join(&mut socket, &room).await
        } else {
            client::node_join(&mut socket, &room).await
        }
    };
    if let Err(err) = joined {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        log.error = Some(format!("{err:#}"));
        return log;
    }
    shared.joined.fetch_add(1, Ordering::Relaxed);
    let mut reply = 0;
    while reply < replies {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            frame = socket.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                log.error = Some(format!("the socket closed after {reply} replies"));
                break;
            }
            Some(Ok(_)) => continue,
        };
        let text = text.as_str();
        match read_frame(kind, text) {
            Frame::Chunk { index, stamp_ms } => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                let late = (now_ms - stamp_ms as f64).max(0.0);
                log.latency.push(Duration::from_secs_f64(late / 1000.0));
                let at = origin.elapsed().as_micros() as u64;
                log.receipts
                    .push((reply as u32, index as u32, at, stamp_ms));
            }
            Frame::ReplyEnd => {
                shared.done[reply].fetch_add(1, Ordering::Relaxed);
                reply += 1;
            }
            Frame::Other => {}
        }
    }
    log
}

enum Frame {
    Chunk { index: u64, stamp_ms: u64 },
    ReplyEnd,
    Other,
}

/// Tells a chunk (its index and the server's stamp) and a reply's end from other frames.
/// Chunks are read by a byte search, not a JSON tree: the script's deltas are plain words, so
/// the field names cannot appear inside them.
fn read_frame(kind: Kind, text: &str) -> Frame {
    let (chunk_type, stamp_field) = if kind.is_ours() {
        ("\"type\":\"message_chunk\"", "\"timestamp\":")
    } else {
        ("\"type\":\"chunk\"", "\"ts\":")
    };
    if text.contains(chunk_type) {
        return match (
            number_after(text, "\"index\":"),
            number_after(text, stamp_field),
        ) {
            (Some(index), Some(stamp_ms)) => Frame::Chunk { index, stamp_ms },
            _ => Frame::Other,
        };
    }
    if kind.is_ours() {
        // The reply's final `message` (the user's own message is a `message` too).
        if text.contains("\"type\":\"message\"") && text.contains("\"role\":\"assistant\"") {
            return Frame::ReplyEnd;
        }
    } else if text.contains("\"type\":\"done\"") {
        return Frame::ReplyEnd;
    }
    Frame::Other
}

/// The unsigned integer right after `field` in `text`.
fn number_after(text: &str, field: &str) -> Option<u64> {
    let start = text.find(field)? + field.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Folds the members' logs into the result: deliveries, latencies, spreads, stream windows.
fn collect(result: &mut FanoutResult, logs: Vec<MemberLog>) {
    let (replies, deltas) = (result.replies, result.deltas);
    // Per (reply, index): the first receipt by any member; per reply: first and last receipt.
    let mut first = vec![u64::MAX; replies * deltas];
    let mut window = vec![(u64::MAX, 0u64); replies];
    let mut stamps = vec![(u64::MAX, 0u64); replies];
    for log in &logs {
        for &(reply, index, at, stamp) in &log.receipts {
            let (reply, index) = (reply as usize, index as usize);
            if reply < replies && index < deltas {
                let slot = &mut first[reply * deltas + index];
                *slot = (*slot).min(at);
            }
            if let Some(w) = window.get_mut(reply) {
                *w = (w.0.min(at), w.1.max(at));
            }
            if let Some(s) = stamps.get_mut(reply) {
                *s = (s.0.min(stamp), s.1.max(stamp));
            }
        }
    }
    let paces: Vec<f64> = stamps
        .iter()
        .filter(|s| s.0 < s.1)
        .map(|s| (deltas.saturating_sub(1)) as f64 * 1000.0 / (s.1 - s.0) as f64)
        .collect();
    if !paces.is_empty() {
        result.pace = paces.iter().sum::<f64>() / paces.len() as f64;
    }
    for log in logs {
        result.deliveries += log.receipts.len();
        for &(reply, index, at, _) in &log.receipts {
            if let Some(&min) = first.get(reply as usize * deltas + index as usize) {
                result
                    .spread
                    .push(Duration::from_micros(at.saturating_sub(min)));
            }
        }
        result.latency.extend(log.latency);
        if result.first_error.is_none() {
            result.first_error = log.error;
        }
    }
    result.stream_time = window
        .iter()
        .filter(|w| w.0 <= w.1)
        .map(|w| Duration::from_micros(w.1 - w.0))
        .sum();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_of_ours_is_read_without_a_json_tree() {
        let text = r#"{"type":"message_chunk","data":{"chatId":"c","messageId":"m","index":12,"delta":"w12 "},"timestamp":1714564800430}"#;
        match read_frame(Kind::Ours, text) {
            Frame::Chunk { index, stamp_ms } => {
                assert_eq!(index, 12);
                assert_eq!(stamp_ms, 1_714_564_800_430);
            }
            _ => panic!("not read as a chunk"),
        }
    }

    #[test]
    fn only_the_assistants_message_ends_a_reply() {
        let user = r#"{"type":"message","data":{"message":{"role":"user"}}}"#;
        let assistant = r#"{"type":"message","data":{"message":{"role":"assistant"}}}"#;
        assert!(matches!(read_frame(Kind::Ours, user), Frame::Other));
        assert!(matches!(read_frame(Kind::Ours, assistant), Frame::ReplyEnd));
        assert!(matches!(
            read_frame(Kind::Node, r#"{"type":"done"}"#),
            Frame::ReplyEnd
        ));
    }
}
