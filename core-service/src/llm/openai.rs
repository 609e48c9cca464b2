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
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

fn request_body(req: &ProviderRequest) -> ChatRequest<'_> {
    let system = (!req.prompt.system.is_empty()).then(|| Message {
        role: "system",
        content: &req.prompt.system,
    });
    let turns = req.prompt.turns.iter().map(|turn| Message {
        role: match turn.role {
            TurnRole::User => "user",
            TurnRole::Assistant => "assistant",
        },
        content: &turn.content,
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
    let mut deltas: Vec<Delta> = chunk
        .choices
        .into_iter()
        // Only one completion is requested; should a server send more, keep the first.
        .filter(|choice| choice.index.unwrap_or(0) == 0)
        .filter_map(|choice| choice.delta?.content)
        .filter(|content| !content.is_empty())
        .map(Delta::Text)
        .collect();
    if let Some(usage) = chunk.usage {
        deltas.push(Delta::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
    }
    Ok(Step::Deltas(deltas))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::llm::testing::{self, Reply};
    use crate::llm::{Prompt, Turn};
    use futures::StreamExt as _;

    fn request() -> ProviderRequest {
        ProviderRequest {
            upstream_model: "gpt-test".to_owned(),
            prompt: Prompt {
                system: "Be brief.".to_owned(),
                turns: vec![
                    Turn {
                        role: TurnRole::User,
                        content: "Hi".to_owned(),
                    },
                    Turn {
                        role: TurnRole::Assistant,
                        content: "Hello!".to_owned(),
                    },
                    Turn {
                        role: TurnRole::User,
                        content: "Tell me a joke".to_owned(),
                    },
                ],
            },
            max_output_tokens: 64,
        }
    }

    async fn collect(stream: DeltaStream) -> Vec<Result<Delta, LlmError>> {
        stream.collect().await
    }

    #[tokio::test]
    async fn a_stream_parses_into_text_and_usage() {
        let server = testing::spawn(vec![Reply::openai(
            &["Why ", "did the ", "chicken"],
            (11, 3),
        )])
        .await;
        let provider = OpenAiProvider::new(
            reqwest::Client::new(),
            &format!("{}/v1/", server.base_url()),
            Some(SecretString::from("sk-test")),
        );

        let deltas = collect(provider.open(request()).await.expect("opened")).await;

        let text: String = deltas
            .iter()
            .filter_map(|d| match d {
                Ok(Delta::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Why did the chicken");
        assert_eq!(
            deltas.last(),
            Some(&Ok(Delta::Usage {
                prompt_tokens: 11,
                completion_tokens: 3
            }))
        );
        assert!(deltas.iter().all(Result::is_ok));

        let seen = server.requests();
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(
            seen[0].body,
            serde_json::json!({
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Tell me a joke"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 64,
            })
        );
    }

    #[tokio::test]
    async fn no_key_means_no_authorization_header() {
        let server = testing::spawn(vec![Reply::openai(&["ok"], (1, 1))]).await;
        let provider = OpenAiProvider::new(
            reqwest::Client::new(),
            &format!("{}/v1", server.base_url()),
            None,
        );
        let _ = collect(provider.open(request()).await.expect("opened")).await;
        assert_eq!(server.requests()[0].authorization, None);
    }

    #[tokio::test]
    async fn lenient_parsing_survives_what_compatible_servers_send() {
        let events = [
            // Role-only first chunk, empty finish_reason, unknown fields everywhere.
            r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"","logprobs":null}],"system_fingerprint":"fp"}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel","reasoning_content":null},"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"delta":{"content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":null,"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            "[DONE]",
        ];
        let server = testing::spawn(vec![Reply::sse(
            events.iter().map(|e| testing::data(e)).collect(),
        )])
        .await;
        let provider = OpenAiProvider::new(
            reqwest::Client::new(),
            &format!("{}/v1", server.base_url()),
            None,
        );

        let deltas = collect(provider.open(request()).await.expect("opened")).await;

        assert_eq!(
            deltas,
            vec![
                Ok(Delta::Text("Hel".to_owned())),
                Ok(Delta::Text("lo".to_owned())),
                Ok(Delta::Usage {
                    prompt_tokens: 5,
                    completion_tokens: 2
                }),
            ]
        );
    }

    #[tokio::test]
    async fn an_error_chunk_becomes_an_upstream_error() {
        let events = vec![
            testing::data(r#"{"choices":[{"index":0,"delta":{"content":"Par"}}]}"#),
            testing::data(r#"{"error":{"message":"model overloaded","type":"server_error"}}"#),
            testing::data(r#"{"choices":[{"index":0,"delta":{"content":"never"}}]}"#),
        ];
        let server = testing::spawn(vec![Reply::sse(events)]).await;
        let provider = OpenAiProvider::new(
            reqwest::Client::new(),
            &format!("{}/v1", server.base_url()),
            None,
        );

        let deltas = collect(provider.open(request()).await.expect("opened")).await;

        assert_eq!(
            deltas,
            vec![
                Ok(Delta::Text("Par".to_owned())),
                Err(LlmError::Upstream("model overloaded".to_owned())),
            ]
        );
    }

    #[tokio::test]
    async fn a_non_2xx_status_carries_the_message_and_retry_after() {
        let server = testing::spawn(vec![Reply::status(
            429,
            Some("7"),
            r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
        )])
        .await;
        let provider = OpenAiProvider::new(
            reqwest::Client::new(),
            &format!("{}/v1", server.base_url()),
            None,
        );

        let Err(err) = provider.open(request()).await else {
            panic!("expected an error")
        };

        assert_eq!(
            err,
            LlmError::Status {
                status: 429,
                retry_after: Some(std::time::Duration::from_secs(7)),
                message: "Rate limit reached".to_owned(),
            }
        );
    }

    #[tokio::test]
    async fn invalid_json_is_a_protocol_error() {
        let server = testing::spawn(vec![Reply::sse(vec![testing::data("{not json")])]).await;
        let provider = OpenAiProvider::new(
            reqwest::Client::new(),
            &format!("{}/v1", server.base_url()),
            None,
        );
        let deltas = collect(provider.open(request()).await.expect("opened")).await;
        assert!(
            matches!(deltas.as_slice(), [Err(LlmError::Protocol(_))]),
            "{deltas:?}"
        );
    }
}
