//! HTTP and Server-Sent Events plumbing shared by the OpenAI and Anthropic providers.
//!
//! [`send`] turns a request into a checked response (non-2xx becomes [`LlmError::Status`] with
//! Retry-After and a short body excerpt); [`deltas`] turns a response body into a
//! [`DeltaStream`] through a per-provider event parser. The stream owns the response: dropping
//! it drops the connection.

use std::collections::VecDeque;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures::stream::{self, StreamExt as _};

use super::{Delta, DeltaStream, LlmError};

/// Longest error excerpt kept from a non-2xx body.
const EXCERPT_CHARS: usize = 300;
/// Most bytes read from a non-2xx body.
const ERROR_BODY_LIMIT: usize = 8 * 1024;

/// What one SSE event means to a provider.
pub(crate) enum Step {
    /// Zero or more deltas; keep reading.
    Deltas(Vec<Delta>),
    /// The reply is complete; stop reading.
    Done,
    /// These deltas, then the reply is complete (an end event that carries usage).
    Last(Vec<Delta>),
}

/// Sends `request`, and checks the status once the headers arrived.
///
/// # Errors
/// [`LlmError::Connect`] when the request cannot be sent, [`LlmError::Status`] for a non-2xx
/// answer.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
    let response = request
        .send()
        .await
        .map_err(|err| LlmError::Connect(describe(err)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let message = error_excerpt(response).await;
    Err(LlmError::Status {
        status: status.as_u16(),
        retry_after,
        message,
    })
}

/// Retry-After in seconds (integer or decimal). The HTTP-date form is ignored: the backoff
/// applies instead.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if seconds.is_finite() && seconds >= 0.0 {
        Duration::try_from_secs_f64(seconds).ok()
    } else {
        None
    }
}

/// The provider's own error message when the body is JSON of the usual shape
/// (`{"error": {"message": ..}}` or `{"error": ".."}` or `{"message": ..}`), else the start of
/// the body, whitespace collapsed.
async fn error_excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| {
            let error = json.get("error").unwrap_or(&json);
            error
                .get("message")
                .and_then(serde_json::Value::as_str)
                .or_else(|| error.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.into_owned());
    let collapsed = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut excerpt: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if excerpt.len() < collapsed.len() {
        excerpt.push('…');
    }
    if excerpt.is_empty() {
        excerpt = response_reason(&response);
    }
    excerpt
}

fn response_reason(response: &reqwest::Response) -> String {
    response
        .status()
        .canonical_reason()
        .unwrap_or("no details")
        .to_owned()
}

/// A transport error without its URL (the URL is harmless today, but some gateways put keys in
/// query strings).
pub(crate) fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let err = err.without_url();
    // Walk the source chain: reqwest's top-level message alone is vague ("error sending request").
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("{kind}: {detail}")
}

/// The deltas of an SSE response, as `parse` reads each event. The stream ends after
/// [`Step::Done`] or [`Step::Last`], or after the first error. A body that ends before the
/// provider's end marker (`[DONE]`, `message_stop`, `message_end`) is an error: the reply was
/// cut, not finished.
pub(crate) fn deltas<P>(response: reqwest::Response, parse: P) -> DeltaStream
where
    P: FnMut(&Event) -> Result<Step, LlmError> + Send + 'static,
{
    struct State<P> {
        events: futures::stream::BoxStream<'static, Result<Event, LlmError>>,
        parse: P,
        pending: VecDeque<Delta>,
        finished: bool,
    }

    let events = response
        .bytes_stream()
        .eventsource()
        .map(|event| event.map_err(stream_error))
        .boxed();
    let state = State {
        events,
        parse,
        pending: VecDeque::new(),
        finished: false,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(delta) = state.pending.pop_front() {
                return Some((Ok(delta), state));
            }
            if state.finished {
                return None;
            }
            let outcome = match state.events.next().await {
                None => Err(LlmError::Protocol(
                    "the stream ended before the provider's end marker".to_owned(),
                )),
                Some(Ok(event)) => (state.parse)(&event),
                Some(Err(err)) => Err(err),
            };
            match outcome {
                Ok(Step::Deltas(deltas)) => state.pending.extend(deltas),
                Ok(Step::Done) => state.finished = true,
                Ok(Step::Last(deltas)) => {
                    state.pending.extend(deltas);
                    state.finished = true;
                }
                Err(err) => {
                    state.finished = true;
                    state.pending.clear();
                    return Some((Err(err), state));
                }
            }
        }
    })
    .boxed()
}

fn stream_error(err: EventStreamError<reqwest::Error>) -> LlmError {
    match err {
        // The connection broke mid-body: as retryable as a failed connect, before the first
        // token; after it, the caller does not retry anyway.
        EventStreamError::Transport(err) => {
            LlmError::Connect(format!("stream interrupted: {}", describe(err)))
        }
        EventStreamError::Utf8(err) => {
            LlmError::Protocol(format!("invalid UTF-8 in the stream: {err}"))
        }
        EventStreamError::Parser(err) => LlmError::Protocol(format!("invalid event stream: {err}")),
    }
}

/// Parses one event's JSON payload, naming the provider in the error.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    provider: &str,
    data: &str,
) -> Result<T, LlmError> {
    serde_json::from_str(data).map_err(|err| {
        // serde's messages may quote values, i.e. reply text: keep only the class and place.
        LlmError::Protocol(format!(
            "{provider} sent an event that is not the expected JSON ({:?} error at line {} column {}, {} bytes)",
            err.classify(),
            err.line(),
            err.column(),
            data.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
