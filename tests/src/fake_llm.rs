//! A fake LLM provider for end-to-end tests: a real HTTP server on `127.0.0.1:0` that speaks
//! the real wire formats, so the core's providers run unchanged against it.
//!
//! - `POST /v1/chat/completions`: OpenAI Chat Completions streaming (`data: {chunk}` events
//!   with `choices[0].delta.content`, a final usage chunk with empty `choices`, `data: [DONE]`).
//! - `POST /v1/messages`: Anthropic Messages streaming (`message_start`, `content_block_start`,
//!   `ping`, `content_block_delta`/`text_delta`, `content_block_stop`, `message_delta` with
//!   usage, `message_stop`).
//!
//! A [`FakeScript`] decides what every reply contains and how it misbehaves: failing statuses
//! for the first requests, pacing, and hanging mid-reply. The server records every request body
//! and notices when a client drops a reply before its end (the "stop" tests).
//!
//! The server task lives as long as the [`FakeLlm`] handle; dropping the handle stops accepting
//! connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::stream::{self, Stream, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the fake answers. Changeable between turns with [`FakeLlm::set_script`].
#[derive(Clone, Debug)]
pub struct FakeScript {
    /// The reply, piece by piece; each piece is one streamed delta.
    pub chunks: Vec<String>,
    /// Pause before each piece after the first.
    pub delay: Duration,
    /// Reported usage: (prompt tokens, completion tokens).
    pub usage: (u32, u32),
    /// Status codes returned to the first requests, one per request, in order (e.g.
    /// `[503, 429]`). A 429 carries `Retry-After: 0`.
    pub fail_first: Vec<u16>,
    /// Stop after this many pieces but keep the connection open (comments only), for the stop
    /// and idle-timeout tests.
    pub hang_after: Option<usize>,
}

impl Default for FakeScript {
    fn default() -> Self {
        FakeScript::reply(&["Hello", " from", " the", " fake", " model."])
    }
}

impl FakeScript {
    /// A well-behaved reply made of `chunks`, usage (12, number of chunks).
    pub fn reply(chunks: &[&str]) -> Self {
        FakeScript {
            chunks: chunks.iter().map(|chunk| (*chunk).to_owned()).collect(),
            delay: Duration::ZERO,
            usage: (12, u32::try_from(chunks.len()).unwrap_or(u32::MAX)),
            fail_first: Vec::new(),
            hang_after: None,
        }
    }

    /// The whole reply text.
    pub fn text(&self) -> String {
        self.chunks.concat()
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_usage(mut self, prompt: u32, completion: u32) -> Self {
        self.usage = (prompt, completion);
        self
    }

    pub fn failing_first(mut self, statuses: &[u16]) -> Self {
        self.fail_first = statuses.to_vec();
        self
    }

    pub fn hanging_after(mut self, chunks: usize) -> Self {
        self.hang_after = Some(chunks);
        self
    }
}

/// Handle to a running fake. Dropping it stops the server.
pub struct FakeLlm {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// State shared by the handle and the request handlers.
struct Shared {
    script: Mutex<FakeScript>,
    requests: Mutex<Vec<Value>>,
    disconnected: AtomicBool,
    disconnect: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the data from the others.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a fake on `127.0.0.1:0`.
///
/// # Panics
/// When no loopback port can be bound.
pub async fn spawn(script: FakeScript) -> FakeLlm {
    let shared = Arc::new(Shared {
        script: Mutex::new(script),
        requests: Mutex::new(Vec::new()),
        disconnected: AtomicBool::new(false),
        disconnect: Notify::new(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("the fake LLM cannot bind a loopback port: {err}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|err| panic!("the fake LLM has no local address: {err}"));
    let server = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("the fake LLM stopped: {err}");
        }
    });
    FakeLlm {
        addr,
        shared,
        server,
    }
}

impl FakeLlm {
    /// Base URL for an `openai` provider: `http://addr/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an `anthropic` provider: `http://addr`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request bodies received, in order (failed ones included).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Whether a client dropped a reply before its end.
    pub fn client_disconnected(&self) -> bool {
        self.shared.disconnected.load(Ordering::SeqCst)
    }

    /// Waits until a client drops a reply before its end; false if that does not happen
    /// within `within`.
    pub async fn wait_for_disconnect(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                // Register before checking, so a disconnect in between is not missed.
                let notified = self.shared.disconnect.notified();
                if self.client_disconnected() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Replaces the script for the following requests. `fail_first` counts from the first
    /// request ever received, not from this call.
    pub fn set_script(&self, script: FakeScript) {
        *lock(&self.shared.script) = script;
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Which wire format a reply uses.
#[derive(Clone, Copy)]
enum Api {
    OpenAi,
    Anthropic,
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    answer(&shared, Api::OpenAi, &body)
}

async fn messages(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    answer(&shared, Api::Anthropic, &body)
}

fn answer(shared: &Arc<Shared>, api: Api, body: &[u8]) -> Response {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let index = {
        let mut requests = lock(&shared.requests);
        requests.push(request);
        requests.len() - 1
    };
    let script = lock(&shared.script).clone();

    if let Some(&status) = script.fail_first.get(index) {
        return failure(api, status);
    }

    let events = match api {
        Api::OpenAi => openai_events(&script, &model),
        Api::Anthropic => anthropic_events(&script, &model),
    };
    let guard = DisconnectGuard {
        shared: Arc::clone(shared),
        finished: AtomicBool::new(false),
    };
    let stream = paced(events, &script, guard);
    // Keep-alive comments while hanging make a vanished client show up as a failed write.
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(50)))
        .into_response()
}

/// A scripted failure with the provider's own error body.
fn failure(api: Api, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("scripted failure ({})", status.as_u16());
    let body = match api {
        Api::OpenAi => json!({"error": {"message": message, "type": "server_error", "code": null}}),
        Api::Anthropic => {
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                "rate_limit_error"
            } else {
                "api_error"
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("0"));
    }
    response
}

/// One reply as SSE events: `before` (preamble), one event per chunk, `after` (usage, end).
struct ReplyEvents {
    before: Vec<Event>,
    chunks: Vec<Event>,
    after: Vec<Event>,
}

fn openai_events(script: &FakeScript, model: &str) -> ReplyEvents {
    let chunk = |choices: Value, usage: Value| {
        let data = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": null,
            "choices": choices,
            "usage": usage,
        });
        Event::default().data(data.to_string())
    };
    let (prompt, completion) = script.usage;
    ReplyEvents {
        before: vec![chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            Value::Null,
        )],
        chunks: script
            .chunks
            .iter()
            .map(|text| {
                chunk(
                    json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]),
                    Value::Null,
                )
            })
            .collect(),
        after: vec![
            chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]), Value::Null),
            chunk(
                json!([]),
                json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}),
            ),
            Event::default().data("[DONE]"),
        ],
    }
}

fn anthropic_events(script: &FakeScript, model: &str) -> ReplyEvents {
    let event = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let (prompt, completion) = script.usage;
    ReplyEvents {
        before: vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": prompt, "output_tokens": 1},
                }}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ],
        chunks: script
            .chunks
            .iter()
            .map(|text| {
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                )
            })
            .collect(),
        after: vec![
            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": completion}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ],
    }
}

/// Notes a client that went away: dropped with the body stream before the reply finished.
struct DisconnectGuard {
    shared: Arc<Shared>,
    finished: AtomicBool,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            self.shared.disconnected.store(true, Ordering::SeqCst);
            self.shared.disconnect.notify_waiters();
        }
    }
}

/// The reply's events with the script's pacing; hangs (without ending) after `hang_after`
/// chunks. The guard lives inside the stream, so hyper dropping the body drops it.
fn paced(
    events: ReplyEvents,
    script: &FakeScript,
    guard: DisconnectGuard,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static {
    let delay = script.delay;
    let hang_after = script.hang_after;
    let before = stream::iter(events.before);
    let chunks = stream::iter(events.chunks.into_iter().enumerate()).then(
        move |(index, event)| async move {
            if index > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            event
        },
    );
    let chunks = chunks.take(hang_after.unwrap_or(usize::MAX));
    let after = match hang_after {
        Some(_) => stream::pending().left_stream(),
        None => stream::iter(events.after).right_stream(),
    };
    let guard = Arc::new(guard);
    let finish = {
        let guard = Arc::clone(&guard);
        stream::once(async move {
            guard.finished.store(true, Ordering::SeqCst);
        })
        .filter_map(|()| async { None })
    };
    before
        .chain(chunks)
        .chain(after)
        .chain(finish)
        // The guard travels with the stream and drops with it.
        .map(move |event| {
            let _keep = &guard;
            Ok(event)
        })
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::field_reassign_with_default)]
mod tests {
    //! The fake checked against the core's real providers: if these pass, the end-to-end tests
    //! exercise the same parsing as production.

    use super::*;
    use chat_core::llm::{
        Delta, Llm, LlmSettings, ModelSettings, Prompt, ProviderKind, ProviderSettings, Turn,
        TurnRole,
    };

    fn llm(kind: ProviderKind, base_url: String) -> Llm {
        let mut settings = LlmSettings::default();
        settings.retry.base_delay_ms = 5;
        settings.retry.max_delay_ms = 20;
        settings.providers.insert(
            "fake".to_owned(),
            ProviderSettings {
                kind,
                base_url: Some(base_url),
                api_key: Some("test-key".to_owned().into()),
                api_key_env: None,
                word_delay_ms: None,
            },
        );
        settings
            .models
            .push(ModelSettings::new("fake", "fake", "fake-upstream"));
        Llm::new(&settings).expect("valid settings")
    }

    fn prompt() -> Prompt {
        Prompt {
            system: "Be brief.".to_owned(),
            turns: vec![Turn {
                role: TurnRole::User,
                content: "Hi".to_owned(),
            }],
        }
    }

    async fn text_and_usage(llm: &Llm) -> (String, Option<Delta>, u32) {
        let reply = llm.open("fake", prompt()).await.expect("opened");
        let items: Vec<Delta> = reply
            .stream
            .map(|item| item.expect("no stream error"))
            .collect()
            .await;
        let text = items
            .iter()
            .filter_map(|delta| match delta {
                Delta::Text(text) => Some(text.as_str()),
                Delta::Usage { .. } => None,
            })
            .collect();
        let usage = items
            .into_iter()
            .find(|delta| matches!(delta, Delta::Usage { .. }));
        (text, usage, reply.attempts)
    }

    #[tokio::test]
    async fn the_openai_stream_is_what_the_core_parses() {
        let fake = spawn(FakeScript::reply(&["Hel", "lo!"]).with_usage(7, 2)).await;
        let llm = llm(ProviderKind::Openai, fake.openai_base_url());

        let (text, usage, attempts) = text_and_usage(&llm).await;

        assert_eq!(text, "Hello!");
        assert_eq!(
            usage,
            Some(Delta::Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            })
        );
        assert_eq!(attempts, 1);
        assert_eq!(fake.requests()[0]["model"], "fake-upstream");
        assert!(!fake.client_disconnected());
    }

    #[tokio::test]
    async fn the_anthropic_stream_is_what_the_core_parses() {
        let fake = spawn(FakeScript::reply(&["Bon", "jour"]).with_usage(9, 3)).await;
        let llm = llm(ProviderKind::Anthropic, fake.anthropic_base_url());

        let (text, usage, _) = text_and_usage(&llm).await;

        assert_eq!(text, "Bonjour");
        assert_eq!(
            usage,
            Some(Delta::Usage {
                prompt_tokens: 9,
                completion_tokens: 3
            })
        );
        assert_eq!(fake.requests()[0]["messages"][0]["content"], "Hi");
    }

    #[tokio::test]
    async fn scripted_failures_come_first_and_are_retried() {
        let fake = spawn(FakeScript::reply(&["ok"]).failing_first(&[503, 429])).await;
        let llm = llm(ProviderKind::Openai, fake.openai_base_url());

        let (text, _, attempts) = text_and_usage(&llm).await;

        assert_eq!((text.as_str(), attempts), ("ok", 3));
        assert_eq!(fake.request_count(), 3);
    }

    #[tokio::test]
    async fn a_hanging_reply_notices_the_client_leaving() {
        for (kind, fake) in [
            (
                ProviderKind::Openai,
                spawn(FakeScript::reply(&["one", "two"]).hanging_after(1)).await,
            ),
            (
                ProviderKind::Anthropic,
                spawn(FakeScript::reply(&["one", "two"]).hanging_after(1)).await,
            ),
        ] {
            let base_url = match kind {
                ProviderKind::Anthropic => fake.anthropic_base_url(),
                _ => fake.openai_base_url(),
            };
            let llm = llm(kind, base_url);
            let mut reply = llm.open("fake", prompt()).await.expect("opened");
            assert_eq!(
                reply.stream.next().await,
                Some(Ok(Delta::Text("one".to_owned())))
            );
            assert!(!fake.wait_for_disconnect(Duration::from_millis(100)).await);

            drop(reply);

            assert!(fake.wait_for_disconnect(Duration::from_secs(2)).await);
        }
    }

    #[tokio::test]
    async fn the_script_can_change_between_turns() {
        let fake = spawn(FakeScript::default()).await;
        let llm = llm(ProviderKind::Openai, fake.openai_base_url());
        assert_eq!(text_and_usage(&llm).await.0, FakeScript::default().text());

        fake.set_script(FakeScript::reply(&["second"]));

        assert_eq!(text_and_usage(&llm).await.0, "second");
    }
}
