//! Provider for the Anthropic Messages API.
//!
//! `POST {base_url}/v1/messages` with `x-api-key`, `anthropic-version: 2023-06-01` and
//! `stream: true`. The answer is named SSE events: `message_start` (carries the input token
//! count), `content_block_start`, `ping`, `content_block_delta` (`text_delta` carries the text),
//! `content_block_stop`, `message_delta` (carries the output token count), `message_stop`, and
//! `error`. Unknown events and delta types (thinking, tool input) are skipped, so new API
//! features do not break replies.

use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::sse::{self, Step};
use super::{Delta, DeltaStream, LlmError, Provider, ProviderRequest, TurnRole};

/// The API version this parser was written against.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// An Anthropic upstream. Cheap to share: the client is a handle to one pool.
pub struct AnthropicProvider {
    client: reqwest::Client,
    url: String,
    key: SecretString,
}

impl AnthropicProvider {
    /// `base_url` is the API root without version (`https://api.anthropic.com`).
    pub fn new(client: reqwest::Client, base_url: &str, key: SecretString) -> Self {
        let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
        AnthropicProvider { client, url, key }
    }
}

impl Provider for AnthropicProvider {
    fn open(&self, req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>> {
        Box::pin(async move {
            let body = request_body(&req);
            let request = self
                .client
                .post(&self.url)
                .header("x-api-key", self.key.expose_secret())
                .header("anthropic-version", ANTHROPIC_VERSION)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(&body);
            let response = sse::send(request).await?;
            let mut usage = UsageSoFar::default();
            Ok(sse::deltas(response, move |event| {
                parse_event(event, &mut usage)
            }))
        })
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    stream: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    /// Serializes as the API's own role names.
    role: TurnRole,
    content: Content<'a>,
}

/// Plain text, or text and image blocks (vision models).
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    Image { source: ImageSource<'a> },
}

#[derive(Serialize)]
struct ImageSource<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    media_type: &'a str,
    data: &'a str,
}

fn content<'a>(turn: &'a super::Turn, vision: bool) -> Content<'a> {
    if !vision || turn.images.is_empty() {
        return Content::Text(&turn.content);
    }
    let images = turn.images.iter().map(|image| Block::Image {
        source: ImageSource {
            kind: "base64",
            media_type: &image.mime,
            data: &image.base64,
        },
    });
    Content::Blocks(
        images
            .chain(std::iter::once(Block::Text {
                text: &turn.content,
            }))
            .collect(),
    )
}

/// The Messages API refuses empty text blocks and wants the conversation to start with the
/// user, so empty turns (e.g. a reply stopped before its first token) and leading assistant
/// turns (e.g. a greeting) are left out. Consecutive turns of one role are fine: the API joins
/// them.
fn request_body(req: &ProviderRequest) -> MessagesRequest<'_> {
    let messages = req
        .prompt
        .turns
        .iter()
        .filter(|turn| !turn.content.trim().is_empty())
        .skip_while(|turn| turn.role == TurnRole::Assistant)
        .map(|turn| Message {
            role: turn.role,
            content: content(turn, req.vision),
        })
        .collect();
    MessagesRequest {
        model: &req.upstream_model,
        system: &req.prompt.system,
        messages,
        max_tokens: req.max_output_tokens,
        stream: true,
    }
}

/// Token counts gathered across events: input from `message_start`, output from
/// `message_delta`.
#[derive(Default)]
struct UsageSoFar {
    input: u32,
}

/// One event's payload; the `type` field names it (the SSE `event:` line says the same).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockDelta {
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: Option<StopDelta>,
        #[serde(default)]
        usage: Option<Usage>,
    },
    MessageStop,
    Error {
        error: ErrorBody,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StopDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

impl Usage {
    /// All prompt tokens, cached ones included.
    fn input(&self) -> Option<u32> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0_u32, |a, b| a.saturating_add(*b))
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn parse_event(
    event: &eventsource_stream::Event,
    usage: &mut UsageSoFar,
) -> Result<Step, LlmError> {
    let data = event.data.trim();
    if data.is_empty() {
        return Ok(Step::Deltas(Vec::new()));
    }
    let parsed: StreamEvent = sse::json("Anthropic", data)?;
    Ok(match parsed {
        StreamEvent::MessageStart { message } => {
            if let Some(input) = message.usage.as_ref().and_then(Usage::input) {
                usage.input = input;
            }
            Step::Deltas(Vec::new())
        }
        StreamEvent::ContentBlockDelta {
            delta: BlockDelta::TextDelta { text },
        } if !text.is_empty() => Step::Deltas(vec![Delta::Text(text)]),
        StreamEvent::MessageDelta {
            delta,
            usage: delta_usage,
        } => {
            let mut deltas = Vec::new();
            if delta.and_then(|d| d.stop_reason).as_deref() == Some("max_tokens") {
                deltas.push(Delta::Truncated);
            }
            if let Some(delta_usage) = delta_usage {
                // Newer API versions repeat the input count here; prefer it when present.
                if let Some(input) = delta_usage.input() {
                    usage.input = input;
                }
                deltas.push(Delta::Usage {
                    prompt_tokens: usage.input,
                    completion_tokens: delta_usage.output_tokens.unwrap_or(0),
                });
            }
            Step::Deltas(deltas)
        }
        StreamEvent::MessageStop => Step::Done,
        StreamEvent::Error { error } => {
            let message = match (error.kind, error.message) {
                (Some(kind), Some(message)) => format!("{kind}: {message}"),
                (None, Some(message)) | (Some(message), None) => message,
                (None, None) => "unspecified error".to_owned(),
            };
            return Err(LlmError::Upstream(message));
        }
        StreamEvent::ContentBlockDelta { .. } | StreamEvent::Other => Step::Deltas(Vec::new()),
    })
}
