//! The LLM layer: one [`Provider`] trait over the upstream APIs (OpenAI-compatible Chat
//! Completions, Anthropic Messages, and the offline demo) and [`Llm`], the catalogue the chat
//! engine talks to.
//!
//! [`Llm::open`] owns the failure policy of SPEC §5: retries with exponential backoff and jitter
//! (honouring Retry-After) only before the first token, then the model's fallback chain, then an
//! error. The stream it returns belongs to the caller; dropping it drops the upstream HTTP
//! request at once, which is how "stop" works. Every stream is bounded in time: the first token
//! by `first_token_timeout_ms`, each following delta by `idle_timeout_ms`, so a reply never
//! hangs.

pub mod anthropic;
pub mod demo;
pub mod openai;
pub mod settings;
mod sse;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt as _};
use secrecy::SecretString;

pub use settings::{
    AgentSettings, LlmSettings, ModelSettings, ProviderKind, ProviderSettings, RetrySettings,
};

/// Who spoke a turn of the conversation sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnRole {
    User,
    Assistant,
}

/// One turn of the conversation sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: TurnRole,
    pub content: String,
}

/// Everything a provider needs to answer: the assembled system prompt and the history, which
/// ends with the new user message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    pub system: String,
    pub turns: Vec<Turn>,
}

/// One item of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// The next piece of the reply text (never empty).
    Text(String),
    /// Token usage as the provider reported it (once, near the end, when it does).
    Usage {
        prompt_tokens: u32,
        completion_tokens: u32,
    },
}

/// A streamed reply. Ends after the last delta or after the first error.
pub type DeltaStream = BoxStream<'static, Result<Delta, LlmError>>;

/// One request to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    pub upstream_model: String,
    pub prompt: Prompt,
    pub max_output_tokens: u32,
}

/// One upstream API.
///
/// `open` sends the request and returns once the response headers arrived and the status was
/// checked (a non-2xx status is [`LlmError::Status`]); the stream then yields deltas. Dropping
/// the stream drops the upstream HTTP request at once.
pub trait Provider: Send + Sync + 'static {
    fn open(&self, req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>>;
}

/// Why a reply could not be produced or was cut short.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// The request could not be sent or the connection broke (retryable before the first token).
    #[error("could not reach the model provider: {0}")]
    Connect(String),
    /// The provider answered with a non-2xx status.
    #[error("model provider answered {status}: {message}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The provider's stream could not be understood.
    #[error("unexpected data from the model provider: {0}")]
    Protocol(String),
    /// The provider reported an error inside the stream.
    #[error("the model provider reported an error: {0}")]
    Upstream(String),
    /// No text arrived within `first_token_timeout_ms` of sending the request.
    #[error("the model did not start answering in time")]
    FirstTokenTimeout,
    /// The stream went silent for `idle_timeout_ms`.
    #[error("the model stopped answering mid-reply")]
    IdleTimeout,
    /// The model id is not in the catalogue.
    #[error("unknown model \"{0}\"")]
    UnknownModel(String),
}

impl LlmError {
    /// Whether another attempt may succeed: connect errors, 429, 5xx except 501, and a
    /// first-token timeout.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Connect(_) | LlmError::FirstTokenTimeout => true,
            LlmError::Status { status, .. } => {
                *status == 429 || (*status >= 500 && *status != 501 && *status < 600)
            }
            LlmError::Protocol(_)
            | LlmError::Upstream(_)
            | LlmError::IdleTimeout
            | LlmError::UnknownModel(_) => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Connect(_) => "connect",
            LlmError::Status { status: 429, .. } => "rate_limited",
            LlmError::Status { status, .. } if *status >= 500 => "server_error",
            LlmError::Status { .. } => "client_error",
            LlmError::Protocol(_) => "protocol",
            LlmError::Upstream(_) => "upstream",
            LlmError::FirstTokenTimeout => "first_token_timeout",
            LlmError::IdleTimeout => "idle_timeout",
            LlmError::UnknownModel(_) => "unknown_model",
        }
    }
}

/// A reply that has started: its first text delta (if any) is at the head of `stream`.
pub struct OpenedReply {
    pub stream: DeltaStream,
    /// The model actually used, after fallback.
    pub model_id: String,
    /// Upstream attempts made in total, over the whole fallback chain.
    pub attempts: u32,
}

impl std::fmt::Debug for OpenedReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedReply")
            .field("model_id", &self.model_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A catalogue entry: the model and the provider serving it.
struct Entry {
    provider: Arc<dyn Provider>,
    model: ModelSettings,
}

/// The model catalogue with its providers, shared by all chats.
pub struct Llm {
    settings: LlmSettings,
    catalogue: HashMap<String, Entry>,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Llm {
    /// Builds the providers over one shared HTTP client (connect timeout, no overall timeout:
    /// streams are long; the first-token and idle timeouts bound them instead).
    ///
    /// # Errors
    /// The settings are invalid ([`LlmSettings::validate`]), a provider's `api_key_env` names an
    /// unset variable, or the HTTP client cannot be built.
    pub fn new(settings: &LlmSettings) -> Result<Llm, String> {
        Self::with_providers(settings, BTreeMap::new())
    }

    /// Like [`Llm::new`], but the providers named in `overrides` are used instead of the ones
    /// the settings describe (tests of the chat engine script their own provider this way).
    ///
    /// # Errors
    /// As [`Llm::new`].
    pub fn with_providers(
        settings: &LlmSettings,
        mut overrides: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Result<Llm, String> {
        settings.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .tcp_nodelay(true)
            .user_agent(concat!("chat-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot build the HTTP client for LLM providers: {err}"))?;

        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        for model in &settings.models {
            if providers.contains_key(&model.provider) {
                continue;
            }
            let provider = match overrides.remove(&model.provider) {
                Some(provider) => provider,
                None => {
                    // validate() checked that every model's provider resolves.
                    let Some(provider_settings) = settings.provider(&model.provider) else {
                        return Err(format!("model \"{}\": unknown provider", model.id));
                    };
                    build_provider(&model.provider, &provider_settings, &client)?
                }
            };
            providers.insert(model.provider.clone(), provider);
        }

        let mut catalogue = HashMap::new();
        for model in &settings.models {
            let Some(provider) = providers.get(&model.provider) else {
                return Err(format!("model \"{}\": unknown provider", model.id));
            };
            catalogue.insert(
                model.id.clone(),
                Entry {
                    provider: Arc::clone(provider),
                    model: model.clone(),
                },
            );
        }
        Ok(Llm {
            settings: settings.clone(),
            catalogue,
        })
    }

    pub fn model(&self, id: &str) -> Option<&ModelSettings> {
        self.catalogue.get(id).map(|entry| &entry.model)
    }

    /// The catalogue, in configuration order.
    pub fn models(&self) -> &[ModelSettings] {
        &self.settings.models
    }

    pub fn agent(&self, id: &str) -> Option<&AgentSettings> {
        self.settings.agents.iter().find(|agent| agent.id == id)
    }

    pub fn agents(&self) -> &[AgentSettings] {
        &self.settings.agents
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// Opens a reply on `model_id`.
    ///
    /// Each model gets up to `retry.max_attempts` attempts; an attempt succeeds once the first
    /// text delta arrived (within `first_token_timeout_ms` of sending), which is re-emitted at
    /// the head of the returned stream, so failures before the first token are retried
    /// (retryable ones only, with backoff, honouring Retry-After capped at `max_delay_ms`) and
    /// failures after it are not: they end the stream with an `Err`. When a model fails, its
    /// fallback chain is walked. The returned stream yields `Err(IdleTimeout)` and ends when no
    /// delta arrives for `idle_timeout_ms`. A reply that ends without any text is returned as
    /// is (it may still carry usage).
    ///
    /// # Errors
    /// [`LlmError::UnknownModel`] when `model_id` is not in the catalogue; otherwise the last
    /// error of the last model tried.
    pub async fn open(&self, model_id: &str, prompt: Prompt) -> Result<OpenedReply, LlmError> {
        let mut attempts = 0_u32;
        let mut tried = HashSet::new();
        let mut current = model_id.to_owned();
        loop {
            let entry = self
                .catalogue
                .get(&current)
                .ok_or_else(|| LlmError::UnknownModel(current.clone()))?;
            tried.insert(current.clone());
            match self.open_with_retries(entry, &prompt, &mut attempts).await {
                Ok(stream) => {
                    let idle = Duration::from_millis(self.settings.idle_timeout_ms);
                    return Ok(OpenedReply {
                        stream: with_idle_timeout(stream, idle),
                        model_id: current,
                        attempts,
                    });
                }
                Err(err) => match &entry.model.fallback {
                    // validate() rules out cycles; `tried` guards anyway.
                    Some(next) if !tried.contains(next) && self.catalogue.contains_key(next) => {
                        tracing::warn!(
                            model = %current,
                            fallback = %next,
                            error_kind = err.kind(),
                            "model failed, trying its fallback"
                        );
                        current = next.clone();
                    }
                    _ => return Err(err),
                },
            }
        }
    }

    /// The attempts on one model, with backoff between them.
    async fn open_with_retries(
        &self,
        entry: &Entry,
        prompt: &Prompt,
        attempts: &mut u32,
    ) -> Result<DeltaStream, LlmError> {
        let retry = &self.settings.retry;
        let max_delay = Duration::from_millis(retry.max_delay_ms);
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(retry.base_delay_ms))
            .with_max_delay(max_delay)
            .with_max_times(retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let model_id = entry.model.id.as_str();
        let attempt = || {
            *attempts += 1;
            self.attempt(entry, prompt, *attempts)
        };
        attempt
            .retry(backoff)
            .when(LlmError::is_retryable)
            .adjust(|err, delay| {
                // `delay` is None once the attempts are used up; keep it that way. Otherwise a
                // Retry-After wins over the backoff; jitter may push either past the cap.
                let delay = delay?;
                let wanted = match err {
                    LlmError::Status {
                        retry_after: Some(after),
                        ..
                    } => *after,
                    _ => delay,
                };
                Some(wanted.min(max_delay))
            })
            .notify(|err, delay| {
                tracing::warn!(
                    model = model_id,
                    error_kind = err.kind(),
                    status = status_of(err),
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "model attempt failed, retrying"
                );
            })
            .await
    }

    /// One attempt: send, then wait for the first text delta, all within the first-token
    /// timeout. Dropping the future on timeout drops the upstream request.
    async fn attempt(
        &self,
        entry: &Entry,
        prompt: &Prompt,
        number: u32,
    ) -> Result<DeltaStream, LlmError> {
        let request = ProviderRequest {
            upstream_model: entry.model.upstream.clone(),
            prompt: prompt.clone(),
            max_output_tokens: entry.model.max_output_tokens,
        };
        let first_token = Duration::from_millis(self.settings.first_token_timeout_ms);
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(first_token, async {
            let mut stream = entry.provider.open(request).await?;
            // Deltas seen before the first text (usage, say) are replayed in order.
            let mut head = Vec::new();
            loop {
                match stream.next().await {
                    Some(Ok(Delta::Text(text))) => {
                        head.push(Ok(Delta::Text(text)));
                        return Ok(stream::iter(head).chain(stream).boxed());
                    }
                    Some(Ok(other)) => head.push(Ok(other)),
                    Some(Err(err)) => return Err(err),
                    None => return Ok(stream::iter(head).boxed()),
                }
            }
        })
        .await
        .unwrap_or(Err(LlmError::FirstTokenTimeout));
        match &result {
            Ok(_) => tracing::debug!(
                model = %entry.model.id,
                attempt = number,
                first_token_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "model started answering"
            ),
            Err(err) => tracing::debug!(
                model = %entry.model.id,
                attempt = number,
                error_kind = err.kind(),
                status = status_of(err),
                "model attempt failed"
            ),
        }
        result
    }
}

fn status_of(err: &LlmError) -> Option<u16> {
    match err {
        LlmError::Status { status, .. } => Some(*status),
        _ => None,
    }
}

fn build_provider(
    name: &str,
    settings: &ProviderSettings,
    client: &reqwest::Client,
) -> Result<Arc<dyn Provider>, String> {
    let key = resolve_key(name, settings)?;
    Ok(match settings.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAiProvider::new(
            client.clone(),
            settings
                .base_url
                .as_deref()
                .unwrap_or(settings::OPENAI_DEFAULT_BASE_URL),
            key,
        )),
        ProviderKind::Anthropic => {
            let Some(key) = key else {
                return Err(format!("provider \"{name}\" (anthropic) has no API key"));
            };
            Arc::new(anthropic::AnthropicProvider::new(
                client.clone(),
                settings
                    .base_url
                    .as_deref()
                    .unwrap_or(settings::ANTHROPIC_DEFAULT_BASE_URL),
                key,
            ))
        }
        ProviderKind::Demo => Arc::new(demo::DemoProvider::new(Duration::from_millis(
            settings
                .word_delay_ms
                .unwrap_or(settings::DEMO_DEFAULT_WORD_DELAY_MS),
        ))),
    })
}

/// The key of a provider: inline, or read from the variable `api_key_env` names.
fn resolve_key(name: &str, settings: &ProviderSettings) -> Result<Option<SecretString>, String> {
    if let Some(key) = &settings.api_key {
        return Ok(Some(key.clone()));
    }
    let Some(var) = &settings.api_key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(SecretString::from(value))),
        _ => Err(format!(
            "provider \"{name}\": the environment variable {var} (api_key_env) is not set"
        )),
    }
}

/// Ends `inner` with `Err(IdleTimeout)` when no item arrives for `idle`, and after any error.
/// Dropping `inner` is what closes the upstream connection.
fn with_idle_timeout(inner: DeltaStream, idle: Duration) -> DeltaStream {
    stream::unfold(Some(inner), move |state| async move {
        let mut inner = state?;
        match tokio::time::timeout(idle, inner.next()).await {
            Ok(Some(Ok(delta))) => Some((Ok(delta), Some(inner))),
            Ok(Some(Err(err))) => Some((Err(err), None)),
            Ok(None) => None,
            Err(_elapsed) => Some((Err(LlmError::IdleTimeout), None)),
        }
    })
    .boxed()
}

/// A rough token count for budgets and for usage a provider did not report: about four
/// characters a token, rounded up (so at least 1 for non-empty text).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// A small in-process SSE server for the provider tests: real HTTP over loopback, scripted
/// replies, and a record of what it received and whether the client hung up.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) mod testing {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    use axum::response::{IntoResponse as _, Response};
    use futures::stream;

    /// How the server answers one request.
    #[derive(Clone)]
    pub(crate) enum Reply {
        Status {
            status: u16,
            retry_after: Option<String>,
            body: String,
        },
        Sse {
            frames: Arc<Vec<String>>,
            delay: Duration,
            hang_after: Option<usize>,
            abort_after: Option<usize>,
        },
    }

    /// `data: {json}` as one SSE frame.
    pub(crate) fn data(json: &str) -> String {
        format!("data: {json}\n\n")
    }

    /// `event: {name}` + `data: {json}` as one SSE frame.
    pub(crate) fn named(event: &str, json: &str) -> String {
        format!("event: {event}\ndata: {json}\n\n")
    }

    impl Reply {
        pub(crate) fn sse(frames: Vec<String>) -> Reply {
            Reply::Sse {
                frames: Arc::new(frames),
                delay: Duration::ZERO,
                hang_after: None,
                abort_after: None,
            }
        }

        /// An OpenAI stream: one chunk per text piece, a finish chunk, the usage chunk, [DONE].
        pub(crate) fn openai(chunks: &[&str], (prompt, completion): (u32, u32)) -> Reply {
            let mut frames: Vec<String> = chunks
                .iter()
                .map(|chunk| {
                    data(&serde_json::json!({"choices": [{"index": 0, "delta": {"content": chunk}, "finish_reason": null}]}).to_string())
                })
                .collect();
            frames.push(data(
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            ));
            frames.push(data(
                &serde_json::json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}).to_string(),
            ));
            frames.push(data("[DONE]"));
            Reply::sse(frames)
        }

        /// An Anthropic stream with the usual event sequence.
        pub(crate) fn anthropic(chunks: &[&str], (input, output): (u32, u32)) -> Reply {
            let mut frames = vec![
                named("message_start", &serde_json::json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}).to_string()),
                named("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
                named("ping", r#"{"type": "ping"}"#),
            ];
            frames.extend(chunks.iter().map(|chunk| {
                named("content_block_delta", &serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chunk}}).to_string())
            }));
            frames.push(named(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ));
            frames.push(named("message_delta", &serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}}).to_string()));
            frames.push(named("message_stop", r#"{"type":"message_stop"}"#));
            Reply::sse(frames)
        }

        pub(crate) fn status(status: u16, retry_after: Option<&str>, body: &str) -> Reply {
            Reply::Status {
                status,
                retry_after: retry_after.map(str::to_owned),
                body: body.to_owned(),
            }
        }

        /// After `n` frames, send nothing but SSE comments (so a vanished client is noticed on
        /// the next write) and never finish.
        pub(crate) fn hang_after(mut self, n: usize) -> Reply {
            if let Reply::Sse { hang_after, .. } = &mut self {
                *hang_after = Some(n);
            }
            self
        }

        /// After `n` frames, break the connection mid-body.
        pub(crate) fn abort_after(mut self, n: usize) -> Reply {
            if let Reply::Sse { abort_after, .. } = &mut self {
                *abort_after = Some(n);
            }
            self
        }
    }

    /// One request as the server saw it.
    #[derive(Clone, Debug)]
    pub(crate) struct Seen {
        pub(crate) path: String,
        pub(crate) authorization: Option<String>,
        pub(crate) headers: HeaderMap,
        pub(crate) body: serde_json::Value,
    }

    impl Seen {
        pub(crate) fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }
    }

    struct Shared {
        /// Replies still to give; the last one repeats.
        replies: Mutex<VecDeque<Reply>>,
        seen: Mutex<Vec<Seen>>,
        disconnected: AtomicBool,
        notify: tokio::sync::Notify,
    }

    pub(crate) struct TestServer {
        addr: SocketAddr,
        shared: Arc<Shared>,
    }

    impl TestServer {
        /// `http://127.0.0.1:port`, without a path.
        pub(crate) fn base_url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub(crate) fn requests(&self) -> Vec<Seen> {
            self.shared.seen.lock().expect("lock").clone()
        }

        pub(crate) fn request_count(&self) -> usize {
            self.shared.seen.lock().expect("lock").len()
        }

        /// Whether a response body was dropped before it finished, waiting up to `within`.
        pub(crate) async fn disconnected_within(&self, within: Duration) -> bool {
            let wait = async {
                loop {
                    let notified = self.shared.notify.notified();
                    if self.shared.disconnected.load(Ordering::SeqCst) {
                        return;
                    }
                    notified.await;
                }
            };
            tokio::time::timeout(within, wait).await.is_ok()
        }
    }

    /// Marks the client gone when the body is dropped before its end.
    struct BodyGuard {
        shared: Arc<Shared>,
        finished: std::cell::Cell<bool>,
    }

    impl Drop for BodyGuard {
        fn drop(&mut self) {
            if !self.finished.get() {
                self.shared.disconnected.store(true, Ordering::SeqCst);
                self.shared.notify.notify_waiters();
            }
        }
    }

    pub(crate) async fn spawn(replies: Vec<Reply>) -> TestServer {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
            disconnected: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer { addr, shared }
    }

    async fn handle(
        State(shared): State<Arc<Shared>>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let reply = {
            let mut replies = shared.replies.lock().expect("lock");
            if replies.len() > 1 {
                replies.pop_front()
            } else {
                replies.front().cloned()
            }
        };
        shared.seen.lock().expect("lock").push(Seen {
            path: uri.path().to_owned(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            headers,
        });
        match reply {
            None => StatusCode::NOT_FOUND.into_response(),
            Some(Reply::Status {
                status,
                retry_after,
                body,
            }) => {
                let mut response =
                    (StatusCode::from_u16(status).expect("status"), body).into_response();
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, after.parse().expect("header"));
                }
                response
            }
            Some(Reply::Sse {
                frames,
                delay,
                hang_after,
                abort_after,
            }) => {
                let guard = BodyGuard {
                    shared,
                    finished: std::cell::Cell::new(false),
                };
                let body = stream::unfold((0_usize, guard), move |(index, guard)| {
                    let frames = Arc::clone(&frames);
                    async move {
                        if abort_after == Some(index) {
                            guard.finished.set(true); // an abort is the server's doing, not the client's
                            // Let hyper flush what came before, so the client sees it first.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let err = std::io::Error::other("scripted abort");
                            return Some((Err(err), (index + 1, guard)));
                        }
                        if abort_after.is_some_and(|n| index > n) {
                            return None;
                        }
                        if hang_after.is_some_and(|n| index >= n) {
                            tokio::time::sleep(Duration::from_millis(25)).await;
                            return Some((
                                Ok(Bytes::from_static(b": keep-alive\n\n")),
                                (index, guard),
                            ));
                        }
                        let Some(frame) = frames.get(index) else {
                            guard.finished.set(true);
                            return None;
                        };
                        if index > 0 && !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Some((Ok(Bytes::from(frame.clone())), (index + 1, guard)))
                    }
                });
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(Body::from_stream(body))
                    .expect("response")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::field_reassign_with_default)]
mod tests {
    use super::testing::{self, Reply};
    use super::*;

    fn prompt() -> Prompt {
        Prompt {
            system: "Be brief.".to_owned(),
            turns: vec![Turn {
                role: TurnRole::User,
                content: "Hello?".to_owned(),
            }],
        }
    }

    /// Model `primary` on `primary`, optionally falling back to `backup` on `backup`; fast
    /// retries and timeouts.
    fn settings(
        primary: &testing::TestServer,
        backup: Option<&testing::TestServer>,
    ) -> LlmSettings {
        let mut settings = LlmSettings::default();
        settings.retry = RetrySettings {
            max_attempts: 3,
            base_delay_ms: 5,
            max_delay_ms: 50,
        };
        settings.first_token_timeout_ms = 1_000;
        settings.idle_timeout_ms = 1_000;
        let mut servers = vec![("primary", primary)];
        servers.extend(backup.map(|server| ("backup", server)));
        for (name, server) in servers {
            settings.providers.insert(
                name.to_owned(),
                ProviderSettings {
                    kind: ProviderKind::Openai,
                    base_url: Some(format!("{}/v1", server.base_url())),
                    api_key: None,
                    api_key_env: None,
                    word_delay_ms: None,
                },
            );
            let mut model = ModelSettings::new(name, name, &format!("{name}-upstream"));
            if name == "primary" && backup.is_some() {
                model.fallback = Some("backup".to_owned());
            }
            settings.models.push(model);
        }
        settings.default_model = "primary".to_owned();
        settings
    }

    async fn drain(stream: DeltaStream) -> (String, Vec<Result<Delta, LlmError>>) {
        let items: Vec<_> = stream.collect().await;
        let text = items
            .iter()
            .filter_map(|item| match item {
                Ok(Delta::Text(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        (text, items)
    }

    #[tokio::test]
    async fn a_503_then_200_is_retried_and_succeeds() {
        let server = testing::spawn(vec![
            Reply::status(503, None, "upstream busy"),
            Reply::openai(&["Hi", " there"], (4, 2)),
        ])
        .await;
        let llm = Llm::new(&settings(&server, None)).expect("valid");

        let reply = llm.open("primary", prompt()).await.expect("opened");

        assert_eq!((reply.model_id.as_str(), reply.attempts), ("primary", 2));
        let (text, items) = drain(reply.stream).await;
        assert_eq!(text, "Hi there");
        assert_eq!(
            items.last(),
            Some(&Ok(Delta::Usage {
                prompt_tokens: 4,
                completion_tokens: 2
            }))
        );
        assert_eq!(server.request_count(), 2);
        assert_eq!(server.requests()[1].body["model"], "primary-upstream");
    }

    #[tokio::test]
    async fn retries_stop_after_max_attempts_with_the_last_error() {
        let server = testing::spawn(vec![Reply::status(502, None, "bad gateway")]).await;
        let llm = Llm::new(&settings(&server, None)).expect("valid");

        let err = llm.open("primary", prompt()).await.expect_err("fails");

        assert!(
            matches!(err, LlmError::Status { status: 502, .. }),
            "{err:?}"
        );
        assert_eq!(server.request_count(), 3);
    }

    #[tokio::test]
    async fn retry_after_is_honoured_up_to_the_max_delay() {
        // Retry-After (30 s) beats the 5 ms backoff but is capped at max_delay (300 ms).
        let server = testing::spawn(vec![
            Reply::status(429, Some("30"), "slow down"),
            Reply::openai(&["ok"], (1, 1)),
        ])
        .await;
        let mut settings = settings(&server, None);
        settings.retry.max_delay_ms = 300;
        let llm = Llm::new(&settings).expect("valid");

        let started = std::time::Instant::now();
        let reply = llm.open("primary", prompt()).await.expect("opened");

        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "retried after {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(1_500),
            "retried after {waited:?}"
        );
        assert_eq!(reply.attempts, 2);
    }

    #[tokio::test]
    async fn retry_after_zero_skips_a_long_backoff() {
        let server = testing::spawn(vec![
            Reply::status(429, Some("0"), "slow down"),
            Reply::openai(&["ok"], (1, 1)),
        ])
        .await;
        let mut settings = settings(&server, None);
        settings.retry = RetrySettings {
            max_attempts: 3,
            base_delay_ms: 5_000,
            max_delay_ms: 8_000,
        };
        let llm = Llm::new(&settings).expect("valid");

        let started = std::time::Instant::now();
        let reply = llm.open("primary", prompt()).await.expect("opened");

        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(reply.attempts, 2);
    }

    #[tokio::test]
    async fn a_400_is_not_retried() {
        let server = testing::spawn(vec![
            Reply::status(400, None, r#"{"error":{"message":"bad request"}}"#),
            Reply::openai(&["never"], (1, 1)),
        ])
        .await;
        let llm = Llm::new(&settings(&server, None)).expect("valid");

        let err = llm.open("primary", prompt()).await.expect_err("fails");

        assert_eq!(
            err,
            LlmError::Status {
                status: 400,
                retry_after: None,
                message: "bad request".to_owned()
            }
        );
        assert_eq!(server.request_count(), 1);
    }

    #[tokio::test]
    async fn a_failure_after_the_first_token_is_not_retried_and_ends_the_stream() {
        let server = testing::spawn(vec![
            Reply::openai(&["Part", "ial", "never"], (1, 1)).abort_after(2),
        ])
        .await;
        let llm = Llm::new(&settings(&server, None)).expect("valid");

        let reply = llm.open("primary", prompt()).await.expect("opened");
        let (text, items) = drain(reply.stream).await;

        assert_eq!(text, "Partial");
        assert!(
            matches!(items.last(), Some(Err(LlmError::Connect(_)))),
            "{items:?}"
        );
        assert_eq!(reply.attempts, 1);
        assert_eq!(server.request_count(), 1);
    }

    #[tokio::test]
    async fn a_failure_before_the_first_token_is_retried() {
        let server = testing::spawn(vec![
            Reply::openai(&["never"], (1, 1)).abort_after(0),
            Reply::openai(&["ok"], (1, 1)),
        ])
        .await;
        let llm = Llm::new(&settings(&server, None)).expect("valid");

        let reply = llm.open("primary", prompt()).await.expect("opened");

        assert_eq!(drain(reply.stream).await.0, "ok");
        assert_eq!(server.request_count(), 2);
    }

    #[tokio::test]
    async fn the_fallback_model_answers_after_the_primary_exhausts_its_retries() {
        let primary = testing::spawn(vec![Reply::status(503, None, "down")]).await;
        let backup = testing::spawn(vec![Reply::openai(&["from ", "backup"], (2, 2))]).await;
        let llm = Llm::new(&settings(&primary, Some(&backup))).expect("valid");

        let reply = llm.open("primary", prompt()).await.expect("opened");

        assert_eq!((reply.model_id.as_str(), reply.attempts), ("backup", 4));
        assert_eq!(drain(reply.stream).await.0, "from backup");
        assert_eq!(primary.request_count(), 3);
        assert_eq!(backup.request_count(), 1);
        assert_eq!(backup.requests()[0].body["model"], "backup-upstream");
    }

    #[tokio::test]
    async fn the_first_token_timeout_fires_and_is_retried() {
        let server = testing::spawn(vec![Reply::openai(&["late"], (1, 1)).hang_after(0)]).await;
        let mut settings = settings(&server, None);
        settings.first_token_timeout_ms = 200;
        settings.retry.max_attempts = 2;
        let llm = Llm::new(&settings).expect("valid");

        let started = std::time::Instant::now();
        let err = llm.open("primary", prompt()).await.expect_err("times out");

        assert_eq!(err, LlmError::FirstTokenTimeout);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(started.elapsed() < Duration::from_millis(1_500));
        assert_eq!(server.request_count(), 2);
        assert!(server.disconnected_within(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn the_idle_timeout_ends_a_stalled_stream() {
        let server = testing::spawn(vec![
            Reply::openai(&["Hello", "never"], (1, 1)).hang_after(1),
        ])
        .await;
        let mut settings = settings(&server, None);
        settings.idle_timeout_ms = 200;
        let llm = Llm::new(&settings).expect("valid");

        let reply = llm.open("primary", prompt()).await.expect("opened");
        let started = std::time::Instant::now();
        let (text, items) = drain(reply.stream).await;

        assert_eq!(text, "Hello");
        assert_eq!(items.last(), Some(&Err(LlmError::IdleTimeout)));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_millis(1_500));
        assert_eq!(server.request_count(), 1);
        assert!(server.disconnected_within(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn dropping_the_stream_closes_the_upstream_connection() {
        let server = testing::spawn(vec![
            Reply::openai(&["Hello", " world"], (1, 1)).hang_after(1),
        ])
        .await;
        let llm = Llm::new(&settings(&server, None)).expect("valid");

        let mut reply = llm.open("primary", prompt()).await.expect("opened");
        assert_eq!(
            reply.stream.next().await,
            Some(Ok(Delta::Text("Hello".to_owned())))
        );
        assert!(!server.disconnected_within(Duration::from_millis(100)).await);
        drop(reply);

        assert!(server.disconnected_within(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn an_unknown_model_is_refused() {
        let llm = Llm::new(&LlmSettings::default()).expect("valid");
        let err = llm.open("gpt-17", prompt()).await.expect_err("unknown");
        assert_eq!(err, LlmError::UnknownModel("gpt-17".to_owned()));
    }

    #[tokio::test]
    async fn the_default_settings_answer_with_the_demo() {
        let mut settings = LlmSettings::default();
        if let Some(demo) = settings.providers.get_mut("demo") {
            demo.word_delay_ms = Some(0);
        }
        let llm = Llm::new(&settings).expect("valid");
        assert_eq!(llm.models().len(), 1);
        assert_eq!(
            llm.agent("therapist").map(|a| a.name.as_str()),
            Some("Therapist")
        );

        let reply = llm.open("demo", prompt()).await.expect("opened");

        let (text, items) = drain(reply.stream).await;
        assert!(
            text.starts_with("This is the built-in demo model"),
            "{text}"
        );
        assert!(text.contains("You said: \"Hello?\""), "{text}");
        assert!(matches!(items.last(), Some(Ok(Delta::Usage { .. }))));
    }

    /// A provider that replays a fixed list of deltas.
    struct Scripted(Vec<Result<Delta, LlmError>>);

    impl Provider for Scripted {
        fn open(&self, _req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>> {
            let items = self.0.clone();
            Box::pin(async move { Ok(stream::iter(items).boxed()) })
        }
    }

    #[tokio::test]
    async fn deltas_before_the_first_token_are_replayed_in_order() {
        let usage = Delta::Usage {
            prompt_tokens: 3,
            completion_tokens: 0,
        };
        let scripted: Arc<dyn Provider> = Arc::new(Scripted(vec![
            Ok(usage.clone()),
            Ok(Delta::Text("Hi".to_owned())),
        ]));
        let llm = Llm::with_providers(
            &LlmSettings::default(),
            BTreeMap::from([("demo".to_owned(), scripted)]),
        )
        .expect("valid");

        let reply = llm.open("demo", prompt()).await.expect("opened");

        let (_, items) = drain(reply.stream).await;
        assert_eq!(items, vec![Ok(usage), Ok(Delta::Text("Hi".to_owned()))]);
    }

    #[tokio::test]
    async fn a_reply_without_text_is_returned_as_is() {
        let usage = Delta::Usage {
            prompt_tokens: 3,
            completion_tokens: 0,
        };
        let scripted: Arc<dyn Provider> = Arc::new(Scripted(vec![Ok(usage.clone())]));
        let llm = Llm::with_providers(
            &LlmSettings::default(),
            BTreeMap::from([("demo".to_owned(), scripted)]),
        )
        .expect("valid");

        let reply = llm.open("demo", prompt()).await.expect("opened");

        assert_eq!(drain(reply.stream).await.1, vec![Ok(usage)]);
    }

    #[test]
    fn a_missing_key_variable_is_reported() {
        let mut settings = LlmSettings::default();
        settings.providers.insert(
            "claude".to_owned(),
            ProviderSettings {
                kind: ProviderKind::Anthropic,
                base_url: None,
                api_key: None,
                api_key_env: Some("CHAT_TEST_SURELY_UNSET_ANTHROPIC_KEY".to_owned()),
                word_delay_ms: None,
            },
        );
        settings
            .models
            .push(ModelSettings::new("claude", "claude", "claude-sonnet-4-5"));
        let err = Llm::new(&settings).expect_err("no key");
        assert!(
            err.contains("CHAT_TEST_SURELY_UNSET_ANTHROPIC_KEY"),
            "{err}"
        );
    }

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        let status = |status| LlmError::Status {
            status,
            retry_after: None,
            message: String::new(),
        };
        for err in [
            LlmError::Connect("x".into()),
            status(429),
            status(500),
            status(503),
            status(529),
            LlmError::FirstTokenTimeout,
        ] {
            assert!(err.is_retryable(), "{err:?}");
        }
        for err in [
            status(400),
            status(401),
            status(404),
            status(501),
            LlmError::Upstream("x".into()),
            LlmError::IdleTimeout,
            LlmError::Protocol("x".into()),
        ] {
            assert!(!err.is_retryable(), "{err:?}");
        }
        assert_eq!(status(429).kind(), "rate_limited");
        assert_eq!(status(503).kind(), "server_error");
    }

    #[test]
    fn tokens_are_estimated_at_four_characters_each() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("éééé"), 1);
    }
}
