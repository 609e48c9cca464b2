//! The failure policy of SPEC §5, applied to every reply: retries with exponential backoff and
//! jitter (honouring Retry-After, capped) only before the first token, then the model's
//! fallback chain, then an error. Every stream is bounded in time: the first token by
//! `first_token_timeout_ms`, each following delta by `idle_timeout_ms`, so a reply never hangs.
//! (The connect timeout lives in the shared HTTP client the catalogue builds.)

use std::collections::HashSet;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use futures::stream::{self, StreamExt as _};

use super::catalogue::Entry;
use super::{Delta, DeltaStream, LlmError, LlmSettings, Prompt, ProviderRequest, RetrySettings};

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

/// The retry and timeout settings every reply runs under.
#[derive(Debug)]
pub(super) struct Policy {
    retry: RetrySettings,
    first_token: Duration,
    idle: Duration,
}

impl Policy {
    pub(super) fn new(settings: &LlmSettings) -> Policy {
        Policy {
            retry: settings.retry,
            first_token: Duration::from_millis(settings.first_token_timeout_ms),
            idle: Duration::from_millis(settings.idle_timeout_ms),
        }
    }

    /// Opens a reply on `model_id`, finding models through `lookup`: the policy
    /// [`Llm::open`](super::Llm::open) describes.
    pub(super) async fn open<'a>(
        &self,
        model_id: &str,
        lookup: impl Fn(&str) -> Option<&'a Entry>,
        prompt: Prompt,
    ) -> Result<OpenedReply, LlmError> {
        let mut attempts = 0_u32;
        let mut tried = HashSet::new();
        let mut current = model_id.to_owned();
        loop {
            let entry = lookup(&current).ok_or_else(|| LlmError::UnknownModel(current.clone()))?;
            tried.insert(current.clone());
            match self.open_with_retries(entry, &prompt, &mut attempts).await {
                Ok(stream) => {
                    return Ok(OpenedReply {
                        stream: with_idle_timeout(stream, self.idle),
                        model_id: current,
                        attempts,
                    });
                }
                Err(err) => match &entry.model.fallback {
                    // validate() rules out cycles; `tried` guards anyway.
                    Some(next) if !tried.contains(next) && lookup(next).is_some() => {
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
        let max_delay = Duration::from_millis(self.retry.max_delay_ms);
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(self.retry.base_delay_ms))
            .with_max_delay(max_delay)
            .with_max_times(self.retry.max_attempts.saturating_sub(1) as usize)
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
                    status = err.status(),
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
            user_id: prompt.user_id.clone(),
            conversation: prompt.conversations.get(&entry.model.provider).cloned(),
            vision: entry.model.vision,
        };
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.first_token, async {
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
                status = err.status(),
                "model attempt failed"
            ),
        }
        result
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
