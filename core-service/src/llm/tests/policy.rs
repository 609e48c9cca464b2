//! The failure policy against the fake LLM and scripted providers: retries, Retry-After,
//! fallback, first-token and idle timeouts, and dropping a reply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chat_fake_llm::{self as fake, FakeLlm, FakeScript, Fault};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt as _};

use super::{drain, prompt};
use crate::llm::{
    Delta, DeltaStream, Llm, LlmError, LlmSettings, ModelSettings, Provider, ProviderKind,
    ProviderRequest, ProviderSettings, RetrySettings,
};

/// Model `primary` on `primary`, optionally falling back to `backup` on `backup`; fast
/// retries and timeouts.
fn settings(primary: &FakeLlm, backup: Option<&FakeLlm>) -> LlmSettings {
    let mut settings = LlmSettings::default();
    settings.retry = RetrySettings {
        max_attempts: 3,
        base_delay_ms: 5,
        max_delay_ms: 50,
    };
    settings.first_token_timeout_ms = 1_000;
    settings.idle_timeout_ms = 1_000;
    let mut servers = vec![("primary", primary)];
    servers.extend(backup.map(|server| ("backup", server)));
    for (name, server) in servers {
        settings.providers.insert(
            name.to_owned(),
            ProviderSettings {
                kind: ProviderKind::Openai,
                base_url: Some(server.openai_base_url()),
                api_key: None,
                api_key_env: None,
                word_delay_ms: None,
            },
        );
        let mut model = ModelSettings::new(name, name, &format!("{name}-upstream"));
        if name == "primary" && backup.is_some() {
            model.fallback = Some("backup".to_owned());
        }
        settings.models.push(model);
    }
    settings.default_model = "primary".to_owned();
    settings
}

#[tokio::test]
async fn a_503_then_200_is_retried_and_succeeds() {
    let server = fake::spawn(
        FakeScript::reply(&["Hi", " there"])
            .with_usage(4, 2)
            .failing_first(&[503]),
    )
    .await;
    let llm = Llm::new(&settings(&server, None)).expect("valid");

    let reply = llm.open("primary", prompt()).await.expect("opened");

    assert_eq!((reply.model_id.as_str(), reply.attempts), ("primary", 2));
    let (text, items) = drain(reply.stream).await;
    assert_eq!(text, "Hi there");
    assert_eq!(
        items.last(),
        Some(&Ok(Delta::Usage {
            prompt_tokens: 4,
            completion_tokens: 2
        }))
    );
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.requests()[1]["model"], "primary-upstream");
}

#[tokio::test]
async fn retries_stop_after_max_attempts_with_the_last_error() {
    let server = fake::spawn(FakeScript::reply(&["never"]).failing_first(&[502, 502, 502])).await;
    let llm = Llm::new(&settings(&server, None)).expect("valid");

    let err = llm.open("primary", prompt()).await.expect_err("fails");

    assert!(
        matches!(err, LlmError::Status { status: 502, .. }),
        "{err:?}"
    );
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_max_delay() {
    // Retry-After (30 s) beats the 5 ms backoff but is capped at max_delay (300 ms).
    let server = fake::spawn(FakeScript::reply(&["ok"]).with_faults(vec![Fault::Status {
        status: 429,
        retry_after_secs: Some(30),
        message: "slow down".to_owned(),
    }]))
    .await;
    let mut settings = settings(&server, None);
    settings.retry.max_delay_ms = 300;
    let llm = Llm::new(&settings).expect("valid");

    let started = std::time::Instant::now();
    let reply = llm.open("primary", prompt()).await.expect("opened");

    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "retried after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1_500),
        "retried after {waited:?}"
    );
    assert_eq!(reply.attempts, 2);
}

#[tokio::test]
async fn retry_after_zero_skips_a_long_backoff() {
    let server = fake::spawn(FakeScript::reply(&["ok"]).with_faults(vec![Fault::Status {
        status: 429,
        retry_after_secs: Some(0),
        message: "slow down".to_owned(),
    }]))
    .await;
    let mut settings = settings(&server, None);
    settings.retry = RetrySettings {
        max_attempts: 3,
        base_delay_ms: 5_000,
        max_delay_ms: 8_000,
    };
    let llm = Llm::new(&settings).expect("valid");

    let started = std::time::Instant::now();
    let reply = llm.open("primary", prompt()).await.expect("opened");

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(reply.attempts, 2);
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server = fake::spawn(
        FakeScript::reply(&["never"]).with_faults(vec![Fault::Status {
            status: 400,
            retry_after_secs: None,
            message: "bad request".to_owned(),
        }]),
    )
    .await;
    let llm = Llm::new(&settings(&server, None)).expect("valid");

    let err = llm.open("primary", prompt()).await.expect_err("fails");

    assert_eq!(
        err,
        LlmError::Status {
            status: 400,
            retry_after: None,
            message: "bad request".to_owned()
        }
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_failure_after_the_first_token_is_not_retried_and_ends_the_stream() {
    let server = fake::spawn(FakeScript::reply(&["Part", "ial", "never"]).cut_after(2)).await;
    let llm = Llm::new(&settings(&server, None)).expect("valid");

    let reply = llm.open("primary", prompt()).await.expect("opened");
    let (text, items) = drain(reply.stream).await;

    assert_eq!(text, "Partial");
    assert!(
        matches!(items.last(), Some(Err(LlmError::Connect(_)))),
        "{items:?}"
    );
    assert_eq!(reply.attempts, 1);
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_failure_before_the_first_token_is_retried() {
    let server = fake::spawn(FakeScript::reply(&["ok"]).with_faults(vec![Fault::Cut])).await;
    let llm = Llm::new(&settings(&server, None)).expect("valid");

    let reply = llm.open("primary", prompt()).await.expect("opened");

    assert_eq!(drain(reply.stream).await.0, "ok");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn the_fallback_model_answers_after_the_primary_exhausts_its_retries() {
    let primary = fake::spawn(FakeScript::reply(&["never"]).failing_first(&[503, 503, 503])).await;
    let backup = fake::spawn(FakeScript::reply(&["from ", "backup"])).await;
    let llm = Llm::new(&settings(&primary, Some(&backup))).expect("valid");

    let reply = llm.open("primary", prompt()).await.expect("opened");

    assert_eq!((reply.model_id.as_str(), reply.attempts), ("backup", 4));
    assert_eq!(drain(reply.stream).await.0, "from backup");
    assert_eq!(primary.request_count(), 3);
    assert_eq!(backup.request_count(), 1);
    assert_eq!(backup.requests()[0]["model"], "backup-upstream");
}

#[tokio::test]
async fn the_first_token_timeout_fires_and_is_retried() {
    let server = fake::spawn(FakeScript::reply(&["late"]).hanging_after(0)).await;
    let mut settings = settings(&server, None);
    settings.first_token_timeout_ms = 200;
    settings.retry.max_attempts = 2;
    let llm = Llm::new(&settings).expect("valid");

    let started = std::time::Instant::now();
    let err = llm.open("primary", prompt()).await.expect_err("times out");

    assert_eq!(err, LlmError::FirstTokenTimeout);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert_eq!(server.request_count(), 2);
    assert!(server.wait_for_disconnect(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn the_idle_timeout_ends_a_stalled_stream() {
    let server = fake::spawn(FakeScript::reply(&["Hello", "never"]).hanging_after(1)).await;
    let mut settings = settings(&server, None);
    settings.idle_timeout_ms = 200;
    let llm = Llm::new(&settings).expect("valid");

    let reply = llm.open("primary", prompt()).await.expect("opened");
    let started = std::time::Instant::now();
    let (text, items) = drain(reply.stream).await;

    assert_eq!(text, "Hello");
    assert_eq!(items.last(), Some(&Err(LlmError::IdleTimeout)));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert_eq!(server.request_count(), 1);
    assert!(server.wait_for_disconnect(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let server = fake::spawn(FakeScript::reply(&["Hello", " world"]).hanging_after(1)).await;
    let llm = Llm::new(&settings(&server, None)).expect("valid");

    let mut reply = llm.open("primary", prompt()).await.expect("opened");
    assert_eq!(
        reply.stream.next().await,
        Some(Ok(Delta::Text("Hello".to_owned())))
    );
    assert!(!server.wait_for_disconnect(Duration::from_millis(100)).await);
    drop(reply);

    assert!(server.wait_for_disconnect(Duration::from_secs(1)).await);
}

/// A provider that replays a fixed list of deltas.
struct Scripted(Vec<Result<Delta, LlmError>>);

impl Provider for Scripted {
    fn open(&self, _req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>> {
        let items = self.0.clone();
        Box::pin(async move { Ok(stream::iter(items).boxed()) })
    }
}

#[tokio::test]
async fn deltas_before_the_first_token_are_replayed_in_order() {
    let usage = Delta::Usage {
        prompt_tokens: 3,
        completion_tokens: 0,
    };
    let scripted: Arc<dyn Provider> = Arc::new(Scripted(vec![
        Ok(usage.clone()),
        Ok(Delta::Text("Hi".to_owned())),
    ]));
    let llm = Llm::with_providers(
        &LlmSettings::default(),
        BTreeMap::from([("demo".to_owned(), scripted)]),
    )
    .expect("valid");

    let reply = llm.open("demo", prompt()).await.expect("opened");

    let (_, items) = drain(reply.stream).await;
    assert_eq!(items, vec![Ok(usage), Ok(Delta::Text("Hi".to_owned()))]);
}

#[tokio::test]
async fn a_reply_without_text_is_returned_as_is() {
    let usage = Delta::Usage {
        prompt_tokens: 3,
        completion_tokens: 0,
    };
    let scripted: Arc<dyn Provider> = Arc::new(Scripted(vec![Ok(usage.clone())]));
    let llm = Llm::with_providers(
        &LlmSettings::default(),
        BTreeMap::from([("demo".to_owned(), scripted)]),
    )
    .expect("valid");

    let reply = llm.open("demo", prompt()).await.expect("opened");

    assert_eq!(drain(reply.stream).await.1, vec![Ok(usage)]);
}
