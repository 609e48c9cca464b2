//! The Anthropic provider against the fake LLM: the request it sends, skipped events, error
//! events and statuses.

use chat_fake_llm::{self as fake, FakeLlm, FakeScript, Fault, sse_event};
use futures::StreamExt as _;
use secrecy::SecretString;

use crate::llm::anthropic::AnthropicProvider;
use crate::llm::{Delta, LlmError, Prompt, Provider, ProviderRequest, Turn, TurnRole};

fn request() -> ProviderRequest {
    ProviderRequest {
        upstream_model: "claude-test".to_owned(),
        prompt: Prompt {
            system: "Be brief.".to_owned(),
            turns: vec![
                Turn {
                    role: TurnRole::Assistant,
                    content: "Welcome!".to_owned(),
                    images: Vec::new(),
                },
                Turn {
                    role: TurnRole::User,
                    content: "Hi".to_owned(),
                    images: Vec::new(),
                },
                Turn {
                    role: TurnRole::Assistant,
                    content: String::new(),
                    images: Vec::new(),
                },
                Turn {
                    role: TurnRole::User,
                    content: "Tell me a joke".to_owned(),
                    images: Vec::new(),
                },
            ],
            ..Default::default()
        },
        max_output_tokens: 64,
        user_id: String::new(),
        conversation: None,
        vision: false,
    }
}

fn provider(server: &FakeLlm) -> AnthropicProvider {
    AnthropicProvider::new(
        reqwest::Client::new(),
        &server.anthropic_base_url(),
        SecretString::from("ak-test"),
    )
}

/// Opens a reply against the test server and collects every delta.
async fn stream_all(server: &FakeLlm) -> Vec<Result<Delta, LlmError>> {
    provider(server)
        .open(request())
        .await
        .expect("opened")
        .collect()
        .await
}

#[tokio::test]
async fn a_stream_parses_into_text_and_usage() {
    let server =
        fake::spawn(FakeScript::reply(&["Why ", "did the ", "chicken"]).with_usage(21, 5)).await;

    let deltas = stream_all(&server).await;

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
            prompt_tokens: 21,
            completion_tokens: 5
        }))
    );
    assert!(deltas.iter().all(Result::is_ok));

    let seen = &server.received()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key").as_deref(), Some("ak-test"));
    assert_eq!(
        seen.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        seen.body,
        serde_json::json!({
            "model": "claude-test",
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": "Tell me a joke"},
            ],
            "max_tokens": 64,
            "stream": true,
        })
    );
}

#[tokio::test]
async fn unknown_events_and_delta_types_are_skipped() {
    let events = vec![
        sse_event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":1},"extra":1}}"#,
        ),
        sse_event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        ),
        sse_event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
        ),
        sse_event("ping", r#"{"type": "ping"}"#),
        sse_event("brand_new_event", r#"{"type":"brand_new_event","x":[1,2]}"#),
        sse_event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
        ),
        sse_event(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}"#,
        ),
        sse_event("message_stop", r#"{"type":"message_stop"}"#),
    ];
    let server = fake::spawn(FakeScript::frames(events)).await;

    let deltas = stream_all(&server).await;

    assert_eq!(
        deltas,
        vec![
            Ok(Delta::Text("Hi".to_owned())),
            Ok(Delta::Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            }),
        ]
    );
}

#[tokio::test]
async fn an_error_event_becomes_an_upstream_error() {
    let events = vec![
        sse_event(
            "message_start",
            r#"{"type":"message_start","message":{"usage":{"input_tokens":3}}}"#,
        ),
        sse_event(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    ];
    let server = fake::spawn(FakeScript::frames(events)).await;

    let deltas = stream_all(&server).await;

    assert_eq!(
        deltas,
        vec![Err(LlmError::Upstream(
            "overloaded_error: Overloaded".to_owned()
        ))]
    );
}

#[tokio::test]
async fn a_non_2xx_status_carries_the_message() {
    let server = fake::spawn(
        FakeScript::reply(&["never"]).with_faults(vec![Fault::Status {
            status: 401,
            retry_after_secs: None,
            message: "invalid x-api-key".to_owned(),
        }]),
    )
    .await;

    let Err(err) = provider(&server).open(request()).await else {
        panic!("expected an error")
    };

    assert_eq!(
        err,
        LlmError::Status {
            status: 401,
            retry_after: None,
            message: "invalid x-api-key".to_owned()
        }
    );
    assert!(!err.is_retryable());
}
