//! Provider for any OpenAI-compatible Chat Completions server (OpenAI, Azure-style gateways,
//! Ollama, vLLM, llama.cpp, LiteLLM).
//!
//! `POST {base_url}/chat/completions` with `stream: true` and
//! `stream_options.include_usage: true`; the answer is `data: {chunk}` events ending with
//! `data: [DONE]`. The chunk types are deliberately lenient: "compatible" servers differ in the
//! details (empty `choices` on the usage chunk, `null` content, `finish_reason: ""`, extra
//! fields), and none of that should fail a reply.

use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use super::sse::{self, Step};
use super::{Delta, DeltaStream, LlmError, Provider, ProviderRequest, TurnRole};

/// An OpenAI-compatible upstream. Cheap to share: the client is a handle to one pool.
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    key: Option<SecretString>,
}

impl OpenAiProvider {
    /// `base_url` is the API root including its version (`https://api.openai.com/v1`); `key`
    /// may be absent for local servers.
    pub fn new(client: reqwest::Client, base_url: &str, key: Option<SecretString>) -> Self {
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        OpenAiProvider { client, url, key }
    }
}

impl Provider for OpenAiProvider {
    fn open(&self, req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>> {
        Box::pin(async move {
            let body = request_body(&req);
            let mut request = self
                .client
                .post(&self.url)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(&body);
            if let Some(key) = &self.key {
                request = request.bearer_auth(key.expose_secret());
            }
            let response = sse::send(request).await?;
            Ok(sse::deltas(response, parse_event))
        })
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    max_tokens: u32,
}

#[derive(Serialize)]
struct Message<'a> {
    role: Role,
    content: Content<'a>,
}

/// Plain text, or text and images as content parts (vision models).
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Parts(Vec<Part<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Serialize)]
struct ImageUrl {
    /// `data:<mime>;base64,<bytes>`.
    url: String,
}

fn content<'a>(turn: &'a super::Turn, vision: bool) -> Content<'a> {
    if !vision || turn.images.is_empty() {
        return Content::Text(&turn.content);
    }
    let images = turn.images.iter().map(|image| Part::ImageUrl {
        image_url: ImageUrl {
            url: format!("data:{};base64,{}", image.mime, image.base64),
        },
    });
    Content::Parts(
        std::iter::once(Part::Text {
            text: &turn.content,
        })
        .chain(images)
        .collect(),
    )
}

/// The roles of Chat Completions messages.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    System,
    User,
    Assistant,
}

impl From<TurnRole> for Role {
    fn from(role: TurnRole) -> Self {
        match role {
            TurnRole::User => Role::User,
            TurnRole::Assistant => Role::Assistant,
        }
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

fn request_body(req: &ProviderRequest) -> ChatRequest<'_> {
    let system = (!req.prompt.system.is_empty()).then(|| Message {
        role: Role::System,
        content: Content::Text(&req.prompt.system),
    });
    let turns = req.prompt.turns.iter().map(|turn| Message {
        role: turn.role.into(),
        content: content(turn, req.vision),
    });
    ChatRequest {
        model: &req.upstream_model,
        messages: system.into_iter().chain(turns).collect(),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        max_tokens: req.max_output_tokens,
    }
}

/// One `data:` chunk. Unknown fields are ignored; every field may be missing or null.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<ChoiceDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default, deserialize_with = "null_as_default")]
    prompt_tokens: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    completion_tokens: u32,
}

/// `{"message": ".."}`, or a bare string from some servers.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Object {
        #[serde(default)]
        message: Option<String>,
    },
    Text(String),
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn parse_event(event: &eventsource_stream::Event) -> Result<Step, LlmError> {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Ok(Step::Done);
    }
    if data.is_empty() {
        return Ok(Step::Deltas(Vec::new()));
    }
    let chunk: Chunk = sse::json("the OpenAI-compatible server", data)?;
    if let Some(error) = chunk.error {
        let message = match error {
            ErrorBody::Object { message } => message.unwrap_or_default(),
            ErrorBody::Text(message) => message,
        };
        return Err(LlmError::Upstream(if message.is_empty() {
            "unspecified error".to_owned()
        } else {
            message
        }));
    }
    let mut deltas = Vec::new();
    // Only one completion is requested; should a server send more, keep the first.
    for choice in chunk
        .choices
        .into_iter()
        .filter(|c| c.index.unwrap_or(0) == 0)
    {
        if let Some(content) = choice.delta.and_then(|d| d.content)
            && !content.is_empty()
        {
            deltas.push(Delta::Text(content));
        }
        if choice.finish_reason.as_deref() == Some("length") {
            deltas.push(Delta::Truncated);
        }
    }
    if let Some(usage) = chunk.usage {
        deltas.push(Delta::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
    }
    Ok(Step::Deltas(deltas))
}
