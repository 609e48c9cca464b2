//! One assistant reply ("turn"): prompt assembly, streaming deltas to the chat's room, and
//! the authoritative final message, stored with usage and timings.
//!
//! A turn runs as its own task, tracked by the engine's `TaskTracker`, and is owned by nobody
//! but itself: the connection that asked may go away and the reply still completes and is
//! stored. Only `stop` (the [`ActiveReply::cancel`] token) ends it early; the partial text is
//! kept with status `stopped`. Turns of one chat run one at a time, in order: each is given
//! its [`Place`] in the chat's line where that order is known, before it is spawned.
//!
//! A turn may also continue a reply another core started and could not finish (it died:
//! `chat/failover.rs`): under the same message id, its chunks numbered after the ones already
//! sent, with the text so far given to the model as the start of its answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ASSISTANT;
use super::engine::{ActiveReply, Engine, new_id};
use super::error::ChatError;
use super::event::{ChatChanges, Chunk, Event, Outgoing, StoredAttachment, StoredMetadata, Typing};
use super::prompt::build_prompt;
use super::reply_order::Place;
use super::watch::ChangeKind;
use crate::llm::{Delta, LlmError, Prompt, estimate_tokens};
use crate::storage::{self, ChatRow, MessageRow};
use crate::types::{MessageStatus, Role};

/// Starts the reply to `trigger` (a stored user message) in the background; it runs once
/// `place` has its turn.
pub fn spawn(
    engine: Arc<Engine>,
    place: Place,
    chat: ChatRow,
    trigger: MessageRow,
    requester: String,
) {
    spawn_turn(engine, place, chat, trigger, requester, None);
}

/// Starts the reply to `trigger` behind every reply of its chat already in line: for callers
/// that go through owed replies in `seq` order (a start, a takeover).
pub fn spawn_next(engine: Arc<Engine>, chat: ChatRow, trigger: MessageRow, requester: String) {
    let place = engine.reply_order.join(&chat.id);
    spawn(engine, place, chat, trigger, requester);
}

/// A reply started elsewhere, to be continued: its id and the chunks clients were sent.
#[derive(Debug, Clone, Default)]
pub struct Continuation {
    pub reply_id: String,
    pub chunks: Vec<String>,
}

/// Continues the reply to `trigger` that another core started (see the module comment),
/// behind every reply of its chat already in line.
pub fn spawn_continuation(
    engine: Arc<Engine>,
    chat: ChatRow,
    trigger: MessageRow,
    requester: String,
    continuation: Continuation,
) {
    let place = engine.reply_order.join(&chat.id);
    spawn_turn(engine, place, chat, trigger, requester, Some(continuation));
}

fn spawn_turn(
    engine: Arc<Engine>,
    place: Place,
    chat: ChatRow,
    trigger: MessageRow,
    requester: String,
    continuation: Option<Continuation>,
) {
    let span = tracing::info_span!("turn", chat = %chat.id, trigger = %trigger.id);
    let task_engine = engine.clone();
    engine.tasks.spawn(
        async move {
            if let Err(err) = run(task_engine, place, chat, trigger, requester, continuation).await
            {
                tracing::error!(error = %err, "reply could not be stored");
            }
        }
        .instrument(span),
    );
}

/// How a generation ended.
struct Outcome {
    text: String,
    status: MessageStatus,
    /// The model stopped at its output token limit.
    truncated: bool,
    model_id: String,
    usage: Option<(u32, u32)>,
    ttft: Option<Duration>,
    error: Option<Failure>,
    /// Another core took the reply over meanwhile (this one was thought dead): it stores it.
    lost: bool,
}

/// Why a reply failed.
enum Failure {
    /// The model failed after every retry and fallback.
    Model(LlmError),
    /// The prompt could not be read from storage.
    Prompt(storage::StorageError),
}

impl Failure {
    /// Stored in the reply's metadata and counted; never provider text.
    fn kind(&self) -> &'static str {
        match self {
            Self::Model(err) => err.kind(),
            Self::Prompt(_) => "storage",
        }
    }

    /// What the requester is told.
    fn to_error(&self) -> ChatError {
        match self {
            Self::Model(_) => ChatError::ModelFailed,
            Self::Prompt(err) => ChatError::Internal(format!("prompt: {err}")),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Model(err) => write!(f, "{err}"),
            Self::Prompt(err) => write!(f, "prompt: {err}"),
        }
    }
}

async fn run(
    engine: Arc<Engine>,
    mut place: Place,
    chat: ChatRow,
    trigger: MessageRow,
    requester: String,
    continuation: Option<Continuation>,
) -> Result<(), storage::StorageError> {
    // Held until this turn ends: the next one waits.
    place.ready().await;
    // The model or agent may have changed while this turn waited for the previous one, and
    // an operator may have taken the chat over: then the assistant stays silent.
    // A failed read keeps the row the message was stored with: the message is acknowledged, so
    // it gets a reply (or a stored failure) whatever happens from here.
    let chat = match storage::get_chat(&engine.db, &chat.id).await {
        Ok(fresh) => fresh.unwrap_or(chat),
        Err(err) => {
            tracing::warn!(error = %err, "chat could not be re-read; using the row at hand");
            chat
        }
    };
    // Shutting down: a reply that has not started waits for the next start, which finds it
    // owed and generates it (`Engine::recover_replies`).
    if engine.shutdown.is_cancelled() {
        return Ok(());
    }
    // A reply being continued was started before any takeover (failover checks first).
    if continuation.is_none() && engine.held(&chat) {
        // The operator answers instead: nothing is owed any more.
        if let Err(err) = storage::forget_pending_reply(&engine.db, &trigger.id).await {
            tracing::warn!(error = %err, "owed reply not cleared");
        }
        return Ok(());
    }
    let Continuation {
        reply_id: message_id,
        chunks: prior,
    } = continuation.unwrap_or_else(|| Continuation {
        reply_id: new_id(),
        chunks: Vec::new(),
    });
    let reply = ActiveReply {
        message_id: message_id.clone(),
        cancel: CancellationToken::new(),
        chunks: Arc::new(Mutex::new(prior.clone())),
    };
    engine
        .replies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(chat.id.clone(), reply.clone());
    // Continuing: the chunks that crossed from the core that died are this core's now.
    engine.rooms.forget_remote_reply(&chat.id, &message_id);
    engine.rooms.broadcast(&chat.id, typing(&chat, true), None);
    // From here a restart stores this reply (by this id) as failed rather than generating it
    // again: clients may have seen its first chunks. Awaited, not spawned: one small write
    // before the first token, so no chunk can reach a client before its id is recorded.
    let so_far = prior.concat();
    match storage::checkpoint_reply(
        &engine.db,
        &trigger.id,
        &message_id,
        &chat.model,
        &so_far,
        prior.len() as i64,
        engine.now(),
    )
    .await
    {
        Ok(storage::Checkpointed::Claimed) => {
            // Another core claimed it between our claim and now: it answers.
            engine
                .replies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&chat.id);
            return Ok(());
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "reply start not recorded"),
    }

    let started = Instant::now();
    let prompt = while_unavailable(&engine, "prompt", || async {
        let mut prompt = build_prompt(&engine, &chat, &trigger).await?;
        // The text so far, as the start of the model's answer (without trailing whitespace,
        // which Anthropic refuses there; `generate` drops the space the model then repeats).
        if !so_far.trim().is_empty() {
            prompt.turns.push(crate::llm::Turn {
                role: crate::llm::TurnRole::Assistant,
                content: so_far.trim_end().to_string(),
                images: Vec::new(),
            });
        }
        Ok(prompt)
    })
    .await;
    let (outcome, prompt_estimate) = match prompt {
        Ok(prompt) => {
            let estimate = estimate_tokens(&prompt.system)
                + prompt
                    .turns
                    .iter()
                    .map(|t| estimate_tokens(&t.content))
                    .sum::<u32>();
            (
                generate(&engine, &chat, &trigger.id, prompt, &reply, &prior).await,
                estimate,
            )
        }
        Err(err) => (
            Outcome {
                text: String::new(),
                status: MessageStatus::Failed,
                truncated: false,
                model_id: chat.model.clone(),
                usage: None,
                ttft: None,
                error: Some(Failure::Prompt(err)),
                lost: false,
            },
            0,
        ),
    };
    let latency = started.elapsed();
    if outcome.lost {
        engine
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chat.id);
        tracing::warn!(chat = %chat.id, reply = %message_id, "another core took this reply over; it stores it");
        metrics::counter!("chat_core_replies_lost_total").increment(1);
        return Ok(());
    }

    let (content, status) = match (&outcome.error, outcome.text.trim().is_empty()) {
        (Some(_), true) => (engine.llm.settings().apology.clone(), MessageStatus::Failed),
        _ => (outcome.text.clone(), outcome.status),
    };
    let (prompt_tokens, completion_tokens, estimated) = match outcome.usage {
        Some((p, c)) => (i64::from(p), i64::from(c), false),
        None => (
            i64::from(prompt_estimate),
            i64::from(estimate_tokens(&outcome.text)),
            true,
        ),
    };
    // A complete reply in a chat that asked for spoken replies is spoken before it is
    // stored, so its one final message carries the audio.
    let mut speech_error = None;
    let mut spoken = Vec::new();
    if status == MessageStatus::Complete && engine.wants_spoken_replies(&chat).await {
        match engine.speak_reply(&chat, &message_id, &content).await {
            Ok(audio) => spoken.push(audio),
            Err(err) => speech_error = Some(err.as_str().to_owned()),
        }
    }
    let spoken_ids: Vec<String> = spoken.iter().map(|a| a.id.clone()).collect();
    let spoken_json = StoredAttachment::list_json(&spoken);
    let metadata = StoredMetadata {
        speech_error,
        model: Some(outcome.model_id.clone()),
        prompt_tokens: Some(prompt_tokens),
        completion_tokens: Some(completion_tokens),
        ttft_ms: outcome.ttft.map(|d| d.as_millis() as i64),
        latency_ms: Some(latency.as_millis() as i64),
        error: outcome.error.as_ref().map(|e| e.kind().to_string()),
        finish_reason: outcome.truncated.then(|| "length".to_owned()),
        ..Default::default()
    };
    // Counted before anyone can see the reply, so the figures never lag what clients saw.
    let model = outcome.model_id.clone();
    metrics::counter!("chat_core_messages_total", "role" => "assistant").increment(1);
    metrics::counter!("chat_core_replies_total", "model" => model.clone(), "status" => status.as_str())
        .increment(1);
    metrics::histogram!("chat_core_reply_seconds", "model" => model.clone())
        .record(latency.as_secs_f64());
    if let Some(ttft) = outcome.ttft {
        metrics::histogram!("chat_core_reply_ttft_seconds", "model" => model.clone())
            .record(ttft.as_secs_f64());
    }
    metrics::counter!("chat_core_llm_tokens_total", "model" => model.clone(), "kind" => "prompt")
        .increment(prompt_tokens as u64);
    metrics::counter!("chat_core_llm_tokens_total", "model" => model.clone(), "kind" => "completion").increment(completion_tokens as u64);
    match &outcome.error {
        Some(Failure::Model(err)) => engine.notifier.model_failed(&model, err.kind()),
        None if status == MessageStatus::Complete => engine.notifier.model_succeeded(&model),
        _ => {}
    }
    if let Some(Failure::Model(err)) = &outcome.error {
        metrics::counter!("chat_core_llm_errors_total", "model" => model, "kind" => err.kind())
            .increment(1);
    }
    // Each attempt takes the chat's order lock on its own: while the database is away, the
    // members' messages get their 503 at once instead of queueing behind this reply. The lock
    // of the attempt that stored it is held on until the reply is broadcast, so members get
    // events in `seq` order.
    // Usage and the session's metrics are stored with the reply, before anyone sees it, so
    // whoever reads them after the final message finds them.
    let usage = storage::NewUsage {
        message_id: &message_id,
        chat_id: &chat.id,
        user_id: &requester,
        model: &outcome.model_id,
        prompt_tokens,
        completion_tokens,
        estimated,
        ttft_ms: metadata.ttft_ms,
        total_ms: latency.as_millis() as i64,
        now: engine.now(),
    };
    let inserted = while_unavailable(&engine, "reply", || async {
        let order = engine.seq.lock(&chat.id).await;
        let inserted = storage::insert_message_with(
            &engine.db,
            storage::NewMessage {
                id: &message_id,
                chat_id: &chat.id,
                sender_id: ASSISTANT,
                role: Role::Assistant,
                agent_id: &chat.agent_id,
                content: &content,
                status,
                client_message_id: None,
                attachments_json: &spoken_json,
                file_ids: &spoken_ids,
                metadata_json: &metadata.to_json(),
                now: engine.now(),
                reply: storage::ReplyLink::Answers {
                    trigger_id: &trigger.id,
                },
            },
            storage::Along {
                sender_name: None,
                usage: Some(usage),
            },
        )
        .await?;
        Ok((order, inserted))
    })
    .await;
    let stored = {
        engine
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chat.id);
        match inserted {
            Ok((_order, storage::Inserted::New(row) | storage::Inserted::Duplicate(row))) => {
                engine
                    .rooms
                    .broadcast(&chat.id, Outgoing::message(&row), None);
                engine
                    .rooms
                    .broadcast(&chat.id, Outgoing::summary(&row), None);
                engine.session_changed(
                    &chat,
                    ChangeKind::Message,
                    ChatChanges::default(),
                    Some(Role::Assistant),
                );
                Ok(row)
            }
            Err(err) => Err(err),
        }
    };
    engine.rooms.broadcast(&chat.id, typing(&chat, false), None);
    match stored {
        Ok(_) => {}
        Err(err) => {
            // Nothing was stored: say so instead of leaving the requester waiting.
            engine.rooms.send_to_user(
                &requester,
                Outgoing::error(ChatError::Internal(format!("reply: {err}")), None),
            );
            return Err(err);
        }
    };
    if let Some(err) = &outcome.error {
        tracing::warn!(error = %err, kind = err.kind(), "reply failed");
        engine
            .rooms
            .send_to_user(&requester, Outgoing::error(err.to_error(), None));
    }
    tracing::info!(
        chat = %chat.id,
        user = %requester,
        status = status.as_str(),
        model = %outcome.model_id,
        ttft_ms = outcome.ttft.map(|d| d.as_millis() as u64),
        latency_ms = latency.as_millis() as u64,
        prompt_tokens,
        completion_tokens,
        "reply stored"
    );
    Ok(())
}

/// Runs `op` again while the database does not answer ([`StorageError::is_unavailable`]),
/// waiting 100 ms, then twice as long each time up to 2 s, so a reply that finished during an
/// outage is stored once the database is back rather than lost. Gives up when shutdown
/// abandons the replies still running ([`Engine::stop_replies`]): the reply's row in
/// `pending_replies` then has the next start store it as failed. Other errors return at once.
///
/// [`StorageError::is_unavailable`]: storage::StorageError::is_unavailable
async fn while_unavailable<T, F, Fut>(
    engine: &Engine,
    what: &str,
    mut op: F,
) -> Result<T, storage::StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, storage::StorageError>>,
{
    let mut wait = RETRY_FIRST;
    loop {
        match op().await {
            Err(err) if err.is_unavailable() && !engine.abandon.is_cancelled() => {
                tracing::warn!(error = %err, what, retry_ms = wait.as_millis() as u64, "database unavailable; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = engine.abandon.cancelled() => {}
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
            result => return result,
        }
    }
}

/// The first and the longest wait of [`while_unavailable`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Streams the reply into the room until it ends, fails, or is stopped.
async fn generate(
    engine: &Engine,
    chat: &ChatRow,
    trigger_id: &str,
    prompt: Prompt,
    reply: &ActiveReply,
    prior: &[String],
) -> Outcome {
    let model_id = if engine.llm.model(&chat.model).is_some() {
        chat.model.clone()
    } else {
        engine.llm.settings().default_model.clone()
    };
    let started = Instant::now();
    let mut out = Outcome {
        text: prior.concat(),
        status: MessageStatus::Complete,
        truncated: false,
        model_id,
        usage: None,
        ttft: None,
        error: None,
        lost: false,
    };
    // The model was given the text so far without its trailing whitespace, so it may start
    // with that whitespace again: dropped once.
    let mut trim_start = out.text.ends_with(char::is_whitespace);
    let opened = tokio::select! {
        opened = engine.llm.open(&out.model_id, prompt) => opened,
        () = reply.cancel.cancelled() => {
            out.status = MessageStatus::Stopped;
            return out;
        }
    };
    let mut stream = match opened {
        Ok(opened) => {
            out.model_id = opened.model_id;
            opened.stream
        }
        Err(err) => {
            out.status = MessageStatus::Failed;
            out.error = Some(Failure::Model(err));
            return out;
        }
    };
    let mut index = prior.len() as i64;
    let mut checkpoint = Checkpoint::default();
    let lost = checkpoint.lost.clone();
    loop {
        tokio::select! {
            biased;
            () = reply.cancel.cancelled() => {
                out.status = MessageStatus::Stopped;
                break;
            }
            () = lost.cancelled() => {
                out.lost = true;
                break;
            }
            next = stream.next() => match next {
                Some(Ok(Delta::Text(mut delta))) => {
                    if trim_start {
                        delta = delta.trim_start().to_string();
                    }
                    if delta.is_empty() {
                        continue;
                    }
                    trim_start = false;
                    out.ttft.get_or_insert_with(|| started.elapsed());
                    out.text.push_str(&delta);
                    let chunk = Outgoing::now(Event::MessageChunk(Chunk {
                        chat_id: chat.id.clone(),
                        message_id: reply.message_id.clone(),
                        index,
                        delta: delta.clone(),
                    }));
                    // Pushed and delivered under one lock, which `resume` also takes, so a
                    // resuming connection gets each chunk exactly once.
                    let mut chunks = reply.chunks.lock().unwrap_or_else(|p| p.into_inner());
                    if reply.cancel.is_cancelled() {
                        // Stopped (or taken over) while this delta was on its way.
                        out.status = MessageStatus::Stopped;
                        break;
                    }
                    chunks.push(delta);
                    engine.rooms.broadcast(&chat.id, chunk, None);
                    drop(chunks);
                    index += 1;
                    checkpoint.maybe(engine, trigger_id, &reply.message_id, &out, index);
                }
                Some(Ok(Delta::Usage { prompt_tokens, completion_tokens })) => {
                    out.usage = Some((prompt_tokens, completion_tokens));
                }
                Some(Ok(Delta::Truncated)) => out.truncated = true,
                Some(Ok(Delta::Conversation(id))) => {
                    // Kept for the chat's next request to the provider that answered.
                    if let Some(model) = engine.llm.model(&out.model_id) {
                        let stored = storage::set_conversation(
                            &engine.db, &chat.id, &model.provider, &id, engine.now(),
                        )
                        .await;
                        if let Err(err) = stored {
                            tracing::warn!(error = %err, "conversation id not stored");
                        }
                    }
                }
                Some(Err(err)) => {
                    out.status = MessageStatus::Failed;
                    out.error = Some(Failure::Model(err));
                    break;
                }
                None => break,
            }
        }
    }
    // Dropping the stream here drops the upstream request at once (stop, failure or end).
    drop(stream);
    out
}

/// How often a streaming reply's text so far is written to its `pending_replies` row, so a
/// crash loses at most this much of it.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The periodic checkpoint of one streaming reply: at most one write in flight, none more
/// often than [`CHECKPOINT_EVERY`]; it never delays a chunk.
/// A checkpoint finding the row claimed by another core cancels `lost`.
#[derive(Default)]
struct Checkpoint {
    last: Option<Instant>,
    writing: Option<tokio::task::JoinHandle<()>>,
    lost: CancellationToken,
}

impl Checkpoint {
    fn maybe(
        &mut self,
        engine: &Engine,
        trigger_id: &str,
        reply_id: &str,
        out: &Outcome,
        chunks: i64,
    ) {
        let due = self.last.is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY);
        let idle = self.writing.as_ref().is_none_or(|w| w.is_finished());
        if !(due && idle) {
            return;
        }
        self.last = Some(Instant::now());
        let db = engine.db.clone();
        let (trigger, reply, model, text) = (
            trigger_id.to_string(),
            reply_id.to_string(),
            out.model_id.clone(),
            out.text.clone(),
        );
        let now = engine.now();
        let lost = self.lost.clone();
        self.writing = Some(tokio::spawn(async move {
            match storage::checkpoint_reply(&db, &trigger, &reply, &model, &text, chunks, now).await
            {
                Ok(storage::Checkpointed::Claimed) => lost.cancel(),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "reply checkpoint not stored"),
            }
        }));
    }
}

fn typing(chat: &ChatRow, is_typing: bool) -> Outgoing {
    Outgoing::now(Event::Typing(Typing {
        chat_id: chat.id.clone(),
        user_id: ASSISTANT.into(),
        agent_id: Some(chat.agent_id.clone()),
        is_typing,
    }))
}
