//! The OpenAI-compatible provider against the fake LLM: the request it sends, lenient parsing,
//! error chunks and statuses.

use chat_fake_llm::{self as fake, FakeScript, Fault, sse_data};
use futures::StreamExt as _;
use secrecy::SecretString;

use crate::llm::openai::OpenAiProvider;
use crate::llm::{Delta, DeltaStream, LlmError, Prompt, Provider, ProviderRequest, Turn, TurnRole};

fn request() -> ProviderRequest {
    ProviderRequest {
        upstream_model: "gpt-test".to_owned(),
        prompt: Prompt {
            system: "Be brief.".to_owned(),
            turns: vec![
                Turn {
                    role: TurnRole::User,
                    content: "Hi".to_owned(),
                    images: Vec::new(),
                },
                Turn {
                    role: TurnRole::Assistant,
                    content: "Hello!".to_owned(),
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

async fn collect(stream: DeltaStream) -> Vec<Result<Delta, LlmError>> {
    stream.collect().await
}

#[tokio::test]
async fn a_stream_parses_into_text_and_usage() {
    let server =
        fake::spawn(FakeScript::reply(&["Why ", "did the ", "chicken"]).with_usage(11, 3)).await;
    let provider = OpenAiProvider::new(
        reqwest::Client::new(),
        &format!("{}/", server.openai_base_url()),
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

    let seen = server.received();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some("Bearer sk-test")
    );
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
    let server = fake::spawn(FakeScript::reply(&["ok"])).await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), &server.openai_base_url(), None);
    let _ = collect(provider.open(request()).await.expect("opened")).await;
    assert_eq!(server.received()[0].header("authorization"), None);
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
    let server = fake::spawn(FakeScript::frames(
        events.iter().map(|e| sse_data(e)).collect(),
    ))
    .await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), &server.openai_base_url(), None);

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
        sse_data(r#"{"choices":[{"index":0,"delta":{"content":"Par"}}]}"#),
        sse_data(r#"{"error":{"message":"model overloaded","type":"server_error"}}"#),
        sse_data(r#"{"choices":[{"index":0,"delta":{"content":"never"}}]}"#),
    ];
    let server = fake::spawn(FakeScript::frames(events)).await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), &server.openai_base_url(), None);

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
    let server = fake::spawn(
        FakeScript::reply(&["never"]).with_faults(vec![Fault::Status {
            status: 429,
            retry_after_secs: Some(7),
            message: "Rate limit reached".to_owned(),
        }]),
    )
    .await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), &server.openai_base_url(), None);

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
    let server = fake::spawn(FakeScript::frames(vec![sse_data("{not json")])).await;
    let provider = OpenAiProvider::new(reqwest::Client::new(), &server.openai_base_url(), None);
    let deltas = collect(provider.open(request()).await.expect("opened")).await;
    assert!(
        matches!(deltas.as_slice(), [Err(LlmError::Protocol(_))]),
        "{deltas:?}"
    );
}
