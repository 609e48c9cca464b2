//! The one fake LLM of the workspace's tests: a real HTTP server on `127.0.0.1:0` that speaks
//! the providers' real streaming wire formats, so the core's providers run unchanged against
//! it (the core's unit tests and the end-to-end tests both use it).
//!
//! - `POST /v1/chat/completions`: OpenAI Chat Completions streaming.
//! - `POST /v1/messages`: Anthropic Messages streaming.
//! - `POST /v1/chat-messages`: Dify chat-messages streaming (the request's `conversation_id`
//!   is echoed, or a new `conv-<n>` given).
//! - `POST /v1/audio/transcriptions` and `POST /v1/audio/speech`: OpenAI's audio API (see
//!   `audio`).
//!
//! A [`FakeScript`] decides what every reply contains and how it misbehaves: [`Fault`]s for the
//! first requests (failing statuses with Retry-After, cut connections), pacing, hanging or
//! breaking mid-reply, or raw SSE frames for parser tests. The server records every request
//! and notices when a client drops a reply before its end (the "stop" tests).
//!
//! The server task lives as long as the [`FakeLlm`] handle; dropping the handle stops it.

mod audio;
mod script;
mod stream;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, post};
use serde_json::Value;
use tokio::sync::Notify;

pub use audio::wav_seconds;
pub use script::{FakeScript, Fault};
pub use wire::{sse_data, sse_event};

use wire::Api;

/// Handle to a running fake. Dropping it stops the server.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    headers: HeaderMap,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
}

impl Received {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }
}

/// State shared by the handle and the request handlers.
pub(crate) struct Shared {
    script: Mutex<FakeScript>,
    received: Mutex<Vec<Received>>,
    /// Requests received, kept or not.
    count: AtomicUsize,
    /// Whether requests are kept for [`FakeLlm::received`] (see [`FakeLlm::keep_requests`]).
    keep: AtomicBool,
    pub(crate) disconnected: AtomicBool,
    pub(crate) disconnect: Notify,
}

impl Shared {
    /// Records a request; its index among all requests received (faults are counted by it).
    pub(crate) fn record(&self, uri: &Uri, headers: HeaderMap, body: Value) -> usize {
        let mut received = lock(&self.received);
        if self.keep.load(Ordering::Relaxed) {
            received.push(Received {
                path: uri.path().to_owned(),
                headers,
                body,
            });
        }
        self.count.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
        received: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
        keep: AtomicBool::new(true),
        disconnected: AtomicBool::new(false),
        disconnect: Notify::new(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", endpoint(Api::OpenAi))
        .route("/v1/messages", endpoint(Api::Anthropic))
        .route("/v1/chat-messages", endpoint(Api::Dify))
        .route("/v1/audio/transcriptions", post(audio::transcriptions))
        .route("/v1/audio/speech", post(audio::speech))
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
    /// The Dify API root (`.../v1`; the provider adds `/chat-messages`).
    pub fn dify_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request bodies received, in order (failed ones included).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.received)
            .iter()
            .map(|request| request.body.clone())
            .collect()
    }

    /// Requests received, in order, with their path and headers.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Requests received, kept or not.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Whether the requests that follow are kept for [`FakeLlm::requests`] and
    /// [`FakeLlm::received`] (the default) or only counted: a benchmark's upstream answers
    /// millions, each with its prompt (a 30-minute soak kept 3.5 GB of them).
    pub fn keep_requests(&self, keep: bool) {
        self.shared.keep.store(keep, Ordering::Relaxed);
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

    /// Replaces the script for the following requests. Faults count from the first request
    /// ever received, not from this call.
    pub fn set_script(&self, script: FakeScript) {
        *lock(&self.shared.script) = script;
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The endpoint of `api`: every request is recorded and answered by [`answer`].
fn endpoint(api: Api) -> MethodRouter<Arc<Shared>> {
    post(
        move |State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            answer(&shared, api, uri, headers, &body)
        },
    )
}

fn answer(shared: &Arc<Shared>, api: Api, uri: Uri, headers: HeaderMap, body: &[u8]) -> Response {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let conversation = body
        .get("conversation_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let index = shared.record(&uri, headers, body);
    let mut script = lock(&shared.script).clone();
    if api == Api::Dify {
        // Dify names no model; its frames carry the conversation id instead.
        model = conversation.unwrap_or_else(|| format!("conv-{index}"));
    }

    match script.faults.get(index) {
        Some(Fault::Status {
            status,
            retry_after_secs,
            message,
        }) => return failure(api, *status, *retry_after_secs, message),
        Some(Fault::Cut) => script = script.cut_after(0),
        None => {}
    }
    let frames = wire::frames(api, &script, &model);
    let guard = stream::DisconnectGuard::new(Arc::clone(shared));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        stream::body(frames, &script, guard),
    )
        .into_response()
}

/// A scripted failure with the provider's own error body.
pub(crate) fn failure(
    api: Api,
    status: u16,
    retry_after_secs: Option<u64>,
    message: &str,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = wire::error_body(api, status.as_u16(), message);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Sends one chat completion request and reads the whole answer.
    async fn ask(fake: &super::FakeLlm) -> String {
        let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut socket = tokio::net::TcpStream::connect(fake.addr)
            .await
            .unwrap_or_else(|err| panic!("connect to the fake: {err}"));
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|err| panic!("send: {err}"));
        let mut answer = String::new();
        socket
            .read_to_string(&mut answer)
            .await
            .unwrap_or_else(|err| panic!("read: {err}"));
        answer
    }

    #[tokio::test]
    async fn requests_not_kept_are_still_counted_and_answered() {
        let fake = super::spawn(super::FakeScript::default()).await;
        assert!(ask(&fake).await.contains("fake"));
        fake.keep_requests(false);
        assert!(ask(&fake).await.contains("fake"));
        assert_eq!(fake.request_count(), 2);
        assert_eq!(fake.requests().len(), 1, "only the first was kept");
    }
}
