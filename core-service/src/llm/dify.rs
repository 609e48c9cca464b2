//! Provider for a Dify chat application (its chat-messages API).
//!
//! `POST {base_url}/chat-messages` with `Authorization: Bearer <app key>` and `response_mode:
//! streaming`. Dify keeps the conversation itself: the request carries only the new message
//! (`query`), the user's id (`user`) and, after the first reply, the chat's `conversation_id`;
//! the app's own prompt applies (our system prompt, the user's context document and the per-
//! message context go in `inputs` as `system_prompt`, where an app may use them). The answer is
//! `data: {json}` events named by their `event` field: `message` and `agent_message` carry text
//! in `answer` (and the `conversation_id`, passed on as [`Delta::Conversation`]),
//! `message_end` carries `metadata.usage` and ends the reply, `error` fails it; `ping`,
//! `workflow_*`, `node_*`, `agent_thought`, `message_file` and unknown events are skipped.

use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::sse::{self, Step};
use super::{Delta, DeltaStream, LlmError, Provider, ProviderRequest, TurnRole};

/// A Dify app. Cheap to share: the client is a handle to one pool.
pub struct DifyProvider {
    client: reqwest::Client,
    url: String,
    key: SecretString,
}

impl DifyProvider {
    /// `base_url` is the API root including its version (`https://api.dify.ai/v1`); `key` is
    /// the app's API key.
    pub fn new(client: reqwest::Client, base_url: &str, key: SecretString) -> Self {
        let url = format!("{}/chat-messages", base_url.trim_end_matches('/'));
        DifyProvider { client, url, key }
    }
}

impl Provider for DifyProvider {
    fn open(&self, req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>> {
        Box::pin(async move {
            // Dify answers the last user message in its own conversation: it cannot be given
            // the start of its answer.
            if req
                .prompt
                .turns
                .last()
                .is_some_and(|t| t.role == TurnRole::Assistant)
            {
                return Err(LlmError::CannotContinue);
            }
            let body = request_body(&req);
            let request = self
                .client
                .post(&self.url)
                .bearer_auth(self.key.expose_secret())
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(&body);
            let response = sse::send(request).await?;
            let mut conversation = req.conversation.clone();
            Ok(sse::deltas(response, move |event| {
                parse_event(event, &mut conversation)
            }))
        })
    }
}

#[derive(Serialize)]
struct ChatMessagesRequest<'a> {
    inputs: Inputs<'a>,
    query: &'a str,
    response_mode: &'static str,
    user: &'a str,
    /// Empty starts a new conversation.
    conversation_id: &'a str,
}

#[derive(Serialize)]
struct Inputs<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    system_prompt: &'a str,
}

fn request_body(req: &ProviderRequest) -> ChatMessagesRequest<'_> {
    let query = req
        .prompt
        .turns
        .iter()
        .rev()
        .find(|turn| turn.role == TurnRole::User)
        .map_or("", |turn| turn.content.as_str());
    ChatMessagesRequest {
        inputs: Inputs {
            system_prompt: &req.prompt.system,
        },
        query,
        response_mode: "streaming",
        user: &req.user_id,
        conversation_id: req.conversation.as_deref().unwrap_or(""),
    }
}

/// One event's payload; `event` names it.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum StreamEvent {
    Message {
        #[serde(default)]
        answer: String,
        #[serde(default)]
        conversation_id: Option<String>,
    },
    AgentMessage {
        #[serde(default)]
        answer: String,
        #[serde(default)]
        conversation_id: Option<String>,
    },
    MessageEnd {
        #[serde(default)]
        conversation_id: Option<String>,
        #[serde(default)]
        metadata: Option<EndMetadata>,
    },
    Error {
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct EndMetadata {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// `conversation` is the id known so far: a new one is passed on once.
fn parse_event(
    event: &eventsource_stream::Event,
    conversation: &mut Option<String>,
) -> Result<Step, LlmError> {
    let data = event.data.trim();
    if data.is_empty() {
        return Ok(Step::Deltas(Vec::new()));
    }
    let parsed: StreamEvent = sse::json("Dify", data)?;
    let mut deltas = Vec::new();
    let mut learn = |id: Option<String>, deltas: &mut Vec<Delta>| {
        if let Some(id) = id.filter(|id| !id.is_empty())
            && conversation.as_deref() != Some(id.as_str())
        {
            *conversation = Some(id.clone());
            deltas.push(Delta::Conversation(id));
        }
    };
    Ok(match parsed {
        StreamEvent::Message {
            answer,
            conversation_id,
        }
        | StreamEvent::AgentMessage {
            answer,
            conversation_id,
        } => {
            learn(conversation_id, &mut deltas);
            if !answer.is_empty() {
                deltas.push(Delta::Text(answer));
            }
            Step::Deltas(deltas)
        }
        StreamEvent::MessageEnd {
            conversation_id,
            metadata,
        } => {
            learn(conversation_id, &mut deltas);
            if let Some(usage) = metadata.and_then(|m| m.usage) {
                deltas.push(Delta::Usage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                });
            }
            Step::Last(deltas)
        }
        StreamEvent::Error {
            status,
            code,
            message,
        } => {
            let message = message.unwrap_or_else(|| "unspecified error".to_owned());
            let message = match (status, code) {
                (Some(status), Some(code)) => format!("{status} {code}: {message}"),
                (None, Some(code)) => format!("{code}: {message}"),
                (Some(status), None) => format!("{status}: {message}"),
                (None, None) => message,
            };
            return Err(LlmError::Upstream(message));
        }
        StreamEvent::Other => Step::Deltas(Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> eventsource_stream::Event {
        eventsource_stream::Event {
            data: data.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn text_conversation_usage_and_errors_are_read_from_the_events() {
        let mut conversation = None;
        let step = |data: &str, c: &mut Option<String>| parse_event(&event(data), c);
        let Ok(Step::Deltas(first)) = step(
            r#"{"event":"message","answer":"Hi","conversation_id":"c-1","message_id":"m"}"#,
            &mut conversation,
        ) else {
            panic!("deltas");
        };
        assert_eq!(
            first,
            vec![Delta::Conversation("c-1".into()), Delta::Text("Hi".into())]
        );
        // The same id again is not news.
        let Ok(Step::Deltas(second)) = step(
            r#"{"event":"agent_message","answer":" there","conversation_id":"c-1"}"#,
            &mut conversation,
        ) else {
            panic!("deltas");
        };
        assert_eq!(second, vec![Delta::Text(" there".into())]);
        let Ok(Step::Deltas(skipped)) = step(r#"{"event":"ping"}"#, &mut conversation) else {
            panic!("deltas");
        };
        assert!(skipped.is_empty());
        let Ok(Step::Last(end)) = step(
            r#"{"event":"message_end","conversation_id":"c-1","metadata":{"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}}"#,
            &mut conversation,
        ) else {
            panic!("the end");
        };
        assert_eq!(
            end,
            vec![Delta::Usage {
                prompt_tokens: 9,
                completion_tokens: 2
            }]
        );
        let Err(LlmError::Upstream(message)) = step(
            r#"{"event":"error","status":400,"code":"invalid_param","message":"bad query"}"#,
            &mut conversation,
        ) else {
            panic!("an error");
        };
        assert_eq!(message, "400 invalid_param: bad query");
    }
}
