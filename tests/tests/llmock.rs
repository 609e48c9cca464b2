//! The core's OpenAI and Anthropic providers against a third party's mock of those APIs, PyPI's
//! `llmock`, driven through its control API: scripted answers, 429 with Retry-After, 5xx,
//! Anthropic's 529, a 400, connections dropped mid-stream, streams cut short without their end
//! marker, corrupted chunks, stalls and a slow first token. Each fault's outcome is checked on
//! what the client receives (the final message, its status, error frames), what is stored
//! (usage, estimated or not), how llmock saw the attempts, and llmock's own verdict on the
//! client's retries.

use chat_core::llm::{ModelSettings, ProviderKind, ProviderSettings};
use chat_tests::llmock::Llmock;
use chat_tests::{Stack, StackOptions, Ws, spawn_stack};
use serde_json::{Value, json};

/// A stack whose default model is llmock behind a provider of `kind`, with timeouts short
/// enough for the stall to end quickly and a backoff that honours Retry-After.
async fn stack_on(mock: &Llmock, kind: ProviderKind) -> Stack {
    let base_url = match kind {
        ProviderKind::Anthropic => mock.anthropic_base_url(),
        _ => mock.openai_base_url(),
    };
    spawn_stack(StackOptions::default().core(move |c| {
        c.llm.providers.insert(
            "llmock".into(),
            ProviderSettings {
                kind,
                base_url: Some(base_url),
                api_key: Some("llmock-needs-no-key".to_string().into()),
                api_key_env: None,
                word_delay_ms: None,
            },
        );
        let mut model = ModelSettings::new("mock", "llmock", "mock-model");
        model.name = "llmock".into();
        c.llm.models.push(model);
        c.llm.default_model = "mock".into();
        c.llm.first_token_timeout_ms = 3_000;
        c.llm.idle_timeout_ms = 700;
        c.llm.retry.base_delay_ms = 100;
        c.llm.retry.max_delay_ms = 2_000;
    }))
    .await
}

/// What one message got: the final assistant message, the error frames before it, and the
/// attempts llmock saw.
struct Outcome {
    message: Value,
    errors: Vec<Value>,
    attempts: Vec<Value>,
}

async fn ask(mock: &Llmock, ws: &mut Ws, id: &str, behaviors: Value) -> Outcome {
    mock.scenario(behaviors).await;
    ws.send_message(None, &format!("question {id}"), id).await;
    ws.recv_type("ack").await;
    let (fin, before) = ws
        .recv_until(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
        .await;
    // The error frame for a failed reply follows the final message.
    let message = fin["data"]["message"].clone();
    let mut errors: Vec<Value> = before
        .into_iter()
        .filter(|f| f["type"] == "error")
        .collect();
    if message["status"] == "failed" {
        let (error, _) = ws.recv_until(|f| f["type"] == "error").await;
        errors.push(error);
    }
    Outcome {
        message,
        errors,
        attempts: mock.requests().await,
    }
}

/// llmock's findings of severity `error` (retried too early, retried a 400, a retry storm, a
/// cut stream used as if whole).
async fn errors_found(mock: &Llmock) -> Vec<String> {
    let verdict = mock.verdict().await;
    verdict["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn faults_end_as_they_should(kind: ProviderKind) {
    let mock = Llmock::start();
    let stack = stack_on(&mock, kind).await;
    let (mut ws, _) = stack.connect("lena").await;

    // A scripted answer streams whole, with the usage llmock reports.
    let out = ask(
        &mock,
        &mut ws,
        "reply",
        json!([
            {"type": "reply", "text": "Scripted answer from llmock", "times": 1}
        ]),
    )
    .await;
    assert_eq!(out.message["status"], "complete", "{}", out.message);
    assert_eq!(out.message["content"], "Scripted answer from llmock");
    assert_eq!(out.attempts.len(), 1);
    assert!(
        !chat_tests::usage_of(&stack, &out.message).await.estimated,
        "the provider's usage"
    );

    // 429 twice with Retry-After: retried after the wait it asked for, then answered.
    let out = ask(
        &mock,
        &mut ws,
        "429",
        json!([
            {"type": "fail", "status": 429, "retry_after": 0.3, "times": 2}
        ]),
    )
    .await;
    assert_eq!(out.message["status"], "complete", "{}", out.message);
    assert_eq!(out.attempts.len(), 3, "{:?}", out.attempts);
    let starts: Vec<f64> = out
        .attempts
        .iter()
        .filter_map(|a| a["started_at"].as_f64())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= 0.3),
        "each retry waited for Retry-After: {starts:?}"
    );
    assert_eq!(errors_found(&mock).await, Vec::<String>::new());

    // A 5xx once: retried.
    let status = if kind == ProviderKind::Anthropic {
        529
    } else {
        503
    };
    let out = ask(
        &mock,
        &mut ws,
        "5xx",
        json!([
            {"type": "fail", "status": status, "times": 1}
        ]),
    )
    .await;
    assert_eq!(
        out.message["status"], "complete",
        "{status}: {}",
        out.message
    );
    assert_eq!(out.attempts.len(), 2);

    // A 400 is not retried: the apology is stored as failed, and the user gets 502.
    let out = ask(
        &mock,
        &mut ws,
        "400",
        json!([
            {"type": "fail", "status": 400, "times": 1}
        ]),
    )
    .await;
    assert_eq!(out.message["status"], "failed", "{}", out.message);
    assert_eq!(out.attempts.len(), 1, "not retried");
    assert_eq!(
        out.errors.last().map(|e| e["data"]["code"].clone()),
        Some(json!(502))
    );
    assert!(chat_tests::usage_of(&stack, &out.message).await.estimated);
    assert_eq!(errors_found(&mock).await, Vec::<String>::new());

    // Mid-stream faults after the first tokens: no retry (the user saw text), the reply is
    // stored as failed, never as complete, with usage estimated.
    for (kind_of_fault, extra) in [
        ("disconnect", json!({})),
        ("truncate", json!({})),
        ("malformed", json!({})),
        ("stall", json!({"stall_seconds": 30})),
    ] {
        let mut behavior = json!({"type": "stream_fault", "kind": kind_of_fault,
            "after_chunks": 4, "times": 1});
        if let (Some(b), Some(e)) = (behavior.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let out = ask(&mock, &mut ws, kind_of_fault, json!([behavior])).await;
        assert_eq!(
            out.message["status"], "failed",
            "{kind_of_fault}: {}",
            out.message
        );
        assert_eq!(
            out.errors.last().map(|e| e["data"]["code"].clone()),
            Some(json!(502)),
            "{kind_of_fault}"
        );
        assert!(
            chat_tests::usage_of(&stack, &out.message).await.estimated,
            "{kind_of_fault}"
        );
        assert_eq!(out.attempts.len(), 1, "{kind_of_fault}: {:?}", out.attempts);
    }

    // A slow first token within the timeout: answered, and the time to it recorded.
    let out = ask(
        &mock,
        &mut ws,
        "slow",
        json!([
            {"type": "slow_first_token", "seconds": 0.4, "times": 1}
        ]),
    )
    .await;
    assert_eq!(out.message["status"], "complete", "{}", out.message);
    let ttft = out.message["metadata"]["ttftMs"]
        .as_i64()
        .unwrap_or_default();
    assert!(ttft >= 400, "ttftMs {ttft}");
    stack.stop().await;
}

#[tokio::test]
async fn openai_provider_against_llmock_faults() {
    faults_end_as_they_should(ProviderKind::Openai).await;
}

#[tokio::test]
async fn anthropic_provider_against_llmock_faults() {
    faults_end_as_they_should(ProviderKind::Anthropic).await;
}
